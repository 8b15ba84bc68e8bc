"""HostPacket: arrays put on the host come back on the device with their values, dtypes and shapes."""

from __future__ import annotations

import pytest
import torch

from cortex.engine.host_packet import HostPacket

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
def test_round_trip_keeps_values_dtypes_and_shapes(device):
    packet = HostPacket()
    packet.put("ids", [1, 2, 3], torch.int64)
    packet.put("table", [[4, 5], [6, -1]], torch.int32)
    packet.put("empty", [], torch.int64)
    packet.put("u", [0.25, 0.5], torch.float64)
    packet.put("t", torch.tensor([1.5, 2.5, 3.5]), torch.float32)
    out = packet.to(torch.device(device))
    assert out["ids"].tolist() == [1, 2, 3]
    assert out["ids"].dtype == torch.int64
    assert out["table"].tolist() == [[4, 5], [6, -1]]
    assert out["table"].dtype == torch.int32
    assert out["empty"].shape == (0,)
    assert out["u"].tolist() == [0.25, 0.5]
    assert out["t"].tolist() == [1.5, 2.5, 3.5]
    # one buffer, every array 16-byte aligned within it
    storages = {t.untyped_storage().data_ptr() for t in out.values()}
    assert len(storages) == 1
    assert all(t.data_ptr() % 16 == 0 for t in out.values())
    assert packet.nbytes == 3 * 16 + 0 + 16 + 16


def test_a_name_is_put_once():
    packet = HostPacket()
    packet.put("ids", [1], torch.int64)
    with pytest.raises(AssertionError):
        packet.put("ids", [2], torch.int64)
