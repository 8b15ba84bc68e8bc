"""The quarantine alone: how a failed step's requests are split, run apart, cleared or blamed."""

from __future__ import annotations

from test_scheduler import make_request

from cortex.engine.quarantine import Quarantine
from cortex.engine.request import Request, RequestStatus
from cortex.engine.scheduler import ScheduledBatch, ScheduledSeq


def failed_step(*seqs: tuple[Request, int, int]) -> ScheduledBatch:
    return ScheduledBatch(tuple(ScheduledSeq(r, cached, new) for r, cached, new in seqs))


def computed(request: Request, num_tokens: int) -> ScheduledBatch:
    """A successful step that brought ``request`` to ``num_tokens`` computed tokens."""
    cached = request.num_computed_tokens
    request.num_computed_tokens = num_tokens
    return failed_step((request, cached, num_tokens - cached))


def test_a_step_of_one_request_blames_it():
    a = make_request("a", 5)
    quarantine = Quarantine()
    assert quarantine.step_failed(failed_step((a, 0, 5))) is a
    assert quarantine.current() is None


def test_newcomers_run_apart_from_the_requests_that_had_run_then_all_are_cleared():
    old1, old2, new = make_request("old1", 5), make_request("old2", 5), make_request("new", 9)
    quarantine = Quarantine()
    assert quarantine.step_failed(failed_step((old1, 6, 1), (old2, 5, 1), (new, 0, 8))) is None
    assert quarantine.current() == {new}
    quarantine.step_succeeded(computed(new, 4))
    assert quarantine.current() == {new}  # a chunk short of the 8 tokens it was computing
    quarantine.step_succeeded(computed(new, 8))
    assert quarantine.current() == {old1, old2}
    quarantine.step_succeeded(computed(old1, 7))
    quarantine.step_succeeded(computed(old2, 5))
    assert quarantine.current() == {old2}
    old2.status = RequestStatus.FINISHED  # aborted while quarantined
    assert quarantine.current() is None


def test_a_group_that_fails_again_is_halved_until_the_culprit_fails_alone():
    a, b, c, d = (make_request(name, 5) for name in "abcd")
    quarantine = Quarantine()
    quarantine.step_failed(failed_step((a, 0, 5), (b, 0, 5), (c, 0, 5), (d, 0, 5)))
    assert quarantine.current() == {a, b}
    quarantine.step_failed(failed_step((a, 0, 5), (b, 0, 5)))
    assert quarantine.current() == {a}
    quarantine.step_succeeded(computed(a, 5))
    assert quarantine.current() == {b}
    assert quarantine.step_failed(failed_step((b, 0, 5))) is b
    b.status = RequestStatus.FINISHED
    assert quarantine.current() == {c, d}
