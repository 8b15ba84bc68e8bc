"""Quarantine: the requests of a failed forward step, run apart in smaller and smaller groups.

A forward step runs every scheduled request through the same tensors, so when it raises the engine cannot
tell whose input caused it, and the caches of every request in it may be half-written (a Gated DeltaNet
state updated by some layers and not by others). So the engine requeues them all (each is recomputed from
its first token, as after a preemption, so its output stays the one it would have had) and hands the step
to the quarantine, which splits its requests into groups: the step's newcomers (requests computing their
first tokens) apart from the ones that had already run, or else two halves. The groups run one at a
time and alone (``Scheduler.schedule(only=...)``); a group is cleared once each member has computed the
tokens it was computing when the step failed (or has finished). A group that fails again is split again,
and a request whose step fails with nothing else in it is the culprit: it alone fails. Requests outside
the quarantine wait while it is active, so the failure a culprit causes costs its batch-mates one
recompute and never their results.

A failure that needs several requests together (memory, say) clears every group; the requests then meet
again in a normal step, and the quarantine repeats, each round having moved every member past its mark.

Plain Python, no tensors; the engine calls it under its lock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from cortex.engine.request import Request
from cortex.engine.scheduler import ScheduledBatch


@dataclass(eq=False)
class _Group:
    # member -> the number of tokens it must have computed (num_computed_tokens) to be cleared
    marks: dict[Request, int] = field(default_factory=dict)


class Quarantine:
    def __init__(self) -> None:
        self._groups: deque[_Group] = deque()  # the first one runs; the others wait their turn

    def current(self) -> frozenset[Request] | None:
        """The requests the next step may run, or None when nothing is quarantined (every request may)."""
        self._prune()
        return frozenset(self._groups[0].marks) if self._groups else None

    def step_failed(self, batch: ScheduledBatch) -> Request | None:
        """Take the requests of a step that raised: the culprit when the step ran one request, else None
        after the step's requests were split into new groups that run next (the caller requeues them)."""
        if len(batch.seqs) == 1:
            (seq,) = batch.seqs
            for group in self._groups:
                group.marks.pop(seq.request, None)
            return seq.request
        marks = {seq.request: seq.num_cached_tokens + seq.num_new_tokens for seq in batch.seqs}
        for group in self._groups:
            for request in marks:
                group.marks.pop(request, None)
        newcomers = [seq.request for seq in batch.seqs if seq.num_cached_tokens == 0]
        others = [seq.request for seq in batch.seqs if seq.num_cached_tokens > 0]
        if not newcomers or not others:
            members = newcomers or others
            newcomers, others = members[: len(members) // 2], members[len(members) // 2 :]
        for part in (others, newcomers):  # extendleft: newcomers, the likelier culprits, run first
            self._groups.appendleft(_Group({request: marks[request] for request in part}))
        return None

    def step_succeeded(self, batch: ScheduledBatch) -> None:
        """Clear the members of the running group that have reached their mark (call after the update)."""
        if not self._groups:
            return
        marks = self._groups[0].marks
        for seq in batch.seqs:
            mark = marks.get(seq.request)
            if mark is not None and seq.request.num_computed_tokens >= mark:
                del marks[seq.request]
        self._prune()

    def _prune(self) -> None:
        """Drop finished members (aborted, failed, or done) and the groups left empty."""
        while self._groups:
            marks = self._groups[0].marks
            for request in [r for r in marks if r.is_finished]:
                del marks[request]
            if marks:
                return
            self._groups.popleft()
