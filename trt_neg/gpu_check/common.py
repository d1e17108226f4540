"""Timing helpers shared by the sections (CUDA events; torch imported by the caller)."""

from __future__ import annotations

import torch

# The sections put their tensors here; only a local smoke test of the section code on a
# machine without a GPU changes it.
DEVICE = "cuda"

# What one flush writes: at least twice the L2 and never less than 256 MiB (triton's do_bench
# flushes with 256 MiB too), so nothing a timed call read last time is still cached.
MIN_FLUSH_BYTES = 256 * 2**20

_flush_buffer: torch.Tensor | None = None


def l2_flush_bytes(l2_bytes: int) -> int:
    return max(MIN_FLUSH_BYTES, 2 * int(l2_bytes))


def _l2_flush_buffer() -> torch.Tensor:
    """One buffer per process, made on first use: the sections run one per process."""
    global _flush_buffer
    if _flush_buffer is None:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        nbytes = l2_flush_bytes(getattr(props, "L2_cache_size", 0) or 0)
        _flush_buffer = torch.empty(nbytes // 4, dtype=torch.int32, device=DEVICE)
    return _flush_buffer


def cuda_time_us(fn, reps: int, warmup: int = 3, *, cold_l2: bool = True) -> float:
    """Median over ``reps`` of one call of ``fn`` in microseconds (CUDA events, per-call sync).

    ``cold_l2`` (the default) overwrites a buffer larger than the L2 before each call, outside
    the events, so a call reads its inputs from HBM as a decode step whose inputs were evicted
    does; without it an H200's 60 MB L2 holds a small N's logits and W1 between calls and the
    time would beat the HBM floor it is compared with. The flush queued ahead of the start event
    also keeps the GPU busy while the host enqueues ``fn``, so launch latency is not counted.
    """
    flush = _l2_flush_buffer() if cold_l2 else None
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(max(1, reps)):
        if flush is not None:
            flush.zero_()
        start.record()
        fn()
        end.record()
        end.synchronize()
        ts.append(start.elapsed_time(end) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]
