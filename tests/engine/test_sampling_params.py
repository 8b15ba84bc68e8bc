"""SamplingParams validation and default resolution."""

from __future__ import annotations

import pytest

from cortex.engine.sampling_params import FALLBACK_DEFAULTS, SamplingParams
from cortex.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_tokens", -1, "max_tokens must be at least 1"),
        ("max_tokens", 0, "max_tokens must be at least 1"),
        ("temperature", -0.1, "temperature must be between 0 and 100"),
        ("top_p", 1.5, r"top_p must be in \(0, 1\]"),
        ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
        ("top_k", -2, "top_k must be -1, 0"),
        ("top_k", 2**63, "top_k must be -1, 0"),
        ("min_p", 1.1, r"min_p must be in \[0, 1\]"),
        ("seed", -5, "seed must be a non-negative"),
        ("presence_penalty", 3.0, "presence_penalty must be between -2 and 2"),
        ("frequency_penalty", -2.5, "frequency_penalty must be between -2 and 2"),
        ("repetition_penalty", 0.0, r"repetition_penalty must be in \(0, 10\]"),
        ("logprobs", 21, "logprobs must be between 0 and 20"),
        ("stop", [""], "stop strings must not be empty"),
        ("stop", [1], "stop must be a str"),
        ("stop", [f"s{i}" for i in range(65)], "at most 64 distinct stop strings"),
        ("stop", ["x" * 1025], "of at most 1024 characters"),
        ("stop_token_ids", [-1], "stop_token_ids must be between 0 and"),
        ("stop_token_ids", [2**64], "stop_token_ids must be between 0 and"),
    ],
)
def test_nonsense_is_rejected_with_the_field_named(field, value, message):
    with pytest.raises(InvalidRequestError, match=message) as info:
        SamplingParams(**{field: value})
    assert info.value.param == field
    assert isinstance(info.value, ValueError)


def test_repeated_stop_strings_count_once():
    assert SamplingParams(stop=["x"] * 100_000 + ["y", "x"]).stop == ("x", "y")


def test_single_values_become_tuples():
    params = SamplingParams(stop="END", stop_token_ids=5)
    assert params.stop == ("END",)
    assert params.stop_token_ids == (5,)


def test_resolve_prefers_request_then_model_then_fallback():
    params = SamplingParams(temperature=0.5).resolve({"temperature": 0.7, "top_p": 0.8, "top_k": 20})
    assert (params.temperature, params.top_p, params.top_k) == (0.5, 0.8, 20)
    assert params.min_p == FALLBACK_DEFAULTS["min_p"]
    assert params.repetition_penalty == 1.0
    assert not params.greedy
    assert SamplingParams(temperature=0).resolve().greedy
