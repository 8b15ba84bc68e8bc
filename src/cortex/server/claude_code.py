"""The command line that runs Claude Code against this gateway with a model's real context window.

Claude Code 2.1.332 does not read a window from ``/v1/models``: for a model id it does not know it
assumes 1,000,000 tokens, and for a ``claude-*`` id (which the gateway may alias to a local model) it
uses that Claude model's window. Tried with the real CLI (docs/servers.md, "Claude Code and the context
window"), what makes it compact before a local model's limit is the model's own id with
``CLAUDE_CODE_MAX_CONTEXT_TOKENS`` set to its window (``CLAUDE_CODE_AUTO_COMPACT_WINDOW`` cannot go below
100,000 tokens), and ``CLAUDE_CODE_MAX_OUTPUT_TOKENS`` small enough that the output it reserves from the
window (up to 20,000 tokens) leaves room for the conversation. The gateway logs this line at start.
"""

from __future__ import annotations

from collections.abc import Sequence

from cortex.fleet.catalogue import CatalogueEntry

MAX_OUTPUT_TOKENS_CAP = 32000  # what Claude Code asks for by default for an unknown model


def claude_code_command(entries: Sequence[CatalogueEntry], *, base_url: str, needs_key: bool) -> str | None:
    """The line to paste for the model ``claude-*`` names reach (else the first with a known window);
    None when no model's window is known."""
    known = [entry for entry in entries if entry.max_model_len]
    if not known:
        return None
    entry = next((e for e in known if any(a.startswith("claude") for a in e.aliases)), known[0])
    window = int(entry.max_model_len or 0)
    max_output = min(MAX_OUTPUT_TOKENS_CAP, max(1, window // 8))
    key = "<one of [auth] api_keys>" if needs_key else "local"
    return (
        f"ANTHROPIC_BASE_URL={base_url} ANTHROPIC_API_KEY={key} ANTHROPIC_MODEL={entry.id} "
        f"CLAUDE_CODE_MAX_CONTEXT_TOKENS={window} CLAUDE_CODE_MAX_OUTPUT_TOKENS={max_output} claude"
    )
