"""Response ids: ``chatcmpl-<x>`` <-> ``msg_<x>``, so a round trip gives back the id it started with."""

from __future__ import annotations


def anthropic_message_id(openai_id: str) -> str:
    return "msg_" + openai_id.removeprefix("chatcmpl-")


def openai_completion_id(anthropic_id: str) -> str:
    return "chatcmpl-" + anthropic_id.removeprefix("msg_")
