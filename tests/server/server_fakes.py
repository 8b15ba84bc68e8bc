"""A scripted engine behind the real neuron app: the neuron's seams without torch or a model.

``FakeEngine`` implements what the neuron uses of ``cortex.Engine`` (``stream``, ``chat_stream``,
``stats``, ``close``, ``tokenizer``, ``max_model_len``) with a byte-level tokenizer and a reply script
read from the model folder's ``config.json`` (``"fake": {...}``). It records aborts so tests can
check that a client disconnect reaches the engine.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cortex.engine.outputs import ChatDelta, StreamDelta, Usage
from cortex.engine.progress import Progress, ProgressCallback
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.stats import EngineStats
from cortex.server.config import NeuronConfig
from cortex.server.neuron import create_app
from cortex.server.served_engine import ModelFacts


class ByteTokenizer:
    """One token per UTF-8 byte; a ChatML-like template."""

    eos_token_ids = (0,)
    vocab_size = 256

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode())

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode(errors="replace")

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **template_kwargs: Any,
    ) -> str:
        parts = [f"<tools>{json.dumps(list(tools))}</tools>\n"] if tools else []
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(f"<|{message['role']}|>{content or ''}\n")
        if add_generation_prompt:
            parts.append("<|assistant|>")
        return "".join(parts)


def write_fake_model(root: Path, name: str, **script: Any) -> Path:
    """A model folder the FakeLoader understands. Script keys: reply, reasoning, tool_call (name, args),
    memory_bytes, max_model_len, load_delay_s, load_steps, prefill_delay_s, token_delay_s, fail_load,
    fail_after (the stream raises after that many characters)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "fake", "fake": script}))
    return folder


class FakeEngine:
    def __init__(self, script: Mapping[str, Any]) -> None:
        self.script = dict(script)
        self.tokenizer = ByteTokenizer()
        self.max_model_len = int(script.get("max_model_len", 4096))
        self.num_running = 0
        self.started: list[str] = []
        self.aborted: list[str] = []
        self.finished: list[str] = []
        self.closed = False
        self.last_params: SamplingParams | None = None
        self.last_messages: list[dict[str, Any]] = []  # the last chat's messages, as the engine got them
        self._count = 0

    def _next_id(self, request_id: str | None) -> str:
        self._count += 1
        return request_id or f"fake-{self._count}"

    async def _tokens(self, text: str, params: SamplingParams, request_id: str) -> AsyncIterator[str]:
        """Yield ``text`` one character at a time, honouring max_tokens and recording aborts."""
        if self.closed:
            raise RuntimeError("engine closed")
        self.last_params = params
        self.started.append(request_id)
        self.num_running += 1
        done = False
        try:
            await asyncio.sleep(float(self.script.get("prefill_delay_s", 0.0)))
            limit = params.max_tokens if params.max_tokens is not None else len(text)
            for count, char in enumerate(text[:limit]):
                if count == self.script.get("fail_after"):
                    raise RuntimeError("scripted engine failure")
                await asyncio.sleep(float(self.script.get("token_delay_s", 0.0)))
                yield char
            done = True
        finally:
            self.num_running -= 1
            (self.finished if done else self.aborted).append(request_id)

    async def stream(
        self, prompt: str | list[int], params: SamplingParams, *, request_id: str | None = None
    ) -> AsyncIterator[StreamDelta]:
        request_id = self._next_id(request_id)
        num_prompt = len(self.tokenizer.encode(prompt)) if isinstance(prompt, str) else len(prompt)
        text = str(self.script.get("reply", "hello world"))
        count = 0
        async for char in self._tokens(text, params, request_id):
            count += 1
            yield StreamDelta(
                request_id, [ord(char) % 256], char, num_prompt_tokens=num_prompt, num_generated_tokens=count
            )
        finish = "length" if params.max_tokens is not None and params.max_tokens < len(text) else "stop"
        yield StreamDelta(
            request_id, [], "", finish_reason=finish, num_prompt_tokens=num_prompt, num_generated_tokens=count
        )

    async def chat_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        params: SamplingParams,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **template_kwargs: Any,
    ) -> AsyncIterator[ChatDelta]:
        request_id = self._next_id(None)
        self.last_messages = [dict(m) for m in messages]
        prompt = self.tokenizer.apply_chat_template(messages, tools, **template_kwargs)
        num_prompt = len(self.tokenizer.encode(prompt))
        reasoning = str(self.script.get("reasoning", ""))
        reply = str(self.script.get("reply", "hello world"))
        matched = next((stop for stop in params.stop if stop in reply), None)
        if matched is not None:  # the reply ends before the stop string, as the engine's does
            reply = reply[: reply.index(matched)]
        count = 0
        async for char in self._tokens(reasoning + reply, params, request_id):
            count += 1
            if count <= len(reasoning):
                yield ChatDelta(reasoning=char)
            else:
                yield ChatDelta(content=char)
        finish = (
            "length"
            if params.max_tokens is not None and params.max_tokens < len(reasoning + reply)
            else "stop"
        )
        tool = self.script.get("tool_call")
        if tool and tools and finish == "stop":
            yield ChatDelta(
                tool_calls=[
                    {
                        "index": 0,
                        "id": "call_fake0",
                        "type": "function",
                        "function": {"name": tool["name"], "arguments": ""},
                    }
                ]
            )
            yield ChatDelta(tool_calls=[{"index": 0, "function": {"arguments": json.dumps(tool["args"])}}])
            finish = "tool_calls"
        usage = Usage(num_prompt, count, reasoning_tokens=min(count, len(reasoning)))
        yield ChatDelta(finish_reason=finish, usage=usage, stop_reason=matched if finish == "stop" else None)

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=self.num_running,
            num_waiting=0,
            num_kv_blocks_used=self.num_running,
            num_kv_blocks_total=16,
            num_state_slots_used=self.num_running,
            num_state_slots_total=16,
            prefill_tokens_per_s=0.0,
            decode_tokens_per_s=0.0,
            total_prompt_tokens=0,
            total_generated_tokens=0,
            num_preemptions=0,
        )

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    """Reads the script from config.json; ``engines`` keeps every engine built, by model id."""

    def __init__(self) -> None:
        self.engines: dict[str, FakeEngine] = {}
        self.load_calls: list[str] = []
        self.load_gate: threading.Event | None = None

    @staticmethod
    def _script(path: Path) -> dict[str, Any]:
        return dict(json.loads((path / "config.json").read_text())["fake"])

    def inspect(self, path: Path) -> ModelFacts:
        script = self._script(path)
        return ModelFacts(
            architecture="fake",
            estimated_memory_bytes=int(script.get("memory_bytes", 1000)),
            max_model_len=int(script.get("max_model_len", 4096)),
        )

    def tokenizer(self, path: Path) -> ByteTokenizer:
        return ByteTokenizer()

    def load(self, path: Path, progress: ProgressCallback) -> FakeEngine:
        """Reads ``load_steps`` (default 4) tensors of 1000 bytes, ``load_delay_s`` in all; a
        ``load_gate`` (a ``threading.Event``, set by the test on ``self``) holds the load halfway."""
        self.load_calls.append(path.name)
        script = self._script(path)
        num_steps = int(script.get("load_steps", 4))
        job = Progress(
            f"loading {path.name}",
            bytes_total=1000 * num_steps,
            tensors_total=num_steps,
            callbacks=[progress],
        )
        job.start()
        for step in range(num_steps):
            if step == num_steps // 2 and self.load_gate is not None:
                self.load_gate.wait(timeout=30)
            time.sleep(float(script.get("load_delay_s", 0.0)) / num_steps)
            job.advance(1000)
        if script.get("fail_load"):
            raise RuntimeError("scripted load failure")
        engine = FakeEngine(script)
        self.engines[path.name] = engine
        job.finish()
        return engine


def make_neuron(root: Path, **overrides: object) -> tuple[Any, FakeLoader]:
    loader = FakeLoader()
    config = NeuronConfig.model_validate(
        {"name": "n1", "model_dirs": [str(root)], "memory_budget_bytes": 10**6, **overrides}
    )
    return create_app(config, loader=loader), loader
