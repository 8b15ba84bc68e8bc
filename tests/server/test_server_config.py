"""cortex.toml / models.toml loading: the shipped examples, errors naming file and key, env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex.server.config import Listen, config_from_dict, load_config, parse_bytes
from cortex.server.errors import ConfigError
from cortex.server.fleet_config import build_fleet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_example_files_load_and_build_a_fleet():
    config = load_config(EXAMPLES / "cortex.toml", environ={})
    assert config.gateway.listen == Listen(host="0.0.0.0", port=31313)
    assert config.neuron.memory_budget_bytes == 70 * 2**30
    neuron = config.neuron
    assert (
        neuron.enable_prefix_caching,
        neuron.snapshot_interval_blocks,
        neuron.snapshot_memory_fraction,
    ) == (
        True,
        64,
        0.2,
    )
    assert [n.name for n in config.neurons] == ["gpu1", "gpu2"]
    assert config.models_file() == EXAMPLES.resolve() / "models.toml"
    fleet = build_fleet(config)
    assert fleet.policy.eviction == "lru"
    assert fleet.resolve("claude-opus-4-1") == "qwen3.6-27b"
    assert fleet.resolve("claude-haiku-9") == "qwen3.5-9b"


def test_defaults_without_a_file():
    config = load_config(None, environ={})
    assert str(config.gateway.listen) == "127.0.0.1:31313"
    assert str(config.gateway.metrics_listen) == "127.0.0.1:31314"
    assert str(config.neuron.listen) == "127.0.0.1:13131"
    assert config.neuron.model_dirs == (Path("~/.cache/cortex/models").expanduser(),)
    assert config.neurons == ()


@pytest.mark.parametrize(
    ("text", "key", "why"),
    [
        ('[gateway]\nlisten = "nowhere"\n', "gateway.listen", "host:port"),
        ("[gateway]\nlisten_port = 1\n", "gateway.listen_port", "Extra inputs"),
        ('[neuron]\nmemory_budget_bytes = "lots"\n', "neuron.memory_budget_bytes", "not a size"),
        ("[neuron]\nmax_running = 0\n", "neuron.max_running", "greater than or equal to 1"),
        ('[[neurons]]\nname = "a"\nurl = "ftp://x"\n', "neurons.0.url", "pattern"),
        (
            '[[neurons]]\nname = "a"\nurl = "http://x"\n[[neurons]]\nname = "a"\nurl = "http://y"\n',
            "neurons",
            "unique",
        ),
        ('[auth]\napi_keys = [""]\n', "auth.api_keys", "empty"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, text, key, why):
    path = tmp_path / "cortex.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert str(path) in message
    assert f": {key}: " in message
    assert why in message


def test_toml_syntax_errors_name_the_line(tmp_path):
    path = tmp_path / "cortex.toml"
    path.write_text('[gateway]\nlisten = "a:1"\nkeepalive_s = = 3\n')
    with pytest.raises(ConfigError, match=r"cortex\.toml: invalid TOML: .*line 3"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml", environ={})


def test_a_bad_models_toml_names_its_file_and_key(tmp_path):
    (tmp_path / "models.toml").write_text('[[models]]\nid = "m"\npriorty = 3\n')
    (tmp_path / "cortex.toml").write_text('[fleet]\neviction = "lru"\n')
    config = load_config(tmp_path / "cortex.toml", environ={})
    with pytest.raises(ConfigError, match=r"models\.toml.*priorty"):
        build_fleet(config)
    (tmp_path / "cortex.toml").write_text('[fleet]\neviction = "fifo"\n')
    with pytest.raises(ConfigError, match=r"cortex\.toml: fleet: .*eviction"):
        build_fleet(load_config(tmp_path / "cortex.toml", environ={}))


def test_environment_overrides(tmp_path):
    path = tmp_path / "cortex.toml"
    path.write_text('[gateway]\nlisten = "0.0.0.0:1"\n')
    environ = {
        "CORTEX_LISTEN": "127.0.0.1:9999",
        "CORTEX_API_KEYS": "k1, k2",
        "CORTEX_MODELS": f"{tmp_path / 'a'}:{tmp_path / 'b'}",
        "CORTEX_MEMORY_BUDGET": "2GiB",
        "CORTEX_DEVICE": "cpu",
        "CORTEX_PREFIX_CACHING": "false",
    }
    config = load_config(path, environ=environ)
    assert config.neuron.enable_prefix_caching is False
    assert config.gateway.listen.port == 9999
    assert config.auth.api_keys == ("k1", "k2")
    assert config.neuron.model_dirs == (tmp_path / "a", tmp_path / "b")
    assert config.neuron.memory_budget_bytes == 2 * 2**30
    assert config.neuron.device == "cpu"
    assert load_config(None, environ={"CORTEX_CONFIG": str(path)}).gateway.listen.port == 1
    with pytest.raises(ConfigError, match="CORTEX_MAX_RUNNING"):
        load_config(path, environ={"CORTEX_MAX_RUNNING": "many"})


@pytest.mark.parametrize(
    ("raw", "expected"), [(5, 5), ("5", 5), ("1KiB", 1024), ("1.5 GB", 1_500_000_000), ("2gib", 2 * 2**30)]
)
def test_sizes(raw, expected):
    assert parse_bytes(raw) == expected


def test_the_responses_store_lives_under_the_state_folder_unless_placed(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_STATE_HOME")
    default = config_from_dict({}, environ={})
    assert default.responses_store_path() == Path("~/.local/state/cortex/responses.sqlite3").expanduser()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    followed = config_from_dict({}, environ={})
    assert followed.responses_store_path() == tmp_path / "xdg" / "cortex" / "responses.sqlite3"
    assert (default.responses.retention_s, default.responses.max_bytes) == (30 * 86400, 2**30)
    (tmp_path / "cortex.toml").write_text('[gateway]\nstate_dir = "state"\n[responses]\nmax_bytes = "10MB"\n')
    placed = load_config(tmp_path / "cortex.toml", environ={})
    assert placed.responses_store_path() == tmp_path / "state" / "responses.sqlite3"
    assert placed.responses.max_bytes == 10**7
    moved = load_config(tmp_path / "cortex.toml", environ={"CORTEX_STATE_DIR": str(tmp_path / "elsewhere")})
    assert moved.responses_store_path() == tmp_path / "elsewhere" / "responses.sqlite3"
    (tmp_path / "file.toml").write_text('[responses]\npath = "db/r.sqlite3"\nretention_s = 0\n')
    exact = load_config(tmp_path / "file.toml", environ={})
    assert (exact.responses_store_path(), exact.responses.retention_s) == (tmp_path / "db" / "r.sqlite3", 0)
