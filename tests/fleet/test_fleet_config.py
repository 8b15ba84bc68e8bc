"""Profiles, policy and models.toml: validation names the bad key; aliases resolve exact-then-glob."""

from __future__ import annotations

from pathlib import Path

import pytest

import cortex
import cortex.fleet
from cortex.errors import CortexError
from cortex.fleet import FleetConfigError, FleetPolicy, ModelProfile, NeuronSpec, load_models_toml
from cortex.fleet.catalogue import resolve_model


def test_public_names() -> None:
    assert cortex.Fleet is cortex.fleet.Fleet
    for name in cortex.fleet.__all__:
        assert hasattr(cortex.fleet, name), name
    assert issubclass(cortex.fleet.FleetError, CortexError)
    statuses = {
        cortex.fleet.ModelNotFoundError: 404,
        cortex.fleet.NoCapacityError: 503,
        cortex.fleet.LoadTimeoutError: 503,
        cortex.fleet.NeuronUnavailableError: 503,
    }
    for cls, status in statuses.items():
        assert cls.http_status == status


def test_models_toml_array_and_table_forms(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        """
[[models]]
id = "qwen3.5-27b"
neuron_model = "Qwen3.5-27B"
memory_bytes = 60_000_000_000
allowed_neurons = ["gpu1", "gpu2"]
preferred_neurons = ["gpu2"]
priority = 10
pinned = true
aliases = ["claude-*", "gpt-4o"]
max_model_len = 32768

[[models]]
id = "qwen3.5-0.8b"
idle_ttl_s = 600
"""
    )
    big, small = load_models_toml(path)
    assert big.upstream_id == "Qwen3.5-27B"
    assert big.memory_bytes == 60_000_000_000
    assert big.allowed_neurons == ("gpu1", "gpu2")
    assert big.pinned
    assert big.priority == 10
    assert small.idle_ttl_s == 600.0
    assert small.upstream_id == "qwen3.5-0.8b"
    path.write_text('[models."a.b"]\nmemory_bytes = 5\n')
    assert load_models_toml(path) == [ModelProfile("a.b", memory_bytes=5)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[models]]\nid = "a"\nmemroy_bytes = 1\n', "unknown keys ['memroy_bytes']"),
        ('[[models]]\nid = "a"\npinned = "yes"\n', "key 'pinned': expected a boolean"),
        ('[[models]]\nid = "a"\npriority = 1.5\n', "key 'priority': expected an integer"),
        ('[[models]]\nid = "a"\n[[models]]\nid = "a"\n', "duplicate model ids ['a']"),
        (
            '[[models]]\nid = "a"\nallowed_neurons = ["x"]\npreferred_neurons = ["y"]\n',
            "not in 'allowed_neurons'",
        ),
        ("[other]\n", "unknown top-level keys ['other']"),
        ("models = [", "models.toml"),
    ],
)
def test_models_toml_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(FleetConfigError) as info:
        load_models_toml(path)
    assert message in str(info.value)


def test_policy_and_neuron_from_dict() -> None:
    policy = FleetPolicy.from_dict({"eviction": "priority", "retry_attempts": 5, "poll_interval_s": 1})
    assert (policy.eviction, policy.retry_attempts, policy.poll_interval_s) == ("priority", 5, 1.0)
    with pytest.raises(FleetConfigError, match="'eviction' must be one of"):
        FleetPolicy.from_dict({"eviction": "fifo"})
    with pytest.raises(FleetConfigError, match="unknown keys \\['evict'\\]"):
        FleetPolicy.from_dict({"evict": "lru"})
    with pytest.raises(FleetConfigError, match="'retry_attempts' must be >= 1"):
        FleetPolicy(retry_attempts=0)
    assert NeuronSpec.from_dict({"name": "n1", "url": "http://h:13131"}).url == "http://h:13131"
    with pytest.raises(FleetConfigError, match="'url' must start with http"):
        NeuronSpec.from_dict({"name": "n1", "url": "h:13131"})


def test_alias_resolution_prefers_exact_names_then_patterns_in_order() -> None:
    profiles = [
        ModelProfile("big", aliases=("claude-opus-*",)),
        ModelProfile("small", neuron_model="Small-0.8B", aliases=("claude-*", "claude-opus-4")),
    ]
    assert resolve_model("claude-opus-4", profiles, ()) == "small"  # exact alias beats a pattern
    assert resolve_model("claude-opus-4-1", profiles, ()) == "big"
    assert resolve_model("claude-haiku", profiles, ()) == "small"
    assert resolve_model("Small-0.8B", profiles, ()) == "small"
    assert resolve_model("discovered", profiles, {"discovered"}) == "discovered"
    assert resolve_model("gpt-4o", profiles, ()) is None
