"""Thin Litestar apps (neuron, gateway) over the library, plus config, SSE and metrics."""
