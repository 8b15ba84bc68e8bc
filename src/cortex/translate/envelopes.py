"""Error envelopes in both dialects, the status <-> error-type tables, and conversion between them.

    OpenAI:    {"error": {"message", "type", "param", "code"}}
    Anthropic: {"type": "error", "error": {"type", "message"}}

Anthropic answers "overloaded" with 529; OpenAI clients know 503 for it, so conversion maps
529 <-> 503 and keeps every other status. Bodies that are not envelopes (an HTML page, FastAPI's
``{"detail": ...}``) still convert: their message is kept and the type follows the status.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cortex.translate.fields import JSON

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_STATUSES = {error_type: status for status, error_type in _ANTHROPIC_TYPES.items() if status != 503}
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}
_OPENAI_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "insufficient_quota": 429,
    "server_error": 500,
}
_OPENAI_CODES = {413: "request_too_large", 503: "overloaded"}


def anthropic_error_type_for_status(status: int) -> str:
    """Anthropic's error ``type`` for an HTTP status (other 4xx: invalid_request_error; 5xx: api_error)."""
    return _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def openai_error_type_for_status(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status (other 4xx: invalid_request_error; 5xx: server_error)."""
    return _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def status_for_anthropic_error_type(error_type: str) -> int:
    """The HTTP status Anthropic sends with an error ``type``; unknown types are 500."""
    return _ANTHROPIC_STATUSES.get(error_type, 500)


def status_for_openai_error_type(error_type: str) -> int:
    """The HTTP status that goes with an OpenAI error ``type``; unknown types are 500."""
    return _OPENAI_STATUSES.get(error_type, 500)


def openai_error(
    status: int, message: str, *, type: str | None = None, param: str | None = None, code: str | None = None
) -> JSON:
    """An OpenAI error body for ``status``; ``type`` defaults from the status table."""
    return {
        "error": {
            "message": message,
            "type": type or openai_error_type_for_status(status),
            "param": param,
            "code": code or _OPENAI_CODES.get(status),
        }
    }


def anthropic_error(status: int, message: str, *, type: str | None = None) -> JSON:
    """An Anthropic error body for ``status``; ``type`` defaults from the status table."""
    return {
        "type": "error",
        "error": {"type": type or anthropic_error_type_for_status(status), "message": message},
    }


def openai_error_to_anthropic(status: int, body: Any) -> tuple[int, JSON]:
    """An OpenAI-dialect error response (status, body) as an Anthropic one."""
    anthropic_status = 529 if status == 503 else status
    return anthropic_status, anthropic_error(anthropic_status, _message(body, status))


def anthropic_error_to_openai(status: int, body: Any) -> tuple[int, JSON]:
    """An Anthropic-dialect error response (status, body) as an OpenAI one."""
    openai_status = 503 if status == 529 else status
    return openai_status, openai_error(openai_status, _message(body, status))


def openai_stream_error_to_anthropic(error: Any) -> JSON:
    """The ``error`` object of an OpenAI mid-stream error chunk as an Anthropic ``error`` event."""
    error = error if isinstance(error, Mapping) else {"message": str(error)}
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        status = code
    else:
        status = status_for_openai_error_type(str(error.get("type")))
    return openai_error_to_anthropic(status, {"error": error})[1]


def anthropic_stream_error_to_openai(event: Mapping[str, Any]) -> JSON:
    """An Anthropic ``error`` event as the ``{"error": {...}}`` chunk OpenAI streams send."""
    error = event.get("error")
    error_type = str(error.get("type")) if isinstance(error, Mapping) else "api_error"
    return anthropic_error_to_openai(status_for_anthropic_error_type(error_type), event)[1]


def _message(body: Any, status: int) -> str:
    """The human-readable message in any error body: ``error.message``, ``message``, ``detail``,
    the body itself when it is a string, else a generic one naming the status."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
        for key in ("message", "detail"):
            if isinstance(body.get(key), str):
                return str(body[key])
    if isinstance(body, str) and body.strip():
        return body.strip()
    return f"upstream error (HTTP {status})"
