"""The GPU check's NEG section run end to end on the CPU, with the host library standing in
for the CUDA extension (same arguments, same outputs) and small shapes: every comparison,
table and summary line of ``sec_neg`` executes, so a slip in that code cannot first show on
a lent GPU.  Timings here are meaningless and not asserted."""

from __future__ import annotations

import pytest

from trt_neg.gpu_check import SectionContext, common, sec_neg
from trt_neg.gpu_check.report import PASS
from _gpu_stand_ins import host_neg_head, host_neg_step
from trt_neg.kernels import cuda_ext, host


@pytest.fixture
def cpu_section(monkeypatch):
    monkeypatch.setattr(common, "DEVICE", "cpu")
    monkeypatch.setattr(sec_neg, "cuda_time_us", lambda fn, reps, warmup=3: (fn(), 1.0)[1])
    monkeypatch.setattr(sec_neg, "V_BENCH", 4100)
    monkeypatch.setattr(sec_neg, "H_BENCH", 64)
    monkeypatch.setattr(sec_neg, "D_BENCH", 32)
    monkeypatch.setattr(sec_neg, "BENCH_N", (1, 8))
    monkeypatch.setattr(sec_neg, "HEAD_N", (4, 16))
    monkeypatch.setattr(cuda_ext, "load", lambda verbose=False: None)
    monkeypatch.setattr(cuda_ext, "neg_step", host_neg_step)
    monkeypatch.setattr(cuda_ext, "neg_head", host_neg_head)
    return SectionContext("neg", bandwidth=4.0e12, quick=True, timeout=120.0)


def test_neg_section_runs_and_passes_on_the_host_library(cpu_section):
    ctx = cpu_section
    assert sec_neg.run(ctx) == PASS, "\n".join(ctx.lines)
    text = "\n".join(ctx.lines)
    assert "correctness: PASS" in text and "FAIL" not in text
    assert "splits=" not in text  # every path gave the automatic plan's bits
    timing = {r["N"]: r for r in ctx.data["timing"]}
    assert timing[1]["split_plan"] == list(host.split_plan(1, 4100, 8)) and timing[1]["split_plan"][0] == 2
    assert {"fused_gate5", "fused1_gate5", "fused_all", "fused1_all", "torch_gate5"} <= set(timing[8])
    assert "fused1/fused" in text and ctx.summary.startswith("correctness ok; N=8 fused")
    head = {r["N"]: r for r in ctx.data["head_vs_cublas"]}
    assert {"kernel_head", "mma_head", "ratio_kernel_over_mma", "max_abs_err_mma"} <= set(head[16])
    assert "kernel/mma" in text and " fastest (kernel/cuBLAS " in ctx.summary


def test_neg_section_reports_a_path_that_disagrees(cpu_section, monkeypatch):
    """A split path that drew another token is a hard failure, named in the log."""
    def broken(*args, splits=0, **kw):
        out = host_neg_step(*args, splits=splits, **kw)
        if splits == 7:
            out.token[0] += 1
        return out

    monkeypatch.setattr(cuda_ext, "neg_step", broken)
    ctx = cpu_section
    assert sec_neg.run(ctx) != PASS
    assert "splits=7: token differs from the automatic plan" in "\n".join(ctx.lines)
