"""Real ``cortex neuron`` and ``cortex serve`` processes on loopback ports, for fault and load tests.

Each process runs this checkout's ``src`` (``python -m cortex``) with a ``cortex.toml`` written for it,
so a test (or a benchmark: benchmarks/load.py and hostile.py import this module) can kill it, freeze it
with SIGSTOP, resume it and restart it on the same port. The tiny model is the real Qwen3.5
architecture with random weights and the real Qwen3.5 tokenizer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SRC = Path(__file__).resolve().parent.parent / "src"
TINY_MODEL = "tiny"


def make_tiny_model(root: Path) -> Path:
    """``root/tiny``: a tiny random Qwen3.5 checkpoint with the real tokenizer (made once per root)."""
    folder = root / TINY_MODEL
    if not (folder / "tokenizer.json").is_file():
        from cortex.engine.checkpoint import make_model
        from cortex.engine.text.qwen import write_qwen_tokenizer_files

        make_model(folder, arch="qwen3_5", preset="tiny", vocab_size=248320)
        write_qwen_tokenizer_files(folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, sections: Mapping[str, Any]) -> Path:
    """A cortex.toml from ``{"neuron": {...}, "neurons": [{...}], ...}`` (tables and arrays of tables)."""
    lines: list[str] = []
    for name, body in sections.items():
        for table in body if isinstance(body, list) else [body]:
            lines.append(f"[[{name}]]" if isinstance(body, list) else f"[{name}]")
            # strings, numbers, booleans and arrays of them: their JSON is valid TOML
            lines.extend(f"{key} = {json.dumps(value)}" for key, value in table.items())
            lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@dataclass
class Process:
    """One ``python -m cortex ...`` process on ``port``; ``restart()`` brings it back on the same port."""

    name: str
    args: list[str]
    port: int
    log_path: Path
    ready: Callable[[httpx.Response], bool] = lambda reply: reply.status_code == 200
    src: Path = SRC  # the source tree it runs (another checkout's, for before/after measurements)
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self, *, timeout_s: float = 300) -> Process:
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def launch(self) -> None:
        """Start the process without waiting for it to be ready."""
        env = {**os.environ, "PYTHONPATH": str(self.src)}
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "cortex", *self.args], env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.log_tail()}")
            try:
                if self.ready(httpx.get(self.url + "/health", timeout=2)):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready in {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, num_bytes: int = 4000) -> str:
        return self.log_path.read_bytes()[-num_bytes:].decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash: connections are reset by the kernel."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM (a thawed, graceful stop), SIGKILL after 10 s."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.thaw()
        self.popen.terminate()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, *, timeout_s: float = 300) -> Process:
        self.kill()
        return self.start(timeout_s=timeout_s)


def neuron_process(
    workdir: Path, model_root: Path, name: str, *, port: int | None = None, src: Path = SRC, **neuron: Any
) -> Process:
    """A neuron over ``model_root`` on CPU, the tiny model preloaded; ``neuron`` overrides [neuron] keys."""
    port = port or free_port()
    section = {
        "name": name,
        "listen": f"127.0.0.1:{port}",
        "model_dirs": [str(model_root)],
        "device": "cpu",
        "dtype": "float32",
        "max_model_len": 512,
        "cache_memory_bytes": "64MiB",
        "memory_budget_bytes": "2GiB",
        "keepalive_s": 0.5,
        "drain_timeout_s": 1,
        "preload": [TINY_MODEL],
        **neuron,
    }
    config = write_config(workdir / f"{name}.toml", {"neuron": section})
    return Process(name, ["neuron", "--config", str(config)], port, workdir / f"{name}.log", src=src)


def gateway_process(
    workdir: Path,
    neurons: Sequence[Process],
    *,
    port: int | None = None,
    fleet: Mapping[str, Any] | None = None,
    src: Path = SRC,
    **gateway: Any,
) -> Process:
    """A gateway over ``neurons``; ``fleet`` and ``gateway`` override [fleet] and [gateway] keys."""
    port = port or free_port()
    sections = {
        "gateway": {
            "listen": f"127.0.0.1:{port}",
            "metrics_listen": f"127.0.0.1:{free_port()}",
            "keepalive_s": 0.5,
            **gateway,
        },
        "fleet": {"poll_interval_s": 0.5, **(fleet or {})},
        "neurons": [{"name": n.name, "url": n.url} for n in neurons],
    }
    config = write_config(workdir / "gateway.toml", sections)

    def all_healthy(reply: httpx.Response) -> bool:
        return reply.status_code == 200 and reply.json().get("healthy_neurons") == len(neurons)

    args = ["serve", "--config", str(config)]
    return Process("gateway", args, port, workdir / "gateway.log", all_healthy, src=src)


@contextmanager
def running(*processes: Process) -> Iterator[tuple[Process, ...]]:
    """Start the processes together and wait until each is ready; stop every one of them on the way out,
    however it is left."""
    with ExitStack() as stack:
        for process in processes:
            stack.callback(process.stop)
            process.launch()
        for process in processes:
            process.wait_ready()
        yield processes
