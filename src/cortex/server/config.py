"""Server configuration: the ``cortex.toml`` schema, file loading, and environment overrides.

One file configures a deployment; each process reads the sections it needs:

    [gateway]   listen, metrics_listen, models_file, state_dir, limits     (``cortex serve``)
    [responses] the gateway's Responses store: path, retention, size limit  (``cortex serve``)
    [auth]      api_keys                                                    (gateway and neuron)
    [fleet]     eviction strategy and the rest of cortex.fleet's policy     (gateway)
    [[neurons]] name + url of each neuron                                   (gateway)
    [neuron]    listen, model folders, device, memory budget, admission     (``cortex neuron``)

``models.toml`` (model profiles and aliases) is parsed by :func:`cortex.fleet.profiles.load_models_toml`.
Everything is validated by pydantic once; errors name the file and the key (or the line, for TOML
syntax errors). This is the only module that reads environment variables (:data:`ENV_OVERRIDES`). It
does not import torch.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cortex.server.errors import ConfigError

DEFAULT_GATEWAY_PORT = 31313
DEFAULT_METRICS_PORT = 31314
DEFAULT_NEURON_PORT = 13131
DEFAULT_MODELS_DIR = "~/.cache/cortex/models"


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/cortex``, else ``~/.local/state/cortex`` (expanded where it is used)."""
    return Path(os.environ.get("XDG_STATE_HOME") or "~/.local/state") / "cortex"


RESPONSES_STORE_FILE = "responses.sqlite3"

_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _keep_alive_field() -> Any:
    """``keep_alive_s``, the same for the gateway's and a neuron's listener."""
    return Field(
        default=75,
        gt=0,
        description="How long an idle keep-alive connection is kept open between requests. Longer than "
        "clients keep idle connections in their pools (httpx and so the OpenAI and Anthropic SDKs: 5 s), "
        "so that a client never sends a request on a connection the server is closing at that moment "
        "(uvicorn's own 5 s default races httpx's 5 s: such a request is lost, reset unanswered).",
        examples=[30],
    )


def parse_bytes(value: Any) -> Any:
    """``1073741824``, ``"1GiB"``, ``"512 MB"`` -> bytes; anything else is left for pydantic to reject."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
        raise ValueError(f"not a size: {value!r} (use bytes or e.g. '24GiB', '512MB')")
    return value


ByteSize = Annotated[int, BeforeValidator(parse_bytes), Field(ge=0)]


class Listen(BaseModel):
    """A ``host:port`` listen address."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    host: str
    port: int = Field(ge=0, le=65535)

    @classmethod
    def parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            host, sep, port = value.rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(f"expected 'host:port', got {value!r}")
            return {"host": host.strip("[]") or "0.0.0.0", "port": int(port)}
        return value

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


ListenAddress = Annotated[Listen, BeforeValidator(Listen.parse)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GatewayConfig(_Section):
    """``cortex serve``: the one OpenAI + Anthropic endpoint clients talk to."""

    listen: ListenAddress = Field(
        default=Listen(host="127.0.0.1", port=DEFAULT_GATEWAY_PORT),
        description="The API's `host:port`.",
        examples=["0.0.0.0:31313"],
    )
    metrics_listen: ListenAddress | None = Field(
        default=Listen(host="127.0.0.1", port=DEFAULT_METRICS_PORT),
        description="`/metrics` (Prometheus) on its own listener.",
        examples=["127.0.0.1:31314"],
    )
    models_file: Path | None = Field(
        default=None,
        description="Model profiles and aliases (`models.toml`), relative to cortex.toml's folder. "
        "Unset: `models.toml` beside cortex.toml, if there is one.",
        examples=["models.toml"],
    )
    max_body_bytes: ByteSize = Field(
        default=32 * 2**20, description="Larger request bodies get 413.", examples=["64MiB"]
    )
    read_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Idle (per read) timeout on a neuron's answer, never a total timeout. Neurons send "
        "keep-alives every `[neuron] keepalive_s` while a prompt prefills, so keep that below this.",
        examples=[900],
    )
    keepalive_s: float = Field(
        default=10.0,
        gt=0,
        description="Keep-alive interval (an SSE comment, or an Anthropic `ping`) while a stream is "
        "silent; also how long the gateway waits for a stream's first chunk before it starts the "
        "response.",
        examples=[5],
    )
    keep_alive_s: int = _keep_alive_field()
    request_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request must arrive whole (head and body) within this long of its connection "
        "opening or of its first byte; else its connection is closed (after a 408 while the head is "
        "incomplete), so a silent or trickling (slowloris) connection is not held. Responses are not "
        "bounded by it. The metrics listener's too.",
        examples=[60],
    )
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="The folder of what the gateway keeps itself: the Responses store. Default "
        "`$XDG_STATE_HOME/cortex`, else `~/.local/state/cortex`.",
        examples=["/var/lib/cortex"],
    )
    access_log: bool = Field(
        default=False,
        description="One log line per request (`cortex serve --access-log`); off because it costs CPU "
        "per request.",
        examples=[True],
    )


class ResponsesConfig(_Section):
    """The gateway's durable Responses store (:mod:`cortex.server.responses_store`)."""

    path: Path | None = Field(
        default=None,
        description="The SQLite file, relative to cortex.toml's folder. Unset: "
        "`<gateway.state_dir>/responses.sqlite3`. One gateway process per file.",
        examples=["/var/lib/cortex/responses.sqlite3"],
    )
    retention_s: float = Field(
        default=30 * 86400.0,
        ge=0,
        description="Stored responses older than this are deleted; 0 keeps them until deleted.",
        examples=[604800],
    )
    max_bytes: ByteSize = Field(
        default=2**30,
        description="Beyond this size the oldest responses are deleted first; 0: no limit.",
        examples=["4GiB"],
    )


def _non_empty_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    if any(not key.strip() for key in keys):
        raise ValueError("API keys must not be empty strings")
    return keys


ApiKeys = Annotated[tuple[str, ...], AfterValidator(_non_empty_keys)]


class AuthConfig(_Section):
    """Who may call the gateway."""

    api_keys: ApiKeys = Field(
        default=(),
        description="Keys the gateway accepts, as `x-api-key` or `Authorization: Bearer`; empty: no "
        "key needed. `/` and `/health` never need one.",
        examples=[["sk-local-1", "sk-local-2"]],
    )


class NeuronEntry(_Section):
    """One upstream of the gateway: a cortex neuron or any OpenAI-compatible server."""

    name: str = Field(
        min_length=1,
        description="Unique; used in routing decisions, status and metric labels.",
        examples=["gpu1"],
    )
    url: str = Field(
        pattern=r"^https?://", description="The upstream's base URL.", examples=["http://10.0.0.11:13131"]
    )
    api_key: str | None = Field(
        default=None,
        description="Sent to that upstream as `Authorization: Bearer` (its `[neuron] api_keys`, or a "
        "cloud endpoint's key).",
        examples=["sk-neuron"],
    )
    kind: Literal["cortex", "openai"] = Field(
        default="cortex",
        description="`cortex`: a cortex neuron. `openai`: any OpenAI-compatible server (vLLM, SGLang, "
        "llama.cpp, Ollama, a cloud endpoint): its `/v1/models` is its catalogue, never loaded or "
        "unloaded (docs/fleet.md).",
        examples=["openai"],
    )


class CatalogueEntry(_Section):
    """A model the operator names explicitly: an id and the folder it loads from."""

    id: str = Field(min_length=1, description="The model's id.", examples=["qwen3.6-27b"])
    path: Path = Field(
        description="Its Hugging Face folder, anywhere on the host.", examples=["/data/models/Qwen3.6-27B"]
    )
    tensor_parallel: int | None = Field(
        default=None,
        ge=1,
        description="The devices (rank processes) this model is split over (docs/parallel.md). Unset: "
        "the length of `devices`, else `[neuron] tensor_parallel`.",
        examples=[2],
    )
    devices: tuple[Annotated[int, Field(ge=0)], ...] | None = Field(
        default=None,
        description="The GPU indices it loads on, one per rank. Unset: the GPUs with the most room.",
        examples=[[0, 1]],
    )

    @model_validator(mode="after")
    def _one_device_per_rank(self) -> CatalogueEntry:
        if self.devices is not None:
            if len(set(self.devices)) != len(self.devices) or not self.devices:
                raise ValueError(f"devices must be distinct GPU indices, got {list(self.devices)}")
            if self.tensor_parallel is not None and self.tensor_parallel != len(self.devices):
                raise ValueError(
                    f"devices lists {len(self.devices)} GPUs for tensor_parallel={self.tensor_parallel}"
                )
        return self


class NeuronConfig(_Section):
    """``cortex neuron`` (and the embedded neuron of ``cortex serve``): one host's models."""

    listen: ListenAddress = Field(
        default=Listen(host="127.0.0.1", port=DEFAULT_NEURON_PORT),
        description="`host:port`.",
        examples=["0.0.0.0:13131"],
    )
    name: str = Field(default="neuron", description="This neuron's label in metrics.", examples=["gpu1"])
    model_dirs: tuple[Path, ...] = Field(
        default=(Path(DEFAULT_MODELS_DIR),),
        validate_default=True,
        description="A model id is the name of a folder directly under one of these.",
        examples=[["/data/models", "~/.cache/cortex/models"]],
    )
    catalogue: tuple[CatalogueEntry, ...] = Field(
        default=(),
        description="`[[neuron.catalogue]]` tables: models the operator names explicitly, from folders "
        "outside `model_dirs`.",
        examples=[[{"id": "qwen3.6-27b", "path": "/data/models/Qwen3.6-27B"}]],
    )
    device: str = Field(
        default="auto",
        description="`auto` (cuda when a GPU is visible, else cpu), `cpu`, `cuda` or `cuda:N`.",
        examples=["cuda:1"],
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="The weights' dtype: `auto` (bfloat16 on GPU, float32 on CPU), `float32`, "
        "`bfloat16` or `float16`.",
        examples=["bfloat16"],
    )
    memory_budget_bytes: ByteSize | None = Field(
        default=None,
        description="Loads that would exceed it (by estimate) get 507. Unset: the device's total memory "
        "(the host's RAM on cpu).",
        examples=["70GiB"],
    )
    cache_memory_bytes: ByteSize | None = Field(
        default=None,
        description="KV pages + recurrent-state slots + prefix-cache state snapshots per model "
        "(`snapshot_memory_fraction` of it goes to snapshots on hybrid models); part of the memory "
        "estimate. Unset: 1 GiB on CPU, 4 GiB on GPU.",
        examples=["8GiB"],
    )
    ssm_state_dtype: Literal["float32", "bfloat16"] = Field(
        default="float32",
        description="The Gated DeltaNet state's dtype (the engine's `ssm_state_dtype`): `float32`, as "
        "the checkpoints ask, or `bfloat16`, half the state bytes each decode step reads and writes, at "
        "some precision (docs/kernels.md).",
        examples=["bfloat16"],
    )
    max_model_len: int | None = Field(
        default=None,
        ge=16,
        description="Cap on prompt + output tokens. Unset: the model's own.",
        examples=[65536],
    )
    max_running: int = Field(
        default=32,
        ge=1,
        description="Requests running at once per model (the engine's `max_num_seqs`).",
        examples=[64],
    )
    tensor_parallel: int = Field(
        default=1,
        ge=1,
        description="The devices (rank processes, torch.distributed) each model is split over, unless "
        "its catalogue entry or the load names another; a model whose heads do not divide so loads on "
        "one device (docs/parallel.md).",
        examples=[2],
    )
    rank_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="A tensor-parallel model whose rank takes longer than this over one step (a wedged "
        "collective, a hung device) is stopped and reported `failed`; a dead rank is noticed at once.",
        examples=[30],
    )
    enable_prefix_caching: bool = Field(
        default=True,
        description="Reuse cached prompt prefixes across requests (the engine's "
        "`enable_prefix_caching`; docs/engine.md); `false` computes every prompt in full.",
        examples=[False],
    )
    snapshot_interval_blocks: int = Field(
        default=64,
        ge=1,
        description="During a long prefill, snapshot the Gated DeltaNet state every this many 16-token "
        "KV blocks (smaller: requests sharing part of a prompt resume closer to where they diverge, "
        "for more snapshot memory).",
        examples=[32],
    )
    snapshot_memory_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Share of `cache_memory_bytes` set aside for those snapshots on hybrid models (each as "
        "large as one request's state: 18.6 MiB for 0.8B, 147 MiB for 27B); a conversation keeps about "
        "two alive, so this over the snapshot size is roughly how many conversations stay warm "
        '(docs/engine.md, "Prefix caching").',
        examples=[0.3],
    )
    max_queue: int = Field(
        default=256, ge=0, description="Requests waiting per model; beyond it 429.", examples=[1024]
    )
    queue_timeout_s: float = Field(
        default=60.0, gt=0, description="The longest wait in the queue; then 503.", examples=[120]
    )
    retry_after_s: int = Field(
        default=2, ge=1, description="The `Retry-After` header of those 429 and 503 refusals.", examples=[5]
    )
    drain_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="On shutdown (SIGTERM), in-flight requests get this long to finish.",
        examples=[120],
    )
    keepalive_s: float = Field(
        default=10.0,
        gt=0,
        description="SSE keep-alive interval while a prompt prefills; keep it below the gateway's "
        "`read_timeout_s`.",
        examples=[5],
    )
    max_body_bytes: ByteSize = Field(
        default=32 * 2**20, description="Larger request bodies get 413.", examples=["64MiB"]
    )
    keep_alive_s: int = _keep_alive_field()
    request_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request must arrive whole (head and body) within this long of its connection "
        "opening or of its first byte; else its connection is closed (after a 408 while the head is "
        "incomplete), so a silent or trickling (slowloris) connection is not held.",
        examples=[60],
    )
    api_keys: ApiKeys = Field(
        default=(),
        description="Keys a caller (the gateway: its `[[neurons]] api_key`) must send as "
        "`Authorization: Bearer`; empty: none. `/health` never needs one.",
        examples=[["sk-neuron"]],
    )
    auto_load: bool = Field(
        default=True,
        description="A request for a loadable, unloaded model loads it first (else 404 `model_not_found`).",
        examples=[False],
    )
    access_log: bool = Field(default=False, description="One log line per request.", examples=[True])
    preload: tuple[str, ...] = Field(
        default=(), description="Model ids loaded at start.", examples=[["qwen3.6-27b"]]
    )

    @field_validator("model_dirs")
    @classmethod
    def _expand(cls, dirs: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(d.expanduser() for d in dirs)


class CortexConfig(_Section):
    """The whole of ``cortex.toml``. ``source`` is the file it came from (None: defaults only)."""

    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    responses: ResponsesConfig = ResponsesConfig()
    auth: AuthConfig = AuthConfig()
    fleet: dict[str, Any] = Field(
        default_factory=dict,
        description="The fleet policy, validated by `cortex.fleet.FleetPolicy.from_dict`.",
    )
    neurons: tuple[NeuronEntry, ...] = Field(
        default=(),
        description="The gateway's upstreams; none: `cortex serve` runs the embedded default (a local "
        "neuron).",
    )
    neuron: NeuronConfig = NeuronConfig()
    source: Path | None = Field(default=None, exclude=True, description="The file it came from.")

    @field_validator("neurons")
    @classmethod
    def _unique_names(cls, neurons: tuple[NeuronEntry, ...]) -> tuple[NeuronEntry, ...]:
        names = [n.name for n in neurons]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"neuron names must be unique, repeated: {duplicates}")
        return neurons

    def models_file(self) -> Path | None:
        """models.toml: as configured (relative to cortex.toml), else beside cortex.toml if present."""
        base = self.source.parent if self.source else Path.cwd()
        if self.gateway.models_file is not None:
            return base / self.gateway.models_file.expanduser()
        beside = base / "models.toml"
        return beside if self.source and beside.is_file() else None

    def responses_store_path(self) -> Path:
        """The Responses store's file: as configured (relative to cortex.toml), else in the state folder."""
        base = self.source.parent if self.source else Path.cwd()
        if self.responses.path is not None:
            return base / self.responses.path.expanduser()
        return base / self.gateway.state_dir.expanduser() / RESPONSES_STORE_FILE


# Environment variable -> (section, key). Values are parsed as the key's type by the same validators.
ENV_OVERRIDES: Mapping[str, tuple[str, str]] = {
    "CORTEX_LISTEN": ("gateway", "listen"),
    "CORTEX_METRICS_LISTEN": ("gateway", "metrics_listen"),
    "CORTEX_MODELS_FILE": ("gateway", "models_file"),
    "CORTEX_STATE_DIR": ("gateway", "state_dir"),
    "CORTEX_API_KEYS": ("auth", "api_keys"),  # comma-separated
    "CORTEX_NEURON_LISTEN": ("neuron", "listen"),
    "CORTEX_MODELS": ("neuron", "model_dirs"),  # os.pathsep-separated folders
    "CORTEX_DEVICE": ("neuron", "device"),
    "CORTEX_DTYPE": ("neuron", "dtype"),
    "CORTEX_MEMORY_BUDGET": ("neuron", "memory_budget_bytes"),
    "CORTEX_MAX_RUNNING": ("neuron", "max_running"),
    "CORTEX_PREFIX_CACHING": ("neuron", "enable_prefix_caching"),
}
CONFIG_PATH_ENV = "CORTEX_CONFIG"
# the list-valued keys, and what separates their items in an environment variable
LIST_SEPARATORS = {"api_keys": ",", "model_dirs": os.pathsep}


def _env_value(key: str, raw: str) -> Any:
    if key in LIST_SEPARATORS:
        return [part.strip() for part in raw.split(LIST_SEPARATORS[key]) if part.strip()]
    return raw


def _format_validation_error(error: ValidationError, file: str) -> ConfigError:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return ConfigError(f"{first['msg']}{more}", file=file, key=key or None)


def config_from_dict(
    data: Mapping[str, Any], *, source: Path | None = None, environ: Mapping[str, str] | None = None
) -> CortexConfig:
    """Validate ``data`` (a parsed cortex.toml) with the environment overrides applied on top."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {
        section: dict(value) if isinstance(value, Mapping) else value for section, value in data.items()
    }
    applied: list[str] = []
    for name, (section, key) in ENV_OVERRIDES.items():
        if environ.get(name):
            target = merged.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError("must be a table", file=str(source or "<config>"), key=section)
            target[key] = _env_value(key, environ[name])
            applied.append(name)
    try:
        return CortexConfig.model_validate({**merged, "source": source})
    except ValidationError as error:
        origin = str(source) if source else "<config>"
        if applied:
            origin += f" (with environment overrides {', '.join(applied)})"
        raise _format_validation_error(error, origin) from None


def load_config(path: Path | str | None = None, *, environ: Mapping[str, str] | None = None) -> CortexConfig:
    """Load cortex.toml from ``path`` (or ``$CORTEX_CONFIG``); no path: defaults plus environment."""
    environ = os.environ if environ is None else environ
    if path is None and environ.get(CONFIG_PATH_ENV):
        path = environ[CONFIG_PATH_ENV]
    if path is None:
        return config_from_dict({}, environ=environ)
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"invalid TOML: {error}", file=str(path)) from None
    return config_from_dict(data, source=path.resolve(), environ=environ)
