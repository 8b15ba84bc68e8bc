"""The HTTP edge shared by the neuron and the gateway: request bodies in, errors out in the caller's dialect.

- Bodies: :func:`read_json` reads a request body (Litestar enforces the app's ``request_max_body_size``,
  413 beyond it) and parses it as JSON; :func:`read_object` also requires a JSON object and
  :func:`read_model_request` a string ``model``. Bad JSON is a 400 in the caller's dialect.
- Dialect: Anthropic for ``/v1/messages*``, OpenAI for ``/v1/chat/completions`` and ``/v1/completions``;
  elsewhere (``/v1/models``, auth failures on other routes) Anthropic when the request carries an
  ``anthropic-version`` or ``x-api-key`` header (Claude Code, the anthropic SDK).
- Errors: every error the library raises on purpose maps to a status here; anything else is a 500
  whose details go to the log only.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from litestar import Request, Response
from litestar.exceptions import HTTPException

from cortex.errors import CortexError, InvalidRequestError
from cortex.server.errors import OverloadedError
from cortex.translate import anthropic_error, openai_error

Dialect = Literal["openai", "anthropic"]
log = logging.getLogger("cortex.server")


async def read_json(request: Request[Any, Any, Any]) -> Any:
    """The request body parsed as JSON; 400 when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidRequestError(f"the request body is not valid JSON: {error}") from None


async def read_object(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The request body as a JSON object; 400 otherwise."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return body


async def read_model_request(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """A JSON object with a non-empty string ``model``; 400 otherwise."""
    body = await read_object(request)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequestError("model is required and must be a string", param="model")
    return body


def dialect_of(request: Request[Any, Any, Any]) -> Dialect:
    path = request.url.path
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path in ("/v1/chat/completions", "/v1/completions"):
        return "openai"
    headers = request.headers
    return "anthropic" if "anthropic-version" in headers or "x-api-key" in headers else "openai"


def error_body(
    dialect: Dialect, status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    if dialect == "anthropic":
        return anthropic_error(status, message)
    return openai_error(status, message, param=param, code=code)


def status_of(error: BaseException) -> int:
    """The HTTP status for an exception (500 for anything unexpected)."""
    status = getattr(error, "http_status", None)
    if isinstance(status, int):
        return status
    if isinstance(error, InvalidRequestError):
        return 400
    if isinstance(error, HTTPException):
        return error.status_code
    return 500


def message_of(error: BaseException) -> str:
    if isinstance(error, HTTPException):
        return str(error.detail)
    if isinstance(error, CortexError):
        return str(error)
    return "internal server error"


def error_type_name(error: BaseException) -> str:
    """A bounded label for metrics: the status class of the error."""
    return {
        400: "invalid_request",
        401: "authentication",
        404: "not_found",
        409: "conflict",
        413: "too_large",
        429: "rate_limited",
        503: "unavailable",
        507: "insufficient_storage",
    }.get(status_of(error), "server_error" if status_of(error) >= 500 else "client_error")


def error_response(dialect: Dialect, error: BaseException) -> Response[Any]:
    status = status_of(error)
    if status >= 500 and not isinstance(error, CortexError | HTTPException):
        log.exception("unexpected error", exc_info=error)
    headers = {}
    if isinstance(error, OverloadedError):
        headers["Retry-After"] = str(error.retry_after_s)
    param, code = getattr(error, "param", None), getattr(error, "code", None)
    body = error_body(
        dialect,
        status,
        message_of(error),
        param=param if isinstance(param, str) else None,
        code=code if isinstance(code, str) else None,
    )
    return Response(content=body, status_code=status, headers=headers, media_type="application/json")


def exception_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    return error_response(dialect_of(request), error)
