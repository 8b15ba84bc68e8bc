"""Fleet configuration: neurons (``NeuronSpec``), model profiles (``ModelProfile``) and the policy.

All three are frozen dataclasses validated once at construction. ``from_dict`` builds them from the
loose dicts of a TOML file and names any unknown or mistyped key; ``load_models_toml`` reads a
``models.toml`` of ``[[models]]`` array tables (or ``[models.<id>]`` tables).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from cortex.fleet.errors import FleetConfigError

__all__ = [
    "EvictionStrategy",
    "FleetPolicy",
    "ModelProfile",
    "NeuronKind",
    "NeuronSpec",
    "load_models_toml",
    "profiles_from_toml_value",
]

EvictionStrategy = Literal["lru", "priority"]


def _doc(description: str, example: Any) -> dict[str, Any]:
    """A key's documentation, kept in its field's metadata (the configuration reference reads it)."""
    return {"description": description, "example": example}


NeuronKind = Literal["cortex", "openai"]


@dataclass(frozen=True)
class NeuronSpec:
    """One neuron: a unique ``name`` and the base ``url`` of its HTTP API (``http://host:13131``).

    ``kind`` is ``cortex`` (a cortex neuron: both dialects, loads and unloads on request) or ``openai``
    (any OpenAI-compatible server: its ``/v1/models`` is its catalogue, all of it served as loaded,
    never asked to load or unload; Anthropic callers reach it through ``cortex.translate``).
    """

    name: str
    url: str
    api_key: str | None = None
    timeout_s: float = 600.0
    kind: NeuronKind = "cortex"

    def __post_init__(self) -> None:
        if not self.name:
            raise FleetConfigError("neuron: 'name' must be a non-empty string")
        if not self.url.startswith(("http://", "https://")):
            raise FleetConfigError(f"neuron {self.name!r}: 'url' must start with http:// or https://")
        if self.timeout_s <= 0:
            raise FleetConfigError(f"neuron {self.name!r}: 'timeout_s' must be > 0")
        if self.kind not in get_args(NeuronKind):
            raise FleetConfigError(
                f"neuron {self.name!r}: 'kind' must be one of {list(get_args(NeuronKind))}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NeuronSpec:
        return cls(**_convert(cls, data, "neuron"))


@dataclass(frozen=True)
class ModelProfile:
    """What the fleet knows about a model beyond what neurons report.

    ``neuron_model`` is the id the neurons know it by (default: ``id``). ``memory_bytes`` overrides
    the neurons' ``estimated_memory_bytes``. ``allowed_neurons`` restricts placement (empty: any);
    ``preferred_neurons`` are tried first. Under the ``priority`` eviction strategy a model is only
    evicted for one of equal or higher ``priority``. ``pinned`` models are loaded at start and never
    evicted. ``idle_ttl_s`` unloads the model after that long without requests. ``aliases`` are exact
    names or glob patterns (``claude-*``) that resolve to this model. ``tokenizer`` is a model folder
    (tokenizer.json and chat template) the gateway counts this model's tokens with, for ``openai``
    neurons, which cannot (count_tokens, and ``max_tokens`` clamped for Anthropic callers).
    ``min_devices`` splits the model over at least that many GPUs of one neuron (tensor parallelism):
    it is placed only on a neuron with that many GPUs that each have room for its share, and loaded
    there with ``tensor_parallel`` = the larger of ``min_devices`` and the neuron's own split for it.
    ``memory_bytes`` is then the need over all of them.
    """

    id: str = field(metadata=_doc("The model's id in the catalogue (what callers name).", "qwen3.6-27b"))
    neuron_model: str | None = field(
        default=None,
        metadata=_doc("The id the neurons know it by (their folder name). Unset: `id`.", "Qwen3.6-27B"),
    )
    memory_bytes: int | None = field(
        default=None,
        metadata=_doc(
            "Memory the model needs on a neuron, in bytes; overrides the neurons' "
            "`estimated_memory_bytes`. Unset: the neurons' estimate.",
            60_000_000_000,
        ),
    )
    allowed_neurons: tuple[str, ...] = field(
        default=(), metadata=_doc("The neurons it may be placed on; empty: any.", ["gpu1", "gpu2"])
    )
    preferred_neurons: tuple[str, ...] = field(
        default=(), metadata=_doc("Neurons tried first (within `allowed_neurons`).", ["gpu2"])
    )
    priority: int = field(
        default=0,
        metadata=_doc(
            "Under the `priority` eviction strategy a model is only evicted for one of equal or higher "
            "priority.",
            10,
        ),
    )
    pinned: bool = field(default=False, metadata=_doc("Loaded at start and never evicted.", True))
    idle_ttl_s: float | None = field(
        default=None,
        metadata=_doc("Unloaded after this long without requests. Unset: kept until evicted.", 3600),
    )
    aliases: tuple[str, ...] = field(
        default=(),
        metadata=_doc("Exact names or glob patterns that resolve to this model.", ["claude-*", "gpt-4o"]),
    )
    max_model_len: int | None = field(
        default=None,
        metadata=_doc("The context length the catalogue reports. Unset: the neurons'.", 131072),
    )
    display_name: str | None = field(
        default=None, metadata=_doc("The name the catalogue shows. Unset: `id`.", "Qwen3.6 27B")
    )
    tokenizer: str | None = field(
        default=None,
        metadata=_doc(
            "A model folder (tokenizer.json and chat template) the gateway counts this model's tokens "
            "with, for `openai` neurons, which cannot (count_tokens, and `max_tokens` clamped for "
            "Anthropic callers).",
            "/data/models/Qwen3.6-27B",
        ),
    )
    min_devices: int | None = field(
        default=None,
        metadata=_doc(
            "Split the model over at least this many GPUs of one neuron (tensor parallelism): placed only "
            "on a neuron with that many devices that each have room for its share. Unset: the neuron's "
            "own split.",
            2,
        ),
    )

    def __post_init__(self) -> None:
        if not self.id:
            raise FleetConfigError("model: 'id' must be a non-empty string")
        if self.min_devices is not None and self.min_devices < 1:
            raise FleetConfigError(f"model {self.id!r}: 'min_devices' must be >= 1")
        if self.memory_bytes is not None and self.memory_bytes <= 0:
            raise FleetConfigError(f"model {self.id!r}: 'memory_bytes' must be > 0")
        if self.idle_ttl_s is not None and self.idle_ttl_s <= 0:
            raise FleetConfigError(f"model {self.id!r}: 'idle_ttl_s' must be > 0")
        if self.max_model_len is not None and self.max_model_len <= 0:
            raise FleetConfigError(f"model {self.id!r}: 'max_model_len' must be > 0")
        outside = set(self.preferred_neurons) - set(self.allowed_neurons)
        if self.allowed_neurons and outside:
            raise FleetConfigError(
                f"model {self.id!r}: 'preferred_neurons' {sorted(outside)} are not in 'allowed_neurons'"
            )

    @property
    def upstream_id(self) -> str:
        """The model id sent to neurons."""
        return self.neuron_model or self.id

    def matches_alias(self, name: str) -> bool:
        """True when ``name`` equals one of the aliases or matches one of the glob patterns."""
        return any(name == alias or fnmatch.fnmatchcase(name, alias) for alias in self.aliases)

    def allows(self, neuron: str) -> bool:
        return not self.allowed_neurons or neuron in self.allowed_neurons

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelProfile:
        where = f"model {data.get('id')!r}" if "id" in data else "model"
        return cls(**_convert(cls, data, where))


@dataclass(frozen=True)
class FleetPolicy:
    """Routing, loading, eviction, retry and polling knobs; every one of them is read somewhere.

    ``eviction``: ``lru`` evicts the least recently used idle model first; ``priority`` evicts the
    lowest priority first (LRU among equals) and never one of higher priority than the incoming model.
    ``affinity_max_imbalance``: a sticky affinity key stays on its neuron while that neuron's load
    (in-flight + queued) exceeds the least loaded one's by at most this much.
    ``min_residency_s``: a freshly loaded model cannot be evicted for this long, so the requests that
    waited for it are served before another model may take its place (no A-B-A thrash).
    ``unhealthy_after``: consecutive failed polls (errors, not timeouts) before a neuron leaves routing.
    ``frozen_after_s``: a slow neuron whose health check has had no answer for this long is frozen, and
    what the fleet has in flight there is cut and fails over.
    ``stream_idle_timeout_s``: a started answer that sends no byte for this long is cut (a cortex neuron
    sends keep-alives every ``keepalive_s`` while it has nothing else to send).
    """

    eviction: EvictionStrategy = field(
        default="lru",
        metadata=_doc(
            "`lru` evicts the least recently used idle model first; `priority` evicts the lowest "
            "priority first (LRU among equals) and never one of higher priority than the incoming model.",
            "priority",
        ),
    )
    max_load_wait_s: float = field(
        default=300.0, metadata=_doc("The longest a request waits for a cold load of its model.", 900)
    )
    retry_attempts: int = field(
        default=3,
        metadata=_doc("Attempts per request, across neurons, on connection failures and 5xx.", 5),
    )
    backoff_base_s: float = field(
        default=0.05, metadata=_doc("The first retry's backoff; it doubles per attempt.", 0.1)
    )
    backoff_max_s: float = field(default=2.0, metadata=_doc("The longest backoff between attempts.", 5))
    backoff_jitter: float = field(
        default=0.5, metadata=_doc("The fraction of each backoff that is random, in [0, 1].", 0.25)
    )
    poll_interval_s: float = field(
        default=2.0,
        metadata=_doc("How often every neuron's `/health`, `/models` and `/discovery` are read.", 5),
    )
    poll_timeout_s: float = field(default=2.0, metadata=_doc("The timeout of one poll.", 5))
    unhealthy_after: int = field(
        default=3,
        metadata=_doc(
            "Failed polls in a row (error answers; a timeout only makes a neuron slow) before a neuron "
            "leaves routing.",
            2,
        ),
    )
    frozen_after_s: float = field(
        default=10.0,
        metadata=_doc(
            "A slow neuron (a poll timed out) whose health check then has no answer at all for this long "
            "is frozen (SIGSTOP, a hung host): what the fleet has in flight there and is silent is cut, "
            "and fails over or ends with an error event. A neuron starved of CPU answers late and is not.",
            30,
        ),
    )
    stream_idle_timeout_s: float = field(
        default=30.0,
        metadata=_doc(
            "A started answer that sends no byte for this long is cut (a cortex neuron sends a keep-alive "
            "every `keepalive_s` while it has nothing else to send).",
            60,
        ),
    )
    affinity_max_imbalance: int = field(
        default=4,
        metadata=_doc(
            "A sticky affinity key stays on its neuron while that neuron's load (in flight + queued) "
            "exceeds the least loaded one's by at most this much.",
            8,
        ),
    )
    min_residency_s: float = field(
        default=2.0,
        metadata=_doc(
            "A freshly loaded model cannot be evicted for this long, so the requests that waited for "
            "it are served before another model may take its place.",
            30,
        ),
    )
    ttl_sweep_interval_s: float = field(
        default=1.0, metadata=_doc("How often models past their `idle_ttl_s` are looked for.", 10)
    )
    recent_decisions: int = field(
        default=100, metadata=_doc("Routing, load and unload decisions kept for `status()`.", 500)
    )

    def __post_init__(self) -> None:
        if self.eviction not in get_args(EvictionStrategy):
            raise FleetConfigError(
                f"policy: 'eviction' must be one of {list(get_args(EvictionStrategy))}, got {self.eviction!r}"
            )
        positive = (
            "max_load_wait_s",
            "poll_interval_s",
            "poll_timeout_s",
            "ttl_sweep_interval_s",
            "frozen_after_s",
            "stream_idle_timeout_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise FleetConfigError(f"policy: {name!r} must be > 0")
        non_negative = ("backoff_base_s", "backoff_max_s", "affinity_max_imbalance", "min_residency_s")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise FleetConfigError(f"policy: {name!r} must be >= 0")
        if not 0 <= self.backoff_jitter <= 1:
            raise FleetConfigError("policy: 'backoff_jitter' must be within [0, 1]")
        for name in ("retry_attempts", "unhealthy_after", "recent_decisions"):
            if getattr(self, name) < 1:
                raise FleetConfigError(f"policy: {name!r} must be >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FleetPolicy:
        return cls(**_convert(cls, data, "policy"))


def load_models_toml(path: str | Path) -> list[ModelProfile]:
    """Read model profiles from ``path``: ``[[models]]`` array tables or ``[models.<id>]`` tables."""
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FleetConfigError(f"{path}: {exc}") from exc
    unknown = set(data) - {"models"}
    if unknown:
        raise FleetConfigError(f"{path}: unknown top-level keys {sorted(unknown)} (expected 'models')")
    return profiles_from_toml_value(data.get("models", []), str(path))


def profiles_from_toml_value(models: Any, where: str) -> list[ModelProfile]:
    """Profiles from the value of a ``models`` key: a list of tables or a table of tables by id."""
    if isinstance(models, Mapping):
        items = [
            {"id": model_id, **_table(body, f"{where}: models.{model_id}")}
            for model_id, body in models.items()
        ]
    elif isinstance(models, list):
        items = [_table(body, f"{where}: models[{i}]") for i, body in enumerate(models)]
    else:
        raise FleetConfigError(f"{where}: 'models' must be an array of tables or a table")
    profiles = [ModelProfile.from_dict(item) for item in items]
    ids = [p.id for p in profiles]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise FleetConfigError(f"{where}: duplicate model ids {duplicates}")
    return profiles


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise FleetConfigError(f"{where}: expected a table")
    return dict(value)


def _convert(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check ``data`` against ``cls``'s fields: unknown keys and wrong types raise, naming the key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise FleetConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(fields)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        converter = _CONVERTERS[str(fields[key].type)]
        try:
            out[key] = converter(value)
        except (TypeError, ValueError) as exc:
            raise FleetConfigError(f"{where}: key {key!r}: {exc}") from None
    return out


def _check(kind: type | tuple[type, ...], name: str) -> Callable[[Any], Any]:
    """A converter that accepts instances of ``kind`` only (a TOML boolean is never a number)."""

    def convert(value: Any) -> Any:
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise TypeError(f"expected {name}, got a boolean")
        if not isinstance(value, kind):
            raise TypeError(f"expected {name}, got {type(value).__name__}")
        return value

    return convert


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


def _number(value: Any) -> float:
    return float(_check((int, float), "a number")(value))


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of strings")
    return tuple(value)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": _check(str, "a string"),
    "str | None": _optional(_check(str, "a string")),
    "int": _check(int, "an integer"),
    "int | None": _optional(_check(int, "an integer")),
    "float": _number,
    "float | None": _optional(_number),
    "bool": _check(bool, "a boolean"),
    "tuple[str, ...]": _strings,
    "EvictionStrategy": _check(str, "a string"),
    "NeuronKind": _check(str, "a string"),
}
