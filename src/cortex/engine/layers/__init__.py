"""Model building blocks: norms, rotary, attention, Gated DeltaNet, MLP and MoE.

Layers hold weights and call the ops in ``engine/kernels``; per-step metadata arrives as the
``ForwardBatch`` argument and cache tensors as explicit arguments. No layer holds runtime state.
"""
