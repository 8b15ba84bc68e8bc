"""Host and device facts for /health and /discovery."""

from __future__ import annotations

import pytest

from cortex.server.devices import cpu_device, devices_for, host_facts, resolve_device


def test_cpu_facts_report_the_hosts_memory():
    (device,) = devices_for("cpu")
    assert device["index"] == 0
    assert device["memory_total_bytes"] >= device["memory_free_bytes"] > 0
    assert device["memory_used_bytes"] == device["memory_total_bytes"] - device["memory_free_bytes"]
    assert cpu_device()["name"].startswith("cpu")
    facts = host_facts("cpu")
    assert facts["memory_total_bytes"] == device["memory_total_bytes"]
    assert {"hostname", "platform", "python", "cpu_count", "gpus"} <= set(facts)
    assert resolve_device("cpu") == "cpu"


@pytest.mark.gpu
def test_gpu_facts_come_from_nvml_or_torch():
    assert resolve_device("auto") == "cuda"
    devices = devices_for("cuda:0")
    assert [d["index"] for d in devices] == [0]
    assert devices[0]["memory_total_bytes"] > 2**30
    assert devices[0]["name"]
