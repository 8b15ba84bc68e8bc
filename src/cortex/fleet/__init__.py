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
    NeuronTransportError,
    NeuronUnavailableError,
    NoCapacityError,
    UpstreamError,
)
from cortex.fleet.fleet import Fleet, FleetResponse
from cortex.fleet.profiles import FleetPolicy, ModelProfile, NeuronSpec, load_models_toml
from cortex.fleet.status import FleetStatus, NeuronModelStatus, NeuronStatus
from cortex.fleet.upstream import FleetUpstream

__all__ = [
    "CatalogueEntry",
    "Fleet",
    "FleetConfigError",
    "FleetError",
    "FleetPolicy",
    "FleetResponse",
    "FleetStatus",
    "FleetStreamError",
    "FleetUpstream",
    "LoadTimeoutError",
    "ModelNotFoundError",
    "ModelProfile",
    "NeuronModelStatus",
    "NeuronSpec",
    "NeuronStatus",
    "NeuronTransportError",
    "NeuronUnavailableError",
    "NoCapacityError",
    "UpstreamError",
    "load_models_toml",
]
