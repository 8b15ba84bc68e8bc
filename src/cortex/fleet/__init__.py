"""cortex.fleet: many neurons behind one catalogue: routing, cold loads, eviction, health, failover.

``Fleet`` is the entry point; ``NeuronSpec``, ``ModelProfile`` and ``FleetPolicy`` configure it.
See docs/fleet.md for the concepts, the policies and the neuron HTTP contract this client relies on.
"""

from cortex.fleet.catalogue import CatalogueEntry
from cortex.fleet.errors import (
    FleetConfigError,
    FleetError,
    FleetStreamError,
    LoadTimeoutError,
    ModelNotFoundError,
    NeuronUnavailableError,
    NoCapacityError,
    UpstreamError,
)
from cortex.fleet.fleet import KEEPALIVE, Fleet, FleetResponse, KeepAlive, StreamItem
from cortex.fleet.profiles import FleetPolicy, ModelProfile, NeuronSpec, load_models_toml
from cortex.fleet.status import FleetStatus, NeuronModelStatus, NeuronStatus

__all__ = [
    "KEEPALIVE",
    "CatalogueEntry",
    "Fleet",
    "FleetConfigError",
    "FleetError",
    "FleetPolicy",
    "FleetResponse",
    "FleetStatus",
    "FleetStreamError",
    "KeepAlive",
    "LoadTimeoutError",
    "ModelNotFoundError",
    "ModelProfile",
    "NeuronModelStatus",
    "NeuronSpec",
    "NeuronStatus",
    "NeuronUnavailableError",
    "NoCapacityError",
    "StreamItem",
    "UpstreamError",
    "load_models_toml",
]
