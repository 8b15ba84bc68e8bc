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
)

from cortex.server.errors import ConfigError

DEFAULT_GATEWAY_PORT = 31313
DEFAULT_METRICS_PORT = 31314
DEFAULT_NEURON_PORT = 13131
DEFAULT_MODELS_DIR = "~/.cache/cortex/models"
DEFAULT_STATE_DIR = "~/.local/state/cortex"
RESPONSES_STORE_FILE = "responses.sqlite3"

_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


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
    listen: ListenAddress = Listen(host="127.0.0.1", port=DEFAULT_GATEWAY_PORT)
    metrics_listen: ListenAddress | None = Listen(host="127.0.0.1", port=DEFAULT_METRICS_PORT)
    models_file: Path | None = None  # relative paths are taken from the cortex.toml's folder
    max_body_bytes: ByteSize = 32 * 2**20
    read_timeout_s: float = Field(default=600.0, gt=0)  # idle timeout on the upstream stream, not total
    keepalive_s: float = Field(default=10.0, gt=0)  # SSE comment / Anthropic ping interval while waiting
    state_dir: Path = Path(DEFAULT_STATE_DIR)  # what the gateway keeps: the Responses store
    access_log: bool = False  # one log line per request (costs CPU per request)


class ResponsesConfig(_Section):
    """The gateway's durable Responses store (:mod:`cortex.server.responses_store`)."""

    path: Path | None = None  # None: <gateway.state_dir>/responses.sqlite3; relative: from cortex.toml
    retention_s: float = Field(default=30 * 86400.0, ge=0)  # 0: keep until deleted
    max_bytes: ByteSize = 2**30  # oldest responses go first beyond it; 0: no limit


def _non_empty_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    if any(not key.strip() for key in keys):
        raise ValueError("API keys must not be empty strings")
    return keys


ApiKeys = Annotated[tuple[str, ...], AfterValidator(_non_empty_keys)]


class AuthConfig(_Section):
    api_keys: ApiKeys = ()  # the gateway's keys; empty: no key required


class NeuronEntry(_Section):
    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")
    api_key: str | None = None  # sent to the neuron as Authorization: Bearer
    kind: Literal["cortex", "openai"] = "cortex"  # openai: any OpenAI-compatible server (docs/fleet.md)


class CatalogueEntry(_Section):
    """A model the operator names explicitly: an id and the folder it loads from."""

    id: str = Field(min_length=1)
    path: Path


class NeuronConfig(_Section):
    listen: ListenAddress = Listen(host="127.0.0.1", port=DEFAULT_NEURON_PORT)
    name: str = "neuron"
    model_dirs: tuple[Path, ...] = Field(default=(Path(DEFAULT_MODELS_DIR),), validate_default=True)
    catalogue: tuple[CatalogueEntry, ...] = ()
    device: str = "auto"  # "auto": cuda when available, else cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    memory_budget_bytes: ByteSize | None = None  # None: the device's total memory (RAM on cpu)
    cache_memory_bytes: ByteSize | None = None  # per model; None: the engine's default
    max_model_len: int | None = Field(default=None, ge=16)
    max_running: int = Field(default=32, ge=1)  # concurrent requests per model (= engine max_num_seqs)
    enable_prefix_caching: bool = True  # reuse cached prompt prefixes across requests (the engine's option)
    snapshot_interval_blocks: int = Field(default=64, ge=1)  # Gated DeltaNet state snapshot spacing
    snapshot_memory_fraction: float = Field(default=0.2, ge=0, lt=1)  # of cache_memory_bytes, for snapshots
    max_queue: int = Field(default=256, ge=0)  # requests waiting for a running slot, per model
    queue_timeout_s: float = Field(default=60.0, gt=0)
    retry_after_s: int = Field(default=2, ge=1)
    drain_timeout_s: float = Field(default=30.0, ge=0)
    keepalive_s: float = Field(default=10.0, gt=0)
    max_body_bytes: ByteSize = 32 * 2**20
    api_keys: ApiKeys = ()  # keys a gateway must send (its [[neurons]] api_key); empty: none
    auto_load: bool = True  # a request for a loadable but unloaded model loads it first
    access_log: bool = False  # one log line per request
    preload: tuple[str, ...] = ()

    @field_validator("model_dirs")
    @classmethod
    def _expand(cls, dirs: tuple[Path, ...]) -> tuple[Path, ...]:
        return tuple(d.expanduser() for d in dirs)


class CortexConfig(_Section):
    """The whole of ``cortex.toml``. ``source`` is the file it came from (None: defaults only)."""

    gateway: GatewayConfig = GatewayConfig()
    responses: ResponsesConfig = ResponsesConfig()
    auth: AuthConfig = AuthConfig()
    fleet: dict[str, Any] = Field(default_factory=dict)  # validated by FleetPolicy.from_dict
    neurons: tuple[NeuronEntry, ...] = ()
    neuron: NeuronConfig = NeuronConfig()
    source: Path | None = None

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
_LIST_SEPARATORS = {"api_keys": ",", "model_dirs": os.pathsep}


def _env_value(key: str, raw: str) -> Any:
    if key in _LIST_SEPARATORS:
        return [part.strip() for part in raw.split(_LIST_SEPARATORS[key]) if part.strip()]
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
