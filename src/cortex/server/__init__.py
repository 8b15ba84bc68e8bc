"""Thin Litestar apps over the library (neuron, gateway), plus config, SSE, auth and metrics.

    serve.py          running the apps: uvicorn wiring, sockets, logging, drain (called by cortex.cli)
    edge.py           the HTTP edge: request bodies, dialect detection, errors in the caller's dialect
    auth.py           optional API keys          errors.py  the servers' exception tree
    config.py         cortex.toml schema, loading, environment overrides (the only reader of os.environ)
    config_reference.py  every key of cortex.toml and models.toml, as the docs' generated reference
    metrics.py        Prometheus metrics and the scrape-time gauges, per-app registries
    sse.py            SSE encoding, keep-alives and the neuron's event streams

    gateway.py        the gateway app: OpenAI + Anthropic over cortex.Fleet (``-m cortex.server.gateway``)
    relay.py          the gateway's request path: through the fleet to a neuron and back, counted once
    fleet_config.py   the gateway's Fleet from cortex.toml and models.toml
    affinity.py       which conversation a request belongs to (sticky routing)
    status.py         the fleet's status for people: the gateway's HTML page and ``cortex status``
    embedded.py       ``cortex serve`` with no neurons: gateway + local neuron (+ demo model)

    neuron.py         the neuron app: one host's engines over HTTP (``python -m cortex.server.neuron``)
    neuron_state.py   what a neuron app holds (config, model store, metrics) and runs requests through
    generation.py     one inference request: admission slot, in-flight count, duration, engine deltas
    wire/             the dialects the neuron speaks: request bodies in, bodies and streams out
    served_engine.py  the seam to the library: what the neuron needs of an engine and its loader
    model_store.py    the neuron's models: discovery, safe ids, single-flight load, unload
    engine_loader.py  the real EngineLoader (cortex.Engine); torch is imported only when it loads
    admission.py      max running + bounded FIFO queue + timeout, per model
    devices.py        GPU (NVML / torch.cuda) and CPU facts

Importing this package (and gateway.py, config.py) does not import torch.
"""
