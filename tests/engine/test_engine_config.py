"""EngineConfig's tensor-parallel knobs: each rank's device, and what is refused."""

from __future__ import annotations

import pytest

from cortex.engine.engine_config import EngineConfig
from cortex.errors import InvalidRequestError


def test_rank_devices_default_to_consecutive_devices():
    assert EngineConfig().rank_devices == ("cpu",)
    assert EngineConfig(tensor_parallel_size=2).rank_devices == ("cpu", "cpu")
    assert EngineConfig(device="cuda", tensor_parallel_size=2).rank_devices == ("cuda:0", "cuda:1")
    assert EngineConfig(device="cuda:2", tensor_parallel_size=2).rank_devices == ("cuda:2", "cuda:3")
    listed = EngineConfig(device="cuda:5", tensor_parallel_size=2, devices=("cuda:5", "cuda:1"))
    assert listed.rank_devices == ("cuda:5", "cuda:1")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tensor_parallel_size": 0}, "tensor_parallel_size must be a positive integer"),
        ({"tensor_parallel_size": 2, "devices": ("cuda:0",), "device": "cuda"}, "lists 1 devices"),
        ({"tensor_parallel_size": 2, "devices": ("cuda:0", "cuda:0"), "device": "cuda"}, "its own CUDA"),
        ({"tensor_parallel_size": 2, "devices": ("cuda:0", "gpu1"), "device": "cuda"}, "'cpu' or 'cuda:N'"),
        ({"tensor_parallel_size": 2, "devices": ("cuda:0", "cpu"), "device": "cuda"}, "all 'cpu' or all"),
        ({"tensor_parallel_size": 2, "devices": ("cuda:0", "cuda:1")}, "use the same kind"),
        ({"rank_timeout_s": 0}, "rank_timeout_s must be a positive number"),
        ({"load_timeout_s": True}, "load_timeout_s must be a positive number"),
    ],
)
def test_bad_tensor_parallel_settings_are_refused(options, message):
    with pytest.raises(InvalidRequestError, match=message):
        EngineConfig(**options)
