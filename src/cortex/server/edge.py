"""The HTTP edge shared by the neuron and the gateway: request bodies in, errors out in the caller's dialect.

- Bodies: :func:`read_body` reads a request body (Litestar enforces the app's ``request_max_body_size``
  while reading: 413 as soon as the announced or received length passes it), parses it as strict JSON
  (:mod:`cortex.server.strict_json`) and checks it against the route's typed body
  (:mod:`cortex.server.wire.bodies`); every failure is a 400 naming the field. A body over
  :data:`OFF_LOOP_BYTES` is parsed and checked in a worker thread, so a large request never stalls the
  event loop for other clients. :func:`body_schema` puts the typed body into the route's OpenAPI schema.
- Dialect: Anthropic for ``/v1/messages*``, OpenAI for ``/v1/chat/completions``, ``/v1/completions``
  and ``/v1/responses*``;
  elsewhere (``/v1/models``, auth failures on other routes) Anthropic when the request carries an
  ``anthropic-version`` or ``x-api-key`` header (Claude Code, the anthropic SDK).
- Errors: every error the library raises on purpose maps to a status here; anything else is a 500
  whose details go to the log only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from litestar import Request, Response
from litestar.di import Provide
from litestar.exceptions import HTTPException
from pydantic import BaseModel, ValidationError

from cortex.errors import CortexError, InvalidRequestError
from cortex.server import strict_json
from cortex.server.errors import OverloadedError
from cortex.translate import anthropic_error, openai_error

Dialect = Literal["openai", "anthropic"]
log = logging.getLogger("cortex.server")

OFF_LOOP_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 1000  # an error message longer than this is cut, so no input comes back whole
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


async def read_body(request: Request[Any, Any, Any], model: type[BaseModel]) -> dict[str, Any]:
    """The request body: a JSON object valid for ``model`` (the route's typed body); 400 otherwise."""
    raw = await request.body()
    if len(raw) > OFF_LOOP_BYTES:
        return await asyncio.to_thread(parse_body, raw, model)
    return parse_body(raw, model)


def parse_body(raw: bytes, model: type[BaseModel]) -> dict[str, Any]:
    """:func:`read_body` on bytes already read."""
    body = strict_json.loads(raw)
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    try:
        model.model_validate(body)
    except ValidationError as error:
        raise _invalid(error) from None
    return body


def _invalid(error: ValidationError) -> InvalidRequestError:
    """The first of pydantic's errors, as ``messages[0].content: Input should be ...``."""
    first = error.errors(include_url=False, include_input=False)[0]
    path = ""
    for part in first["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() and part.lower() not in _UNION_TAGS:  # skip union members' tags
            path += f".{part}" if path else part
    more = error.error_count() - 1
    also = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return InvalidRequestError(f"{path or 'body'}: {first['msg']}{also}", param=path or None)


def body_schema(model: type[BaseModel]) -> dict[str, Provide]:
    """Route ``dependencies`` that document ``model`` as the route's request body in its OpenAPI schema.

    Litestar documents the ``data`` parameter of every dependency a route declares; this one is never
    resolved (no handler asks for it), since :func:`read_body` reads the body itself.
    """

    async def never_called(data: Any) -> None:
        raise AssertionError("documentation only")

    never_called.__annotations__ = {"data": model, "return": None}
    return {"body_schema": Provide(never_called)}


def dialect_of(request: Request[Any, Any, Any]) -> Dialect:
    path = request.url.path
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path in ("/v1/chat/completions", "/v1/completions") or path.startswith("/v1/responses"):
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
    """What a caller is told: the error's own message (cut to MAX_MESSAGE_CHARS), or, for an error
    nobody raised on purpose, nothing of its details (those go to the log)."""
    if isinstance(error, HTTPException):
        message = str(error.detail)
    elif isinstance(error, CortexError):
        message = str(error)
    else:
        return "internal server error"
    if len(message) > MAX_MESSAGE_CHARS:
        return f"{message[:MAX_MESSAGE_CHARS]}... ({len(message)} characters in all)"
    return message


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


def error_envelope(dialect: Dialect, error: BaseException) -> dict[str, Any]:
    """The error body for ``error`` in ``dialect`` (also what a stream's error event carries); an
    error nobody raised on purpose is logged with its traceback and shown as "internal server error"."""
    if status_of(error) >= 500 and not isinstance(error, CortexError | HTTPException):
        log.exception("unexpected error", exc_info=error)
    param, code = getattr(error, "param", None), getattr(error, "code", None)
    return error_body(
        dialect,
        status_of(error),
        message_of(error),
        param=param if isinstance(param, str) else None,
        code=code if isinstance(code, str) else None,
    )


def error_response(dialect: Dialect, error: BaseException) -> Response[Any]:
    headers = {}
    if isinstance(error, OverloadedError):
        headers["Retry-After"] = str(error.retry_after_s)
    body = error_envelope(dialect, error)
    return Response(
        content=body, status_code=status_of(error), headers=headers, media_type="application/json"
    )


def exception_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    return error_response(dialect_of(request), error)
