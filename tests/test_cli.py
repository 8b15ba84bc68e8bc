"""The ``cortex`` command line: version/help, cheap import, make-model, status, and the README's first
command (``cortex serve`` with no config: a gateway, a local neuron and a demo model) as a real process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from cortex.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cortex", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_version_and_help(capsys):
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("cortex ")
    with pytest.raises(SystemExit):
        main(["--version"])
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("serve", "neuron", "status", "make-model", "version"):
        assert command in out


def test_importing_the_cli_and_the_gateway_does_not_import_torch():
    code = (
        "import sys, cortex.cli, cortex.server.gateway, cortex.server.config; "
        "print('torch' in sys.modules, 'litestar' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert done.stdout.split()[0] == "False"


def test_the_apps_do_not_import_the_cli():
    code = "import sys, cortex.server.gateway, cortex.server.neuron; print('cortex.cli' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert done.stdout.split() == ["False"]


def test_make_model_writes_a_loadable_checkpoint(tmp_path, capsys):
    from cortex.engine.config import ModelConfig

    assert main(["make-model", str(tmp_path / "m"), "--arch", "qwen3", "--preset", "tiny"]) == 0
    assert "qwen3" in capsys.readouterr().out
    assert ModelConfig.from_hf(tmp_path / "m").arch == "qwen3"


def test_bad_config_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "cortex.toml"
    path.write_text('[gateway]\nlisten = "nowhere"\n')
    done = run_cli("serve", "--config", str(path), timeout=60)
    assert done.returncode == 2
    assert "gateway.listen" in done.stderr
    assert str(path) in done.stderr


def test_status_unreachable_gateway_exits_1(capsys):
    assert main(["status", "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_cortex_serve_with_no_config_makes_a_demo_model_and_serves_it(tmp_path, capsys):
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": SRC, "CORTEX_MODELS": str(tmp_path / "models"), "CORTEX_CONFIG": ""}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cortex",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-listen",
            f"127.0.0.1:{metrics_port}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "cortex serve did not start"
            time.sleep(0.25)
        with openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0) as sdk:
            assert [m.id for m in sdk.models.list()] == ["demo-qwen3.5-random"]
            reply = sdk.chat.completions.create(
                model="claude-opus-5-5", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
            )
        assert reply.usage.completion_tokens == 4
        assert (tmp_path / "models" / "demo-qwen3.5-random" / "README.md").is_file()
        assert "cortex_requests_total" in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text

        assert main(["status", "--url", url]) == 0
        table = capsys.readouterr().out
        assert "demo-qwen3.5-random (loaded)" in table
        assert main(["status", "--url", url, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["neurons"][0]["healthy"] is True
        assert main(["status", "--url", url, "--explain", "claude-opus-5-5"]) == 0
        assert json.loads(capsys.readouterr().out)["requested"] == "claude-opus-5-5"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert "DEMO model" in output
    assert "nonsense" in output


def wait_until_up(process: subprocess.Popen, url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"{url}/health")
            return
        except httpx.HTTPError:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, f"{url} did not start"
            time.sleep(0.25)


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    assert process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    return output


def test_cortex_neuron_and_gateway_as_processes(tmp_path):
    from cortex.engine.checkpoint import make_model

    make_model(
        tmp_path / "models" / "tiny-qwen3", arch="qwen3", preset="tiny"
    )  # no tokenizer: token ids only
    neuron_port, gateway_port, metrics_port = free_port(), free_port(), free_port()
    config = tmp_path / "cortex.toml"
    config.write_text(
        f'[gateway]\nlisten = "127.0.0.1:{gateway_port}"\nmetrics_listen = "127.0.0.1:{metrics_port}"\n'
        f'[[neurons]]\nname = "box"\nurl = "http://127.0.0.1:{neuron_port}"\n'
        '[neuron]\nname = "box"\ndevice = "cpu"\ncache_memory_bytes = "32MiB"\n'
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    pipes = {"env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    neuron = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cortex.server.neuron",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{neuron_port}",
            "--models",
            str(tmp_path / "models"),
        ],
        **pipes,
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "cortex.server.gateway", "--config", str(config)], **pipes
    )
    neuron_url, gateway_url = f"http://127.0.0.1:{neuron_port}", f"http://127.0.0.1:{gateway_port}"
    try:
        wait_until_up(neuron, neuron_url)
        wait_until_up(gateway, gateway_url)
        assert httpx.get(f"{neuron_url}/health").json()["devices"][0]["memory_total_bytes"] > 0
        (model,) = httpx.get(f"{neuron_url}/discovery").json()["models"]
        assert (model["id"], model["architecture"]) == ("tiny-qwen3", "qwen3")
        body = {"model": "tiny-qwen3", "prompt": [1, 2, 3], "max_tokens": 4, "temperature": 0}
        deadline = time.monotonic() + 30
        while (
            reply := httpx.post(f"{gateway_url}/v1/completions", json=body, timeout=60)
        ).status_code == 404:
            assert time.monotonic() < deadline, reply.text  # until the gateway's first poll saw the neuron
            time.sleep(0.25)
        usage = reply.json()["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (3, 4)
        assert (
            'cortex_model_loads_total{model="tiny-qwen3",neuron="box"} 1.0'
            in httpx.get(f"{neuron_url}/metrics").text
        )
        assert (
            'cortex_fleet_events_total{type="loads"} 1.0'
            in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        )
    finally:
        gateway_output = stop(gateway)
        neuron_output = stop(neuron)
    assert "Application shutdown complete" in neuron_output  # graceful: drained, engines closed
    assert "Application shutdown complete" in gateway_output
