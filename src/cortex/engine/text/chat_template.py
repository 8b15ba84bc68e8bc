"""Hugging Face chat templates, rendered with the semantics of transformers' ``apply_chat_template``.

Checked against transformers 5.x (``utils/chat_template_utils.py``): an ``ImmutableSandboxedEnvironment``
with ``trim_blocks`` and ``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception``,
``strftime_now``, a ``tojson`` filter that does not HTML-escape (``ensure_ascii=False`` and transformers'
``indent`` / ``separators`` / ``sort_keys`` options), a ``dict`` global and a namespace that refuses
underscore names. Inputs are copied to plain JSON data, keys whose value is None are dropped, and
reasoning given as ``thinking`` / ``reasoning`` is also offered as ``reasoning_content``, as transformers
does. A template that raises becomes :class:`~cortex.engine.text.errors.ChatTemplateError` with the
template's message. Without a template the shipped ChatML fallback (``assets/chatml.jinja``) is used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cortex.engine.text.errors import ChatTemplateError, TokenizerLoadError

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def fallback_template() -> str:
    """The ChatML template used when a model folder ships none."""
    return resources.files("cortex.engine.text").joinpath("assets/chatml.jinja").read_text(encoding="utf-8")


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _TemplateDict:
    """``dict(...)`` for templates without exposing the type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """jinja2's namespace, refusing underscore-prefixed attributes (as transformers does)."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, got {name!r}."
            )


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(source)


def plain_data(value: Any) -> Any:
    """A copy of ``value`` made of plain JSON types (str/int/float/bool/None, dict, list, tuple)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {plain_data(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain_data(item) for item in value)
    if callable(getattr(value, "model_dump", None)):
        return plain_data(value.model_dump())
    return f"<{type(value).__name__}>"


def _template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"each message must be an object, got {type(message).__name__}")
        plain = {key: plain_data(value) for key, value in message.items() if value is not None}
        reasoning = next((plain[key] for key in _REASONING_FIELDS if plain.get(key) is not None), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        out.append(plain)
    return out


class ChatTemplate:
    """A compiled chat template; ``source=None`` selects the ChatML fallback."""

    def __init__(self, source: str | None) -> None:
        self.is_fallback = source is None
        self.source = fallback_template() if source is None else source
        try:
            self._template = _compile(self.source)
        except jinja2.exceptions.TemplateSyntaxError as exc:
            raise TokenizerLoadError(f"the chat template does not compile: {exc}") from exc

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """Render like ``apply_chat_template(..., tokenize=False)``; template errors -> ChatTemplateError."""
        template_messages = _template_messages(messages)
        try:
            return str(
                self._template.render(
                    messages=template_messages,
                    tools=plain_data(list(tools)) if tools is not None else None,
                    documents=None,
                    add_generation_prompt=add_generation_prompt,
                    **plain_data(template_kwargs),
                )
            )
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(exc.message or str(exc)) from exc
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise ChatTemplateError(f"the chat template failed on these messages: {exc}") from exc
