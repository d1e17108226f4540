"""The GPU check's NEG section run end to end on the CPU, with the host library standing in
for the CUDA extension (same arguments, same outputs) and small shapes: every comparison,
table and summary line of ``sec_neg`` executes, so a slip in that code cannot first show on
a lent GPU.  Timings here are meaningless and not asserted."""

from __future__ import annotations

import pytest

from trt_neg.gpu_check import SectionContext, common, plot, sec_neg
from trt_neg.gpu_check.report import PASS
from _gpu_stand_ins import fake_time, host_neg_head, host_neg_step, small_shapes
from trt_neg.kernels import cuda_ext, host

# The real wrappers, before any fixture replaces them (the sections call these module attributes).
REAL_NEG_STEP, REAL_NEG_HEAD = cuda_ext.neg_step, cuda_ext.neg_head


@pytest.fixture
def cpu_section(monkeypatch):
    monkeypatch.setattr(common, "DEVICE", "cpu")
    monkeypatch.setattr(sec_neg, "cuda_time_us", fake_time)
    small_shapes(monkeypatch.setattr)
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
    assert {"fused_gate5", "fused1_gate5", "fused_all", "fused1_all", "torch_gate5", "fused_warm_gate5"} <= set(timing[8])
    v = sec_neg.V_BENCH
    assert timing[8]["floor_logits_read_4p8"] == pytest.approx(8 * v * 4 / 4.8e12 * 1e6)
    assert timing[8]["floor_4p8"] == pytest.approx((2 * 8 * v * 4 + sec_neg.H_BENCH * sec_neg.D_BENCH * 2) / 4.8e12 * 1e6)
    assert "read@4.8" in text and "warm5%" in text
    # The '5%' gate is the batch's 95th percentile: rows strictly above it fire (none of one row).
    assert [timing[n]["fired_gate5"] for n in sorted(timing)] == [0, 1] and " 1/8 " in text
    assert "fused1/fused" in text and ctx.summary.startswith("correctness ok; N=8 fused")
    head = {r["N"]: r for r in ctx.data["head_vs_cublas"]}
    assert {"kernel_head", "mma_head", "ratio_kernel_over_mma", "max_abs_err_mma"} <= set(head[16])
    assert "kernel/mma" in text and " fastest (kernel/cuBLAS " in ctx.summary
    # The figure reads these rows (trt_neg/gpu_check/plot.py): every timed line is drawn.
    drawn = plot.panels({"sections": [{"name": "neg", "data": ctx.data}]})
    assert [p.title.split(":")[0] for p in drawn] == ["NEG step", "NEG-Head alone at large N"]
    assert [len(s.xs) for p in drawn for s in p.series] == [2] * 7 + [2] * 5  # with the floors, the warm line


def test_neg_section_passes_on_the_binding_and_kernel_on_the_cuda_simulation(cpu_section, monkeypatch):
    """The same section with nothing standing in: cuda_ext's wrappers, negTorch.cpp and
    negKernel.cu, built on the CPU simulation of CUDA (tests/_sim_extensions.py), serve every
    call -- each correctness case, split path, head algorithm and timing row."""
    sim = pytest.importorskip("_sim_extensions")
    ext = sim.neg_extension().reset()
    monkeypatch.setattr(cuda_ext, "load", lambda verbose=False: ext)
    monkeypatch.setattr(cuda_ext, "neg_step", REAL_NEG_STEP)
    monkeypatch.setattr(cuda_ext, "neg_head", REAL_NEG_HEAD)
    ctx = cpu_section
    assert sec_neg.run(ctx) == PASS, "\n".join(ctx.lines)
    text = "\n".join(ctx.lines)
    assert "correctness: PASS" in text and "FAIL" not in text and "splits=" not in text
    assert ext.calls >= 100  # 8 sampling cases x 3 thresholds x 3 paths, 12 head steps (+ mma), timing
    head = {r["N"]: r for r in ctx.data["head_vs_cublas"]}
    assert head[16]["max_abs_err_mma"] <= 2e-6 and head[16]["max_abs_err_kernel"] <= 2e-6


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


def test_cuda_ext_wrappers_call_the_binding_as_declared(monkeypatch):
    """cuda_ext.neg_step / neg_head into negTorch.cpp's binding (as the host-library stand-in
    declares it): the sections above replace those wrappers, so this is where their calls run."""
    import math

    import torch

    from _gpu_stand_ins import HostNegExtension
    from trt_neg import neg

    monkeypatch.setattr(common, "DEVICE", "cpu")
    monkeypatch.setattr(cuda_ext, "load", lambda verbose=False: HostNegExtension())
    g = torch.Generator().manual_seed(0)
    w = sec_neg._weights(64, 32, torch.bfloat16, "cpu", g)
    hid = torch.randn(6, 64, generator=g).to(torch.bfloat16)
    z = torch.randn(6, 300, generator=g) * 3
    seeds, offsets = torch.arange(6) * 1000 + 1, torch.arange(6) + 40
    for tau in (-math.inf, 0.5):
        ref = neg.neg_step(hid, z, w, top_k=8, seeds=seeds, offsets=offsets, threshold=tau)
        got = cuda_ext.neg_step(hid, z, w, top_k=8, seeds=seeds, offsets=offsets, threshold=tau)
        assert got.token.dtype == torch.int64 and got.fired.dtype == torch.bool
        assert torch.allclose(got.entropy, ref.entropy, atol=1e-4)
        rows, boundary, fails = sec_neg._compare(ref, got, z, 8, 1.0, seeds, offsets, tau=tau)
        assert not fails and boundary == 0
    ent = torch.rand(6, generator=g) * 2
    ref = neg.gated_topk_sample(z, ent, 1.0, 5, 0.7, seeds, offsets)
    got = cuda_ext.neg_step(None, z, w, top_k=5, temperature=0.7, seeds=seeds, offsets=offsets, threshold=1.0,
                            entropy=ent, with_guided=False, splits=1)
    assert got.guided_logits is None and torch.equal(got.token, ref.token) and torch.equal(got.fired, ref.fired)
    for algo in ("gemv", "mma"):
        assert torch.allclose(cuda_ext.neg_head(hid, w, head_algo=algo), neg.neg_head(hid, w), atol=1e-4)
