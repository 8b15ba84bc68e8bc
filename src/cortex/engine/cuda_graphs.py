"""DecodeGraphs: pure-decode steps replayed from CUDA graphs captured at load, one per padded batch size.

A decode step of ``n`` sequences runs as the graph of the smallest captured size ``B >= n``: the step's
packet (``HostPacket``, laid out for ``B`` rows with ``max_num_blocks``-wide block tables) is copied
into the graphs' one static input buffer, the graph replays the whole forward (every kernel launch of
every layer, no host work), and the first ``n`` rows of the static logits are sampled. Rows ``n..B``
are padding: no KV slot (``slot_mapping = -1``), no context (``seq_lens = 0``), the engine's spare
state slot (owned by no request). A graph is captured with ``max_seq_len = max_model_len``, so the
attention kernels' split counts hold for any context the engine admits.

Graphs are used only with the Triton kernels on CUDA (the references read device values back, which a
graph cannot capture). All sizes share one memory pool, captured largest first, as vLLM and nano-vllm
do. Capture costs a warm-up forward and a capture per size at load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cortex.engine.batch import ForwardBatch
from cortex.engine.cache.layer_cache import LayerCache
from cortex.engine.host_packet import HostPacket

DEFAULT_CAPTURE_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
SAMPLING_RESERVE_BYTES = 4 << 20  # room after the forward's arrays for the sampler's columns


def default_capture_sizes(max_num_seqs: int) -> tuple[int, ...]:
    """The default sizes up to ``max_num_seqs`` (which is always one of them)."""
    return tuple(sorted({size for size in DEFAULT_CAPTURE_SIZES if size < max_num_seqs} | {max_num_seqs}))


# (packet, B): put the forward arrays of a B-row decode step, every row padding
PaddingPacket = Callable[[HostPacket, int], None]
# (tensors, B) -> the ForwardBatch over the packet's views for a B-row padded decode step
BatchOf = Callable[[dict[str, torch.Tensor], int], ForwardBatch]
Model = Callable[[ForwardBatch, Sequence[LayerCache]], torch.Tensor]


class DecodeGraphs:
    def __init__(
        self,
        model: Model,
        caches: Sequence[LayerCache],
        *,
        sizes: Sequence[int],
        vocab_size: int,
        device: torch.device,
        padding_packet: PaddingPacket,
        batch_of: BatchOf,
    ) -> None:
        assert device.type == "cuda", "CUDA graphs need a CUDA device"
        self.sizes = tuple(sorted(set(sizes)))
        largest = HostPacket()
        padding_packet(largest, self.sizes[-1])
        self.buffer = torch.empty(largest.nbytes + SAMPLING_RESERVE_BYTES, dtype=torch.uint8, device=device)
        self.logits = torch.empty(self.sizes[-1], vocab_size, dtype=torch.float32, device=device)
        self.batches: dict[int, ForwardBatch] = {}
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        pool = torch.cuda.graph_pool_handle()
        for size in reversed(self.sizes):
            packet = HostPacket()
            padding_packet(packet, size)
            batch = batch_of(packet.to(device, into=self.buffer), size)
            model(batch, caches)  # warm-up: compiles and loads every kernel outside the capture
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.logits[:size].copy_(model(batch, caches))
            self.batches[size] = batch
            self._graphs[size] = graph
        torch.cuda.synchronize(device)

    @property
    def max_size(self) -> int:
        return self.sizes[-1]

    def size_for(self, num_seqs: int) -> int | None:
        """The smallest captured size holding ``num_seqs`` rows, or None."""
        return next((size for size in self.sizes if size >= num_seqs), None)

    def replay(self, size: int) -> torch.Tensor:
        """Run the size-``size`` graph over what the buffer holds now; its logits [size, vocab]."""
        self._graphs[size].replay()
        return self.logits[:size]
