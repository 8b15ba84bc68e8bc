"""The sampler: next tokens from a step's logits, one row per request. Pure torch, no engine state.

Per row, in this order (transformers' order in ``generate``): repetition penalty over prompt + generated
tokens (as transformers' ``RepetitionPenaltyLogitsProcessor`` and vLLM), presence and frequency penalties
over generated tokens (as OpenAI), then greedy argmax when ``temperature == 0``; otherwise temperature,
top-k, top-p, min-p (each as transformers' warper of that name, which the tests use as the oracle) and a
draw from the row's own CPU ``torch.Generator`` (one uniform per token, inverse-CDF), so a seeded request
gets the same tokens whatever else is in the batch, on any device. Log-probabilities are those of the
model's raw distribution (``log_softmax`` of the logits before any penalty or warper), as vLLM returns
them by default.

The sampler never reads a device value back until its result is complete. It runs in three stages:

1. :meth:`SamplingInputs.build` (host, no device): the rows' parameters as columns, each sampled row's
   uniform drawn from its own generator, the penalised tokens flattened, and the host facts that pick
   the code path (is any row sampled, do all sampled rows have a top-k, ...). :meth:`SamplingInputs.put`
   adds the columns to the step's :class:`HostPacket` (one transfer with the forward's metadata).
2. :func:`sample_on_device` (device only): penalties, argmax, warpers and draws, logprobs, with no
   data-dependent Python branch on a device value.
3. :meth:`SampledTokens.to_host` copies the result back once and returns a :class:`SamplerOutput`.

:func:`sample` runs them (or stages 2 and 3 on columns the runner already shipped). One row's
parameters can never fail its batch-mates: if sampling the batch raises, each row is sampled alone
(with the uniform it already drew, so every other row gets exactly the token it would have got) and
the rows that still raise are reported in ``SamplerOutput.errors`` for the engine to fail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from cortex.engine.host_packet import HostPacket
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


# ---- logits transforms: [num_rows, vocab] in, [num_rows, vocab] out, no host reads -------------------


def apply_repetition_penalty(
    logits: torch.Tensor, rows: torch.Tensor, token_ids: torch.Tensor, penalty: torch.Tensor
) -> torch.Tensor:
    """Divide positive (multiply negative) logits of each ``(rows[i], token_ids[i])`` by its row's penalty.

    logits: [num_rows, vocab]; rows, token_ids: [n] int64 (repeats allowed); penalty: [num_rows].
    """
    vocab = logits.shape[-1]
    flat_index = rows * vocab + token_ids
    scores = logits.reshape(-1)[flat_index]
    row_penalty = penalty[rows]
    scores = torch.where(scores < 0, scores * row_penalty, scores / row_penalty)
    return logits.reshape(-1).index_put((flat_index,), scores).view_as(logits)


def apply_presence_frequency_penalties(
    logits: torch.Tensor,
    rows: torch.Tensor,
    token_ids: torch.Tensor,
    *,
    presence: torch.Tensor,
    frequency: torch.Tensor,
) -> torch.Tensor:
    """OpenAI's penalties: ``logit -= frequency * count + presence * (count > 0)``, counting each row's
    generated tokens.

    logits: [num_rows, vocab]; rows, token_ids: [n] int64; presence, frequency: [num_rows].
    """
    counts = torch.zeros_like(logits).index_put(
        (rows, token_ids), torch.ones_like(rows, dtype=logits.dtype), accumulate=True
    )
    return logits - frequency[:, None] * counts - presence[:, None] * (counts > 0).to(logits.dtype)


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


# ---- stage 1: host inputs -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SamplingInputs:
    """A step's sampling inputs on the host: columns for the packet, and the facts that pick the path.

    ``sampled_rows`` are the rows that draw (temperature > 0); the ``temperature``/``top_k``/``top_p``/
    ``min_p``/``uniform`` columns hold those rows only, in that order.
    """

    num_rows: int
    sampled_rows: tuple[int, ...]
    temperature: tuple[float, ...]
    top_k: tuple[int, ...]
    top_p: tuple[float, ...]
    min_p: tuple[float, ...]
    uniform: tuple[float, ...]  # one draw per sampled row, from that row's own generator
    # repetition penalty (every row; 1 = off) over (row, token) pairs of prompt + output tokens
    repetition_penalty: tuple[float, ...]
    repetition_rows: tuple[int, ...]
    repetition_token_ids: tuple[int, ...]
    # presence / frequency penalties (every row; 0 = off) over (row, token) pairs of output tokens
    presence_penalty: tuple[float, ...]
    frequency_penalty: tuple[float, ...]
    output_rows: tuple[int, ...]
    output_token_ids: tuple[int, ...]
    # host facts
    top_k_max: int  # > 0: every sampled row has a top-k, the largest is this (filter on it only)
    use_top_k: bool
    use_top_p: bool
    use_min_p: bool
    num_logprobs: tuple[int | None, ...]  # per row: None (not asked) or how many alternatives

    @classmethod
    def build(cls, rows: Sequence[SamplingRow], vocab_size: int, uniforms: Sequence[float]) -> SamplingInputs:
        """Read the rows' parameters; ``uniforms`` from :func:`draw_uniforms`. Touches no device."""
        sampled = [i for i, row in enumerate(rows) if not row.params.greedy]
        params = [rows[i].params for i in sampled]
        top_k = [p.top_k or 0 for p in params]
        repetition_rows: list[int] = []
        repetition_ids: list[int] = []
        output_rows: list[int] = []
        output_ids: list[int] = []
        for i, row in enumerate(rows):
            if row.params.repetition_penalty != 1.0:
                seen = [*row.prompt_token_ids, *row.output_token_ids]
                repetition_rows.extend([i] * len(seen))
                repetition_ids.extend(seen)
            if row.params.presence_penalty or row.params.frequency_penalty:
                output_rows.extend([i] * len(row.output_token_ids))
                output_ids.extend(row.output_token_ids)
        every_top_k = bool(params) and all(k > 0 for k in top_k) and max(top_k) < vocab_size
        return cls(
            num_rows=len(rows),
            sampled_rows=tuple(sampled),
            temperature=tuple(float(p.temperature or 1.0) for p in params),
            top_k=tuple(top_k),
            top_p=tuple(float(p.top_p if p.top_p is not None else 1.0) for p in params),
            min_p=tuple(float(p.min_p or 0.0) for p in params),
            uniform=tuple(uniforms),
            repetition_penalty=tuple(float(row.params.repetition_penalty or 1.0) for row in rows),
            repetition_rows=tuple(repetition_rows),
            repetition_token_ids=tuple(repetition_ids),
            presence_penalty=tuple(float(row.params.presence_penalty) for row in rows),
            frequency_penalty=tuple(float(row.params.frequency_penalty) for row in rows),
            output_rows=tuple(output_rows),
            output_token_ids=tuple(output_ids),
            top_k_max=max(top_k) if every_top_k else 0,
            use_top_k=any(k > 0 for k in top_k),
            use_top_p=any(p.top_p != 1.0 for p in params),
            use_min_p=any(p.min_p for p in params),
            num_logprobs=tuple(row.params.logprobs for row in rows),
        )

    def put(self, packet: HostPacket) -> None:
        """Add the columns to ``packet`` under ``sampling.*`` names."""
        columns: Mapping[str, tuple[Sequence[int] | Sequence[float], torch.dtype]] = {
            "sampled_rows": (self.sampled_rows, torch.int64),
            "temperature": (self.temperature, torch.float32),
            "top_k": (self.top_k, torch.int64),
            "top_p": (self.top_p, torch.float32),
            "min_p": (self.min_p, torch.float32),
            "uniform": (self.uniform, torch.float64),
            "repetition_penalty": (self.repetition_penalty, torch.float32),
            "repetition_rows": (self.repetition_rows, torch.int64),
            "repetition_token_ids": (self.repetition_token_ids, torch.int64),
            "presence_penalty": (self.presence_penalty, torch.float32),
            "frequency_penalty": (self.frequency_penalty, torch.float32),
            "output_rows": (self.output_rows, torch.int64),
            "output_token_ids": (self.output_token_ids, torch.int64),
        }
        for name, (values, dtype) in columns.items():
            packet.put(f"sampling.{name}", values, dtype)


# ---- stage 2: device -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampledTokens:
    """The sampler's result, still on the device. token_ids: [num_rows] int64."""

    token_ids: torch.Tensor
    logprobs: torch.Tensor | None  # [num_rows, 1 + 2 * max_logprobs] fp64: chosen, top ids, top values
    num_logprobs: tuple[int | None, ...]

    def to_host(self) -> SamplerOutput:
        """Copy the result back (the step's one read from the device) and unpack it per row."""
        if self.logprobs is None:
            with _the_steps_read(self.token_ids.device):
                return SamplerOutput(self.token_ids.tolist(), [None] * len(self.num_logprobs))
        with _the_steps_read(self.token_ids.device):
            packed = torch.cat([self.token_ids[:, None].double(), self.logprobs], dim=1).cpu()
        width = (packed.shape[1] - 2) // 2
        token_ids = [int(t) for t in packed[:, 0].tolist()]
        rows: list[RowLogprobs | None] = []
        for values, n in zip(packed.tolist(), self.num_logprobs, strict=True):
            if n is None:
                rows.append(None)
                continue
            top_ids, top_values = values[2 : 2 + width][:n], values[2 + width :][:n]
            rows.append(
                RowLogprobs(logprob=values[1], top=tuple(zip(map(int, top_ids), top_values, strict=True)))
            )
        return SamplerOutput(token_ids, rows)


@contextmanager
def _the_steps_read(device: torch.device) -> Iterator[None]:
    """The one device read a step makes: exempt from ``torch.cuda.set_sync_debug_mode``, so that a test
    (or a user) running steps in mode "error" is told about every other read."""
    if device.type != "cuda":
        yield
        return
    mode = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(0)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(mode)


def sample_on_device(
    logits: torch.Tensor, inputs: SamplingInputs, columns: Mapping[str, torch.Tensor]
) -> SampledTokens:
    """Pick one token per row. logits: [num_rows, vocab] float32; ``columns``: the ``sampling.*`` arrays
    of ``inputs`` on the logits' device. Branches only on ``inputs``' host facts."""
    assert logits.shape[0] == inputs.num_rows

    def col(name: str) -> torch.Tensor:
        return columns[f"sampling.{name}"]

    want_logprobs = any(n is not None for n in inputs.num_logprobs)
    raw_logprobs = logits.log_softmax(dim=-1) if want_logprobs else None
    if inputs.repetition_rows:
        logits = apply_repetition_penalty(
            logits, col("repetition_rows"), col("repetition_token_ids"), col("repetition_penalty")
        )
    if inputs.output_rows:
        logits = apply_presence_frequency_penalties(
            logits,
            col("output_rows"),
            col("output_token_ids"),
            presence=col("presence_penalty"),
            frequency=col("frequency_penalty"),
        )
    chosen = logits.argmax(dim=-1)
    if inputs.sampled_rows:
        index = col("sampled_rows")
        chosen = chosen.index_copy(0, index, _draw(logits.index_select(0, index), inputs, col))
    if raw_logprobs is None:
        return SampledTokens(chosen, None, inputs.num_logprobs)
    width = max((n or 0) for n in inputs.num_logprobs)
    top = raw_logprobs.topk(width, dim=-1)
    packed = torch.cat(
        [raw_logprobs.gather(1, chosen[:, None]).double(), top.indices.double(), top.values.double()], dim=1
    )
    return SampledTokens(chosen, packed, inputs.num_logprobs)


def _draw(logits: torch.Tensor, inputs: SamplingInputs, col: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """Temperature, top-k, top-p, min-p, then one draw per sampled row. logits: [num_sampled, vocab].

    When every row has a top-k, the other filters and the draw run on the ``max(top_k)`` best logits
    only (sorting a 250k vocabulary is the slow part of sampling); this equals filtering the whole row
    except where logits tie exactly at the k-th place.
    """
    logits = logits / col("temperature").unsqueeze(-1)
    top_k = col("top_k")
    token_map = None
    if inputs.top_k_max:
        logits, token_map = logits.topk(inputs.top_k_max, dim=-1)  # sorted, best first
        rank = torch.arange(logits.shape[-1], device=logits.device)
        logits = logits.masked_fill(rank >= top_k.unsqueeze(-1), float("-inf"))
    elif inputs.use_top_k:
        logits = apply_top_k(logits, top_k)
    if inputs.use_top_p:
        logits = apply_top_p(logits, col("top_p"))
    if inputs.use_min_p:
        logits = apply_min_p(logits, col("min_p"))
    # Inverse-CDF sampling with one uniform per row, drawn on the host from the row's own generator.
    cdf = logits.softmax(dim=-1).double().cumsum(dim=-1)
    choice = torch.searchsorted(cdf, (col("uniform") * cdf[:, -1]).unsqueeze(-1), right=True)
    choice = choice.clamp(max=logits.shape[-1] - 1)
    return (token_map.gather(-1, choice) if token_map is not None else choice).squeeze(-1)


# ---- all three stages -----------------------------------------------------------------------------


def draw_uniforms(rows: Sequence[SamplingRow]) -> tuple[float, ...]:
    """One uniform in [0, 1) per sampled (non-greedy) row, in row order, from the row's own CPU
    generator. A draw does not depend on the logits, so it is taken before the forward and reused if
    a row is sampled again alone."""
    return tuple(
        float(torch.rand((), generator=row.generator, dtype=torch.float64))
        for row in rows
        if not row.params.greedy
    )


Shipped = tuple[SamplingInputs, Mapping[str, torch.Tensor]]  # inputs and their columns on the device


def sample(
    logits: torch.Tensor,
    rows: Sequence[SamplingRow],
    *,
    uniforms: Sequence[float] | None = None,
    shipped: Shipped | None = None,
) -> SamplerOutput:
    """Pick one token per row. logits: [num_rows, vocab] float32, row ``i`` for ``rows[i]``.

    ``uniforms`` (default: drawn now) are :func:`draw_uniforms`'s; ``shipped`` the step's inputs whose
    columns already are on the logits' device. A row whose own sampling raises gets -1 and its exception
    in ``errors``; the other rows are unaffected.
    """
    assert logits.shape[0] == len(rows)
    uniforms = draw_uniforms(rows) if uniforms is None else uniforms
    try:
        if shipped is None:
            inputs = SamplingInputs.build(rows, logits.shape[-1], uniforms)
            packet = HostPacket()
            inputs.put(packet)
            shipped = inputs, packet.to(logits.device)
        return sample_on_device(logits, *shipped).to_host()
    except Exception as exc:
        if len(rows) == 1:
            return SamplerOutput([-1], [None], {0: exc})
    return _sample_each(logits, rows, uniforms)


def _sample_each(
    logits: torch.Tensor, rows: Sequence[SamplingRow], uniforms: Sequence[float]
) -> SamplerOutput:
    """``sample`` one row at a time, so that only the rows that raise on their own fail."""
    token_ids: list[int] = []
    logprobs: list[RowLogprobs | None] = []
    errors: dict[int, Exception] = {}
    num_drawn = 0
    for i, row in enumerate(rows):
        draws = uniforms[num_drawn : num_drawn + (0 if row.params.greedy else 1)]
        num_drawn += len(draws)
        out = sample(logits[i : i + 1], [row], uniforms=draws)
        token_ids.extend(out.token_ids)
        logprobs.extend(out.logprobs)
        if out.errors:
            errors[i] = out.errors[0]
    return SamplerOutput(token_ids, logprobs, errors)
