"""The merged catalogue: every configured, loaded, loading or loadable model with where it lives.

Pure functions over profiles and neuron state. Model ids are canonical: a profile's ``id`` (neurons
may know it as ``neuron_model``), or the neuron's own id for models without a profile. Only healthy
neurons contribute placements. Aliases resolve exact names before glob patterns, profiles in order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cortex.fleet.poller import NeuronState
from cortex.fleet.profiles import ModelProfile

__all__ = ["CatalogueEntry", "anthropic_models", "build_catalogue", "openai_models", "resolve_model"]


@dataclass(frozen=True)
class CatalogueEntry:
    id: str
    display_name: str
    aliases: tuple[str, ...]
    loaded_on: tuple[str, ...]
    loading_on: tuple[str, ...]
    loadable_on: tuple[str, ...]
    memory_bytes: int | None
    max_model_len: int | None
    priority: int
    pinned: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "display_name": self.display_name,
            "aliases": list(self.aliases),
            "loaded_on": list(self.loaded_on),
            "loading_on": list(self.loading_on),
            "loadable_on": list(self.loadable_on),
            "memory_bytes": self.memory_bytes,
            "max_model_len": self.max_model_len,
            "priority": self.priority,
            "pinned": self.pinned,
        }


def build_catalogue(
    profiles: Sequence[ModelProfile], states: Sequence[NeuronState], canonical: Callable[[str], str]
) -> list[CatalogueEntry]:
    """One entry per canonical model: profiles first (in config order), then neuron-only models by id."""
    loaded: dict[str, list[str]] = {}
    loading: dict[str, list[str]] = {}
    loadable: dict[str, list[str]] = {}
    memory: dict[str, int] = {}
    max_len: dict[str, int] = {}
    for state in states:
        if not state.healthy:
            continue
        for upstream_id, entry in state.models.items():
            status = entry.get("status")
            target = loaded if status == "loaded" else loading if status == "loading" else None
            if target is not None:
                target.setdefault(canonical(upstream_id), []).append(state.name)
            _shortest(max_len, canonical(upstream_id), entry.get("max_model_len"))
        for upstream_id, entry in state.loadable.items():
            model = canonical(upstream_id)
            loadable.setdefault(model, []).append(state.name)
            if isinstance(entry.get("estimated_memory_bytes"), int):
                memory[model] = max(memory.get(model, 0), entry["estimated_memory_bytes"])
            _shortest(max_len, model, entry.get("max_model_len"))
    by_id = {p.id: p for p in profiles}
    unprofiled = sorted((set(loaded) | set(loading) | set(loadable)) - set(by_id))
    entries = []
    for model in [p.id for p in profiles] + unprofiled:
        profile = by_id.get(model)
        allowed = profile.allows if profile else (lambda _: True)
        entries.append(
            CatalogueEntry(
                id=model,
                display_name=(profile.display_name if profile else None) or model,
                aliases=profile.aliases if profile else (),
                loaded_on=tuple(sorted(loaded.get(model, []))),
                loading_on=tuple(sorted(loading.get(model, []))),
                loadable_on=tuple(sorted(n for n in loadable.get(model, []) if allowed(n))),
                memory_bytes=(profile.memory_bytes if profile else None) or memory.get(model),
                max_model_len=(profile.max_model_len if profile else None) or max_len.get(model),
                priority=profile.priority if profile else 0,
                pinned=profile.pinned if profile else False,
            )
        )
    return entries


def _shortest(max_len: dict[str, int], model: str, value: Any) -> None:
    """Keep the shortest context any neuron reports for ``model`` (what every placement can serve)."""
    if isinstance(value, int) and not isinstance(value, bool):
        max_len[model] = min(max_len.get(model, value), value)


def resolve_model(name: str, profiles: Sequence[ModelProfile], known_ids: Collection[str]) -> str | None:
    """Canonical id for ``name``: a profile id, a known model id, a ``neuron_model``, an exact alias,
    then the first glob alias that matches; ``None`` if nothing does."""
    for profile in profiles:
        if name in (profile.id, profile.neuron_model):
            return profile.id
    if name in known_ids:
        return name
    for profile in profiles:
        if name in profile.aliases:
            return profile.id
    for profile in profiles:
        if profile.matches_alias(name):
            return profile.id
    return None


def _exact_aliases(entry: CatalogueEntry) -> list[str]:
    return [a for a in entry.aliases if not any(c in a for c in "*?[")]


def _window(entry: CatalogueEntry) -> dict[str, Any]:
    """The model's context in OpenAI's shape as vLLM reports it (a request can use all of it)."""
    return {} if entry.max_model_len is None else {"max_model_len": entry.max_model_len}


def openai_models(entries: Sequence[CatalogueEntry], *, created: int) -> dict[str, Any]:
    """``GET /v1/models`` in OpenAI's shape, with ``max_model_len`` (vLLM's field) where known; exact
    (non-glob) aliases are listed as models too."""
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "cortex", **_window(entry)}
        for entry in entries
        for name in [entry.id, *_exact_aliases(entry)]
    ]
    return {"object": "list", "data": data}


def anthropic_models(entries: Sequence[CatalogueEntry], *, created: int) -> dict[str, Any]:
    """``GET /v1/models`` in Anthropic's shape (one page holding everything), with the Models API's
    ``max_input_tokens`` and ``max_tokens`` where the context is known (cortex clamps ``max_tokens`` to
    what fits after the prompt, so both are the whole context)."""
    created_at = datetime.fromtimestamp(created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = [
        {
            "type": "model",
            "id": name,
            "display_name": entry.display_name,
            "created_at": created_at,
            "lifecycle": "active",
            **(
                {}
                if entry.max_model_len is None
                else {"max_input_tokens": entry.max_model_len, "max_tokens": entry.max_model_len}
            ),
        }
        for entry in entries
        for name in [entry.id, *_exact_aliases(entry)]
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
