"""The fleet's exception tree; every class carries the HTTP status a gateway should answer with.

cortex.errors.CortexError
└── FleetError                          http_status 500
    ├── FleetConfigError (ValueError)   a bad profile, policy or models.toml key (operator error)
    ├── ModelNotFoundError              no profile, alias or neuron knows the model -> 404
    ├── NoCapacityError                 the model is known but no healthy neuron can hold it now -> 503
    │   └── LoadTimeoutError            a cold load did not finish within ``max_load_wait_s`` -> 503
    ├── NeuronUnavailableError          every eligible neuron failed (connection errors, 5xx) -> 503
    ├── UpstreamError                   a neuron answered with an error; carries its status, body and
    │                                   Retry-After
    ├── FleetStreamError                a stream broke after its first item; the gateway ends the
    │                                   stream with an error event in the caller's dialect
    └── NeuronTransportError            one request to a neuron failed in transport (refused, dropped,
                                        timed out); the fleet fails over or turns it into the above
"""

from __future__ import annotations

from typing import Any

from cortex.errors import CortexError

__all__ = [
    "FleetConfigError",
    "FleetError",
    "FleetStreamError",
    "LoadTimeoutError",
    "ModelNotFoundError",
    "NeuronTransportError",
    "NeuronUnavailableError",
    "NoCapacityError",
    "UpstreamError",
]


class FleetError(CortexError):
    """Base of every fleet failure; ``http_status`` is what a gateway returns for it."""

    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FleetConfigError(FleetError, ValueError):
    """A profile, policy or ``models.toml`` entry is invalid; the message names the bad key."""


class ModelNotFoundError(FleetError):
    """The requested model is neither configured, aliased nor loadable on any known neuron."""

    http_status = 404

    def __init__(self, model: str, message: str | None = None) -> None:
        super().__init__(message or f"The model '{model}' does not exist or is not served by this fleet.")
        self.model = model


class NoCapacityError(FleetError):
    """The model is known, but no healthy neuron can serve or load it now; ``reason`` says why."""

    http_status = 503

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"No capacity for model '{model}': {reason}")
        self.model = model
        self.reason = reason


class LoadTimeoutError(NoCapacityError):
    """A cold load (or the wait for capacity to free up) took longer than the policy allows."""


class NeuronUnavailableError(FleetError):
    """Every attempt failed with a connection error or a 5xx; ``attempts`` lists (neuron, cause)."""

    http_status = 503

    def __init__(self, model: str, attempts: list[tuple[str, str]]) -> None:
        tried = "; ".join(f"{neuron}: {cause}" for neuron, cause in attempts) or "no neuron tried"
        super().__init__(f"No neuron could serve model '{model}' ({tried})")
        self.model = model
        self.attempts = attempts


class UpstreamError(FleetError):
    """A neuron answered with an error status; ``status`` and ``body`` are the neuron's."""

    def __init__(self, neuron: str, status: int, body: Any, *, retry_after: str | None = None) -> None:
        super().__init__(f"Neuron '{neuron}' answered {status}: {_error_message(body)}")
        self.neuron = neuron
        self.status = status
        self.body = body
        self.http_status = status
        self.retry_after = retry_after


class FleetStreamError(FleetError):
    """A stream failed after items were already yielded; the gateway turns it into an error event."""

    http_status = 502

    def __init__(self, neuron: str, message: str) -> None:
        super().__init__(f"Stream from neuron '{neuron}' broke: {message}")
        self.neuron = neuron


def _error_message(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return str(body)[:200]


class NeuronTransportError(FleetError):
    """A request to a neuron got no answer: ``gone`` when the connection was refused (the neuron leaves
    routing at once), or dropped while its answer was arriving; ``timed_out`` when it did not answer in
    time (it is slow, or frozen); ``dropped`` when a connection closed before any answer came (a pooled
    keep-alive connection the neuron closed as it was reused looks the same: no evidence of death, the
    request is tried again); else a broken body."""

    http_status = 502

    def __init__(self, message: str, *, gone: bool, timed_out: bool = False, dropped: bool = False) -> None:
        super().__init__(message)
        self.gone = gone
        self.timed_out = timed_out
        self.dropped = dropped
