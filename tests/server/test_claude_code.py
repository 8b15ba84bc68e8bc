"""The Claude Code line the gateway logs: the settings the real CLI 2.1.332 was seen to honour."""

from __future__ import annotations

from cortex.fleet.catalogue import CatalogueEntry
from cortex.server.claude_code import claude_code_command


def entry(model: str, max_model_len: int | None, aliases: tuple[str, ...] = ()) -> CatalogueEntry:
    return CatalogueEntry(model, model, aliases, ("n1",), (), ("n1",), None, max_model_len, 0, False)


def test_the_line_names_the_model_claude_names_reach_with_its_window():
    line = claude_code_command(
        [entry("other", 8192), entry("demo", 32768, ("claude-*",))],
        base_url="http://127.0.0.1:31313",
        needs_key=False,
    )
    assert line == (
        "ANTHROPIC_BASE_URL=http://127.0.0.1:31313 ANTHROPIC_API_KEY=local ANTHROPIC_MODEL=demo "
        "CLAUDE_CODE_MAX_CONTEXT_TOKENS=32768 CLAUDE_CODE_MAX_OUTPUT_TOKENS=4096 claude"
    )


def test_without_an_alias_the_first_known_window_and_a_key_placeholder_when_auth_is_on():
    line = claude_code_command(
        [entry("unknown", None), entry("big", 262144)], base_url="http://h:1", needs_key=True
    )
    assert line is not None
    assert "ANTHROPIC_MODEL=big " in line
    assert "CLAUDE_CODE_MAX_CONTEXT_TOKENS=262144 " in line
    assert "CLAUDE_CODE_MAX_OUTPUT_TOKENS=32000 " in line
    assert "ANTHROPIC_API_KEY=<" in line


def test_no_line_when_no_window_is_known():
    assert claude_code_command([entry("x", None)], base_url="http://h:1", needs_key=False) is None
