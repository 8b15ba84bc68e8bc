"""Custom ops, one file per op: the public function the layers call, its Triton kernel and a
plain-PyTorch ``*_ref``.

Each public function is its op's dispatch point: it takes ``kernels`` (a :data:`KernelBackend`,
resolved once per engine in ``selection.py``) and runs the Triton kernel or the reference behind one
signature. Ops whose public function has no ``kernels`` parameter yet run their reference everywhere.
Shapes follow vLLM's flattened-ragged convention: ``[num_tokens, ...]`` plus ``cu_seqlens`` (prefix
sums of per-sequence token counts). ``compile_specs.py`` compiles every kernel for sm_90 in CI;
``launch.py`` describes a launch as data so the op and that harness share it.
"""
