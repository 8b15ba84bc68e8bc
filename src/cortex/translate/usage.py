"""Token usage: OpenAI ``usage`` <-> Anthropic ``usage``.

OpenAI's ``prompt_tokens`` counts every prompt token; Anthropic's ``input_tokens`` excludes the ones
read from (``cache_read_input_tokens``) or written to (``cache_creation_input_tokens``) the prompt
cache. Reasoning tokens are ``completion_tokens_details.reasoning_tokens`` on one side and
``output_tokens_details.thinking_tokens`` on the other; both are part of the output total.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cortex.translate.fields import JSON, as_dict


def _count(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    return value if isinstance(value, int) else 0


def openai_usage_to_anthropic(value: Any, path: str) -> JSON:
    usage = as_dict(value or {}, path)
    prompt = as_dict(usage.get("prompt_tokens_details") or {}, f"{path}.prompt_tokens_details")
    completion = as_dict(usage.get("completion_tokens_details") or {}, f"{path}.completion_tokens_details")
    cache_read = _count(prompt, "cached_tokens")
    cache_write = _count(prompt, "cache_write_tokens")
    out: JSON = {
        "input_tokens": max(_count(usage, "prompt_tokens") - cache_read - cache_write, 0),
        "output_tokens": _count(usage, "completion_tokens"),
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }
    if completion.get("reasoning_tokens") is not None:
        out["output_tokens_details"] = {"thinking_tokens": _count(completion, "reasoning_tokens")}
    return out


def anthropic_usage_to_openai(value: Any, path: str) -> JSON:
    usage = as_dict(value or {}, path)
    cache_read = _count(usage, "cache_read_input_tokens")
    cache_write = _count(usage, "cache_creation_input_tokens")
    prompt_tokens = _count(usage, "input_tokens") + cache_read + cache_write
    completion_tokens = _count(usage, "output_tokens")
    prompt_details: JSON = {"cached_tokens": cache_read}
    if cache_write:
        prompt_details["cache_write_tokens"] = cache_write
    out: JSON = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": prompt_details,
    }
    details = as_dict(usage.get("output_tokens_details") or {}, f"{path}.output_tokens_details")
    if details.get("thinking_tokens") is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": _count(details, "thinking_tokens")}
    return out
