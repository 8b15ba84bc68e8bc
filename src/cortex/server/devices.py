"""Host and device facts for a neuron's ``/health`` and ``/discovery``.

Each device entry names the device as an engine takes it (``"device": "cuda:0"`` or ``"cpu"``).

GPUs are read through NVML (``nvidia-ml-py``) when it is importable and a driver answers, else through
``torch.cuda`` (torch imported only here, lazily); with no GPU the host's RAM is reported as device
``cpu``. Utilization and temperature are reported where known.
"""

from __future__ import annotations

import os
import platform
import socket
from typing import Any


def _nvml_devices() -> list[dict[str, Any]] | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            device: dict[str, Any] = {
                "index": index,
                "device": f"cuda:{index}",
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_total_bytes": int(memory.total),
                "memory_used_bytes": int(memory.used),
                "memory_free_bytes": int(memory.free),
            }
            try:
                device["utilization"] = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
                device["temperature_c"] = pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
            except pynvml.NVMLError:
                pass
            devices.append(device)
        return devices
    finally:
        pynvml.nvmlShutdown()


def _torch_devices() -> list[dict[str, Any]] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    devices = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        devices.append(
            {
                "index": index,
                "device": f"cuda:{index}",
                "name": torch.cuda.get_device_name(index),
                "memory_total_bytes": int(total),
                "memory_used_bytes": int(total - free),
                "memory_free_bytes": int(free),
            }
        )
    return devices


def _meminfo() -> tuple[int, int]:
    """(total, available) RAM in bytes, from /proc/meminfo where present."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.strip()}
        return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, KeyError, ValueError, IndexError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return total, total


def cpu_device() -> dict[str, Any]:
    total, available = _meminfo()
    return {
        "index": 0,
        "device": "cpu",
        "name": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "memory_total_bytes": total,
        "memory_used_bytes": total - available,
        "memory_free_bytes": available,
    }


def gpu_devices() -> list[dict[str, Any]]:
    """The GPUs visible to this process; empty when there are none."""
    return _nvml_devices() or _torch_devices() or []


def devices_for(device: str) -> list[dict[str, Any]]:
    """The devices a neuron running on ``device`` ("cpu", "cuda", "cuda:N") should report."""
    if device.startswith("cuda"):
        gpus = gpu_devices()
        if ":" in device:
            wanted = int(device.split(":", 1)[1])
            gpus = [gpu for gpu in gpus if gpu["index"] == wanted]
        if gpus:
            return gpus
    return [cpu_device()]


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; other values unchanged."""
    if device != "auto":
        return device
    return "cuda" if gpu_devices() else "cpu"


def host_facts(device: str) -> dict[str, Any]:
    total, _ = _meminfo()
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_total_bytes": total,
        "device": device,
        "gpus": gpu_devices(),
    }
