"""Tokenizer: a model folder's ``tokenizer.json`` plus its configs and chat template, as one object.

Reads, as transformers does: ``tokenizer.json`` (Hugging Face ``tokenizers``), ``tokenizer_config.json``
(special tokens, ``chat_template``), ``chat_template.jinja`` / ``chat_template.json`` (which take
precedence over the config's template), and the eos ids of ``generation_config.json`` / ``config.json``.
A folder without a chat template gets the ChatML fallback (see :mod:`cortex.engine.text.chat_template`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import decoders

from cortex.engine.text.chat_template import ChatTemplate
from cortex.engine.text.errors import TokenizerLoadError
from cortex.engine.text.messages import prepare_messages

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
# tokenizers' ``encode`` holds the GIL for its whole run (a 10 MB prompt stops every other thread of the
# process, the servers' event loops included, for most of a minute on a small CPU); ``encode_batch``
# releases it and costs ~25% more on short texts, so texts longer than this go through it
_GIL_FREE_CHARS = 8192


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_UNICODE = _bytes_to_unicode()
# str.translate table turning a byte-level token string into latin-1 text whose code points are the bytes.
_UNICODE_TO_LATIN1 = {ord(char): byte for byte, char in BYTE_TO_UNICODE.items()}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise TokenizerLoadError(f"{path} does not hold a JSON object")
    return data


def _token_content(value: Any) -> str | None:
    """tokenizer_config.json writes special tokens as strings or as AddedToken dicts."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _pick_template(value: Any) -> str | None:
    """``chat_template`` is a string, or a list of ``{"name", "template"}`` where "default" is used."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {item.get("name"): item.get("template") for item in value if isinstance(item, Mapping)}
        default = named.get("default")
        return default if isinstance(default, str) else None
    return None


def _as_id_list(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


class Tokenizer:
    """Encode, decode and render chats for one model.

    ``special_tokens`` maps the names templates read (``bos_token``, ``eos_token``, ...) to their text.
    ``eos_token_ids`` ends generation: the tokenizer's eos first, then generation_config's ids.
    """

    def __init__(
        self,
        tokenizer: tokenizers.Tokenizer,
        *,
        chat_template: str | None = None,
        special_tokens: Mapping[str, str] | None = None,
        eos_token_ids: Sequence[int] = (),
        path: Path | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        self.path = path  # the tokenizer.json it was read from, if any
        self.special_tokens: dict[str, str] = dict(special_tokens or {})
        self.chat_template = ChatTemplate(chat_template)
        eos = self.special_tokens.get("eos_token")
        eos_id = tokenizer.token_to_id(eos) if eos is not None else None
        ids = ([eos_id] if eos_id is not None else []) + list(eos_token_ids)
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(ids))  # first occurrences, in order
        pad = self.special_tokens.get("pad_token")
        self.pad_token_id: int | None = tokenizer.token_to_id(pad) if pad is not None else None
        self.special_token_ids: frozenset[int] = frozenset(
            token_id for token_id, added in tokenizer.get_added_tokens_decoder().items() if added.special
        )

    @classmethod
    def from_folder(cls, path: str | Path) -> Tokenizer | None:
        """Load the tokenizer of a model folder; None when the folder has no tokenizer.json."""
        folder = Path(path)
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            return None
        try:
            backend = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise TokenizerLoadError(f"cannot load {tokenizer_file}: {exc}") from exc
        config = (
            _read_json(folder / "tokenizer_config.json")
            if (folder / "tokenizer_config.json").is_file()
            else {}
        )
        template = _pick_template(config.get("chat_template"))
        if (folder / "chat_template.json").is_file():
            template = (
                _pick_template(_read_json(folder / "chat_template.json").get("chat_template")) or template
            )
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        special_tokens = {
            name: content
            for name in SPECIAL_TOKEN_NAMES
            if (content := _token_content(config.get(name))) is not None
        }
        eos_ids: list[int] = []
        for name in ("generation_config.json", "config.json"):
            if (folder / name).is_file():
                eos_ids += _as_id_list(_read_json(folder / name).get("eos_token_id"))
        return cls(
            backend,
            chat_template=template,
            special_tokens=special_tokens,
            eos_token_ids=eos_ids,
            path=tokenizer_file,
        )

    def to_json(self) -> str:
        """The ``tokenizers`` tokenizer as tokenizer.json text."""
        return str(self._tokenizer.to_str())

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        """Text -> ids. Special tokens written in ``text`` become their ids (as transformers does). A long
        text is tokenised without holding the GIL, so other threads run meanwhile."""
        if len(text) > _GIL_FREE_CHARS:
            [encoding] = self._tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)
        else:
            encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return list(encoding.ids)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary string of ``token_id`` (byte-level form for BPE vocabularies), or None."""
        token = self._tokenizer.id_to_token(token_id)
        return None if token is None else str(token)

    def token_to_id(self, token: str) -> int | None:
        token_id = self._tokenizer.token_to_id(token)
        return None if token_id is None else int(token_id)

    @property
    def is_byte_level(self) -> bool:
        """True when ids map to raw bytes (GPT-2 style byte-level BPE), as for Qwen."""
        return isinstance(self._tokenizer.decoder, decoders.ByteLevel)

    @cached_property
    def _token_bytes(self) -> list[bytes | None]:
        table: list[bytes | None] = [None] * self.vocab_size
        added = self._tokenizer.get_added_tokens_decoder()
        for token, token_id in self._tokenizer.get_vocab(with_added_tokens=False).items():
            if token_id < len(table):
                table[token_id] = token.translate(_UNICODE_TO_LATIN1).encode("latin-1", errors="replace")
        for token_id, added_token in added.items():
            if token_id < len(table):
                table[token_id] = added_token.content.encode("utf-8")
        return table

    def token_bytes(self, token_id: int) -> bytes | None:
        """The raw bytes a byte-level token stands for (added tokens: their UTF-8 text); None if unknown.

        Only meaningful when :attr:`is_byte_level`.
        """
        table = self._token_bytes
        return table[token_id] if 0 <= token_id < len(table) else None

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        """Render ``messages`` (OpenAI-style dicts) to the prompt text.

        Messages are first prepared by :func:`~cortex.engine.text.messages.prepare_messages`; special token
        strings are passed to the template as transformers does, and ``template_kwargs`` (e.g.
        ``enable_thinking=False``) override them. Raises ChatTemplateError when the template refuses.
        """
        return self.chat_template.render(
            prepare_messages(messages),
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens, **template_kwargs},
        )
