"""The gateway's :class:`cortex.Fleet` from cortex.toml (``[[neurons]]``, ``[fleet]``) and models.toml."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cortex.fleet import Fleet, FleetError, FleetPolicy, ModelProfile, NeuronSpec, load_models_toml
from cortex.server.config import CortexConfig
from cortex.server.errors import ConfigError


def build_fleet(
    config: CortexConfig, *, default_profiles: Sequence[ModelProfile] = (), **fleet_kwargs: Any
) -> Fleet:
    """A Fleet from cortex.toml's ``[[neurons]]`` and ``[fleet]`` and models.toml's profiles
    (``default_profiles`` when there is no models.toml)."""
    source = str(config.source or "<config>")
    try:
        policy = FleetPolicy.from_dict(config.fleet)
    except FleetError as error:
        raise ConfigError(str(error), file=source, key="fleet") from None
    models_file = config.models_file()
    profiles = list(default_profiles)
    if models_file is not None:
        try:
            profiles = load_models_toml(models_file)
        except FleetError as error:
            raise ConfigError(str(error), file=str(models_file)) from None
    neurons = [
        NeuronSpec(
            name=n.name, url=n.url, api_key=n.api_key, timeout_s=config.gateway.read_timeout_s, kind=n.kind
        )
        for n in config.neurons
    ]
    return Fleet(neurons, profiles, policy, **fleet_kwargs)
