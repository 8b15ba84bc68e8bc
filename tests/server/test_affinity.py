"""affinity_key: every turn of one conversation gets the same key, in each dialect; different
conversations (other users' first questions under the same system prompt) get different ones.
shared_prefix_key: what those conversations share (system prompt and tools) gets one key."""

from __future__ import annotations

import copy
from typing import Any

from cortex.server.affinity import affinity_key, shared_prefix_key

SYSTEM = "You are a careful assistant."


def _turns(first: dict[str, Any], messages_key: str, more: list[Any]) -> list[dict[str, Any]]:
    """``first`` and the bodies of its next two turns, each adding an item of ``more`` to the list."""
    bodies = [first]
    for item in more:
        body = copy.deepcopy(bodies[-1])
        body[messages_key].append(item)
        bodies.append(body)
    return bodies


def _keys(bodies: list[dict[str, Any]], headers: dict[str, str] | None = None) -> set[str]:
    return {affinity_key(headers or {}, body) for body in bodies}


def test_each_dialect_keeps_a_conversation_on_one_key_and_tells_users_apart():
    reply = [{"role": "assistant", "content": "Hi."}, {"role": "user", "content": "Again."}]
    dialects = {
        "openai chat": lambda q: (
            {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]},
            "messages",
        ),
        "anthropic": lambda q: ({"system": SYSTEM, "messages": [{"role": "user", "content": q}]}, "messages"),
        "responses": lambda q: (
            {"instructions": SYSTEM, "input": [{"role": "user", "content": q}]},
            "input",
        ),
    }
    keys = set()
    for make in dialects.values():
        for question in ("Say hi.", "What is 2 + 2?"):
            first, messages_key = make(question)
            (key,) = _keys(_turns(first, messages_key, reply))
            keys.add(key)
    assert len(keys) == 6  # one per dialect and first question
    text = {"prompt": f"<|im_start|>system\n{SYSTEM * 20}<|im_end|>\n<|im_start|>user\nSay hi."}
    longer = {"prompt": text["prompt"] + "<|im_end|>\n" + "more " * 1000}
    assert len(_keys([text, longer])) == 1
    assert len(_keys([text, {"prompt": "Other. " + text["prompt"]}])) == 2
    assert affinity_key({}, {"input": "Say hi."}) != affinity_key({}, {"input": "Bye."})


def test_a_session_id_or_a_user_wins_over_the_conversation_start():
    body = {"system": SYSTEM, "messages": [{"role": "user", "content": "Say hi."}]}
    session = {"x-claude-code-session-id": "s-1"}
    assert affinity_key(session, body) == "session:s-1"
    assert affinity_key(session, {**body, "messages": []}) == "session:s-1"
    assert affinity_key({}, {**body, "metadata": {"user_id": "u-1"}}) == "user:u-1"
    assert affinity_key({}, {**body, "user": "u-2"}) == "user:u-2"
    assert affinity_key({}, body).startswith("prefix:")


def test_conversations_sharing_a_system_prompt_and_tools_share_a_prefix_key():
    tools = [{"name": "Bash", "input_schema": {"type": "object"}}]
    billing = {"type": "text", "text": "x-anthropic-billing-header: cc_version=1; cch=a1;"}
    system = [billing, {"type": "text", "text": SYSTEM}]

    def body(question: str, **changes: Any) -> dict[str, Any]:
        return {
            "system": system,
            "tools": tools,
            "messages": [{"role": "user", "content": question}],
        } | changes

    key = shared_prefix_key(body("Say hi."))
    assert key is not None
    assert key.startswith("shared:")
    assert shared_prefix_key(body("Bye.")) == key  # another conversation, the same prefix
    other_billing = [{**billing, "text": "x-anthropic-billing-header: cc_version=1; cch=b2;"}, system[1]]
    assert shared_prefix_key(body("Bye.", system=other_billing)) == key  # the per-request hint is left out
    assert affinity_key({}, body("Bye.", system=other_billing)) == affinity_key({}, body("Bye."))
    assert shared_prefix_key(body("Say hi.", tools=[])) != key
    assert affinity_key({}, body("Say hi.")) != affinity_key({}, body("Bye."))
    openai = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Say hi."}]
    assert shared_prefix_key({"messages": openai}) == shared_prefix_key({"messages": [openai[0]]})
    assert shared_prefix_key({"messages": openai[1:]}) is None  # nothing shared to route by
