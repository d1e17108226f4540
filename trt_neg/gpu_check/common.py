"""Timing helpers shared by the sections (CUDA events; torch imported by the caller)."""

from __future__ import annotations

import torch

# The sections put their tensors here; only a local smoke test of the section code on a
# machine without a GPU changes it.
DEVICE = "cuda"


def cuda_time_us(fn, reps: int, warmup: int = 3) -> float:
    """Median over ``reps`` of one call of ``fn`` in microseconds (CUDA events, per-call sync)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(max(1, reps)):
        start.record()
        fn()
        end.record()
        end.synchronize()
        ts.append(start.elapsed_time(end) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]
