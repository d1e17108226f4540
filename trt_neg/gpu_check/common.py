"""Timing helpers shared by the sections (CUDA events; torch imported by the caller)."""

from __future__ import annotations

import math
import statistics

import torch

# The sections put their tensors here; only a local smoke test of the section code on a
# machine without a GPU changes it.
DEVICE = "cuda"

# What one flush reads: at least twice the L2 and never less than 256 MiB (triton's do_bench
# flushes with 256 MiB too), so nothing a timed call read last time is still cached.
MIN_FLUSH_BYTES = 256 * 2**20

# GPU clock cycles of the wait queued just before each timed call (~0.5 ms at an H200's ~2 GHz):
# longer than the host's Python and launch work for the call, so the start event is reached only
# once the call is queued behind it and that host work is never inside the events.
HOLD_CYCLES = 1_000_000

_flush_buffer: torch.Tensor | None = None


def fp32_tol(scale: float) -> float:
    """The tolerance on an fp32 entropy or threshold of magnitude ``scale`` (GPU vs CPU: the
    summation order differs): 1e-4 * (1 + |scale|)."""
    return 1e-4 * (1 + abs(scale))


def worst(*errors: float) -> float:
    """The largest of ``errors``, NaN if any is NaN: ``max`` keeps a NaN only where it comes first, so an
    error computed from a kernel's NaN output would be dropped and the check would pass."""
    return math.nan if any(math.isnan(e) for e in errors) else max(errors)


def l2_flush_bytes(l2_bytes: int) -> int:
    return max(MIN_FLUSH_BYTES, 2 * int(l2_bytes))


def _l2_flush_buffer() -> torch.Tensor:
    """One buffer per process, made on first use: the sections run one per process."""
    global _flush_buffer
    if _flush_buffer is None:
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        nbytes = l2_flush_bytes(getattr(props, "L2_cache_size", 0) or 0)
        # Written once here, so that every flush reads defined memory.
        _flush_buffer = torch.zeros(nbytes // 4, dtype=torch.int32, device=DEVICE)
    return _flush_buffer


def _evict_l2(buffer) -> None:
    """Read all of ``buffer`` (a reduction: its one scalar is all it writes).

    A read, not a write as triton's ``cache.zero_()``: a written flush leaves the L2 full of
    dirty lines, and the timed call that evicts them pays their write-back to HBM inside its
    own time (up to its own read size again, so up to double a small N's traffic). Lines a read
    leaves are clean and are dropped for free; the previous call's dirty outputs are written
    back here, outside the events.
    """
    buffer.sum()


def _hold_gpu() -> None:
    """Queue a kernel that only waits (no memory traffic: the L2 stays as the flush or the last
    call left it), so that the GPU is still busy when the host has finished enqueueing the timed
    call: without it, the start event fires at once on an idle GPU and the call's host-side work
    (argument checks, tensor conversions, the launch) is timed as well."""
    torch.cuda._sleep(HOLD_CYCLES)


def cuda_time_us(fn, reps: int, warmup: int = 3, *, cold_l2: bool = True) -> float:
    """Median over ``reps`` of one call of ``fn`` in microseconds (CUDA events, per-call sync).

    ``cold_l2`` (the default) reads a buffer larger than the L2 before each call, outside
    the events, so a call reads its inputs from HBM as a decode step whose inputs were evicted
    does; without it an H200's 60 MB L2 holds a small N's logits and W1 between calls and the
    time would beat the HBM floor it is compared with. With or without the flush, a wait kernel
    (``_hold_gpu``) is queued just ahead of the start event, so the GPU is still busy while the
    host enqueues ``fn`` and host work and launch latency are not counted.
    """
    flush = _l2_flush_buffer() if cold_l2 else None
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(max(1, reps)):
        if flush is not None:
            _evict_l2(flush)
        _hold_gpu()
        start.record()
        fn()
        end.record()
        end.synchronize()
        ts.append(start.elapsed_time(end) * 1e3)
    return statistics.median(ts)
