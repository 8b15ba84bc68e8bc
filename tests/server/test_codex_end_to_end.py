"""The real Codex CLI (``@openai/codex``, ``codex exec``) against a real gateway and neuron, set up as
docs/servers.md tells a new user: a custom model provider with the Responses wire API in
``$CODEX_HOME/config.toml``. Skips where the ``codex`` binary is absent (scripts/test.sh installs it
where npm exists)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from server_live import LiveServer

from cortex.server.config import NeuronConfig, config_from_dict
from cortex.server.gateway import create_app as create_gateway
from cortex.server.neuron import create_app as create_neuron

CODEX_MAX_MODEL_LEN = 32768  # Codex's own prompt (instructions, tools) is ~10k tokens
CODEX_CONFIG = """\
model = "qwen-a"
model_provider = "cortex"

[model_providers.cortex]
name = "cortex"
base_url = "{url}/v1"
wire_api = "responses"
env_key = "CORTEX_API_KEY"
request_max_retries = 0
stream_max_retries = 0
"""


@pytest.fixture
def codex_gateway(tmp_path) -> Iterator[str]:
    """A gateway over one neuron serving a tiny random Qwen3.5 with the real tokenizer. A random model
    almost never samples its end-of-turn token, so this one lists every fourth token id as one
    (generation_config.json ``eos_token_id``): its turns end within a few tokens, as a real model's do,
    and Codex sees completed responses."""
    from cortex.engine.checkpoint import make_model
    from cortex.engine.text.qwen import write_qwen_tokenizer_files

    root = tmp_path / "models"
    folder = make_model(root / "qwen-a", arch="qwen3_5", preset="tiny", vocab_size=248320)
    write_qwen_tokenizer_files(folder)
    config_path = folder / "generation_config.json"
    generation = json.loads(config_path.read_text()) if config_path.is_file() else {}
    generation["eos_token_id"] = [248046, 248044, *range(0, 248000, 4)]
    config_path.write_text(json.dumps(generation))
    neuron = LiveServer(
        create_neuron(
            NeuronConfig(
                name="n1",
                model_dirs=(root,),
                device="cpu",
                dtype="float32",
                max_model_len=CODEX_MAX_MODEL_LEN,
                cache_memory_bytes=512 * 2**20,
                memory_budget_bytes=4 * 10**9,
                keepalive_s=0.5,
            )
        )
    ).start()
    config = config_from_dict(
        {
            "gateway": {"keepalive_s": 0.5},
            "responses": {"path": str(tmp_path / "state" / "responses.sqlite3")},
            "neurons": [{"name": "n1", "url": neuron.url}],
        },
        environ={},
    )
    gateway = LiveServer(create_gateway(config)).start()
    try:
        yield gateway.url
    finally:
        gateway.stop()
        neuron.stop()


@pytest.mark.skipif(shutil.which("codex") is None, reason="the codex CLI (@openai/codex) is absent")
def test_real_codex_cli_runs_a_turn_through_the_gateway(codex_gateway, tmp_path):
    home = tmp_path / "home"
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True)
    (codex_home / "config.toml").write_text(CODEX_CONFIG.format(url=codex_gateway))
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),  # the CLI writes its sessions there, not into the real home
        "CODEX_HOME": str(codex_home),
        "CORTEX_API_KEY": "local",
    }
    done = subprocess.run(
        ["codex", "exec", "--skip-git-repo-check", "--json", "say hi"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    kinds = [event.get("type") for event in events]
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "turn.completed" in kinds, kinds
    assert "turn.failed" not in kinds, events
    assert "error" not in kinds, events
    (completed,) = [e for e in events if e["type"] == "turn.completed"]
    assert completed["usage"]["input_tokens"] > 1000  # Codex's real prompt reached the model
    assert completed["usage"]["output_tokens"] > 0
