"""Custom ops, one file per op: the public function the layers call and a plain-PyTorch ``*_ref``.

Every public function is a dispatch point: today it is the PyTorch reference itself (an alias at the
end of its module), on every device; the GPU kernels (a later issue) plug in there, behind the same
signature, and are tested against the references. Shapes follow vLLM's flattened-ragged convention:
``[num_tokens, ...]`` plus ``cu_seqlens`` (prefix sums of per-sequence token counts).
"""
