"""A scripted engine behind the real neuron app: the neuron's seams without torch or a model.

``FakeEngine`` implements what the neuron uses of ``cortex.Engine`` (``add_request``, ``stats``,
``close``, ``tokenizer``, ``max_model_len``, ``failure``) with a byte-level tokenizer and a reply script
read from the model folder's ``config.json`` (``"fake": {...}``). It records aborts so tests can check
that a client disconnect reaches the engine.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cortex.engine.context_window import output_budget
from cortex.engine.delta_stream import DeltaStream
from cortex.engine.outputs import StreamDelta
from cortex.engine.progress import Progress, ProgressCallback
from cortex.engine.sampling_params import SamplingParams
from cortex.engine.stats import EngineStats
from cortex.server.config import NeuronConfig
from cortex.server.neuron import create_app
from cortex.server.served_engine import LoadPlan, ModelFacts


class ByteTokenizer:
    """One token per UTF-8 byte; a ChatML-like template. ``num_prompts_rendered`` counts renderings
    with a generation prompt (a request's prompt; ``render_chat`` also renders one without), and
    ``last_messages`` holds the last such rendering's messages."""

    eos_token_ids = (0,)
    vocab_size = 256

    def __init__(self) -> None:
        self.num_prompts_rendered = 0
        self.last_messages: list[dict[str, Any]] = []

    def token_to_id(self, token: str) -> int | None:
        return None  # no token is a tag: reasoning tokens are counted by re-encoding the reasoning

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
            self.num_prompts_rendered += 1
            self.last_messages = [dict(m) for m in messages]
            parts.append("<|assistant|>")
        return "".join(parts)


def write_fake_model(root: Path, name: str, **script: Any) -> Path:
    """A model folder the FakeLoader understands. Script keys: reply, reasoning, tool_call (name, args),
    memory_bytes, max_model_len, load_delay_s, load_steps, prefill_delay_s, token_delay_s, fail_load,
    fail_after (the stream raises after that many characters), and per tensor-parallel split N:
    split_memory_bytes {N: bytes per device}, split_errors {N: why not}."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "fake", "fake": script}))
    return folder


class FakeEngine:
    """A scripted model behind the engine's seam: it "generates" its script's text one character (one
    byte token) at a time, with the reasoning as ``<think>...</think>`` markup and, when the prompt
    offers tools, the call as a Hermes ``<tool_call>``, so the real text layer parses its output. The
    context check is the engine's own rule."""

    def __init__(self, script: Mapping[str, Any]) -> None:
        self.script = dict(script)
        self.tokenizer = ByteTokenizer()
        self.max_model_len = int(script.get("max_model_len", 4096))
        self.num_running = 0
        self.started: list[str] = []
        self.aborted: list[str] = []
        self.finished: list[str] = []
        self.closed = False
        self.failure: BaseException | None = None  # set by a test: the engine has failed for good
        self.last_params: SamplingParams | None = None
        self._count = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _text(self, prompt_ids: Sequence[int], stops: Sequence[str]) -> tuple[str, str | None]:
        """What the model "generates", and the stop string that ends the reply early, if any."""
        reasoning = str(self.script.get("reasoning", ""))
        text = f"<think>{reasoning}</think>" if reasoning else ""
        reply = str(self.script.get("reply", "hello world"))
        stop = next((s for s in stops if s in reply), None)
        if stop is not None:  # the reply ends before the stop string, as the engine's does
            return text + reply[: reply.index(stop)], stop
        text += reply
        tool = self.script.get("tool_call")
        if tool and "<tools>" in self.tokenizer.decode(prompt_ids):
            call = {"name": tool["name"], "arguments": tool["args"]}
            text += f"<tool_call>{json.dumps(call)}</tool_call>"
        return text, None

    async def add_request(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        request_id: str | None = None,
        turn_boundary: int | None = None,
    ) -> DeltaStream:
        if self.closed:
            raise RuntimeError("engine closed")
        params = params or SamplingParams()
        prompt_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        budget = output_budget(
            num_prompt_tokens=len(prompt_ids), max_tokens=params.max_tokens, max_model_len=self.max_model_len
        )
        self._count += 1
        request_id = request_id or f"fake-{self._count}"
        self.last_params = params
        self.started.append(request_id)
        self.num_running += 1
        text, stop = self._text(prompt_ids, params.stop)
        deltas = DeltaStream(request_id, num_prompt_tokens=len(prompt_ids), abort=self.abort)
        self._tasks[request_id] = asyncio.ensure_future(
            self._generate(request_id, text, stop, budget, deltas)
        )
        return deltas

    async def _generate(
        self, request_id: str, text: str, stop: str | None, budget: int, deltas: DeltaStream
    ) -> None:
        counts = {"num_prompt_tokens": deltas.num_prompt_tokens}
        await asyncio.sleep(float(self.script.get("prefill_delay_s", 0.0)))
        for count, char in enumerate(text[:budget], 1):
            if count - 1 == self.script.get("fail_after"):
                self._end(request_id, self.aborted)
                deltas.sink(RuntimeError("scripted engine failure"))
                return
            await asyncio.sleep(float(self.script.get("token_delay_s", 0.0)))
            deltas.sink(
                StreamDelta(request_id, [ord(char) % 256], char, num_generated_tokens=count, **counts)
            )
        self._end(request_id, self.finished)
        finish = "length" if len(text) > budget else "stop"
        num_generated = min(len(text), budget)
        stop_reason = stop if finish == "stop" else None
        deltas.sink(
            StreamDelta(request_id, [], "", finish, stop_reason, num_generated_tokens=num_generated, **counts)
        )

    def _end(self, request_id: str, outcome: list[str]) -> None:
        self._tasks.pop(request_id)
        self.num_running -= 1
        outcome.append(request_id)

    def abort(self, request_id: str) -> bool:
        if request_id not in self._tasks:
            return False
        self._tasks[request_id].cancel()
        self._end(request_id, self.aborted)
        return True

    @property
    def last_messages(self) -> list[dict[str, Any]]:
        """The last chat's messages, as its prompt was rendered from them."""
        return self.tokenizer.last_messages

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
        self.plans: dict[str, LoadPlan] = {}  # the last load plan, by model id

    @staticmethod
    def _script(path: Path) -> dict[str, Any]:
        return dict(json.loads((path / "config.json").read_text())["fake"])

    def inspect(self, path: Path) -> ModelFacts:
        script = self._script(path)
        return ModelFacts(
            architecture="fake",
            estimated_memory_bytes=int(script.get("memory_bytes", 1000)),
            max_model_len=int(script.get("max_model_len", 4096)),
            split_memory_bytes={int(n): int(b) for n, b in script.get("split_memory_bytes", {}).items()},
            split_errors={int(n): str(why) for n, why in script.get("split_errors", {}).items()},
        )

    def tokenizer(self, path: Path) -> ByteTokenizer:
        return ByteTokenizer()

    def load(self, path: Path, plan: LoadPlan, progress: ProgressCallback) -> FakeEngine:
        """Reads ``load_steps`` (default 4) tensors of 1000 bytes, ``load_delay_s`` in all; a
        ``load_gate`` (a ``threading.Event``, set by the test on ``self``) holds the load halfway."""
        self.load_calls.append(path.name)
        self.plans[path.name] = plan
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


def make_neuron(
    root: Path, *, gpus: Sequence[int] | None = None, **overrides: object
) -> tuple[Any, FakeLoader]:
    """A neuron app over the FakeLoader; ``gpus`` scripts its GPUs (each that many bytes), else it is a
    CPU neuron."""
    loader = FakeLoader()
    config = NeuronConfig.model_validate(
        {"name": "n1", "model_dirs": [str(root)], "memory_budget_bytes": 10**6, **overrides}
    )
    probe = None if gpus is None else functools.partial(scripted_gpus, tuple(gpus))
    return create_app(config, loader=loader, probe_devices=probe), loader


def scripted_gpus(memory: Sequence[int]) -> list[dict[str, Any]]:
    """GPUs as ``cortex.server.devices`` reports them, with ``memory[i]`` bytes on GPU i."""
    return [
        {
            "index": index,
            "device": f"cuda:{index}",
            "name": "Fake GPU",
            "memory_total_bytes": total,
            "memory_used_bytes": 0,
            "memory_free_bytes": total,
        }
        for index, total in enumerate(memory)
    ]
