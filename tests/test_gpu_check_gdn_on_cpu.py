"""The GPU check's Gated DeltaNet section (trt_neg/gpu_check/sec_gdn.py) on the CPU, on the
pattern of test_gpu_check_neg_on_cpu.py: ``common.DEVICE`` is "cpu", the extension is the host
library behind gdnTorch.cpp's exact signature and argument checks, and the shapes are small.
The section runs end to end (on the host library and on the CUDA simulation); its verdicts
(each table's tolerance, each error it must see) and the figures its tables and summary
record from the timings (floors, ratios, tokens/s, GB/s) are pinned, with one distinct fake
time per timed call so that each printed column shows which call it came from."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch

from trt_neg.gpu_check import SectionContext, common, plot, sec_gdn
from trt_neg.gpu_check.report import FAIL, PASS
from trt_neg.kernels import cuda_ext, gdn_host
from trt_neg.reference import ops
from _gpu_stand_ins import SMALL_9B, HostGdnExtension, fake_time, scripted_timings, small_shapes

BF16, FP32 = torch.bfloat16, torch.float32


@pytest.fixture
def gdn_section(monkeypatch):
    ext = HostGdnExtension()
    monkeypatch.setattr(common, "DEVICE", "cpu")
    monkeypatch.setattr(sec_gdn, "cuda_time_us", fake_time)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda *a, **k: None)
    monkeypatch.setattr(cuda_ext, "load_gdn", lambda verbose=False: ext)
    small_shapes(monkeypatch.setattr)
    return SectionContext("gdn", bandwidth=4.0e12, quick=True, timeout=120.0), ext


def test_gdn_section_runs_and_passes_on_the_host_library(gdn_section):
    ctx, ext = gdn_section
    assert sec_gdn.run(ctx) == PASS, "\n".join(ctx.lines)
    text = "\n".join(ctx.lines)
    assert "correctness: PASS" in text and "FAIL" not in text
    assert "; median of 5 (torch chunk: of 3), L2 flushed" in text  # the torch reference is timed fewer times
    assert ext.calls > 0
    d = ctx.data
    json.dumps(d)  # the child writes it as JSON (default=str would hide a tensor)
    assert d["correctness"] is True and isinstance(d["build_seconds"], float)
    # 3 configs x fp32/bf16 x gated/not, + 2 padded, each for scan and chunked (all fit in 227 KiB).
    assert len(d["vs_host"]) == (3 * 4 + 2) * 2 and all(r["ok"] for r in d["vs_host"])
    assert {r["algo"] for r in d["vs_host"]} == {"scan", "chunked"} and sum(r["padded"] for r in d["vs_host"]) == 4
    assert [r["cfg"] for r in d["vs_reference"]][::2] == [[2, 2, 64, 64], [2, 4, 64, 64], list(SMALL_9B)]
    assert all(r["ok"] and r["err_out"] <= 2e-4 for r in d["vs_reference"])
    rows = d["chunked_vs_scan"]
    assert [r["T"] for r in rows] == [1, 16, 80] and all(r["ok"] and r["chunk"] == 64 for r in rows)
    assert all(r["chunked_vs_scan"] < 1e-4 for r in rows)
    bench = d["timing"]
    assert [r["B"] for r in bench["context"]] == [1, 8] and bench["context"][0]["T"] == 48
    for r in bench["context"]:  # per token of the whole batch, as tokens_per_s counts them
        assert r["us_per_token"] == pytest.approx(r["kernel_us"] / (r["B"] * r["T"]))
        assert r["us_per_token"] == pytest.approx(1e6 / r["tokens_per_s"])
    assert [r["B"] for r in bench["generation"]] == [1, 4, 8]
    assert set(bench["generation"][0]) >= {"kernel_us", "torch_recurrent_fp32_us", "floor_over_kernel", "achieved_GBps"}
    assert "Hk=2  Hv=4  dk=32  dv=16  bf16 gated=0 padded chunked: out" in text
    assert "device chunk size 64" in text and "scan/chunk" in text
    assert ctx.summary.startswith("correctness ok; context T=48 B=1 ") and "T=80 scan/chunked 1.0x" in ctx.summary
    assert "generation B=8 1 us = " in ctx.summary and ctx.summary.endswith("of floor")
    # The figure reads these rows (trt_neg/gpu_check/plot.py): generation and context panels.
    drawn = plot.panels({"sections": [{"name": "gdn", "data": d}]})
    assert [p.title.split(" (")[0] for p in drawn] == ["Gated DeltaNet generation step", "Gated DeltaNet context phase"]
    assert [s.xs for s in drawn[0].series][0] == [1, 4, 8] and "kernel" in [s.label for s in drawn[1].series]


def test_gdn_section_passes_on_the_binding_and_kernel_on_the_cuda_simulation(gdn_section, monkeypatch):
    """The same section with nothing standing in: gdnTorch.cpp and gdnKernel.cu built on the
    CPU simulation of CUDA (tests/_sim_extensions.py, an H200's 227 KiB opt-in) serve every call."""
    sim = pytest.importorskip("_sim_extensions")
    ext = sim.gdn_extension().reset()
    monkeypatch.setattr(cuda_ext, "load_gdn", lambda verbose=False: ext)
    ctx, _ = gdn_section
    assert sec_gdn.run(ctx) == PASS, "\n".join(ctx.lines)
    text = "\n".join(ctx.lines)
    assert "correctness: PASS" in text and "FAIL" not in text and ext.calls > 0
    d = ctx.data
    assert len(d["vs_host"]) == (3 * 4 + 2) * 2 and all(r["ok"] for r in d["vs_host"])
    assert all(r["ok"] and r["err_out"] <= 2e-4 for r in d["vs_reference"])
    assert all(r["ok"] and r["chunk"] == 64 and r["chunked_vs_scan"] < 1e-4 for r in d["chunked_vs_scan"])


def test_gdn_section_reports_a_wrong_chunked_path(gdn_section):
    """A chunked path that computes something else is a FAIL, in every table that runs it."""
    ctx, ext = gdn_section
    ext.corrupt_algo = gdn_host.ALGOS["chunked"]
    assert sec_gdn.run(ctx) == FAIL
    text = "\n".join(ctx.lines)
    assert "correctness: FAIL" in text and ctx.summary.startswith("correctness FAILED")
    assert all(r["ok"] == (r["algo"] == "scan") for r in ctx.data["vs_host"])
    assert all(r["ok"] == (r["algo"] == "scan") for r in ctx.data["vs_reference"])
    assert not any(r["ok"] for r in ctx.data["chunked_vs_scan"])
    assert "FAIL Hk=2  Hv=2  dk=16  dv=16  fp32 gated=1 packed chunked" in text


def test_gdn_correctness_leaves_out_forced_chunked_where_no_chunk_fits(gdn_section, monkeypatch):
    """A device whose shared memory fits no chunk for a config: the vs-host table leaves the
    forced chunked path out for it (the launcher would refuse it) and runs the others at the
    device's smaller chunk size (16 here, host and stand-in alike)."""
    ctx, ext = gdn_section
    ext.max_shared = 12000  # chunk 16 for (2, 2, 16, 16), none for SMALL_9B
    assert sec_gdn.device_chunk(sec_gdn.CONFIGS[0]) == 16 and sec_gdn.device_chunk(SMALL_9B) == 0
    monkeypatch.setattr(sec_gdn, "vs_reference", lambda cfg, seed, algo="auto": (0.0, 0.0))
    chunk_sizes = {}  # (Hk, Hv, dk, dv) -> the host library's chunk sizes (the check's calls and the stand-in's)
    host_call = gdn_host.gated_delta_rule

    def recorded(*args, **kw):
        cfg = tuple(kw[k] for k in ("num_k_heads", "num_v_heads", "head_k_dim", "head_v_dim"))
        chunk_sizes.setdefault(cfg, set()).add(kw["chunk_size"])
        return host_call(*args, **kw)

    monkeypatch.setattr(gdn_host, "gated_delta_rule", recorded)
    assert sec_gdn.correctness(ctx), "\n".join(ctx.lines)
    assert chunk_sizes[sec_gdn.CONFIGS[0]] == {16}  # the device's, not the host library's default 64
    assert chunk_sizes[SMALL_9B] == {gdn_host.HOST_CHUNK_SIZE}  # scan only: the chunk size is not used
    chunked = {tuple(r["cfg"]) for r in ctx.data["vs_host"] if r["algo"] == "chunked"}
    assert chunked == {(2, 2, 16, 16), (2, 4, 32, 16)}
    assert sum(tuple(r["cfg"]) == SMALL_9B for r in ctx.data["vs_host"]) == 4  # scan only


@pytest.mark.parametrize("table", ["vs_host", "vs_reference"])
def test_gdn_correctness_fails_on_the_final_state_alone(gdn_section, monkeypatch, table):
    """Outputs that match with a final recurrent state that does not (the next step starts from
    it) fail the check, in either table; errors exactly at the tolerances pass."""
    ctx, _ = gdn_section
    at_tolerance = {"vs_host": lambda cfg, dt, *a: (sec_gdn.TOL_OUT[dt], sec_gdn.TOL_STATE),
                    "vs_reference": lambda cfg, seed, algo="auto": (2e-4, 2e-4)}
    for name, errors in at_tolerance.items():
        monkeypatch.setattr(sec_gdn, name, errors)
    assert sec_gdn.correctness(ctx), "\n".join(ctx.lines)
    monkeypatch.setattr(sec_gdn, table, lambda *a, **k: (0.0, 1e-3))  # past both state tolerances
    assert not sec_gdn.correctness(ctx)
    other = "vs_reference" if table == "vs_host" else "vs_host"
    assert not any(r["ok"] for r in ctx.data[table]) and all(r["ok"] for r in ctx.data[other])


def test_gdn_relative_error_of_a_nan_or_inf_on_either_side_is_inf_never_nan():
    """A NaN error would pass: ``max(0.0, nan)`` is 0.0 where the section folds its cases' errors.
    A non-finite value on either side -- the kernel's or the host library's / the reference's,
    where NaN - NaN or inf - inf is NaN -- is an infinite error instead."""
    want = torch.tensor([[1.0, -3.0], [0.5, 2.0]])
    assert sec_gdn._rel_err(want + 0.3, want) == pytest.approx(0.3 / 1.5)
    for bad in (math.nan, math.inf, -math.inf):
        broken = want.clone()
        broken[1, 0] = bad
        assert sec_gdn._rel_err(broken, want) == math.inf
        assert sec_gdn._rel_err(want, broken) == math.inf
        assert sec_gdn._rel_err(broken, broken.clone()) == math.inf
    assert max(0.0, sec_gdn._rel_err(torch.full((3,), math.nan), torch.full((3,), math.nan))) == math.inf


def test_gdn_section_fails_on_the_chunked_vs_scan_table_alone(gdn_section, monkeypatch):
    """The long-sequence table is a verdict of its own: with the correctness tables passing, a
    final state off the fp64 recurrence by 1e-2 there fails the section."""
    ctx, _ = gdn_section
    monkeypatch.setattr(sec_gdn, "correctness", lambda ctx: True)
    exact = ops.recurrent_gated_delta_rule

    def state_off(*args, **kwargs):
        o, state = exact(*args, **kwargs)
        return o, state + 1e-2

    monkeypatch.setattr(ops, "recurrent_gated_delta_rule", state_off)
    assert sec_gdn.run(ctx) == FAIL
    rows = ctx.data["chunked_vs_scan"]
    assert not any(r["ok"] for r in rows) and all(r["err_out_scan"] < 1e-4 for r in rows)
    assert sum(ln.endswith("  FAIL (tol 2e-04)") for ln in ctx.lines) == len(rows)
    assert ctx.summary.startswith("correctness FAILED; ")


class RecordingGdnExtension(HostGdnExtension):
    """The host-library stand-in that records each call (algo, dtype, gated, request types,
    slots) and lets a test spoil the n-th call's output or state pool (``spoil[n](out, pool)``)."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.remove_padding = []
        self.spoil = {}

    def gdn_forward(self, **kw):
        slots = kw["slot_mapping"]
        self.seen.append((kw.get("algo", 0), kw["qkv"].dtype, kw["z"] is not None, [int(t) for t in kw["request_types"]],
                          None if slots is None else slots.tolist()))
        self.remove_padding.append(kw["remove_padding"])
        out = super().gdn_forward(**kw)
        if self.calls in self.spoil:
            self.spoil[self.calls](out, kw["state_pool"])
        return out


@pytest.fixture
def recording(gdn_section, monkeypatch):
    """gdn_section's context with a RecordingGdnExtension serving every call."""
    ctx, _ = gdn_section
    ext = RecordingGdnExtension()
    monkeypatch.setattr(cuda_ext, "load_gdn", lambda verbose=False: ext)
    return ctx, ext


def _timed_calls(ext, us):
    """cuda_time_us's stand-in saying the next of ``us`` per call (_gpu_stand_ins'
    scripted_timings); ``calls`` gets (reps, warmup, the extension calls the timed function made)."""
    timed, calls = scripted_timings(*us), []

    def recorded(fn, reps, warmup=3, *, cold_l2=True):
        before = len(ext.seen)
        t = timed(fn, reps, warmup, cold_l2=cold_l2)
        calls.append((reps, warmup, ext.seen[before:]))
        return t

    return recorded, calls


def _table_rows(lines, columns):
    return [ln.split() for ln in lines if len(ln.split()) == columns and ln.split()[0].isdigit()]


# Timings in call order: chunked-vs-scan per T (scan, chunked, auto), context per B (kernel,
# torch chunk), generation per B (kernel, torch recurrent).
CHUNK_US = (10.0, 20.0, 11.0, 30.0, 15.0, 16.0, 90.0, 36.0, 37.0)
CONTEXT_US = (480.0, 960.0, 1920.0, 7000.0)
GENERATION_US = (2.0, 9.0, 4.0, 30.0, 10.0, 50.0)
# SMALL_9B (2, 4, 32, 32): conv 256 channels; activations (conv + 2 Hv + 2 Hv dv) * 2 bytes = 1040 per
# token; state Hv*dk*dv*4 = 16384 bytes, read and written once per generation step.
CONTEXT_BYTES = {1: 48 * 1040 + 16384, 8: 8 * (48 * 1040 + 16384)}
GENERATION_BYTES = {1: 2 * 16384 + 1040, 4: 4 * (2 * 16384 + 1040), 8: 8 * (2 * 16384 + 1040)}


def test_gdn_tables_and_summary_show_each_timing_where_it_belongs(recording, monkeypatch):
    """A full (not quick) run at a measured 1 GB/s: the build time, the timed calls (which algo,
    bf16 gated, CTX/GEN rows, slots, how many repetitions), each table's columns (us/token,
    Mtok/s, floors at the measured bandwidth and at 4.8 TB/s, floor/kernel, GB/s, scan/chunked)
    and the summary line."""
    _, ext = recording
    ctx = SectionContext("gdn", bandwidth=1e9, quick=False, timeout=120.0)
    loads, loaded_before_correctness = [], []
    monkeypatch.setattr(cuda_ext, "load_gdn", lambda verbose=False: (loads.append(verbose), ext)[1])
    monkeypatch.setattr(sec_gdn, "correctness", lambda ctx: (loaded_before_correctness.extend(loads), True)[1])
    # TF32 matmuls would put the fp32 references on the GPU off by more than the tolerances; the section
    # turns them off (torch's default; monkeypatch cannot save this attribute, so it is set, then left off).
    torch.backends.cuda.matmul.allow_tf32 = True
    monkeypatch.setattr(ops, "_fla_kernels", lambda: None)
    clock = iter([100.0, 112.3456, 112.3456, 120.0, 125.55])  # load 12.3456 s; correctness 5.55 s
    monkeypatch.setattr(sec_gdn, "time", types.SimpleNamespace(time=lambda: next(clock)))
    timed, calls = _timed_calls(ext, CHUNK_US + CONTEXT_US + GENERATION_US)
    monkeypatch.setattr(sec_gdn, "cuda_time_us", timed)
    assert sec_gdn.run(ctx) == PASS, "\n".join(ctx.lines)
    assert ctx.data["build_seconds"] == 12.35 and ctx.data["correctness"] is True
    assert ctx.lines[0] == ("  extension trt_neg_gdn_cuda built/loaded in 12.3 s (built in the background from the "
                            "start of the check)")
    assert ctx.lines[1] == "  correctness: PASS (5.5 s)"
    assert loaded_before_correctness == [False] and torch.backends.cuda.matmul.allow_tf32 is False

    algo = gdn_host.ALGOS
    gated_bf16 = lambda a, types, slots: [(a, BF16, True, types, slots)]  # noqa: E731
    chunk_calls = [(10, 3, gated_bf16(algo[a], [0], None)) for _ in range(3) for a in ("scan", "chunked", "auto")]
    assert calls[:9] == chunk_calls
    assert calls[9:13] == [(10, 3, gated_bf16(0, [0], [0])), (5, 1, []),
                           (10, 3, gated_bf16(0, [0] * 8, list(range(8)))), (5, 1, [])]
    generation = calls[13:]
    assert [(reps, warmup) for reps, warmup, _ in generation] == [(20, 3), (10, 3)] * 3
    assert [seen for _, _, seen in generation[1::2]] == [[]] * 3  # the torch recurrence: no kernel call
    for (_, _, [(a, dtype, gated, types_, slots)]), B in zip(generation[::2], (1, 4, 8)):
        assert (a, dtype, gated, types_) == (0, BF16, True, [1] * B) and sorted(slots) == list(range(B))
    assert generation[4][2][0][4] != list(range(8))  # permuted

    assert {"  chunked vs scan (Hk=2 Hv=4 dk=32 dv=32, one fresh sequence; device chunk size 64; errors vs the fp64 "
            "recurrence, fp32 I/O, raw o; times bf16 gated, median of 10, L2 flushed before each call):",
            "  context phase (9B config Hk=2 Hv=4 dk=32 dv=32, bf16, gated norm, T=48 per sequence, fresh state; "
            "median of 10 (torch chunk: of 5), L2 flushed before each call; floor = activations + state write):",
            "  generation phase (one token per sequence, permuted slots, bf16, gated norm; median of 20, L2 flushed "
            "before each call; floor = B x 0 MiB state read + write per layer):"} <= set(ctx.lines)
    headers = [ln.split() for ln in ctx.lines if ln.split()[:1] in (["T"], ["B"])]
    assert headers == ["T scan out chunk out scan st chunk st chk-scan scan us chunk us auto us scan/chunk".split(),
                       "B kernel us us/token Mtok/s torch chunk fp32 floor@meas floor@4.8".split(),
                       "B kernel us torch rec fp32 floor@meas floor@4.8 floor/kernel GB/s".split()]
    rows = _table_rows(ctx.lines, 10)  # the chunked-vs-scan table: T, 5 errors, 3 times, ratio
    assert [[r[0]] + r[6:] for r in rows] == [["1", "10", "20", "11", "0.50"], ["16", "30", "15", "16", "2.00"],
                                              ["80", "90", "36", "37", "2.50"]]
    assert [(r["scan_us"], r["chunked_us"], r["auto_us"], r["scan_over_chunked"]) for r in ctx.data["chunked_vs_scan"]] \
        == [(10.0, 20.0, 11.0, 0.5), (30.0, 15.0, 16.0, 2.0), (90.0, 36.0, 37.0, 2.5)]

    # B, kernel us, us/token, Mtok/s, torch us, floor at 1 GB/s, floor at 4.8 TB/s (us)
    context, generation_rows = _table_rows(ctx.lines, 7)[:2], _table_rows(ctx.lines, 7)[2:]
    assert context == [["1", "480", "10.00", "0.10", "960", "66.3", "0.0"],
                       ["8", "1920", "5.00", "0.20", "7000", "530.4", "0.1"]]
    for row, B in zip(ctx.data["timing"]["context"], (1, 8)):
        assert row["floor_measured"] == pytest.approx(CONTEXT_BYTES[B] / 1e9 * 1e6)
        assert row["floor_4p8"] == pytest.approx(CONTEXT_BYTES[B] / 4.8e12 * 1e6)
        assert row["fla_us"] is None
    assert [(r["tokens_per_s"], r["torch_chunk_fp32_us"]) for r in ctx.data["timing"]["context"]] == [
        pytest.approx((1e5, 960.0)), pytest.approx((2e5, 7000.0))]
    # B, kernel us, torch us, floor at 1 GB/s, floor at 4.8 TB/s, floor/kernel, achieved GB/s
    assert generation_rows == [["1", "2.0", "9.0", "33.8", "0.0", "16.90", "17"],
                               ["4", "4.0", "30.0", "135.2", "0.0", "33.81", "34"],
                               ["8", "10.0", "50.0", "270.5", "0.1", "27.05", "27"]]
    for row, B, us in zip(ctx.data["timing"]["generation"], (1, 4, 8), GENERATION_US[::2]):
        assert row["floor_measured"] == pytest.approx(GENERATION_BYTES[B] / 1e3)
        assert row["floor_4p8"] == pytest.approx(GENERATION_BYTES[B] / 4.8e6)
        assert row["floor_over_kernel"] == pytest.approx(GENERATION_BYTES[B] / 1e3 / us)
        assert row["achieved_GBps"] == pytest.approx(GENERATION_BYTES[B] / us / 1e3)
    assert not any("fla" in ln for ln in ctx.lines)
    assert ctx.summary == ("correctness ok; context T=48 B=1 0.48 ms; T=80 scan/chunked 2.5x; "
                           "generation B=8 10 us = 2705% of floor")


def test_gdn_generation_floor_without_a_measured_bandwidth_is_the_4p8_one(recording, monkeypatch):
    """No copy bandwidth measured: the floor/kernel ratio is against the 4.8 TB/s floor and the
    measured-floor columns say nan; with flash-linear-attention present its timing gets a column."""
    _, ext = recording
    ctx = SectionContext("gdn", bandwidth=None, quick=True, timeout=120.0)
    monkeypatch.setattr(ops, "_fla_kernels", lambda: ("chunk", "recurrent"))
    monkeypatch.setattr(ops, "gated_delta_rule", lambda *a, **k: None)
    timed, calls = _timed_calls(ext, (480.0, 960.0, 300.0, 1920.0, 7000.0, 1200.0, 0.001, 1.0, 0.002, 2.0, 0.004,
                                      4.0))
    monkeypatch.setattr(sec_gdn, "cuda_time_us", timed)
    res = sec_gdn.benchmark(ctx)
    assert res["fla"] is True and [r["fla_us"] for r in res["context"]] == [300.0, 1200.0]
    assert [(reps, warmup) for reps, warmup, _ in calls[:3]] == [(5, 3), (3, 1), (5, 3)]
    assert _table_rows(ctx.lines, 8) == [["1", "480", "10.00", "0.10", "960", "300", "nan", "0.0"],
                                         ["8", "1920", "5.00", "0.20", "7000", "1200", "nan", "0.1"]]
    for row, B, us in zip(res["generation"], (1, 4, 8), (0.001, 0.002, 0.004)):
        assert row["floor_measured"] is None
        assert row["floor_over_kernel"] == pytest.approx(GENERATION_BYTES[B] / 4.8e6 / us)
    assert [r[5] for r in _table_rows(ctx.lines, 7)] == ["7.04", "14.09", "14.09"]


def test_gdn_run_fails_on_the_correctness_tables_alone_and_summarises_the_extremes(gdn_section, monkeypatch):
    """Correctness failing with the chunked table passing is a FAIL; the summary quotes the
    context phase at B=1, the longest T's ratio and the largest generation batch."""
    ctx, _ = gdn_section
    monkeypatch.setattr(sec_gdn, "correctness", lambda ctx: False)
    monkeypatch.setattr(sec_gdn, "chunked_vs_scan", lambda ctx: (True, [dict(T=16, scan_over_chunked=0.8),
                                                                        dict(T=4096, scan_over_chunked=6.04)]))
    monkeypatch.setattr(sec_gdn, "benchmark", lambda ctx: dict(
        context=[dict(kernel_us=1234.0), dict(kernel_us=9999.0)],
        generation=[dict(B=1, kernel_us=3.0, floor_over_kernel=0.2), dict(B=256, kernel_us=480.4, floor_over_kernel=0.72)]))
    assert sec_gdn.run(ctx) == FAIL
    assert ctx.lines[1].startswith("  correctness: FAIL (") and ctx.data["correctness"] is False
    assert ctx.summary == ("correctness FAILED; context T=48 B=1 1.23 ms; T=4096 scan/chunked 6.0x; "
                           "generation B=256 480 us = 72% of floor")


def test_gdn_vs_host_tolerance_is_the_activation_dtypes(gdn_section, monkeypatch):
    """An output error of 1.5e-2 is within the bf16 tolerance (1.6e-2) and far past the fp32 one
    (1e-4): the fp32 rows fail, the bf16 rows pass, and the FAIL lines say the figures."""
    ctx, _ = gdn_section
    monkeypatch.setattr(sec_gdn, "vs_host", lambda cfg, dt, *a: (1.5e-2, 0.0))
    monkeypatch.setattr(sec_gdn, "vs_reference", lambda cfg, seed, algo="auto": (0.0, 0.0))
    assert not sec_gdn.correctness(ctx)
    assert [r["ok"] for r in ctx.data["vs_host"]] == [r["dtype"] == "bf16" for r in ctx.data["vs_host"]]
    assert "    FAIL Hk=2  Hv=2  dk=16  dv=16  fp32 gated=1 packed scan   : out 1.50e-02 (tol 1e-04), " \
           "state 0.00e+00 (tol 1e-04)" in ctx.lines
    assert "    ok   Hk=2  Hv=4  dk=32  dv=16  bf16 gated=0 padded chunked: out 1.50e-02 (tol 2e-02), " \
           "state 0.00e+00 (tol 1e-04)" in ctx.lines
    monkeypatch.setattr(sec_gdn, "vs_host", lambda cfg, dt, *a: (1.7e-2, 0.0))  # past bf16's too
    assert not sec_gdn.correctness(ctx) and not any(r["ok"] for r in ctx.data["vs_host"])


@pytest.mark.parametrize("table, errors", [("vs_host", (1.7e-2, 0.0)), ("vs_host", (0.0, 1.1e-4)),
                                           ("vs_reference", (2.1e-4, 0.0)), ("vs_reference", (0.0, 2.1e-4))])
def test_gdn_correctness_fails_just_past_either_tolerance_of_either_table(gdn_section, monkeypatch, table, errors):
    """An output error or a state error just past its tolerance (bf16's 1.6e-2 and the state's
    1e-4 for the host library, 2e-4 for the reference), the other one nil, fails that table
    alone (errors at the tolerances pass: test_gdn_correctness_fails_on_the_final_state_alone)."""
    ctx, _ = gdn_section
    monkeypatch.setattr(sec_gdn, "vs_host", lambda cfg, dt, *a: (0.0, 0.0))
    monkeypatch.setattr(sec_gdn, "vs_reference", lambda cfg, seed, algo="auto": (0.0, 0.0))
    monkeypatch.setattr(sec_gdn, table, lambda *a, **k: errors)
    assert not sec_gdn.correctness(ctx)
    assert ctx.lines[0] == "  vs host library (max |gpu - cpu| / (1 + |cpu|); mixed batch + 3 generation steps):"
    assert ctx.lines[len(ctx.data["vs_host"]) + 1] == ("  vs reference recurrence (trt_neg.reference.ops, fp32 on the GPU; "
                                                       "raw o, no norm; lens 1, 77, 150):")
    other = "vs_reference" if table == "vs_host" else "vs_host"
    assert not any(r["ok"] for r in ctx.data[table]) and all(r["ok"] for r in ctx.data[other])
    assert sum(ln.startswith("    FAIL ") for ln in ctx.lines) == len(ctx.data[table])
    if table == "vs_reference" and errors[0]:
        assert "    FAIL Hk=2  Hv=4  dk=32  dv=32  chunked: out 2.10e-04, state 0.00e+00 (tol 2e-4)" in ctx.lines


def _add_to_output(out, pool):
    out.view(-1)[0] += 1e3


def _add_to_last_output(out, pool):
    out[-1] += 1e3


def _add_to_state(slot):
    def spoil(out, pool):
        pool[slot, 0, 0, 0] += 1e3

    return spoil


@pytest.mark.parametrize("call, spoil, padded, spoils", [
    (1, _add_to_output, False, "out"),  # the mixed batch
    (1, _add_to_output, True, "out"),  # the padded layout's
    (4, _add_to_output, False, "out"),  # the last generation step
    (4, _add_to_state(7), False, "state"),  # the state after the last step (slot 7: the first sequence's)
    (1, _add_to_state(4), False, "state"),  # a slot no sequence maps to: the whole pool is compared
])
def test_gdn_vs_host_sees_an_error_in_any_call_and_any_slot(recording, call, spoil, padded, spoils):
    """vs_host's four kernel calls (the mixed batch, then three generation steps): an output or
    a state slot off in any one of them is an error of that kind, the other one exact."""
    _, ext = recording
    ext.spoil[call] = spoil
    for dtype in (FP32, BF16):
        ext.calls = 0
        e_out, e_state = sec_gdn.vs_host((2, 4, 32, 16), dtype, True, 3, padded, "scan")
        assert ext.calls == 4
        assert (e_out > 1.0, e_state > 1.0) == (spoils == "out", spoils == "state")
        assert (e_out, e_state)[spoils == "out"] == 0.0


@pytest.mark.parametrize("padded", [False, True])
def test_gdn_vs_host_runs_the_mixed_batch_in_the_layout_asked_for(recording, padded):
    """The padded case's mixed batch goes to the kernel padded ([batch, longest, ...]); the
    generation steps after it, one token per sequence, are packed either way."""
    _, ext = recording
    assert sec_gdn.vs_host((2, 4, 32, 16), FP32, True, 3, padded, "scan") == (0.0, 0.0)
    assert ext.remove_padding == [not padded, True, True, True]


@pytest.mark.parametrize("spoils", ["out", "state"])
def test_gdn_vs_reference_sees_the_last_sequences_error(recording, spoils):
    """vs_reference's packed batch (lens 1, 77, 150): the last token's output, or the final state
    of the last sequence, off the reference is an error of that kind."""
    _, ext = recording
    ext.spoil[1] = _add_to_last_output if spoils == "out" else _add_to_state(2)
    e_out, e_state = sec_gdn.vs_reference((1, 2, 16, 16), 4, "scan")
    assert (e_out > 1.0, e_state > 1.0) == (spoils == "out", spoils == "state")
    assert (e_out, e_state)[spoils == "out"] <= 2e-4


def test_gdn_chunked_vs_scan_column_is_the_chunked_paths_distance_from_the_scan(gdn_section):
    """A chunked path off in one output element: the scan's errors stay small, the row fails,
    and its chunked-vs-scan figure is that element's error (as the chunked path's own is)."""
    ctx, ext = gdn_section
    ext.corrupt_algo = gdn_host.ALGOS["chunked"]
    ok, [row] = sec_gdn.chunked_vs_scan(ctx, lengths=(16,), cfg=(1, 2, 16, 16))
    assert not ok and not row["ok"] and row["err_out_scan"] <= 1e-5 and row["err_state_chunked"] <= 1e-5
    assert row["chunked_vs_scan"] > 0.1 and row["chunked_vs_scan"] == pytest.approx(row["err_out_chunked"], rel=1e-4)


def test_gdn_relative_error_of_nothing_is_zero():
    """An empty comparison (``max`` of no elements would raise) is no error."""
    assert sec_gdn._rel_err(torch.empty(0, 4), torch.empty(0, 4)) == 0.0


def test_gdn_relative_error_is_computed_in_fp64_whatever_the_dtypes():
    """bf16 outputs compared in bf16 would round the error itself (1 + |want| to 8 bits): the
    figure is the fp64 one of the values given."""
    got, want = torch.tensor([1.0], dtype=BF16), torch.tensor([1.0078125], dtype=BF16)
    assert sec_gdn._rel_err(got, want) == 0.0078125 / 2.0078125


def test_gdn_correctness_runs_every_case_on_both_paths_with_inputs_of_its_own(gdn_section, monkeypatch):
    """The vs-host table: every head config x fp32/bf16 x gated/not, packed, then the padded
    layout (fp32 gated, bf16 not), each on the scan and the chunked path; the vs-reference
    table: its three configs on both paths; every case drawn from a seed of its own."""
    ctx, _ = gdn_section
    host_cases, ref_cases = [], []
    monkeypatch.setattr(sec_gdn, "vs_host", lambda *case: (host_cases.append(case), (0.0, 0.0))[1])
    monkeypatch.setattr(sec_gdn, "vs_reference", lambda *case: (ref_cases.append(case), (0.0, 0.0))[1])
    assert sec_gdn.correctness(ctx)
    packed = [(cfg, dt, gated, False) for cfg in sec_gdn.CONFIGS for dt in (FP32, BF16) for gated in (True, False)]
    padded = [((2, 4, 32, 16), FP32, True, True), ((2, 4, 32, 16), BF16, False, True)]
    assert [(cfg, dt, gated, pad, algo) for cfg, dt, gated, _, pad, algo in host_cases] == [
        case + (algo,) for case in packed + padded for algo in ("scan", "chunked")]
    assert [(cfg, algo) for cfg, _, algo in ref_cases] == [
        (cfg, algo) for cfg in ((2, 2, 64, 64), (2, 4, 64, 64), SMALL_9B) for algo in ("scan", "chunked")]
    seeds = [case[3] for case in host_cases] + [case[1] for case in ref_cases]
    assert len(set(seeds)) == len(seeds) == 28 + 6
    assert [(r["cfg"], r["dtype"], r["gated"], r["padded"], r["algo"]) for r in ctx.data["vs_host"]] == [
        (list(cfg), "fp32" if dt == FP32 else "bf16", gated, pad, algo) for cfg, dt, gated, _, pad, algo in host_cases]
    assert [(r["cfg"], r["algo"]) for r in ctx.data["vs_reference"]] == [(list(cfg), algo) for cfg, _, algo in ref_cases]


def test_gdn_chunked_vs_scan_row_shows_each_error_in_its_column_and_fails_past_the_tolerance(gdn_section, monkeypatch):
    """Each of the six errors a length computes (scan out, scan state, chunked out, chunked state
    vs the fp64 recurrence, then chunked vs scan out and state) lands in its own column; the row
    passes with the largest at the tolerance (2e-4) and fails just past it."""
    ctx, _ = gdn_section
    errors = iter([1e-5, 2e-5, 3e-5, 2e-4, 5e-5, 6e-5,  # T=1: chunked state at the tolerance
                   1e-5, 2.1e-4, 3e-5, 4e-5, 7e-5, 5e-5])  # T=16: scan state past it
    monkeypatch.setattr(sec_gdn, "_rel_err", lambda got, want: next(errors))
    ok, rows = sec_gdn.chunked_vs_scan(ctx, lengths=(1, 16), cfg=(1, 2, 16, 16))
    assert not ok and [r["ok"] for r in rows] == [True, False]
    assert [(r["err_out_scan"], r["err_state_scan"], r["err_out_chunked"], r["err_state_chunked"], r["chunked_vs_scan"])
            for r in rows] == [(1e-5, 2e-5, 3e-5, 2e-4, 6e-5), (1e-5, 2.1e-4, 3e-5, 4e-5, 7e-5)]
    assert ", median of 5, L2 flushed before each call):" in ctx.lines[0]  # quick: the timings' repetitions
    printed = [ln.split()[:6] + ln.split()[10:] for ln in ctx.lines[2:]]
    assert printed == [["1", "1.0e-05", "3.0e-05", "2.0e-05", "2.0e-04", "6.0e-05"],
                       ["16", "1.0e-05", "3.0e-05", "2.1e-04", "4.0e-05", "7.0e-05", "FAIL", "(tol", "2e-04)"]]


def test_the_gdn_sizes_and_tolerances_are_the_9b_models_and_the_documented_ones():
    """The other tests run the section at small shapes; the GPU runs it at these. The timed
    config is the 9B model's Gated DeltaNet (the synthetic '9b' preset), and the head configs,
    prompt lengths, batches and tolerances are the ones docs/gpu_check.md gives for section 3."""
    import inspect
    import re
    from pathlib import Path

    from trt_neg.checkpoint.synthetic import PRESETS

    text = PRESETS["9b"]["text_config"]
    assert sec_gdn.CFG_9B == tuple(text[f"linear_{k}"] for k in ("num_key_heads", "num_value_heads", "key_head_dim",
                                                                 "value_head_dim"))
    assert sec_gdn.CONFIGS[-1] == sec_gdn.CFG_9B
    defaults = inspect.signature(sec_gdn.chunked_vs_scan).parameters  # bound at import: must be the same objects
    assert (defaults["lengths"].default, defaults["cfg"].default) == (sec_gdn.CHUNK_TS, sec_gdn.CFG_9B)

    docs = Path(__file__).resolve().parents[1] / "docs" / "gpu_check.md"
    row = next(ln for ln in docs.read_text().splitlines() if ln.startswith("| 3 | `gdn` |"))
    configs = re.search(r"\(Hk, Hv, dk, dv\) = ((?:\(\d+,\d+,\d+,\d+\)(?:, )?)+)", row).group(1)
    assert [tuple(map(int, c)) for c in re.findall(r"\((\d+),(\d+),(\d+),(\d+)\)", configs)] == list(sec_gdn.CONFIGS)
    assert re.findall(r"T ∈ \{([\d, ]+)\}", row) == [", ".join(map(str, sec_gdn.CHUNK_TS))]
    hk, hv, dk, dv = sec_gdn.CFG_9B
    assert f"9B config ({hk}/{hv} heads, {dk}×{dv})" in row and dk == dv
    batches = " and ".join(map(str, sec_gdn.CTX_BATCHES))
    assert f"context T={sec_gdn.CTX_T}, batch {batches} " in row
    assert f"generation, batch {sec_gdn.GEN_BATCHES[0]}..{sec_gdn.GEN_BATCHES[-1]} " in row
    assert list(sec_gdn.GEN_BATCHES) == sorted(set(sec_gdn.GEN_BATCHES))

    def fmt(x: float) -> str:  # as the docs write a tolerance: 1e-4, 1.6e-2
        mantissa, exponent = f"{x:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"

    assert (f"fp32 {fmt(sec_gdn.TOL_OUT[FP32])}, bf16 {fmt(sec_gdn.TOL_OUT[BF16])} relative to 1+\\|ref\\|; "
            f"state {fmt(sec_gdn.TOL_STATE)})") in row
    assert f"(fp32 I/O, tol {fmt(sec_gdn.TOL_CHUNK_REF)})" in row
