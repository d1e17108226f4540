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
from _gpu_stand_ins import fake_time, host_neg_head, host_neg_step, scripted_timings, small_shapes
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
    monkeypatch.setattr(sec_neg, "cuda_time_us", scripted_timings(*step, *head))
    ctx = SectionContext("neg", bandwidth=1e9, quick=True, timeout=120.0)
    assert sec_neg.run(ctx) == PASS, "\n".join(ctx.lines)
    assert ctx.data["build_seconds"] == 12.35 and ctx.lines[0] == "  extension trt_neg_cuda built/loaded in 12.3 s"
    # The '5%' gate: above the only row at N=1, the batch's 95th percentile of H_hat at N=8; then -inf.
    (n1, ent1, tau1), (n8, ent8, tau8) = gates[0], gates[5]  # 5 fused calls per N: 3 at 5%, 2 at all
    assert (n1, n8) == (1, 8) and tau1 == pytest.approx(float(ent1[0]) + 1.0)
    assert tau8 == pytest.approx(float(torch.quantile(ent8, 0.95)))
    assert [g[2] for g in gates[3:5] + gates[8:10]] == [-math.inf] * 4 and len(gates) == 10
    assert any(ln.startswith("  timing (us; V=4100, H=64, d=32, bf16 hidden, top_k=8; median of 10 (plain torch: of 3), ") for ln in ctx.lines)
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
    monkeypatch.setattr(sec_neg, "cuda_time_us", scripted_timings(*[1e-3] * 14))
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


def _recording_timings(monkeypatch):
    """cuda_time_us's stand-in that records each timed call as (reps, warmup, L2 flushed, the ops
    ``fn`` ran): 'fused' (the extension's step: plan, activation, top_k, temperature), 'torch'
    (the reference step: the same), 'head' (the extension's head pass: its algorithm); cuBLAS
    calls record none. Says 1 us."""
    import operator

    from trt_neg import neg

    timed, ops = [], []
    real_torch_step = neg.neg_step

    def time_it(fn, reps, warmup=3, *, cold_l2=True):
        ops.clear()
        fn()
        # operator.index: the real cuda_time_us loops range(reps), which refuses a float
        timed.append((operator.index(reps), warmup, cold_l2, list(ops)))
        return 1.0

    def fused(hidden, logits, weights, **kw):
        ops.append(("fused", kw.get("splits", "auto"), kw["activation"], kw["top_k"], kw["temperature"]))
        return host_neg_step(hidden, logits, weights, **kw)

    def torch_step(hidden, logits, weights, **kw):
        ops.append(("torch", "-", kw["activation"], kw["top_k"], kw["temperature"]))
        return real_torch_step(hidden, logits, weights, **kw)

    def head(hidden, weights, activation="silu", head_algo="gemv"):
        ops.append(("head", head_algo))
        return host_neg_head(hidden, weights, activation, head_algo)

    monkeypatch.setattr(sec_neg, "cuda_time_us", time_it)
    monkeypatch.setattr(cuda_ext, "neg_step", fused)
    monkeypatch.setattr(cuda_ext, "neg_head", head)
    monkeypatch.setattr(neg, "neg_step", torch_step)
    return timed


@pytest.mark.parametrize("quick, reps, torch_reps, head_reps", [(True, 10, 3, 10), (False, 40, 8, 50)])
def test_each_timed_call_times_its_own_path_with_its_repetitions(cpu_section, monkeypatch, quick, reps, torch_reps,
                                                                  head_reps):
    """What each column of the tables times: the automatic plan, one block per row (splits=1),
    plain torch (reps / 5, at least 3, after one warm-up), the warm-L2 call (no flush) — all at
    silu, top_k 8, temperature 1 — and the head's GEMV, tensor-core tiles, cuBLAS + tail, GEMM."""
    timed = _recording_timings(monkeypatch)
    ctx = SectionContext("neg", bandwidth=4.0e12, quick=quick, timeout=120.0)
    sec_neg.benchmark(cuda_ext, ctx)
    fused_auto, fused_1 = [("fused", "auto", "silu", 8, 1.0)], [("fused", 1, "silu", 8, 1.0)]
    torch_step = [("torch", "-", "silu", 8, 1.0)]
    per_gate = [(reps, 3, True, fused_auto), (reps, 3, True, fused_1), (torch_reps, 1, True, torch_step)]
    # per N: 5% gate, its warm-L2 repeat, then the gate on all rows
    assert timed == (per_gate + [(reps, 3, False, fused_auto)] + per_gate) * len(sec_neg.BENCH_N)
    assert any(f"top_k=8; median of {reps} (plain torch: of {torch_reps}), L2 flushed" in ln for ln in ctx.lines)
    timed.clear()
    sec_neg.head_vs_cublas(cuda_ext, ctx)
    assert timed == [(head_reps, 3, True, [("head", "gemv")]), (head_reps, 3, True, [("head", "mma")]),
                     (head_reps, 3, True, []), (head_reps, 3, True, [])] * len(sec_neg.HEAD_N)
    assert any(f"silu; median of {head_reps}, L2 flushed" in ln for ln in ctx.lines)


def test_correctness_logits_hold_ties_and_every_non_finite_class():
    """The sampling cases' logits: 'ties' integer-valued, 'nonfinite' with a NaN row, a -inf row,
    one +inf logit and ~10 % each of NaN and -inf elsewhere, all at a scale of 3."""
    import torch

    g = torch.Generator().manual_seed(0)
    normal = sec_neg._logits("normal", 64, 100, g, "cpu")
    assert bool(normal.isfinite().all()) and 2.8 < float(normal.std()) < 3.2
    ties = sec_neg._logits("ties", 64, 100, g, "cpu")
    assert torch.equal(ties, ties.round()) and 2.8 < float(ties.std()) < 3.2
    z = sec_neg._logits("nonfinite", 16, 50, g, "cpu")
    assert bool(z[0].isnan().all()) and bool(z[1].isneginf().all())
    assert z.isposinf().nonzero().tolist() == [[2, 25]]
    rest = z[2:]
    for fraction in (float(rest.isnan().float().mean()), float(rest.isneginf().float().mean())):
        assert 0.05 < fraction < 0.15
    finite = rest[rest.isfinite()]
    assert 2.5 < float(finite.std()) < 3.5 and not torch.equal(finite, finite.round())
    # Batches too small for the -inf row or the +inf logit get what fits.
    assert bool(sec_neg._logits("nonfinite", 1, 7, g, "cpu")[0].isnan().all())
    two = sec_neg._logits("nonfinite", 2, 7, g, "cpu")
    assert bool(two[1].isneginf().all()) and not bool(two.isposinf().any())
    assert sec_neg._logits("nonfinite", 3, 7, g, "cpu").isposinf().nonzero().tolist() == [[2, 3]]


def test_correctness_runs_every_case_on_every_path(cpu_section, monkeypatch):
    """The GPU's correctness check covers what docs/gpu_check.md lists: each sampling case (ties,
    NaN/+-inf, top_k up to 1024 and past V, V up to V_BENCH, temperatures 0.5-1) at tau 1, -inf and
    +inf on the automatic plan, one block per row and seven slices, with H_hat in [0, 2) (every
    fifth NaN) and seeds / offsets over their 64-bit ranges; then each dtype x activation full
    step, with the tensor-core head for bf16 and fp16, gated at the median H_hat."""
    import torch

    from trt_neg import neg

    calls, entropies, seeds, offsets = [], [], [], []

    def recording(hidden, logits, weights, **kw):
        if hidden is None:
            ent = kw["entropy"]
            calls.append(("sample", tuple(logits.shape), kw["top_k"], kw["temperature"], float(weights.threshold),
                          kw.get("splits", "auto")))
            assert torch.equal(ent.isnan(), torch.arange(len(ent)) % 5 == 0)
            entropies.extend(ent[~ent.isnan()].tolist())
            seeds.extend(kw["seeds"].tolist())
            offsets.extend(kw["offsets"].tolist())
        else:
            calls.append(("step", hidden.dtype, kw["activation"], kw["top_k"], kw.get("head_algo", "gemv")))
            # the gate at the batch's median H_hat: half the rows sample, half are greedy
            assert float(kw["threshold"]) == float(neg.neg_head(hidden, weights, kw["activation"]).median())
        return host_neg_step(hidden, logits, weights, **kw)

    monkeypatch.setattr(cuda_ext, "neg_step", recording)
    log = []
    assert sec_neg.correctness(cuda_ext, torch.device("cpu"), log.append)
    v = sec_neg.V_BENCH
    cases = [((1, 7), 3, 1.0), ((64, 100), 5, 0.5), ((16, 50), 10, 1.0), ((37, 7), 1024, 1.0), ((256, 4099), 1024, 0.8),
             ((8, v), 1024, 1.0), ((256, v), 8, 1.0), ((4, v), 64, 1.0)]
    sampling = [("sample", shape, k, t, tau, plan) for shape, k, t in cases for tau in (1.0, -math.inf, math.inf)
                for plan in ("auto", 1, 7)]
    assert calls[:len(sampling)] == sampling
    steps = [("step", dtype, act, 8, algo) for dtype in (torch.bfloat16, torch.float16, torch.float32)
             for act in ("silu", "gelu", "relu", "gelu_tanh")
             for algo in (("gemv", "mma") if dtype != torch.float32 else ("gemv",))]
    assert calls[len(sampling):] == steps
    assert min(seeds) < -2**61 and max(seeds) > 2**61 and 2**39 < max(offsets) < 2**40 and min(offsets) >= 0
    # H_hat in [0, 2): at tau 1 some rows fire and some do not
    assert 0 <= min(entropies) < 0.1 and 1.9 < max(entropies) < 2
    kinds = ("normal", "ties", "nonfinite", "ties", "normal", "ties", "normal", "nonfinite")
    assert [ln.split(":")[0].split()[1] for ln in log[:24]] == [kind for kind in kinds for _ in range(3)]


def test_correctness_fails_each_case_that_disagrees_and_logs_its_first_three_failures(cpu_section, monkeypatch):
    """One sampling case with every token off, and full steps whose head is off by 0.9 / 1.1 of
    the tolerance 1e-4 (1 + max |H_hat|) (tensor-core head or GEMV) or that drew another token:
    each line says ok or FAIL on its own, a FAIL line shows the first three failures, the check
    fails."""
    import re

    import torch

    from trt_neg import neg

    bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
    shifts = {(bf16, "silu", "mma"): 0.9, (bf16, "gelu", "mma"): 1.1, (fp32, "relu", "gemv"): 1.1}

    def off(hidden, logits, weights, **kw):
        out = host_neg_step(hidden, logits, weights, **kw)
        if hidden is None:
            if logits.shape == (64, 100) and float(weights.threshold) == 1.0 and "splits" not in kw:
                out.token += 1
            return out
        key = (hidden.dtype, kw["activation"], kw.get("head_algo", "gemv"))
        if key in shifts:
            ref = neg.neg_head(hidden, weights, kw["activation"])
            out.entropy = ref + shifts[key] * 1e-4 * (1 + float(ref.abs().max()))
        if key == (fp16, "silu", "gemv"):
            out.token[:5] += 1  # five failures: the line shows the first three
        return out

    monkeypatch.setattr(cuda_ext, "neg_step", off)
    log = []
    assert sec_neg.correctness(cuda_ext, torch.device("cpu"), log.append) is False
    sample = [ln for ln in log if ln.startswith("  sample") and ": FAIL" in ln]
    token = r"token \d+ != \d+ \(fired=(True|False)\)"
    assert len(sample) == 1 and re.fullmatch(
        rf"  sample  ties +N=64 +V=100 +k=5 +tau=1\.0 *: FAIL \(64 rows, \d+ fired, 0 boundary draws\) "
        rf"row 0: {token}; row 1: {token}; row 2: {token}", sample[0]), sample
    steps = {tuple(ln.split()[1:3]): ln.split(":", 1)[1].split()[0] for ln in log if ln.startswith("  step")}
    assert len(steps) == 12
    failed = {("torch.bfloat16", "gelu"), ("torch.float16", "silu"), ("torch.float32", "relu")}
    assert {k for k, status in steps.items() if status == "FAIL"} == failed
    assert set(steps.values()) == {"ok", "FAIL"}
    (fp16_silu,) = [ln for ln in log if ln.startswith("  step    torch.float16   silu")]
    assert re.search(rf"0 boundary draws\) row 0: {token}; row 1: {token}; row 2: {token}$", fp16_silu), fp16_silu


def test_compare_excuses_a_draw_at_the_boundary_of_its_own_top_k_only():
    """A one-row batch of three logits at top_k 2: the draw u lies on the top two's first
    cumulative probability, so a fired row's other token is a boundary draw; the same draw at
    top_k 3 (other cumulatives), or on a greedy row, is a failure.  A gate decision that
    differs is excused within 1e-4 (1 + |tau|) of tau on both sides; no guided logits to
    compare is no failure."""
    import torch

    from trt_neg import neg

    seeds, offsets = torch.tensor([11]), torch.tensor([5])
    u = neg.philox_uniform(11, 5)  # 0.666: the top three's cumulatives are 0.4996 and 0.7498
    z = torch.tensor([[math.log(u / (1 - u)), 0.0, 0.0]])  # top two: first cumulative probability u

    def out(token, fired=True, entropy=0.5, guided=True):
        return types.SimpleNamespace(token=torch.tensor([token]), fired=torch.tensor([fired]),
                                     status=torch.tensor([0]), entropy=torch.tensor([entropy]),
                                     guided_logits=z.clone() if guided else None)

    assert sec_neg._compare(out(0), out(1), z, 2, 1.0, seeds, offsets) == (1, 1, [])
    assert sec_neg._compare(out(0), out(1), z, 3, 1.0, seeds, offsets) == (1, 0, ["row 0: token 1 != 0 (fired=True)"])
    # a greedy row draws nothing: its other token is a failure even with u on the boundary
    assert sec_neg._compare(out(0, False), out(1, False), z, 2, 1.0, seeds, offsets) == (
        1, 0, ["row 0: token 1 != 0 (fired=False)"])
    assert sec_neg._compare(out(0), out(0, guided=False), z, 2, 1.0, seeds, offsets) == (1, 0, [])
    tol = 1e-4 * (1 + 2.0)
    for entropy, excused in ((2.0 + 0.9 * tol, True), (2.0 + 1.1 * tol, False), (2.0 - 0.9 * tol, True),
                             (2.0 - 1.1 * tol, False)):
        fails = sec_neg._compare(out(0, True, entropy), out(0, False), z, 2, 1.0, seeds, offsets, tau=2.0)[2]
        assert fails == ([] if excused else ["row 0: fired False != True"]), entropy


def test_run_records_a_failed_correctness_and_the_verdict_at_the_largest_head_n(cpu_section, monkeypatch):
    """run() on three head batches: the verdict line and the summary name the largest N (the
    decision the table is for), a failed correctness is recorded in the data and fails the
    section even with the head right, and TF32 is off for every comparison (on a GPU it would
    round the references' fp32 matmuls)."""
    import torch

    tf32, loads = [], []

    def failing(ext_mod, device, log):
        tf32.append(torch.backends.cuda.matmul.allow_tf32)
        return False

    monkeypatch.setattr(cuda_ext, "load", lambda verbose=True: loads.append(verbose))
    monkeypatch.setattr(sec_neg, "correctness", failing)
    monkeypatch.setattr(sec_neg, "HEAD_N", (4, 8, 16))
    step = (10, 20, 30, 5, 40, 50, 60) + (100, 150, 900, 80, 110, 160, 1000)
    head = (30, 20, 40, 25) + (50, 60, 100, 70) + (90, 60, 30, 20)  # per N: kernel, mma, cuBLAS + tail, GEMM only
    monkeypatch.setattr(sec_neg, "cuda_time_us", scripted_timings(*step, *head))
    ctx = cpu_section
    matmul, tf32_before = torch.backends.cuda.matmul, torch.backends.cuda.matmul.allow_tf32
    matmul.allow_tf32 = True  # a property: monkeypatch cannot restore it
    try:
        assert sec_neg.run(ctx) == FAIL
    finally:
        matmul.allow_tf32 = tf32_before
    assert tf32 == [False] and ctx.data["correctness"] is False
    assert loads == [False]  # built (quietly) before the checks, so build_seconds is the build
    assert ("      N   kernel      mma cuBLAS+tail GEMM only floor@meas floor@4.8 kernel/cuBLAS kernel/mma fastest "
            "|dH| kernel  |dH| mma") in ctx.lines
    verdict = "head N=16: cublas fastest (kernel/cuBLAS 3.00, kernel/mma 1.50)"
    assert ctx.lines[-1] == "  " + verdict and "  correctness: FAIL" in ctx.lines
    assert ctx.summary == f"correctness FAILED; N=8 fused 100 us vs torch 900 us; {verdict}"


def test_step_check_fails_a_tensor_core_head_that_returns_nan(cpu_section, monkeypatch):
    """A tensor-core head whose entropies are NaN fails its full-step line and the check, the
    GEMV head being right (Python's max(err, nan) is err: the NaN was dropped)."""
    import torch

    from trt_neg import neg

    real_sample = neg.gated_topk_sample

    def agreed(logits):  # the sampling cases, not under test here: every path draws the same
        n = logits.shape[0]
        return neg.NegStepOutput(token=torch.zeros(n, dtype=torch.int64), entropy=torch.zeros(n),
                                 fired=torch.zeros(n, dtype=torch.bool), status=torch.zeros(n, dtype=torch.int32),
                                 guided_logits=torch.zeros_like(logits))

    def reference_sample(logits, *args, **kw):  # the full steps' logits are [64, 1000]
        return real_sample(logits, *args, **kw) if logits.shape == (64, 1000) else agreed(logits)

    def mma_nan(hidden, logits, weights, **kw):
        if hidden is None:
            return agreed(logits)
        out = host_neg_step(hidden, logits, weights, **kw)
        if (hidden.dtype, kw["activation"], kw.get("head_algo")) == (torch.bfloat16, "silu", "mma"):
            out.entropy = torch.full_like(out.entropy, float("nan"))
        return out

    monkeypatch.setattr(neg, "gated_topk_sample", reference_sample)
    monkeypatch.setattr(cuda_ext, "neg_step", mma_nan)
    log = []
    assert sec_neg.correctness(cuda_ext, torch.device("cpu"), log.append) is False
    failed = [ln for ln in log if ln.startswith("  step") and ": FAIL" in ln]
    assert len(failed) == 1 and failed[0].startswith("  step    torch.bfloat16  silu     : FAIL (max |dH| nan, ")


def test_head_check_fails_a_gemv_head_off_by_more_than_the_tolerance(cpu_section, monkeypatch):
    """The default GEMV head is held to the same 1e-4 (1 + max |H_hat|) as the tensor-core one."""
    from trt_neg import neg

    def gemv_off(hidden, weights, activation="silu", head_algo="gemv"):
        ref = neg.neg_head(hidden, weights, activation)
        return ref + (1.1e-4 * (1 + float(ref.abs().max())) if head_algo == "gemv" else 0.0)

    monkeypatch.setattr(cuda_ext, "neg_head", gemv_off)
    assert [r["ok"] for r in sec_neg.head_vs_cublas(cuda_ext, cpu_section)] == [False, False]


def test_the_timed_sizes_are_the_9b_models_at_the_documented_batches():
    """The timing tables stand for the 9B model's NEG step (the other tests run at small shapes):
    its vocabulary, hidden size and NEG head width (the synthetic '9b' preset), at the batches
    docs/gpu_check.md names for the step and for the head alone."""
    import re
    from pathlib import Path

    from trt_neg.checkpoint.synthetic import PRESETS

    text, head = PRESETS["9b"]["text_config"], PRESETS["9b"]["neg_config"]
    assert (sec_neg.V_BENCH, sec_neg.H_BENCH, sec_neg.D_BENCH) == (text["vocab_size"], text["hidden_size"],
                                                                   head["head_hidden_size"])
    docs = Path(__file__).resolve().parents[1] / "docs" / "gpu_check.md"
    row = next(ln for ln in docs.read_text().splitlines() if ln.startswith("| 2 | `neg` |"))
    assert re.findall(r"N ∈ \{([\d, ]+)\}", row) == [", ".join(map(str, sec_neg.BENCH_N)),
                                                      ", ".join(map(str, sec_neg.HEAD_N))]


def test_a_step_draw_on_a_boundary_of_its_own_top_8_at_temperature_1_is_excused(cpu_section, monkeypatch):
    """The full steps sample at top_k 8, temperature 1: a fired row that drew another token is
    excused, and counted, only as a draw on a cumulative boundary of that top 8 at that
    temperature (the stand-in for _near_boundary says where those are)."""
    import torch

    def on_a_top_8_boundary(z_row, k, temperature, u, tol=5e-5):
        return (k, temperature) == (8, 1.0)

    def another_token(hidden, logits, weights, **kw):
        out = host_neg_step(hidden, logits, weights, **kw)
        if hidden is not None and (hidden.dtype, kw["activation"], kw.get("head_algo", "gemv")) == (
                torch.bfloat16, "silu", "gemv"):
            row = int(out.fired.nonzero()[0])
            out.token[row] = (out.token[row] + 1) % logits.shape[1]
        return out

    monkeypatch.setattr(sec_neg, "_near_boundary", on_a_top_8_boundary)
    monkeypatch.setattr(cuda_ext, "neg_step", another_token)
    log = []
    assert sec_neg.correctness(cuda_ext, torch.device("cpu"), log.append), "\n".join(log)
    (line,) = [ln for ln in log if ln.startswith("  step    torch.bfloat16  silu")]
    assert line.startswith("  step    torch.bfloat16  silu     : ok (") and line.endswith(", 1 boundary draws)")
