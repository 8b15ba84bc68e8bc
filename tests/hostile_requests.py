"""Hostile HTTP requests, as a careless or malicious caller would send them, from a seeded generator.

Each :class:`HostileRequest` is one raw request (method, path, headers, body bytes) and the class of
attack it belongs to. The classes are those of issue 16's survey: wrong types in every field, huge and
non-finite numbers, deep nesting, invalid text (lone surrogates, bad UTF-8, NUL), oversized bodies,
out-of-range sampling and length values (streamed or not), hostile model names, malformed messages
and tools, wrong methods and routes. Bodies start from a valid request for the route and break one
thing, so each request reaches the code it aims at.

benchmarks/hostile.py sends 10,000 of them to real processes; tests/server/test_hostile.py sends a
bounded sample to the apps in CI. Both expect no 5xx, no hang, and every error in the caller's dialect.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

OVERSIZED_BYTES = 40 * 2**20  # past the default 32 MiB body limit
OPENAI_ROUTES = ("/v1/chat/completions", "/v1/completions")

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
MESSAGES = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
COMPLETION = {"prompt": "hi", "max_tokens": 4}

# route -> a valid body for it, minus the model
ROUTES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": COMPLETION,
    "/v1/messages": MESSAGES,
    "/v1/messages/count_tokens": {"messages": MESSAGES["messages"]},
}
NEURON_ONLY_ROUTES: dict[str, dict[str, Any]] = {
    "/models/load": {},  # loading the loaded model is a no-op
    "/models/unload": {"model": "absent-model"},  # never unloads the model under attack
}
SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "n",
    "logprobs",
    "top_logprobs",
    "stop_token_ids",
)
# JSON texts, inserted raw, so that what no JSON encoder writes still arrives
RAW_NUMBERS = (
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e999",
    "1" + "0" * 5000,
    "-" + "9" * 4301,
    str(2**63),
    str(2**64),
    str(-(2**63) - 1),
    "1e-400",
    "0.1e308",
    "-0",
    "3.0",
)
OUT_OF_RANGE = (-1, -(10**9), 0, 10**9, 2**31, 2**63, 2**70, -0.5, 1e30, 2.5, 101, -3)
WRONG_TYPES: tuple[Any, ...] = (None, True, False, "", "7", "x" * 1000, [], [1, 2], {}, {"a": 1}, 1.5, -1, 0)
STRINGS = (
    "\ud800",  # lone high surrogate (a JSON escape only; not encodable as UTF-8)
    "\udfff",
    "a\ud800b",
    "\x00",
    "\u202e\u200b",
    "x" * 100_000,
    "../../../../etc/passwd",
    "%2e%2e%2f",
    "<script>",
    "{{ 7*7 }}",
    "{% for x in range(10**9) %}{% endfor %}",
)


@dataclass(frozen=True, slots=True)
class HostileRequest:
    kind: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str | bytes] = field(default_factory=dict)

    @property
    def expected_dialect(self) -> str:
        """The dialect its error must come in (docs/servers.md): Anthropic on ``/v1/messages*``, OpenAI
        on the OpenAI routes; elsewhere Anthropic when an ``anthropic-version`` or ``x-api-key`` header
        says the caller speaks it."""
        if self.path.startswith("/v1/messages"):
            return "anthropic"
        if self.path in OPENAI_ROUTES:
            return "openai"
        return "anthropic" if {"anthropic-version", "x-api-key"} & set(self.headers) else "openai"

    @property
    def streams(self) -> bool:
        return b'"stream": true' in self.body[:100_000]


def _dumps(body: Any) -> str:
    return json.dumps(body, ensure_ascii=True)  # lone surrogates become \ud800 escapes


def _with(body: dict[str, Any], key: str, raw: str) -> str:
    """``body`` as JSON with ``key`` set to the raw JSON text ``raw``."""
    marker = "__HOSTILE__"
    return _dumps({**body, key: marker}).replace(f'"{marker}"', raw)


def _nested(depth: int, rng: random.Random) -> str:
    open_, close = rng.choice((("[", "]"), ('{"a":', "}")))
    return open_ * depth + "1" + close * depth


class Generator:
    """``Generator(model, seed, neuron=...)``: an endless, reproducible stream of hostile requests for a
    server whose loaded model is ``model`` (``neuron`` adds the neuron's own routes)."""

    def __init__(self, model: str, seed: int = 0, *, neuron: bool = False, oversized_every: int = 500):
        self.model = model
        self.rng = random.Random(seed)
        self.routes = {**ROUTES, **(NEURON_ONLY_ROUTES if neuron else {})}
        self.oversized_every = oversized_every
        self._makers: list[Callable[[], HostileRequest]] = [
            self.wrong_type,
            self.wrong_type,
            self.raw_number,
            self.out_of_range,
            self.out_of_range,
            self.deep_nesting,
            self.invalid_text,
            self.hostile_model,
            self.bad_messages,
            self.bad_tools,
            self.not_json,
            self.wrong_route,
            self.bad_headers,
        ]

    def __iter__(self) -> Iterator[HostileRequest]:
        count = 0
        while True:
            count += 1
            if self.oversized_every and count % self.oversized_every == 0:
                yield self.oversized()
            else:
                yield self.rng.choice(self._makers)()

    # ---- helpers ----------------------------------------------------------------------------------

    def _route(self) -> tuple[str, dict[str, Any]]:
        path = self.rng.choice(list(self.routes))
        body = {"model": self.model, **self.routes[path]}  # a route's own model (the unload target) wins
        if self.rng.random() < 0.3 and path != "/v1/messages/count_tokens":
            body["stream"] = True
        return path, body

    def _post(self, kind: str, path: str, text: str | bytes) -> HostileRequest:
        body = text.encode() if isinstance(text, str) else text
        return HostileRequest(kind, "POST", path, body, {"content-type": "application/json"})

    def _value(self) -> Any:
        rng = self.rng
        return rng.choice(
            (
                rng.choice(WRONG_TYPES),
                rng.choice(OUT_OF_RANGE),
                rng.choice(STRINGS),
                [rng.choice(WRONG_TYPES)] * rng.randint(0, 5),
                {rng.choice(STRINGS)[:20]: rng.choice(WRONG_TYPES)},
            )
        )

    # ---- the classes ------------------------------------------------------------------------------

    def wrong_type(self) -> HostileRequest:
        """One field (top level, or inside the first message) replaced by a value of the wrong type."""
        path, body = self._route()
        keys = [*body, *SAMPLING_FIELDS, "stop", "stream_options", "tools", "tool_choice", "system"]
        key = self.rng.choice(keys)
        if self.rng.random() < 0.3 and "messages" in body:
            message = dict(body["messages"][0])
            message[self.rng.choice(("role", "content", "name", "tool_calls"))] = self._value()
            body["messages"] = [message]
        else:
            body[key] = self._value()
        return self._post("wrong_type", path, _dumps(body))

    def raw_number(self) -> HostileRequest:
        """A huge, tiny or non-finite number (NaN, Infinity, 5000 digits) in a numeric field."""
        path, body = self._route()
        text = _with(body, self.rng.choice(SAMPLING_FIELDS), self.rng.choice(RAW_NUMBERS))
        return self._post("raw_number", path, text)

    def out_of_range(self) -> HostileRequest:
        """A sampling or length value outside what the engine can represent, streamed or not."""
        path, body = self._route()
        for _ in range(self.rng.randint(1, 3)):
            body[self.rng.choice(SAMPLING_FIELDS)] = self.rng.choice(OUT_OF_RANGE)
        if self.rng.random() < 0.2:
            body["stop"] = ["x"] * self.rng.choice((5, 1000, 100_000))
        return self._post("out_of_range", path, _dumps(body))

    def deep_nesting(self) -> HostileRequest:
        """Arrays or objects nested 100 to 100,000 deep, as the body or inside a field."""
        path, _ = self._route()
        nested = _nested(self.rng.choice((100, 1000, 5000, 100_000)), self.rng)
        if self.rng.random() < 0.3:
            return self._post("deep_nesting", path, nested)
        field_name = self.rng.choice(("messages", "tools", "metadata", "stop", "response_format"))
        return self._post("deep_nesting", path, _with({"model": self.model}, field_name, nested))

    def invalid_text(self) -> HostileRequest:
        """Lone surrogates, NUL and bidi controls in strings, or bytes that are not UTF-8."""
        path, body = self._route()
        text = self.rng.choice(STRINGS[:5])
        choice = self.rng.random()
        if choice < 0.4:
            body["messages" if "messages" in body else "prompt"] = (
                [{"role": "user", "content": text}] if "messages" in body else text
            )
            return self._post("invalid_text", path, _dumps(body))
        if choice < 0.7:
            body["stop"] = [text]
            return self._post("invalid_text", path, _dumps(body))
        raw = (
            _dumps(body).encode().replace(b"hi", self.rng.choice((b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80")))
        )
        return self._post("invalid_text", path, raw)

    def hostile_model(self) -> HostileRequest:
        """Model names that are huge, path-like, empty or of the wrong type."""
        path, body = self._route()
        body["model"] = self.rng.choice(
            (
                "",
                "x" * (2 * 2**20),
                "../" * 50 + "etc",
                "/etc/passwd",
                "a\x00b",
                "\ud800",
                7,
                None,
                [self.model],
            )
        )
        return self._post("hostile_model", path, _dumps(body))

    def bad_messages(self) -> HostileRequest:
        """``messages`` of the wrong shape: true, empty, numbers, unknown roles and block types."""
        path, body = self._route()
        if "messages" not in body:
            body["prompt"] = self._value()
            return self._post("bad_messages", path, _dumps(body))
        body["messages"] = self.rng.choice(
            (
                True,
                [],
                [1],
                "hi",
                [{"role": 5, "content": "x"}],
                [{"role": "wizard", "content": "x"}],
                [{"role": "user"}],
                [{"role": "user", "content": [{"type": "nope"}]}],
                [{"role": "user", "content": [{"type": "text", "text": 5}]}],
                [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "url", "url": "file:///x"}}],
                    }
                ],
                [{"role": "assistant", "content": None, "tool_calls": [{"function": 1}]}],
                [{"role": "tool", "content": "x", "tool_call_id": None}],
                [{"role": "user", "content": "hi"}] * 5000,
                [{"role": "system", "content": "a"}, {"role": "system", "content": "b"}],
            )
        )
        return self._post("bad_messages", path, _dumps(body))

    def bad_tools(self) -> HostileRequest:
        path, body = self._route()
        body[self.rng.choice(("tools", "tool_choice", "response_format", "thinking", "output_config"))] = (
            self.rng.choice(
                (
                    [{"type": "function"}],
                    [{"type": "function", "function": {"name": 5}}],
                    [{"name": "t", "input_schema": "x"}],
                    [{"type": "function", "function": {"name": "t", "parameters": {"type": "bogus"}}}],
                    {"type": "json_schema", "json_schema": {"schema": {"$ref": "#/x"}}},
                    {"type": "json_schema", "json_schema": {"schema": {"pattern": "(a*)*" * 50}}},
                    "required",
                    {"type": "function", "function": {"name": "missing"}},
                    {"type": "tool"},
                    {"type": "enabled", "budget_tokens": -5},
                )
            )
        )
        return self._post("bad_tools", path, _dumps(body))

    def not_json(self) -> HostileRequest:
        path, _ = self._route()
        text = self.rng.choice(("", "{", "null", "[]", '"x"', "1", "{'a': 1}", "{}" * 1000, "\x00", "{,}"))
        return self._post("not_json", path, text)

    def wrong_route(self) -> HostileRequest:
        """Wrong methods on real routes, and routes that do not exist (long, traversal, odd bytes)."""
        rng = self.rng
        if rng.random() < 0.5:
            path = rng.choice(list(self.routes))
            method = rng.choice(("GET", "PUT", "DELETE", "PATCH"))
            return HostileRequest("wrong_route", method, path, b"{}", {})
        path = rng.choice(
            (
                "/v2/chat/completions",
                "/v1/messages/..%2f..%2fetc%2fpasswd",
                "/v1/" + "a" * 5000,
                "/%2e%2e/%2e%2e/etc/passwd",
                "/v1/chat/completions/extra",
                "/v1/models/" + "x" * 300,
                "/v1/messages%00",
            )
        )
        return HostileRequest("wrong_route", rng.choice(("GET", "POST")), path, b"{}", {})

    def bad_headers(self) -> HostileRequest:
        path, body = self._route()
        headers = self.rng.choice(
            (
                {"content-type": "text/plain"},
                {"content-type": "application/json; charset=latin-1"},
                {"anthropic-version": "x" * 5000},
                {"x-api-key": b"\xff" * 10},  # not ASCII: latin-1 bytes
                {"authorization": "Bearer " + "k" * 5000},
                {"content-encoding": "gzip"},
            )
        )
        return HostileRequest("bad_headers", "POST", path, _dumps(body).encode(), headers)

    def oversized(self) -> HostileRequest:
        """A body past the limit: one huge string, or a huge array of messages."""
        path, body = self._route()
        if self.rng.random() < 0.5:
            body["messages" if "messages" in body else "prompt"] = "x" * OVERSIZED_BYTES
        else:
            body["stop"] = ["y" * 1000] * (OVERSIZED_BYTES // 1000)
        return self._post("oversized", path, _dumps(body))


def normal_requests(model: str) -> list[HostileRequest]:
    """The canaries: one ordinary request per dialect, streamed and not."""
    chat = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
    return [
        HostileRequest("normal", "POST", path, _dumps(body).encode())
        for path in ("/v1/chat/completions", "/v1/messages")
        for body in (chat, {**chat, "stream": True})
    ]


def error_dialect(body: Any) -> str | None:
    """The dialect of an error envelope: "anthropic" ({type: error, error: {type, message}}), "openai"
    ({error: {message, type, ...}}), or None when it is neither."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    error = body["error"]
    if (
        body.get("type") == "error"
        and isinstance(error.get("type"), str)
        and isinstance(error.get("message"), str)
    ):
        return "anthropic"
    if "type" not in body and isinstance(error.get("message"), str):
        return "openai"
    return None
