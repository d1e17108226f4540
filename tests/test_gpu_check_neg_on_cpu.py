"""The GPU check's NEG section run end to end on the CPU, with the host library standing in
for the CUDA extension (same arguments, same outputs) and small shapes: every comparison,
table and summary line of ``sec_neg`` executes, so a slip in that code cannot first show on
a lent GPU.  Timings here are meaningless and not asserted."""

from __future__ import annotations

import math
import types

import pytest

from trt_neg.gpu_check import SectionContext, common, plot, sec_neg
from trt_neg.gpu_check.report import FAIL, PASS
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


def _timings(*us):
    """cuda_time_us's stand-in that runs ``fn`` once and says the next of ``us`` (the section's
    timed calls in their order), so that each table column shows which call it came from."""
    left = iter(us)

    def timed(fn, reps, warmup=3, *, cold_l2=True):
        fn()
        return next(left)

    return timed


def test_neg_tables_and_summary_show_each_timing_where_it_belongs(cpu_section, monkeypatch):
    """The tables a GPU run records: each figure in its column, the ratios the right way up
    (torch/fused, fused1/fused, floor/fused, kernel/cuBLAS, kernel/mma), the floors at the
    measured bandwidth (1 GB/s here, so they show), the fastest head and the summary line."""
    import torch

    from trt_neg import neg

    monkeypatch.setattr(sec_neg, "correctness", lambda ext_mod, device, log: True)
    gates = []  # (N, the batch's H_hat, threshold) of each fused call

    def recording(hidden, logits, weights, **kw):
        gates.append((hidden.shape[0], neg.neg_head(hidden, weights), float(kw["threshold"])))
        return host_neg_step(hidden, logits, weights, **kw)

    monkeypatch.setattr(cuda_ext, "neg_step", recording)
    clock = iter([100.0] + [112.3456] * 2)  # the extension's load: 12.3456 s
    monkeypatch.setattr(sec_neg, "time", types.SimpleNamespace(time=lambda: next(clock)))
    # per N: fused 5%, fused1 5%, torch 5%, warm 5%, fused all, fused1 all, torch all
    step = (10, 20, 30, 5, 40, 50, 60) + (100, 150, 900, 80, 110, 160, 1000)
    head = (30, 20, 40, 25) + (50, 60, 100, 70)  # per N: kernel, mma, cuBLAS + tail, GEMM only
    monkeypatch.setattr(sec_neg, "cuda_time_us", _timings(*step, *head))
    ctx = SectionContext("neg", bandwidth=1e9, quick=True, timeout=120.0)
    assert sec_neg.run(ctx) == PASS, "\n".join(ctx.lines)
    assert ctx.data["build_seconds"] == 12.35 and ctx.lines[0] == "  extension trt_neg_cuda built/loaded in 12.3 s"
    # The '5%' gate: above the only row at N=1, the batch's 95th percentile of H_hat at N=8; then -inf.
    (n1, ent1, tau1), (n8, ent8, tau8) = gates[0], gates[5]  # 5 fused calls per N: 3 at 5%, 2 at all
    assert (n1, n8) == (1, 8) and tau1 == pytest.approx(float(ent1[0]) + 1.0)
    assert tau8 == pytest.approx(float(torch.quantile(ent8, 0.95)))
    assert [g[2] for g in gates[3:5] + gates[8:10]] == [-math.inf] * 4 and len(gates) == 10
    assert any(ln.startswith("  timing (us; V=4100, H=64, d=32, bf16 hidden, top_k=8; median of 10, ") for ln in ctx.lines)
    assert any(ln.startswith("  NEG-Head at large N (us; H=64, d=32, bf16, silu; median of 10, ") for ln in ctx.lines)
    v, w1 = sec_neg.V_BENCH, sec_neg.H_BENCH * sec_neg.D_BENCH * 2
    for row, n in zip(ctx.data["timing"], (1, 8)):
        assert row["floor_measured"] == pytest.approx((2 * n * v * 4 + w1) / 1e9 * 1e6)
        assert row["floor_logits_read_4p8"] == pytest.approx(n * v * 4 / 4.8e12 * 1e6)
    rows = [ln.split() for ln in ctx.lines if ln.split()[:2] in (["1", "2"], ["8", "2"])]
    assert rows == [["1", "2", "0/1", "10.0", "40.0", "5.0", "20.0", "50.0", "30.0", "60.0", "36.9", "0.0", "0.0",
                     "3.00", "2.00", "3.69"],
                    ["8", "2", "1/8", "100.0", "110.0", "80.0", "150.0", "160.0", "900.0", "1000.0", "266.5", "0.1",
                     "0.0", "9.00", "1.50", "2.66"]]
    heads = [ln.split()[:10] for ln in ctx.lines if ln.split()[:1] in (["4"], ["16"])]
    assert heads == [["4", "30.0", "20.0", "40.0", "25.0", "4.6", "0.0", "0.75", "1.50", "mma"],
                     ["16", "50.0", "60.0", "100.0", "70.0", "6.1", "0.0", "0.50", "0.83", "kernel"]]
    assert [r["faster"] for r in ctx.data["head_vs_cublas"]] == ["mma", "kernel"]
    assert ctx.summary == ("correctness ok; N=8 fused 100 us vs torch 900 us; head N=16: kernel fastest "
                           "(kernel/cuBLAS 0.50, kernel/mma 0.83)")


def test_neg_floor_ratio_falls_back_to_4p8_without_a_measured_bandwidth(cpu_section, monkeypatch):
    monkeypatch.setattr(sec_neg, "cuda_time_us", _timings(*[1e-3] * 14))
    ctx = SectionContext("neg", bandwidth=None, quick=True, timeout=120.0)
    rows = sec_neg.benchmark(cuda_ext, ctx)
    assert [r["floor_measured"] for r in rows] == [None, None]
    n1 = next(ln.split() for ln in ctx.lines if ln.split()[:2] == ["1", "2"])
    floor_4p8 = (2 * sec_neg.V_BENCH * 4 + sec_neg.H_BENCH * sec_neg.D_BENCH * 2) / 4.8e12 * 1e6
    assert n1[10] == "nan" and n1[-1] == f"{floor_4p8 / 1e-3:.2f}"


def test_neg_section_fails_when_a_head_path_is_off(cpu_section, monkeypatch):
    monkeypatch.setattr(sec_neg, "correctness", lambda ext_mod, device, log: True)

    def mma_off(hidden, weights, activation="silu", head_algo="gemv"):
        return host_neg_head(hidden, weights, activation, head_algo) + (1e-2 if head_algo == "mma" else 0.0)

    monkeypatch.setattr(cuda_ext, "neg_head", mma_off)
    ctx = cpu_section
    assert sec_neg.run(ctx) == FAIL
    assert [r["ok"] for r in ctx.data["head_vs_cublas"]] == [False, False]
    assert sum(ln.endswith("  FAIL (entropy off)") for ln in ctx.lines) == 2
    assert ctx.summary.startswith("correctness ok; ") and ctx.summary.endswith("; head entropy FAILED")


def test_near_boundary_is_a_draw_within_tol_of_a_cumulative_top_k_probability():
    """A token difference on a fired row is excused only when the draw u lies within ``tol`` of a
    cumulative probability of the top k (logits sorted descending, NaN as -inf, / temperature)."""
    import torch

    z = torch.tensor([0.0, 2.0, float("nan"), 1.0, -math.inf])
    first = 1 / (1 + math.exp(-1.0))  # softmax of the top two, 2 and 1: its first cumulative value
    assert sec_neg._near_boundary(z, 2, 1.0, first)
    assert sec_neg._near_boundary(z, 2, 1.0, first + 4e-5) and not sec_neg._near_boundary(z, 2, 1.0, first + 6e-5)
    assert not sec_neg._near_boundary(z, 2, 1.0, 0.5)
    assert sec_neg._near_boundary(z, 2, 0.5, 1 / (1 + math.exp(-2.0)))  # (2 - 1) / 0.5
    assert not sec_neg._near_boundary(z, 2, 0.5, first)
    assert sec_neg._near_boundary(z, 3, 1.0, (math.e ** 2 + math.e) / (math.e ** 2 + math.e + 1))
    assert not sec_neg._near_boundary(torch.tensor([float("nan"), -math.inf]), 2, 1.0, 1.0)  # nothing to draw


def test_compare_tells_boundary_draws_from_failures():
    import torch

    from trt_neg import neg

    seeds, offsets = torch.tensor([11, 12, 13, 14]), torch.tensor([5, 6, 7, 8])
    u = neg.philox_uniform(11, 5)
    d = math.log(u / (1 - u))  # two logits d apart: the first cumulative probability is u
    z = torch.tensor([[d, 0.0, -50.0], [3.0, 0.0, -50.0], [3.0, 0.0, -50.0], [3.0, 0.0, -50.0]])

    def out(token, fired, status, entropy=(0.5, 0.5, 0.5, 0.5)):
        return types.SimpleNamespace(token=torch.tensor(token), fired=torch.tensor(fired),
                                     status=torch.tensor(status), entropy=torch.tensor(entropy),
                                     guided_logits=z.clone())

    ref = out([0, 0, 0, 0], [True, True, False, True], [0, 0, 0, 0])
    # row 0: a boundary draw; row 1: a fired row's other token; row 2: greedy row's; row 3: status.
    got = out([1, 1, 1, 0], [True, True, False, True], [1, 2, 2, 4])  # a row's token first: its status unread
    assert sec_neg._compare(ref, got, z, 2, 1.0, seeds, offsets) == (4, 1, [
        "row 1: token 1 != 0 (fired=True)", "row 2: token 1 != 0 (fired=False)", "row 3: status 4 != 0"])
    got = out([0, 0, 0, 0], [True, True, False, True], [0, 0, 0, 0])
    got.guided_logits[3, 1] = 1.0
    assert sec_neg._compare(ref, got, z, 2, 1.0, seeds, offsets)[2] == ["row 3: guided logits differ"]
    # A gate decision that differs: a failure, unless H_hat is within 1e-4 (1 + |tau|) of tau.
    ref = out([0, 0, 0, 0], [True, False, False, False], [0, 0, 0, 0], entropy=(2.00015, 2.0004, 0.5, 0.5))
    got = out([0, 0, 0, 0], [False, True, False, False], [0, 0, 0, 0])
    assert sec_neg._compare(ref, got, z, 2, 1.0, seeds, offsets, tau=2.0)[2] == ["row 1: fired True != False"]
    assert sec_neg._compare(ref, got, z, 2, 1.0, seeds, offsets)[2] == ["row 0: fired False != True",
                                                                         "row 1: fired True != False"]


@pytest.mark.parametrize("factor, ok", [(0.9, True), (1.1, False)])
def test_head_entropies_pass_within_1e_4_of_1_plus_the_largest(cpu_section, monkeypatch, factor, ok):
    """The head check's tolerance, 1e-4 (1 + max |H_hat|), from both sides: a tensor-core head off
    by 0.9 of it passes, by 1.1 of it fails."""
    from trt_neg import neg

    def mma_off(hidden, weights, activation="silu", head_algo="gemv"):
        if head_algo != "mma":
            return host_neg_head(hidden, weights, activation, head_algo)
        ref = neg.neg_head(hidden, weights, activation)
        return ref + factor * 1e-4 * (1 + float(ref.abs().max()))

    monkeypatch.setattr(cuda_ext, "neg_head", mma_off)
    rows = sec_neg.head_vs_cublas(cuda_ext, cpu_section)
    assert [r["ok"] for r in rows] == [ok, ok]
    # The cuBLAS + torch tail head it is timed against computes the same H_hat (to its bf16 GEMM output).
    assert all(r["max_abs_err_cublas"] < 1e-2 for r in rows)
