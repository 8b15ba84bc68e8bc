"""The context rule: what a request may generate, and the clamp Anthropic's callers get instead of a 400."""

from __future__ import annotations

import pytest

from cortex.engine.context_window import fit_max_tokens, output_budget
from cortex.errors import ContextLengthError


def test_the_budget_is_max_tokens_or_the_room_left():
    assert output_budget(num_prompt_tokens=10, max_tokens=40, max_model_len=50) == 40
    assert output_budget(num_prompt_tokens=10, max_tokens=None, max_model_len=50) == 40
    with pytest.raises(ContextLengthError, match="at most 40") as info:
        output_budget(num_prompt_tokens=10, max_tokens=41, max_model_len=50)
    assert info.value.param == "max_tokens"
    with pytest.raises(ContextLengthError) as info:
        output_budget(num_prompt_tokens=50, max_tokens=None, max_model_len=50)
    assert info.value.param == "prompt"


def test_fitting_lowers_max_tokens_to_the_room_and_leaves_the_refusal_to_the_check():
    assert fit_max_tokens(100, num_prompt_tokens=10, max_model_len=50) == 40
    assert fit_max_tokens(100, num_prompt_tokens=10, max_model_len=500) == 100
    assert fit_max_tokens(None, num_prompt_tokens=10, max_model_len=50) is None
    assert fit_max_tokens(100, num_prompt_tokens=50, max_model_len=50) == 100
