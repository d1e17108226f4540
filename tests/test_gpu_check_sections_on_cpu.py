"""The GPU check's backend, machine and pytest sections run end to end on the CPU (the pattern
of test_gpu_check_neg_on_cpu.py): ``common.DEVICE`` is "cpu", the CUDA extensions are
replaced by host-library stand-ins with the bindings' exact signatures and argument checks
(the NEG kernel by :mod:`trt_neg.kernels.host`), the few ``torch.cuda`` calls that raise on
a CPU-only torch are faked, and the shapes are small (the GDN section's tests, on the same
pattern, are in test_gpu_check_gdn_on_cpu.py).  Every comparison, table and summary line of
the sections executes, so a Python slip in them cannot first show on a lent GPU.  Timings here
are meaningless and not asserted."""

from __future__ import annotations

import json
import math
import os
import signal
import types
from pathlib import Path

import pytest
import torch

from trt_neg.gpu_check import SectionContext, common, sec_backend, sec_machine, sec_pytest
from trt_neg.gpu_check.report import ERROR, FAIL, PASS, SKIP
from _gpu_stand_ins import fake_h200, fake_time, host_neg_step, small_shapes
from trt_neg.kernels import cuda_ext

REAL_NEG_STEP = cuda_ext.neg_step  # the real wrapper, before a fixture replaces it
REPOSITORY = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- backend
@pytest.fixture
def backend_section(monkeypatch):
    """The "GPU" backends (every one after the first, the CPU reference) take the fused NEG
    path: ``neg_step_fast`` with the CUDA test bypassed, into ``cuda_ext.neg_step`` (which the
    section wraps to count calls), here the host library."""
    from trt_neg import neg
    from trt_neg.runtime import torch_backend

    monkeypatch.setattr(common, "DEVICE", "cpu")
    monkeypatch.setenv("TRT_NEG_CUDA_EXT", "1")
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda *a, **k: None)
    monkeypatch.setattr(cuda_ext, "load", lambda verbose=False: None)
    monkeypatch.setattr(cuda_ext, "neg_step", host_neg_step)

    def neg_step_fast(hidden, logits, weights, **kw):  # neg.neg_step_fast as on CUDA tensors
        if os.environ.get("TRT_NEG_CUDA_EXT", "1") != "0" and min(kw.get("top_k", 8), logits.shape[1]) <= 1024:
            return cuda_ext.neg_step(hidden, logits, weights, **kw)
        return neg.neg_step(hidden, logits, weights, **kw)

    monkeypatch.setattr(torch_backend, "neg_step_fast", neg_step_fast)
    made = []
    orig = torch_backend.TorchBackend.from_pretrained.__func__

    def from_pretrained(cls, path, **kw):
        b = orig(cls, path, **kw)
        b.fused_neg = bool(made)  # the first one is the section's CPU reference
        made.append((kw.get("device"), kw.get("dtype", "float32")))
        return b

    monkeypatch.setattr(torch_backend.TorchBackend, "from_pretrained", classmethod(from_pretrained))
    assert neg.neg_step_fast is not neg_step_fast  # only the backend's binding changes
    return SectionContext("backend", bandwidth=4.0e12, quick=True, timeout=120.0), made


def test_backend_section_runs_and_passes_on_the_cpu(backend_section):
    ctx, made = backend_section
    assert sec_backend.run(ctx) == PASS, "\n".join(ctx.lines)
    text = "\n".join(ctx.lines)
    assert made == [("cpu", "float32"), ("cpu", "float32"), ("cpu", "bfloat16")]
    json.dumps(ctx.data)
    assert "FAIL" not in text and ctx.data["neg_extension_error"] is None
    runs = ctx.data["fp32"]
    assert list(runs) == ["checkpoint tau", "tau=-inf (NEG fires on every mode-1 row)"]
    n_rows = len(sec_backend.PROMPT_LENS) * (sec_backend.STEPS + 1)
    for st in runs.values():
        assert st["ok"] and st["rows"] == n_rows and st["token_mismatch"] == 0 and st["logit_tol_fail"] == 0
        # the same fp32 model twice: equal logits; H_hat from the host library vs torch to fp32 rounding
        assert st["max_logit_err"] == 0.0 and st["max_entropy_err"] < 1e-6
    assert runs["tau=-inf (NEG fires on every mode-1 row)"]["fired"] == 2 * (sec_backend.STEPS + 1)
    assert math.isfinite(ctx.data["checkpoint_tau"])
    assert ctx.data["bf16"]["ok"] and ctx.data["bf16"]["argmax_agreement"] >= 0.8
    assert ctx.data["calls"]["fused_neg_kernel"] > 0 and ctx.data["calls"]["fla"] == 0
    assert "fp32 GPU vs CPU, checkpoint tau: ok -- 21 rows" in text and "bf16 GPU vs fp32 CPU" in text
    assert "paths: NEG fused CUDA kernel (neg_step_fast -> trt_neg_cuda," in text
    from trt_neg.reference import ops

    fla = "fla importable but not used" if ops._fla_kernels() is not None else "fla not importable"
    assert ctx.data["paths"]["gdn"] == f"torch chunked/recurrent code ({fla})" and text.endswith(
        f"; GDN torch chunked/recurrent code ({fla})")
    assert ctx.summary.startswith("fp32 tokens equal; bf16 argmax ") and ctx.summary.endswith(
        "NEG fused kernel; GDN torch")
    assert cuda_ext.neg_step is host_neg_step  # the section's call counter is taken off again


def test_backend_section_passes_on_the_neg_binding_on_the_cuda_simulation(backend_section, monkeypatch):
    """The "GPU" backends' fused NEG with nothing standing in: neg_step_fast -> cuda_ext.neg_step
    -> negTorch.cpp -> negKernel.cu on the CPU simulation of CUDA; tokens, fired flags and
    entropies as the CPU reference backend's."""
    sim = pytest.importorskip("_sim_extensions")
    ext = sim.neg_extension().reset()
    monkeypatch.setattr(cuda_ext, "load", lambda verbose=False: ext)
    monkeypatch.setattr(cuda_ext, "neg_step", REAL_NEG_STEP)
    ctx, _ = backend_section
    assert sec_backend.run(ctx) == PASS, "\n".join(ctx.lines)
    assert "FAIL" not in "\n".join(ctx.lines) and ctx.data["neg_extension_error"] is None
    for st in ctx.data["fp32"].values():
        assert st["ok"] and st["token_mismatch"] == 0 and st["logit_tol_fail"] == 0
    assert ctx.data["calls"]["fused_neg_kernel"] == ext.calls > 0


def test_backend_section_reports_a_wrong_fused_token(backend_section, monkeypatch):
    def wrong(*args, **kw):
        out = host_neg_step(*args, **kw)
        out.token[out.fired] = (out.token[out.fired] + 1) % args[1].shape[1]
        return out

    monkeypatch.setattr(cuda_ext, "neg_step", wrong)
    ctx, _ = backend_section
    assert sec_backend.run(ctx) == FAIL
    text = "\n".join(ctx.lines)
    assert "fp32 GPU vs CPU, tau=-inf (NEG fires on every mode-1 row): FAIL" in text
    assert ctx.data["fp32"]["tau=-inf (NEG fires on every mode-1 row)"]["token_mismatch"] > 0
    assert "mismatches; bf16" in ctx.summary


def test_backend_section_reports_an_extension_that_does_not_build(backend_section, monkeypatch):
    errors = [f"negKernel.cu({i}): error: boom" for i in range(1, 21)]

    def broken(verbose=False):
        raise RuntimeError("\n".join(["Error building extension 'trt_neg_cuda'", *errors]))

    monkeypatch.setattr(cuda_ext, "load", broken)
    ctx, _ = backend_section
    assert sec_backend.run(ctx) == FAIL
    text = "\n".join(ctx.lines)
    assert "FAIL: the NEG extension did not build/load" in text
    shown = "RuntimeError: " + "\n".join(errors[-15:])  # the error's last 15 lines
    assert ctx.data["neg_extension_error"] == shown
    assert [ln.strip() for ln in ctx.lines if ln.strip().startswith("| ")] == ["| " + ln for ln in shown.splitlines()]
    assert os.environ["TRT_NEG_CUDA_EXT"] == "0" and ctx.data["calls"]["fused_neg_kernel"] == 0
    assert all(r["ok"] for r in ctx.data["fp32"].values())  # the rest ran, on the torch NEG
    assert "paths: NEG torch reference (neg_step_fast fell back" in text and "NEG torch; GDN torch" in ctx.summary


@pytest.mark.parametrize("largest", [0, 10], ids=["largest_move_on_the_prefill", "largest_move_on_the_last_decode"])
def test_backend_section_fails_bf16_argmax_agreement_of_8_in_11(backend_section, monkeypatch, largest):
    """The bf16 backend stood in for by an fp32 one (the CPU's logits exactly) whose argmax is moved
    on the prefill and decode steps 5 and 10: agreement over the 11 calls is 8/11 < 80 %, so the
    section fails with both fp32 runs good; max |dlogit| is the largest move, on the prefill or on
    the last decode step, the logit scale the CPU's last max |logit|."""
    from trt_neg.runtime import torch_backend

    moved, calls = {0, 5, 10}, []  # (tokens fed, |moved - true| max, true max |logit|) per call
    fixture_from_pretrained = torch_backend.TorchBackend.from_pretrained.__func__

    def argmax_moved(run):
        def call(slot_or_slots, token_ids):
            logits, hidden = run(slot_or_slots, token_ids)
            out = logits.clone()
            if len(calls) in moved:  # by more the nearer this call is to call `largest`
                out.view(-1)[int(logits.argmin())] = float(logits.max()) + 11.0 - abs(largest - len(calls))
            calls.append((len(token_ids), float((out - logits).abs().max()), float(logits.abs().max())))
            return out, hidden
        return call

    def from_pretrained(cls, path, **kw):
        if kw.get("dtype") != "bfloat16":
            return fixture_from_pretrained(cls, path, **kw)
        b = fixture_from_pretrained(cls, path, **{**kw, "dtype": "float32"})
        b.runner.prefill, b.runner.decode = argmax_moved(b.runner.prefill), argmax_moved(b.runner.decode)
        return b

    monkeypatch.setattr(torch_backend.TorchBackend, "from_pretrained", classmethod(from_pretrained))
    ctx, _ = backend_section
    assert sec_backend.run(ctx) == FAIL
    assert [n for n, _, _ in calls] == [50] + [1] * 10
    err, scale = max(e for _, e, _ in calls), calls[-1][2]
    assert err == calls[largest][1] > 11.0 and [e == 0.0 for _, e, _ in calls] == [i not in moved for i in range(11)]
    assert ctx.data["bf16"] == dict(argmax_agreement=8 / 11, max_logit_err=err, logit_scale=scale, ok=False)
    assert all(r["ok"] for r in ctx.data["fp32"].values())
    assert (f"bf16 GPU vs fp32 CPU (prefill 50 + 10 decode steps): FAIL -- argmax agreement 73% (need >= 80%), "
            f"max |dlogit| {err:.3g} (logit scale {scale:.3g})") in "\n".join(ctx.lines)
    assert ctx.summary.startswith("fp32 tokens equal; bf16 argmax 73%; ")


def test_backend_section_fails_a_run_on_a_gate_or_a_logit_mismatch_alone(backend_section, monkeypatch):
    """Each fp32 run's verdict and line come from decode_compare's counts: one gate mismatch alone
    fails the checkpoint-tau run, one step's logits over tolerance alone the tau = -inf run."""
    asked = []
    base = dict(rows=21, token_mismatch=0, explained=2, fired=3, fired_mismatch=0, max_logit_err=1.5e-5,
                max_entropy_err=2.5e-7, logit_tol_fail=0, entropy_tol_fail=0)
    counts = {None: dict(base, fired_mismatch=1), -math.inf: dict(base, logit_tol_fail=1)}

    def scripted(cpu, gpu, tau, vocab, log):
        asked.append((tau, vocab == cpu.vocab_size == gpu.vocab_size, cpu is not gpu))
        return dict(counts[tau])

    monkeypatch.setattr(sec_backend, "decode_compare", scripted)
    ctx, _ = backend_section
    # one call of each counted (no sampling runs here, and fla never runs on a CPU)
    ctx.data["calls"] = {"fused_neg_kernel": 1, "fla": 1}
    assert sec_backend.run(ctx) == FAIL
    assert asked == [(None, True, True), (-math.inf, True, True)]
    inf_label = "tau=-inf (NEG fires on every mode-1 row)"
    assert ctx.data["fp32"] == {"checkpoint tau": {**counts[None], "ok": False},
                                inf_label: {**counts[-math.inf], "ok": False}}
    text = "\n".join(ctx.lines)
    for label, gate in (("checkpoint tau", 1), (inf_label, 0)):
        assert (f"fp32 GPU vs CPU, {label}: FAIL -- 21 rows, 3 fired, 0 token mismatches (2 near-tie/boundary), "
                f"{gate} gate mismatches, max |dlogit| 1.50e-05, max |dH| 2.50e-07 "
                "(0 rows over 1e-4 (1 + |H|))") in text
    assert ("paths: NEG fused CUDA kernel (neg_step_fast -> trt_neg_cuda, 1 calls); "
            "GDN flash-linear-attention Triton kernels (1 calls)") in text
    assert ctx.data["bf16"]["ok"] and ctx.summary.startswith("fp32 tokens 1 mismatches; bf16 argmax ")
    assert ctx.summary.endswith("; NEG fused kernel; GDN fla")


def test_backend_greedy_token_difference_is_excused_by_a_near_tie_only():
    """Two greedy tokens differ: explained when the CPU logits of both are within twice the
    logit tolerance (an argmax tie at fp32 rounding), a mismatch otherwise."""
    row = torch.tensor([0.0, 5.0, 5.00015, 3.0])
    assert sec_backend._explained(row, 2, 1, tol=1e-4)  # 1.5e-4 apart <= 2e-4
    assert not sec_backend._explained(row, 2, 1, tol=0.7e-4)  # > 1.4e-4
    assert not sec_backend._explained(row, 2, 3, tol=1e-4)


def test_backend_greedy_token_difference_is_a_mismatch_unless_the_cpu_logits_tie_within_2_tol():
    """decode_compare's greedy rows (not fired) whose tokens differ, 3 on the CPU and 4 on the GPU:
    explained when the CPU's logits of the two are within 2 * tol (tol = 1e-4 * 15 here), else a
    token mismatch."""
    steps = sec_backend.STEPS + 1
    for gap, counts in ((2.9e-3, (3 * steps, 0)), (3.1e-3, (0, 3 * steps))):
        logits = torch.arange(16, dtype=torch.float32)
        logits[4] = 3.0 + gap
        cpu = _ScriptedBackend([False] * 3, [0.5] * 3, token=3)
        gpu = _ScriptedBackend([False] * 3, [0.5] * 3, token=4)
        for b in (cpu, gpu):
            b.runner.prefill = lambda slot, ids: (logits, torch.zeros(4))
            b.runner.decode = lambda slots, toks: (logits.repeat(len(slots), 1), torch.zeros(len(slots), 4))
        st = sec_backend.decode_compare(cpu, gpu, None, 16, lambda s: None)
        assert (st["explained"], st["token_mismatch"], st["logit_tol_fail"]) == (*counts, 0)


class _ScriptedBackend:
    """What decode_compare uses of a TorchBackend: runner.prefill / decode (fixed logits), sample
    (rows with the given fired flags and H_hat), neg_weights, neg_config, release."""

    def __init__(self, fired, entropy, vocab=16, token=0):
        self.fired, self.entropy, self.vocab, self.token = fired, entropy, vocab, token
        self.neg_weights = types.SimpleNamespace(threshold=torch.tensor(1.0))
        self.neg_config = types.SimpleNamespace(top_k=8, temperature=1.0)
        self.device = "cpu"
        logits = torch.arange(vocab, dtype=torch.float32)
        self.runner = types.SimpleNamespace(
            prefill=lambda slot, ids: (logits, torch.zeros(4)),
            decode=lambda slots, toks: (logits.repeat(len(slots), 1), torch.zeros(len(slots), 4)))

    def sample(self, rows, logits, hidden):
        return [types.SimpleNamespace(token=self.token, fired=f, entropy=e) for f, e in zip(self.fired, self.entropy)]

    def release(self, slot):
        pass


def test_backend_decode_steps_feed_both_backends_the_cpus_latest_tokens():
    """Teacher forcing: each decode step gives both backends the CPU's tokens of the step before
    (not the GPU's, which differ here, nor an earlier step's), one position further each step."""
    fed, positions = {"cpu": [], "gpu": []}, {"cpu": [], "gpu": []}

    def backend(name, offset):
        b = _ScriptedBackend([False] * 3, [0.5] * 3)
        steps = iter(range(100))

        def decode(slots, toks):
            fed[name].append(list(toks))
            return torch.arange(16.0).repeat(len(slots), 1), torch.zeros(len(slots), 4)

        def sample(rows, logits, hidden):
            step = next(steps)
            positions[name].append([r.position for r in rows])
            return [types.SimpleNamespace(token=(3 * step + i + offset) % 16, fired=False, entropy=0.5) for i in range(3)]

        b.runner.decode, b.sample = decode, sample
        return b

    sec_backend.decode_compare(backend("cpu", 0), backend("gpu", 1), None, 16, lambda s: None)
    cpu_tokens = [[(3 * step + i) % 16 for i in range(3)] for step in range(sec_backend.STEPS)]
    assert fed["cpu"] == fed["gpu"] == cpu_tokens
    start = list(sec_backend.PROMPT_LENS)
    assert positions["cpu"] == positions["gpu"] == [[n + step for n in start] for step in range(sec_backend.STEPS + 1)]


def test_backend_gate_difference_is_excused_within_1e_4_of_tau_only():
    """A row whose gate decision differs between the backends: explained when the CPU's H_hat is
    within 1e-4 (1 + |tau|) of tau (2e-4 at tau = 1), else a gate mismatch; every step counts."""
    h_hat = [1.00015, 1.00025, 0.5]  # 1.5e-4 from tau: excused; 2.5e-4 and 0.5: not
    cpu = _ScriptedBackend([True, True, False], h_hat)
    gpu = _ScriptedBackend([False, False, True], h_hat)
    st = sec_backend.decode_compare(cpu, gpu, None, 16, lambda s: None)
    steps = sec_backend.STEPS + 1
    assert (st["rows"], st["explained"], st["fired_mismatch"], st["token_mismatch"]) == (3 * steps, steps, 2 * steps, 0)


def test_backend_gate_difference_is_never_excused_at_tau_minus_inf():
    """At tau = -inf every mode-1 row must fire on both sides: a row that does not is a gate
    mismatch, however its H_hat lies (|H - tau| <= 1e-4 (1 + |tau|) holds there: inf <= inf)."""
    cpu = _ScriptedBackend([True, False, True], [2.0] * 3)
    gpu = _ScriptedBackend([False, False, True], [2.0] * 3)
    st = sec_backend.decode_compare(cpu, gpu, -math.inf, 16, lambda s: None)
    steps = sec_backend.STEPS + 1
    assert float(cpu.neg_weights.threshold) == float(gpu.neg_weights.threshold) == -math.inf
    assert (st["explained"], st["fired_mismatch"], st["fired"]) == (0, steps, 2 * steps)


@pytest.mark.parametrize("scale", [15.0, 0.5])
def test_backend_logit_tolerance_is_1e_4_of_the_largest_cpu_logit_at_least_1(scale):
    """A step fails when the GPU's logits are off by more than 1e-4 * max(1, max |CPU logit|):
    off by 0.9 of that on the prefill passes, by 1.1 of it on each decode step fails."""
    tol = 1e-4 * max(1.0, scale)
    cpu, gpu = _ScriptedBackend([False] * 3, [0.5] * 3), _ScriptedBackend([False] * 3, [0.5] * 3)
    logits = torch.linspace(-scale, scale / 2, 16)  # the largest |logit| is the negative end
    for b, prefill_off, decode_off in ((cpu, 0.0, 0.0), (gpu, 0.9 * tol, 1.1 * tol)):
        b.runner.prefill = lambda slot, ids, off=prefill_off: (logits + off, torch.zeros(4))
        b.runner.decode = lambda slots, toks, off=decode_off: ((logits + off).repeat(len(slots), 1),
                                                               torch.zeros(len(slots), 4))
    st = sec_backend.decode_compare(cpu, gpu, None, 16, lambda s: None)
    assert st["logit_tol_fail"] == sec_backend.STEPS
    assert st["max_logit_err"] == pytest.approx(1.1 * tol, rel=1e-3)


def test_backend_nan_logits_and_entropies_are_errors_not_dropped():
    """A GPU backend whose logits turn NaN after the prefill and whose H_hat is NaN on one row: every
    decode step fails the logit tolerance and both largest errors read NaN (``max(x, nan)`` is x)."""
    cpu = _ScriptedBackend([False] * 3, [0.5] * 3)
    gpu = _ScriptedBackend([False] * 3, [0.5, float("nan"), 0.5])
    decode = gpu.runner.decode
    gpu.runner.decode = lambda slots, toks: (torch.full_like(decode(slots, toks)[0], float("nan")),
                                             decode(slots, toks)[1])
    st = sec_backend.decode_compare(cpu, gpu, None, 16, lambda s: None)
    assert st["logit_tol_fail"] == sec_backend.STEPS and math.isnan(st["max_logit_err"])
    assert math.isnan(st["max_entropy_err"])
    assert common.worst(0.5, 2.0, 1.0) == 2.0 and math.isnan(common.worst(3.0, math.nan))


def test_backend_fired_token_difference_is_excused_at_the_rows_own_cumulative_boundary_only(monkeypatch):
    """Both backends fire but draw different tokens: explained only when the row's own draw,
    philox(neg_seed, position), lies within 1e-4 of a cumulative probability of the CPU logits'
    top min(top_k, V) at the sampling temperature (sec_neg's rule); otherwise a token mismatch."""
    from trt_neg.gpu_check import sec_neg
    from trt_neg.neg import philox_uniform

    asked = []

    def near_boundary(logits, k, temperature, u, tol):
        asked.append((logits.tolist(), k, temperature, u, tol))
        return len(asked) % 2 == 1  # every other row lands on a boundary

    monkeypatch.setattr(sec_neg, "_near_boundary", near_boundary)
    cpu = _ScriptedBackend([True] * 3, [2.0] * 3, token=3)
    gpu = _ScriptedBackend([True] * 3, [2.0] * 3, token=4)
    cpu.neg_config = types.SimpleNamespace(top_k=20, temperature=0.7)  # top_k past V = 16
    st = sec_backend.decode_compare(cpu, gpu, None, 16, lambda s: None)
    steps = sec_backend.STEPS + 1
    draws = [philox_uniform(1000 + i, n + step) for step in range(steps) for i, n in enumerate(sec_backend.PROMPT_LENS)]
    assert asked == [(list(range(16)), 16, 0.7, u, 1e-4) for u in draws]
    assert (st["rows"], st["fired"], st["explained"], st["token_mismatch"], st["fired_mismatch"]) == (
        3 * steps, 3 * steps, (3 * steps + 1) // 2, 3 * steps // 2, 0)


def test_backend_h_hat_difference_fails_over_1e_4_of_1_plus_the_cpus_h_hat():
    """Every row's H_hat counts, also where no gate decision tells (mode 0; the same decision on
    both sides): over 1e-4 (1 + |H_hat of the CPU|) it is an error, and so is a NaN."""
    cpu = _ScriptedBackend([False] * 3, [2.0, -2.0, 2.0])
    gpu = _ScriptedBackend([False] * 3, [2.00031, -2.00029, float("nan")])  # 3.1e-4 and NaN over 3e-4
    st = sec_backend.decode_compare(cpu, gpu, None, 16, lambda s: None)
    steps = sec_backend.STEPS + 1
    assert (st["entropy_tol_fail"], st["fired_mismatch"], st["token_mismatch"]) == (2 * steps, 0, 0)


def test_backend_section_reports_fused_h_hat_off_by_a_thousandth(backend_section, monkeypatch):
    """A fused kernel whose H_hat is 0.1 % high draws the same tokens at tau = -inf (every mode-1
    row fires on both sides), so only the H_hat comparison can fail that run."""
    def entropy_high(*args, **kw):
        out = host_neg_step(*args, **kw)
        out.entropy.mul_(1.001)
        return out

    monkeypatch.setattr(cuda_ext, "neg_step", entropy_high)
    ctx, _ = backend_section
    assert sec_backend.run(ctx) == FAIL
    st = ctx.data["fp32"]["tau=-inf (NEG fires on every mode-1 row)"]
    n_rows = len(sec_backend.PROMPT_LENS) * (sec_backend.STEPS + 1)
    assert (st["ok"], st["entropy_tol_fail"], st["token_mismatch"], st["fired_mismatch"]) == (False, n_rows, 0, 0)
    assert f"({n_rows} rows over 1e-4 (1 + |H|))" in "\n".join(ctx.lines)


# --------------------------------------------------------------------------- machine
def test_machine_section_runs_with_faked_device_queries(monkeypatch):
    monkeypatch.setattr(common, "DEVICE", "cpu")
    monkeypatch.setattr(common, "cuda_time_us", fake_time)
    small_shapes(monkeypatch.setattr)
    fake_h200(monkeypatch.setattr)
    ctx = SectionContext("machine", bandwidth=None, quick=True, timeout=60.0)
    assert sec_machine.run(ctx) == PASS, "\n".join(ctx.lines)
    text = "\n".join(ctx.lines)
    d = ctx.data
    json.dumps(d)
    assert d["gpu"] == "NVIDIA H200" and d["capability"] == "9.0" and d["sms"] == 132 and d["gpu_count"] == 1
    assert d["copy_bandwidth_Bps"] == 2 * (1 << 20) / 1e-6 and d["copy_us"] == 1.0
    assert "GPU      NVIDIA H200 (sm_90, 132 SMs, L2 60 MiB), 1 visible" in text
    assert "memory   143.0 GiB total, 140.0 GiB free" in text
    assert text.count("\n") == 4 and "copy     0 GiB device-to-device in 1 us" in text
    assert d["one_line"].startswith("NVIDIA H200, driver ") and ctx.summary == "NVIDIA H200, copy 2.10 TB/s"


def test_machine_section_times_a_copy_of_its_bytes_and_names_the_driver(monkeypatch):
    """The bandwidth every floor uses: read + write bytes of the copy actually timed, over its time;
    the driver is nvidia-smi's first field ("?" without nvidia-smi)."""
    monkeypatch.setattr(common, "DEVICE", "cpu")
    small_shapes(monkeypatch.setattr)  # a 1 MiB copy
    fake_h200(monkeypatch.setattr)
    timed = []

    def copy_time(fn, reps, warmup=3, *, cold_l2=True):
        fn()
        moved = sum(c.cell_contents.numel() * c.cell_contents.element_size() for c in fn.__closure__)  # src + dst
        timed.append((moved, reps, cold_l2))
        return 2.0

    monkeypatch.setattr(common, "cuda_time_us", copy_time)
    monkeypatch.setattr(sec_machine, "_cmd", lambda args, timeout=20: "580.65.06, 1980 MHz, 3201 MHz")
    ctx = SectionContext("machine", bandwidth=None, quick=True, timeout=60.0)
    assert sec_machine.run(ctx) == PASS
    assert timed == [(2 * 2**20, 5, False)]  # 1 MiB read + 1 MiB written, 5 reps with --quick, L2 not flushed
    assert ctx.data["copy_bandwidth_Bps"] == 2 * 2**20 / 2e-6 and ctx.data["driver"] == "580.65.06"
    assert ctx.lines[2].startswith("  driver   580.65.06 (CUDA driver API ")
    assert ctx.lines[4] == ("  copy     0 GiB device-to-device in 2 us: 1.05 TB/s (read + write), 22% of 4.8 TB/s; "
                            "floors below are given at both")
    monkeypatch.setattr(sec_machine, "_cmd", lambda args, timeout=20: "")
    ctx = SectionContext("machine", bandwidth=None, quick=False, timeout=60.0)
    assert sec_machine.run(ctx) == PASS
    assert timed[-1][1] == 10 and (ctx.data["driver"], ctx.data["nvidia_smi"]) == ("?", None)


def test_machine_section_copies_2_gib_and_sums_up_the_machine_in_one_line(monkeypatch):
    """At full size (tensors on torch's meta device: nothing is allocated) the timed copy reads and
    writes 2 GiB each, as its line says; the report header's one line gives the memory in GiB and
    the bandwidth in TB/s."""
    monkeypatch.setattr(common, "DEVICE", "meta")
    fake_h200(monkeypatch.setattr)
    timed = []

    def copy_time(fn, reps, warmup=3, *, cold_l2=True):
        fn()
        timed.append(sum(c.cell_contents.numel() * c.cell_contents.element_size() for c in fn.__closure__))
        return 1000.0

    monkeypatch.setattr(common, "cuda_time_us", copy_time)
    monkeypatch.setattr(sec_machine, "_cmd", lambda args, timeout=20: "580.65.06, 1980 MHz, 3201 MHz")
    monkeypatch.setattr(sec_machine, "_driver_cuda_version", lambda: "13.0")
    ctx = SectionContext("machine", bandwidth=None, quick=True, timeout=60.0)
    assert sec_machine.run(ctx) == PASS
    assert timed == [2 * 2 * 2**30]
    assert ctx.lines[4].startswith("  copy     2 GiB device-to-device in 1000 us: 4.29 TB/s (read + write), 89% of ")
    d = ctx.data
    assert d["copy_bandwidth_Bps"] == 4 * 2**30 / 1e-3 and d["nvidia_smi"] == "580.65.06, 1980 MHz, 3201 MHz"
    assert d["one_line"] == f"NVIDIA H200, driver 580.65.06 (CUDA 13.0), torch {torch.__version__}, 143 GiB, " \
                            f"copy 4.29 TB/s, {d['date']}"
    assert ctx.summary == "NVIDIA H200, copy 4.29 TB/s"


def test_machine_commands_give_their_stripped_output_or_nothing():
    """nvidia-smi's answer (the driver line) as text; a missing or hung command is an empty answer."""
    import sys

    assert sec_machine._cmd([sys.executable, "-c", "print('  580.65.06, 1980 MHz  ')"]) == "580.65.06, 1980 MHz"
    assert sec_machine._cmd(["/nonexistent/nvidia-smi"]) == ""
    assert sec_machine._cmd([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5) == ""


@pytest.mark.parametrize("fla, importable", [("a spec", True), (None, False), (ImportError("fla's parent"), False)])
def test_machine_section_says_whether_fla_imports(monkeypatch, fla, importable):
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name, package=None):
        if name != "fla":
            return real_find_spec(name, package)
        if isinstance(fla, Exception):
            raise fla
        return fla

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert sec_machine._versions()["fla"] is importable


class _Libcuda:
    """libcuda.so.1 as ctypes sees it: cuDriverGetVersion writes ``version`` and returns ``status``."""

    def __init__(self, version: int, status: int = 0):
        self.version, self.status = version, status

    def cuDriverGetVersion(self, out):
        out._obj.value = self.version
        return self.status


@pytest.mark.parametrize("version, shown", [(13000, "13.0"), (12040, "12.4"), (12090, "12.9"), (11080, "11.8")])
def test_the_cuda_driver_api_version_is_major_dot_minor(monkeypatch, version, shown):
    import ctypes

    monkeypatch.setattr(ctypes, "CDLL", lambda name: _Libcuda(version) if name == "libcuda.so.1" else None)
    assert sec_machine._driver_cuda_version() == shown


def test_the_cuda_driver_api_version_is_unknown_without_libcuda_or_on_an_error(monkeypatch):
    import ctypes

    monkeypatch.setattr(ctypes, "CDLL", lambda name: _Libcuda(13000, status=100))  # CUDA_ERROR_NO_DEVICE
    assert sec_machine._driver_cuda_version() == "?"

    def missing(name):
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert sec_machine._driver_cuda_version() == "?"


def test_machine_section_names_the_toolkit_the_extensions_build_with(monkeypatch, tmp_path):
    """The nvcc version reported is that of the toolkit cuda_ext picks (not whichever nvcc is
    first on PATH), and a machine with none says why instead of failing the section."""
    from trt_neg.kernels import cuda_ext

    toolkit = tmp_path / "cuda-13.9"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "bin" / "nvcc").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.9, V13.9.1'\n")
    (toolkit / "bin" / "nvcc").chmod(0o755)
    monkeypatch.delenv("PYTORCH_NVCC", raising=False)
    monkeypatch.setattr(cuda_ext, "cuda_toolkit", lambda torch_choice: str(toolkit))
    v = sec_machine._versions()
    assert (v["cuda_toolkit"], v["nvcc"]) == (str(toolkit), "13.9")

    def none_found(torch_choice):
        raise RuntimeError("no CUDA toolkit found to build the extensions with: no nvcc on PATH")

    monkeypatch.setattr(cuda_ext, "cuda_toolkit", none_found)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    v = sec_machine._versions()
    assert v["cuda_toolkit"] == "none: no CUDA toolkit found to build the extensions with: no nvcc on PATH"
    assert v["nvcc"] is None


# --------------------------------------------------------------------------- pytest
FAKE_GPU_TESTS = '''
import pytest

@pytest.mark.gpu
def test_kernel_matches():
    pass

@pytest.mark.gpu
def test_kernel_is_wrong():
    for row in range(50):  # a long failure report: the section keeps its last 40 lines
        print(f"row {row}")
    assert 1 == 2

@pytest.mark.gpu
def test_needs_more():
    pytest.skip("needs two GPUs")

@pytest.fixture
def gpu_buffer():
    raise RuntimeError("CUDA out of memory")

@pytest.mark.gpu
def test_uses_a_buffer(gpu_buffer):
    pass

def test_cpu_only():  # not -m gpu: never run by the section
    assert False
'''
PASSING_GPU_TESTS = FAKE_GPU_TESTS.replace("assert 1 == 2", "pass").replace(
    'raise RuntimeError("CUDA out of memory")', "return None")


def _fake_repository(tmp_path, tests: str):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fake.py").write_text(tests)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: needs a GPU\n")
    return tmp_path


def _section_clock(monkeypatch, seconds: float) -> None:
    """sec_pytest's clock: the pytest run takes ``seconds`` (it reads the time at its start and end)."""
    reads = iter([1000.0, 1000.0 + seconds])
    monkeypatch.setattr(sec_pytest, "time", types.SimpleNamespace(time=lambda: next(reads)))


def _stale_build_lock(monkeypatch, tmp_path, ext_name: str):
    """torch's build lock of ``ext_name``, as a build killed mid-way leaves it (TORCH_EXTENSIONS_DIR in tmp_path)."""
    from torch.utils.cpp_extension import _get_build_directory

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch_extensions"))
    lock = Path(_get_build_directory(ext_name, verbose=False)) / "lock"
    lock.write_text("")
    return lock


def test_pytest_section_runs_in_the_repository_root():
    """The section runs ``pytest tests/`` there: a wrong folder has no tests/ and fails on the GPU."""
    assert sec_pytest.ROOT == REPOSITORY and (sec_pytest.ROOT / "tests" / "test_neg_gpu.py").is_file()


def test_pytest_section_counts_the_gpu_tests_and_names_each_failure(tmp_path, monkeypatch):
    """Section 5 runs ``pytest -m gpu`` on the repository's tests and reads its JUnit report:
    on the GPU machine, its summary is the only record of which GPU test failed."""
    monkeypatch.setattr(sec_pytest, "ROOT", _fake_repository(tmp_path, FAKE_GPU_TESTS))
    _section_clock(monkeypatch, 12.34)
    ctx = SectionContext("pytest", bandwidth=None, quick=True, timeout=120.0)
    assert sec_pytest.run(ctx) == FAIL, "\n".join(ctx.lines)
    counts = ctx.data["counts"]
    assert {k: counts[k] for k in ("tests", "passed", "failed", "errors", "skipped")} == dict(
        tests=4, passed=1, failed=1, errors=1, skipped=1)
    assert counts["failed_ids"] == ["tests.test_fake::test_kernel_is_wrong", "tests.test_fake::test_uses_a_buffer"]
    assert counts["skip_reasons"] == {"needs two GPUs": 1}
    assert ctx.data["returncode"] == 1 and ctx.data["timed_out"] is False and ctx.data["seconds"] == 12.3
    assert ctx.lines[1:6] == ["  1 passed, 1 failed, 1 errors, 1 skipped of 4 collected gpu tests (12 s, rc 1)",
                              "    FAILED tests.test_fake::test_kernel_is_wrong",
                              "    FAILED tests.test_fake::test_uses_a_buffer",
                              "    skipped x1: needs two GPUs",
                              "  -- pytest output (tail) --"]
    output_tail = ctx.lines[6:]  # the pytest output's last 40 lines follow a failure
    assert len(output_tail) == 40 and all(ln.startswith("  | ") for ln in output_tail)
    assert "  | row 49" in output_tail and "  | row 0" not in output_tail
    assert output_tail[-1].startswith("  | 1 failed, 1 passed, 1 skipped, 1 deselected, 1 error in ")
    assert ctx.summary == "2 failed/errors of 4"


def test_pytest_section_passes_and_skips(tmp_path, monkeypatch):
    monkeypatch.setattr(sec_pytest, "ROOT", _fake_repository(tmp_path, PASSING_GPU_TESTS))
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    ctx = SectionContext("pytest", bandwidth=None, quick=True, timeout=120.0)
    assert sec_pytest.run(ctx) == PASS, "\n".join(ctx.lines)
    assert ctx.summary == "3 passed, 1 skipped" and ctx.data["returncode"] == 0
    # A later SIGTERM is this process's again, not the pytest run's (its group is gone).
    assert signal.getsignal(signal.SIGTERM) is sigterm_handler


def test_pytest_section_without_gpu_tests_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(sec_pytest, "ROOT", _fake_repository(tmp_path, "def test_cpu_only():\n    pass\n"))
    ctx = SectionContext("pytest", bandwidth=None, quick=True, timeout=120.0)
    assert sec_pytest.run(ctx) == SKIP and ctx.summary == "no gpu tests collected"


def test_pytest_section_fails_where_pytest_finds_no_tests_folder(tmp_path, monkeypatch):
    """pytest exits 4 and writes an empty JUnit report: a FAIL that names pytest's exit code, not
    "0 failed/errors of 0", which reads as if nothing failed."""
    monkeypatch.setattr(sec_pytest, "ROOT", tmp_path)
    ctx = SectionContext("pytest", bandwidth=None, quick=True, timeout=120.0)
    assert sec_pytest.run(ctx) == FAIL, "\n".join(ctx.lines)
    assert ctx.summary == "pytest rc 4" and ctx.data["counts"]["tests"] == 0
    assert "  | ERROR: file or directory not found: tests/" in ctx.lines


def test_pytest_section_fails_when_a_gpu_test_kills_pytest(tmp_path, monkeypatch):
    """A crash (a CUDA fault kills the process) leaves no JUnit report: the summary is pytest's
    exit status and the log quotes the last line pytest printed."""
    crashing = "import os, signal, pytest\n\n@pytest.mark.gpu\ndef test_crashes():\n" \
               "    print('launching the kernel', flush=True)\n" \
               "    print('CUDA error: an illegal memory access was encountered', flush=True)\n" \
               "    os.kill(os.getpid(), signal.SIGKILL)\n"
    monkeypatch.setattr(sec_pytest, "ROOT", _fake_repository(tmp_path, crashing))
    monkeypatch.setenv("PYTEST_ADDOPTS", "-s")  # the test's print reaches the section's pipe uncaptured
    ctx = SectionContext("pytest", bandwidth=None, quick=True, timeout=120.0)
    assert sec_pytest.run(ctx) == FAIL, "\n".join(ctx.lines)
    assert ctx.summary == f"pytest rc {-signal.SIGKILL}" and ctx.data["counts"] is None
    assert ctx.lines[1] == "  no JUnit report; pytest said: CUDA error: an illegal memory access was encountered"


def test_pytest_skip_reasons_are_counted_by_their_first_120_characters(tmp_path):
    """Long reasons are cut (one log line each); equal reasons are counted together; a skip
    without a message is counted under ""; a lone <testsuite> root is read like <testsuites>."""
    long_reason = "fla not importable: " + "x" * 200
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<?xml version="1.0"?><testsuite name="pytest" tests="4">'
        f'<testcase classname="tests.test_a" name="test_1"><skipped message="{long_reason}"/></testcase>'
        f'<testcase classname="tests.test_a" name="test_2"><skipped message="  {long_reason}"/></testcase>'
        '<testcase classname="tests.test_a" name="test_3"><skipped/></testcase>'
        '<testcase classname="tests.test_a" name="test_4"/>'
        "</testsuite>")
    counts = sec_pytest.parse_junit(xml)
    assert counts["skip_reasons"] == {long_reason[:120]: 2, "": 1}
    assert (counts["tests"], counts["passed"], counts["skipped"], counts["failed_ids"]) == (4, 1, 3, [])


def test_pytest_section_outside_the_main_thread_leaves_sigterm_alone(tmp_path):
    """signal.signal works in the main thread only: elsewhere the section runs without passing
    SIGTERM on, rather than raising."""
    import threading

    ran, errors = [], []

    def body():
        try:
            with sec_pytest._passing_sigterm_to(types.SimpleNamespace(pid=-1), str(tmp_path)):
                ran.append(signal.getsignal(signal.SIGTERM))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert errors == [] and ran == [signal.getsignal(signal.SIGTERM)]


def test_a_stopped_pytest_section_ends_the_run_and_removes_what_it_leaves(tmp_path, monkeypatch):
    """The check's SIGTERM to section 5: its pytest run's group is killed, its temporary folder and
    the NEG build lock removed (the run may have been building it), and the section exits with
    the status of a process ended by that signal."""
    import subprocess

    neg_lock = _stale_build_lock(monkeypatch, tmp_path, "trt_neg_cuda")
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    exits = []

    def exit_now(status):
        exits.append(status)
        raise SystemExit(status)

    monkeypatch.setattr(os, "_exit", exit_now)
    pytest_run = subprocess.Popen(["sleep", "60"], process_group=0)
    try:
        with pytest.raises(SystemExit), sec_pytest._passing_sigterm_to(pytest_run, str(run_folder)):
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert pytest_run.wait(timeout=10) == -signal.SIGKILL
    finally:
        pytest_run.kill()
    assert exits == [143] and not run_folder.exists() and not neg_lock.exists()


class _ShortWait:
    """subprocess for sec_pytest whose Popen.communicate, given a timeout, waits only until the
    file ``ready`` appears (the hung test is running) and then 0.5 s: the section meets its
    timeout without the test waiting it out (10 s at least).  The read after the kill gets 10 s."""

    def __init__(self, ready):
        import subprocess
        import time

        self.TimeoutExpired = subprocess.TimeoutExpired
        self.PIPE, self.STDOUT = subprocess.PIPE, subprocess.STDOUT
        self.asked = []
        outer = self

        class Popen(subprocess.Popen):
            def communicate(self, input=None, timeout=None):
                if timeout is not None:
                    outer.asked.append(timeout)
                    end = time.time() + 60
                    while not ready.exists() and self.poll() is None and time.time() < end:
                        time.sleep(0.05)
                    timeout = 0.5
                else:  # after the timeout: the kill must end the run (its test sleeps 60 s) at once
                    timeout = 10
                return super().communicate(input, timeout)

        self.Popen = Popen


@pytest.mark.parametrize("section_timeout, pytest_timeout", [(120.0, 110), (15.0, 10)])
def test_pytest_section_that_hangs_is_killed_and_reported_as_an_error(tmp_path, monkeypatch, section_timeout,
                                                                       pytest_timeout):
    """pytest gets the section's time left less 10 s (for the summary), 10 s at least."""
    hanging = "import os, time, pytest\n\n@pytest.mark.gpu\ndef test_hangs():\n" \
              "    for i in range(25):\n        print(f'line {i}', flush=True)\n" \
              "    open('pid', 'w').write(str(os.getpid()))\n    time.sleep(60)\n"
    monkeypatch.setattr(sec_pytest, "ROOT", _fake_repository(tmp_path, hanging))
    monkeypatch.setenv("PYTEST_ADDOPTS", "-s")  # the hung test's prints reach the section's pipe
    neg_lock = _stale_build_lock(monkeypatch, tmp_path, "trt_neg_cuda")
    gdn_lock = _stale_build_lock(monkeypatch, tmp_path, "trt_neg_gdn_cuda")  # the background build's: may be live
    short = _ShortWait(tmp_path / "pid")
    monkeypatch.setattr(sec_pytest, "subprocess", short)
    ctx = SectionContext("pytest", bandwidth=None, quick=True, timeout=section_timeout)
    assert sec_pytest.run(ctx) == ERROR
    assert [round(t) for t in short.asked] == [pytest_timeout]
    assert ctx.summary == f"timed out after {pytest_timeout} s" and ctx.data["timed_out"] is True
    assert ctx.lines[0].startswith("  $ pytest -m gpu -q -p no:cacheprovider -rfEs --junitxml=")
    assert ctx.lines[0].endswith(f" tests/  (timeout {pytest_timeout} s)") and ctx.data["counts"] is None
    assert ctx.lines[-1] == "  " + "\n".join(f"line {i}" for i in range(5, 25))  # the output's last 20 lines
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):  # the pytest run (its process group) was killed
        os.kill(pid, 0)
    assert not neg_lock.exists() and gdn_lock.exists()  # killed mid-build, the NEG build must not stall the next
