"""Thin Litestar apps over the library (neuron, gateway), plus config, SSE, auth and metrics.

    neuron.py       the neuron app: one host's engines over HTTP (``python -m cortex.server.neuron``)
    gateway.py      the gateway app: OpenAI + Anthropic over cortex.Fleet (``-m cortex.server.gateway``)
    embedded.py     ``cortex serve`` with no neurons: gateway + local neuron (+ demo model)
    config.py       cortex.toml schema, loading, environment overrides (the only reader of os.environ)
    model_store.py  the neuron's models: discovery, safe ids, single-flight load, unload
    engine_loader.py  the real EngineLoader (cortex.Engine); torch is imported only when it loads
    admission.py    max running + bounded FIFO queue + timeout, per model
    generation.py   one OpenAI-shaped generation on an engine (chunks or whole bodies)
    openai_wire.py  OpenAI request parsing and response shapes for the neuron
    sse.py          SSE encoding and keep-alives      http_errors.py  errors in the caller's dialect
    metrics.py      Prometheus metrics, per-app registries   auth.py  optional API keys
    devices.py      GPU (NVML / torch.cuda) and CPU facts    status.py  ``cortex status``
    errors.py       the servers' exception tree

Importing this package (and gateway.py, config.py) does not import torch.
"""
