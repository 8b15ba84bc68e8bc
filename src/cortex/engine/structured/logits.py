"""The runner's two hooks: mask a step's logits before sampling, keep each sampled token within budget.

``rows`` pairs a logits row with its request's matcher and the tokens the request may still generate
(this step's included).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cortex.engine.sampling import RowLogprobs, SamplerOutput
from cortex.engine.structured.bitmask import allocate_token_bitmask, apply_token_bitmask_
from cortex.engine.structured.matcher import GrammarMatcher

GrammarRow = tuple[int, GrammarMatcher, int]  # (logits row, matcher, remaining tokens)


def mask_logits(logits: torch.Tensor, rows: Sequence[GrammarRow]) -> None:
    """Disallow, in place, what each constrained row's grammar forbids next; other rows are not
    touched. logits: [num_rows, vocab]."""
    bitmask = allocate_token_bitmask(len(rows), logits.shape[-1])
    masked = [
        i
        for i, (_, grammar, remaining) in enumerate(rows)
        if grammar.fill_bitmask(bitmask[i], remaining=remaining)
    ]
    if masked:
        apply_token_bitmask_(logits, bitmask[masked], rows=[rows[i][0] for i in masked])


def keep_within_budget(logits: torch.Tensor, output: SamplerOutput, rows: Sequence[GrammarRow]) -> None:
    """Replace a sampled token after which the grammar could not be completed in time by the most
    likely token of its closing path (and its logprob, if asked for). logits: the masked logits."""
    for row, grammar, remaining in rows:
        if row in output.errors:  # nothing was sampled; the engine fails that request alone
            continue
        token_id = output.token_ids[row]
        if grammar.fits(token_id, remaining=remaining):
            continue
        candidates = grammar.closing_tokens()
        token_id = candidates[int(logits[row, candidates].argmax())]
        output.token_ids[row] = token_id
        old = output.logprobs[row]
        if old is not None:
            logprob = float(logits[row].log_softmax(-1)[token_id])
            output.logprobs[row] = RowLogprobs(logprob=logprob, top=old.top)
