"""Tensor parallelism: one model split over the devices of one host, a process per rank.

``Engine.from_pretrained(path, tensor_parallel_size=N)`` starts a :class:`ParallelExecutor`: it spawns
N rank processes (``worker.py``) that form a ``torch.distributed`` group (NCCL on CUDA, gloo on CPU),
each loading only its slices of the checkpoint (``sharding.py``) into the ordinary model code with
the collectives added from outside (``parallel_layers.py``). The engine's one scheduler decides each
step; the same ``StepInput`` goes to every rank (``protocol.py``), every rank runs the forward on its
shard, rank 0 samples. See docs/parallel.md.
"""
