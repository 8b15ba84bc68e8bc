"""Error envelopes: shapes checked with the SDKs' error models, and the status tables."""

from __future__ import annotations

import pytest
from anthropic.types.shared.error_response import ErrorResponse

from cortex.errors import InvalidRequestError
from cortex.translate import (
    TranslationError,
    anthropic_error,
    anthropic_error_to_openai,
    anthropic_error_type_for_status,
    openai_error,
    openai_error_to_anthropic,
    openai_error_type_for_status,
    status_for_anthropic_error_type,
    status_for_openai_error_type,
)

STATUS_TABLE = [
    # status, anthropic type, openai type, openai code
    (400, "invalid_request_error", "invalid_request_error", None),
    (401, "authentication_error", "authentication_error", None),
    (403, "permission_error", "permission_error", None),
    (404, "not_found_error", "not_found_error", None),
    (413, "request_too_large", "invalid_request_error", "request_too_large"),
    (429, "rate_limit_error", "rate_limit_error", None),
    (500, "api_error", "server_error", None),
    (503, "overloaded_error", "server_error", "overloaded"),
    (529, "overloaded_error", "server_error", None),
    (504, "timeout_error", "server_error", None),
    (418, "invalid_request_error", "invalid_request_error", None),
    (502, "api_error", "server_error", None),
]


@pytest.mark.parametrize(("status", "anthropic_type", "openai_type", "code"), STATUS_TABLE)
def test_status_tables(status, anthropic_type, openai_type, code):
    assert anthropic_error_type_for_status(status) == anthropic_type
    assert openai_error_type_for_status(status) == openai_type
    body = anthropic_error(status, "nope")
    assert body == {"type": "error", "error": {"type": anthropic_type, "message": "nope"}}
    if anthropic_type != "request_too_large":  # documented by Anthropic, absent from the SDK's union
        ErrorResponse.model_validate(body)
    assert openai_error(status, "nope") == {
        "error": {"message": "nope", "type": openai_type, "param": None, "code": code}
    }


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("invalid_request_error", 400),
        ("authentication_error", 401),
        ("billing_error", 402),
        ("permission_error", 403),
        ("not_found_error", 404),
        ("request_too_large", 413),
        ("rate_limit_error", 429),
        ("api_error", 500),
        ("timeout_error", 504),
        ("overloaded_error", 529),
        ("something_new", 500),
    ],
)
def test_status_for_anthropic_error_type(error_type, status):
    assert status_for_anthropic_error_type(error_type) == status


@pytest.mark.parametrize(
    ("error_type", "status"),
    [
        ("invalid_request_error", 400),
        ("authentication_error", 401),
        ("permission_error", 403),
        ("not_found_error", 404),
        ("rate_limit_error", 429),
        ("insufficient_quota", 429),
        ("server_error", 500),
        ("BadRequestError", 500),
    ],
)
def test_status_for_openai_error_type(error_type, status):
    assert status_for_openai_error_type(error_type) == status


def test_explicit_type_param_and_code():
    assert openai_error(400, "bad", type="x", param="messages[0]", code="c") == {
        "error": {"message": "bad", "type": "x", "param": "messages[0]", "code": "c"}
    }
    assert anthropic_error(500, "m", type="overloaded_error")["error"]["type"] == "overloaded_error"


def test_converting_error_bodies_between_dialects():
    assert openai_error_to_anthropic(503, openai_error(503, "busy")) == (529, anthropic_error(529, "busy"))
    assert openai_error_to_anthropic(404, {"detail": "no model"}) == (404, anthropic_error(404, "no model"))
    assert openai_error_to_anthropic(502, "<html>Bad gateway</html>\n") == (
        502,
        anthropic_error(502, "<html>Bad gateway</html>"),
    )
    assert anthropic_error_to_openai(529, anthropic_error(529, "busy")) == (503, openai_error(503, "busy"))
    assert anthropic_error_to_openai(429, {"message": "slow down"}) == (429, openai_error(429, "slow down"))
    assert anthropic_error_to_openai(500, None) == (500, openai_error(500, "upstream error (HTTP 500)"))
    assert anthropic_error_to_openai(500, {"error": {"message": 5}}) == (
        500,
        openai_error(500, "upstream error (HTTP 500)"),
    )


def test_translation_error_is_an_invalid_request_with_a_param():
    error = TranslationError("bad", param="messages[0].role")
    assert isinstance(error, InvalidRequestError)
    assert error.param == "messages[0].role"
    assert openai_error(400, error.message, param=error.param)["error"]["param"] == "messages[0].role"
