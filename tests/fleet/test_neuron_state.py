"""NeuronState: a poll that raced a failed request does not put a dead neuron back into routing."""

from __future__ import annotations

import time

from cortex.fleet.poller import NeuronState
from cortex.fleet.profiles import NeuronSpec

HEALTH = {
    "status": "ok",
    "models": [],
    "in_flight": 0,
    "queued": 0,
    "memory_budget_bytes": 1,
    "memory_used_bytes": 0,
}


def test_only_a_poll_sent_after_a_neuron_went_down_restores_it() -> None:
    state = NeuronState(NeuronSpec(name="a", url="http://127.0.0.1:1"))
    sent_before = time.monotonic()
    state.apply(HEALTH, {}, {}, sent_s=sent_before, now_s=sent_before)
    assert state.healthy

    state.mark_down("ConnectError: refused")
    state.apply(HEALTH, {}, {}, sent_s=sent_before, now_s=time.monotonic())  # answered before the kill
    assert not state.healthy
    assert state.last_error == "ConnectError: refused"

    sent_after = time.monotonic()
    state.apply(HEALTH, {}, {}, sent_s=sent_after, now_s=sent_after)
    assert state.healthy
    assert state.last_error is None
