"""sample(): next tokens from a step's logits, one row per request. Pure torch, no engine state.

Per row, in this order (transformers' order in ``generate``): repetition penalty over prompt + generated
tokens (as transformers' ``RepetitionPenaltyLogitsProcessor`` and vLLM), presence and frequency penalties
over generated tokens (as OpenAI), then greedy argmax when ``temperature == 0``; otherwise temperature,
top-k, top-p, min-p (each as transformers' warper of that name, which the tests use as the oracle) and a
draw from the row's own CPU ``torch.Generator`` (one uniform per token, inverse-CDF), so a seeded request
gets the same tokens whatever else is in the batch, on any device. Log-probabilities are those of the
model's raw distribution (``log_softmax`` of the logits before any penalty or warper), as vLLM returns
them by default.

One row's parameters can never fail its batch-mates: if sampling the batch raises, each row is sampled
alone (with the uniform it already drew, so every other row gets exactly the token it would have got)
and the rows that still raise are reported in ``SamplerOutput.errors`` for the engine to fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from cortex.engine.sampling_params import SamplingParams


@dataclass(frozen=True, slots=True)
class SamplingRow:
    """One request's sampling inputs. ``params`` must be resolved (no None in the warper fields)."""

    params: SamplingParams
    prompt_token_ids: Sequence[int]
    output_token_ids: Sequence[int]
    generator: torch.Generator  # on the CPU, whatever the logits' device


@dataclass(frozen=True, slots=True)
class RowLogprobs:
    logprob: float  # of the sampled token
    top: tuple[tuple[int, float], ...]  # the ``params.logprobs`` most likely tokens, best first


@dataclass(frozen=True, slots=True)
class SamplerOutput:
    token_ids: list[int]  # -1 for the rows in ``errors``
    logprobs: list[RowLogprobs | None]  # None for rows that did not ask for logprobs (or failed)
    errors: dict[int, Exception] = field(default_factory=dict)  # row -> why sampling that row alone raised


def apply_repetition_penalty(logits: torch.Tensor, token_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """Divide positive (multiply negative) logits of ``token_ids`` by ``penalty``. logits: [vocab]."""
    scores = logits.gather(0, token_ids)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(0, token_ids, scores)


def apply_presence_frequency_penalties(
    logits: torch.Tensor, output_token_ids: torch.Tensor, *, presence: float, frequency: float
) -> torch.Tensor:
    """OpenAI's penalties: ``logit -= frequency * count + presence * (count > 0)``. logits: [vocab]."""
    counts = torch.bincount(output_token_ids, minlength=logits.shape[0]).to(logits.dtype)
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep each row's ``top_k`` largest logits (ties kept); ``top_k <= 0`` keeps all.

    logits: [num_rows, vocab]; top_k: [num_rows] int64.
    """
    vocab = logits.shape[-1]
    k = torch.where((top_k <= 0) | (top_k > vocab), vocab, top_k)
    kth = logits.sort(dim=-1, descending=True).values.gather(-1, (k - 1).unsqueeze(-1))
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p`` (at least one).

    logits: [num_rows, vocab]; top_p: [num_rows] float.
    """
    sorted_logits, sorted_indices = logits.sort(dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p).unsqueeze(-1)
    remove[:, -1] = False
    return logits.masked_fill(remove.scatter(-1, sorted_indices, remove), float("-inf"))


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens less likely than ``min_p`` times the row's most likely token.

    logits: [num_rows, vocab]; min_p: [num_rows] float in [0, 1].
    """
    probs = logits.softmax(dim=-1)
    threshold = min_p.unsqueeze(-1) * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, float("-inf"))


def _penalised(logits: torch.Tensor, row: SamplingRow) -> torch.Tensor:
    # logits: [vocab]
    params = row.params
    assert params.repetition_penalty is not None, "params must be resolved"
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(
            list(row.prompt_token_ids) + list(row.output_token_ids), dtype=torch.int64, device=logits.device
        )
        logits = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    if (params.presence_penalty or params.frequency_penalty) and row.output_token_ids:
        generated = torch.tensor(list(row.output_token_ids), dtype=torch.int64, device=logits.device)
        logits = apply_presence_frequency_penalties(
            logits, generated, presence=params.presence_penalty, frequency=params.frequency_penalty
        )
    return logits


def _draw(logits: torch.Tensor, rows: Sequence[SamplingRow], uniform: torch.Tensor) -> torch.Tensor:
    """Temperature, top-k, top-p, min-p, then one draw per row. logits: [num_rows, vocab] -> [num_rows].

    uniform: [num_rows] float64 in [0, 1), each row's draw from its own generator.

    When every row has a top-k, the other filters and the draw run on the ``max(top_k)`` best logits
    only (sorting a 250k vocabulary is the slow part of sampling); this equals filtering the whole row
    except where logits tie exactly at the k-th place.
    """

    def column(name: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([getattr(row.params, name) for row in rows], dtype=dtype, device=logits.device)

    vocab = logits.shape[-1]
    logits = logits / column("temperature", logits.dtype).unsqueeze(-1)
    top_k = column("top_k", torch.int64)
    token_map = None
    if bool((top_k > 0).all()) and int(top_k.max()) < vocab:
        logits, token_map = logits.topk(int(top_k.max()), dim=-1)  # sorted, best first
        rank = torch.arange(logits.shape[-1], device=logits.device)
        logits = logits.masked_fill(rank >= top_k.unsqueeze(-1), float("-inf"))
    elif bool((top_k > 0).any()):
        logits = apply_top_k(logits, top_k)
    if any(row.params.top_p != 1.0 for row in rows):
        logits = apply_top_p(logits, column("top_p", logits.dtype))
    if any(row.params.min_p for row in rows):
        logits = apply_min_p(logits, column("min_p", logits.dtype))
    # Inverse-CDF sampling with one uniform per row.
    cdf = logits.softmax(dim=-1).double().cumsum(dim=-1)
    choice = torch.searchsorted(cdf, (uniform.to(logits.device) * cdf[:, -1]).unsqueeze(-1), right=True)
    choice = choice.clamp(max=logits.shape[-1] - 1)
    return (token_map.gather(-1, choice) if token_map is not None else choice).squeeze(-1)


def sample(logits: torch.Tensor, rows: Sequence[SamplingRow]) -> SamplerOutput:
    """Pick one token per row. logits: [num_rows, vocab] float32, row ``i`` for ``rows[i]``.

    A row whose own sampling raises gets -1 and its exception in ``errors``; the other rows are unaffected.
    """
    assert logits.shape[0] == len(rows)
    # One uniform per non-greedy row, drawn first from the row's own (CPU) generator: a draw does not
    # depend on the logits, so a row sampled again alone below reuses it and gets the same token.
    uniform = torch.tensor(
        [
            float(torch.rand((), generator=row.generator, dtype=torch.float64))
            for row in rows
            if not row.params.greedy
        ],
        dtype=torch.float64,
    )
    try:
        return _sample(logits, rows, uniform)
    except Exception as exc:
        if len(rows) == 1:
            return SamplerOutput([-1], [None], {0: exc})
    return _sample_each(logits, rows, uniform)


def _sample_each(logits: torch.Tensor, rows: Sequence[SamplingRow], uniform: torch.Tensor) -> SamplerOutput:
    """``sample`` one row at a time, so that only the rows that raise on their own fail."""
    token_ids: list[int] = []
    logprobs: list[RowLogprobs | None] = []
    errors: dict[int, Exception] = {}
    num_drawn = 0
    for i, row in enumerate(rows):
        draws = uniform[num_drawn : num_drawn + (0 if row.params.greedy else 1)]
        num_drawn += len(draws)
        try:
            out = _sample(logits[i : i + 1], [row], draws)
        except Exception as exc:
            errors[i] = exc
            token_ids.append(-1)
            logprobs.append(None)
        else:
            token_ids.extend(out.token_ids)
            logprobs.extend(out.logprobs)
    return SamplerOutput(token_ids, logprobs, errors)


def _sample(logits: torch.Tensor, rows: Sequence[SamplingRow], uniform: torch.Tensor) -> SamplerOutput:
    raw_logprobs = (
        logits.log_softmax(dim=-1) if any(row.params.logprobs is not None for row in rows) else None
    )
    needs_penalty = [
        row.params.repetition_penalty != 1.0 or row.params.presence_penalty or row.params.frequency_penalty
        for row in rows
    ]
    if any(needs_penalty):
        logits = torch.stack(
            [_penalised(logits[i], row) if needs_penalty[i] else logits[i] for i, row in enumerate(rows)]
        )
    chosen = logits.argmax(dim=-1)
    sampled = [i for i, row in enumerate(rows) if not row.params.greedy]
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        chosen = chosen.index_copy(0, index, _draw(logits[index], [rows[i] for i in sampled], uniform))
    token_ids: list[int] = chosen.tolist()
    if raw_logprobs is None:
        return SamplerOutput(token_ids, [None] * len(rows))
    logprobs = [_logprobs(raw_logprobs[i], token_ids[i], row) for i, row in enumerate(rows)]
    return SamplerOutput(token_ids, logprobs)


def _logprobs(logprobs: torch.Tensor, token_id: int, row: SamplingRow) -> RowLogprobs | None:
    # logprobs: [vocab]
    if row.params.logprobs is None:
        return None
    top = logprobs.topk(row.params.logprobs) if row.params.logprobs else None
    return RowLogprobs(
        logprob=float(logprobs[token_id]),
        top=tuple(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top is not None else (),
    )
