"""The public surface of cortex.translate: names, laziness, and no heavy imports."""

from __future__ import annotations

import subprocess
import sys

import cortex
from cortex import translate

PUBLIC = {
    "TranslationError",
    "aanthropic_to_openai_stream",
    "anthropic_error",
    "anthropic_error_to_openai",
    "anthropic_error_type_for_status",
    "anthropic_to_openai_request",
    "anthropic_to_openai_response",
    "anthropic_to_openai_stream",
    "aopenai_to_anthropic_stream",
    "aopenai_to_responses_stream",
    "openai_error",
    "openai_error_to_anthropic",
    "openai_error_type_for_status",
    "openai_to_anthropic_request",
    "openai_to_anthropic_response",
    "openai_to_anthropic_stream",
    "openai_to_responses_response",
    "openai_to_responses_stream",
    "responses_input_items",
    "responses_to_openai_request",
    "status_for_anthropic_error_type",
    "status_for_openai_error_type",
}


def test_all_lists_the_public_names():
    assert set(translate.__all__) == PUBLIC
    assert all(callable(getattr(translate, name)) for name in PUBLIC)
    assert cortex.translate is translate


def test_import_translate_imports_neither_torch_nor_the_sdks():
    code = "import sys, cortex.translate; print('\\n'.join(sys.modules))"
    modules = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert not {"torch", "pydantic", "openai", "anthropic", "httpx"} & modules
