"""Counting a request's prompt tokens at the gateway, for models served by ``openai`` neurons.

An OpenAI-compatible server cannot answer Anthropic's ``count_tokens`` and does not report the prompt's
size before it streams. When the model's profile names a ``tokenizer`` folder (tokenizer.json and chat
template, as in a model folder), the gateway renders the prompt with it exactly as a cortex neuron
would; without one it says so clearly. The tokenizer is read on first use (the engine's text package,
never torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cortex import translate
from cortex.errors import InvalidRequestError

if TYPE_CHECKING:
    from cortex.engine.text.tokenizer import Tokenizer
    from cortex.fleet import ModelProfile


class TokenCounter:
    def __init__(self) -> None:
        self._tokenizers: dict[str, Tokenizer] = {}

    def can_count(self, profile: ModelProfile | None) -> bool:
        return profile is not None and profile.tokenizer is not None

    def count_anthropic(self, profile: ModelProfile | None, body: dict[str, Any]) -> int:
        """The prompt tokens of an Anthropic Messages (or count_tokens) body."""
        request = translate.anthropic_to_openai_request({**body, "max_tokens": body.get("max_tokens", 1)})
        return self.count_openai(profile, request)

    def count_openai(self, profile: ModelProfile | None, body: dict[str, Any]) -> int:
        """The prompt tokens of an OpenAI Chat Completions body."""
        from cortex.engine.text.chat import render_chat_prompt

        tokenizer = self._tokenizer(profile)
        kwargs = dict(body.get("chat_template_kwargs") or {})
        return len(render_chat_prompt(tokenizer, body.get("messages") or [], body.get("tools"), **kwargs))

    def _tokenizer(self, profile: ModelProfile | None) -> Tokenizer:
        if profile is None or profile.tokenizer is None:
            name = profile.id if profile is not None else "this model"
            raise InvalidRequestError(
                f"cannot count tokens for {name}: it is served by an OpenAI-compatible server, which cannot "
                "count them; set `tokenizer` (a folder with its tokenizer.json) in its models.toml profile"
            )
        if profile.id not in self._tokenizers:
            from cortex.engine.text.tokenizer import Tokenizer

            tokenizer = Tokenizer.from_folder(Path(profile.tokenizer).expanduser())
            if tokenizer is None:
                raise InvalidRequestError(
                    f"{profile.tokenizer} has no tokenizer.json (profile {profile.id!r})"
                )
            self._tokenizers[profile.id] = tokenizer
        return self._tokenizers[profile.id]
