"""cortex: local LLM inference across a fleet of GPU hosts behind one OpenAI + Anthropic endpoint.

The public names are imported lazily so that ``import cortex`` stays cheap: torch is only imported
when an engine is used, which keeps the gateway process (Fleet + translate) fast to start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cortex._version import __version__

if TYPE_CHECKING:
    from cortex import translate
    from cortex.engine.engine import Engine
    from cortex.engine.sampling_params import SamplingParams
    from cortex.fleet.fleet import Fleet

__all__ = ["Engine", "Fleet", "SamplingParams", "__version__", "translate"]

_LAZY: dict[str, tuple[str, str | None]] = {
    "Engine": ("cortex.engine.engine", "Engine"),
    "SamplingParams": ("cortex.engine.sampling_params", "SamplingParams"),
    "Fleet": ("cortex.fleet.fleet", "Fleet"),
    "translate": ("cortex.translate", None),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'cortex' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
