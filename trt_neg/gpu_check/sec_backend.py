"""Section 4: the reference backend (TorchBackend) on CUDA vs CPU, tiny checkpoint.

Three prompts are prefilled one at a time and decoded for a few steps, greedy requests in
NEG mode 1 and 0, teacher-forced with the CPU's tokens so one difference cannot cascade.
Each step's logits (GPU vs CPU, fp32: max |diff| <= 1e-4 * max(1, max |logit|)) and each
row's token / fired / H_hat are compared (H_hat: |dH| <= 1e-4 * (1 + |H_hat|), sec_neg's
rule).  Run twice: with the checkpoint's threshold, and with the threshold at -inf so that
NEG's gated top-k sampling runs on every row (the fused ``neg_step_fast`` kernel on CUDA vs
the torch reference on CPU).  A bf16 GPU run is compared loosely (argmax agreement).
Reports which paths ran: the fused NEG kernel (torch extension) or the torch fallback, and
flash-linear-attention or the torch GDN code.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch

from . import common
from .report import FAIL, PASS, tail

RTOL_OF_SCALE = 1e-4
STEPS = 6
PROMPT_LENS = (5, 17, 40)


def _rows(prompts, tokens, positions, neg_modes, decode: bool):
    from ..runtime import BackendRow, SamplingParams

    rows = []
    for i, p in enumerate(prompts):
        ids = (tokens[i][-1],) if decode else tuple(p)
        rows.append(BackendRow(slot=i, token_ids=ids, position=positions[i], sampling=SamplingParams(),
                               sample_seed=None, neg_mode=neg_modes[i], neg_seed=1000 + i))
    return rows


def _forward(backend, rows, decode: bool):
    if decode:
        l, h = backend.runner.decode([r.slot for r in rows], [r.token_ids[0] for r in rows])
        return l.float(), h.float()
    ls, hs = [], []
    for r in rows:  # one at a time, as TorchBackend.step does
        l, h = backend.runner.prefill(r.slot, list(r.token_ids))
        ls.append(l.reshape(1, -1))
        hs.append(h.reshape(1, -1))
    return torch.cat(ls).float(), torch.cat(hs).float()


def _explained(cpu_logits_row, tok_cpu, tok_gpu, tol) -> bool:
    """A greedy token difference is explained when the two logits are within tolerance."""
    return abs(float(cpu_logits_row[tok_cpu]) - float(cpu_logits_row[tok_gpu])) <= 2 * tol


def decode_compare(cpu, gpu, tau: float | None, vocab: int, log) -> dict:
    """Prefill + STEPS decode steps on both backends; returns counts and max errors."""
    from .sec_neg import _near_boundary
    from ..neg import philox_uniform

    for b in (cpu, gpu):
        if tau is not None:
            b.neg_weights.threshold = torch.tensor(tau, dtype=torch.float32, device=b.device)
    g = torch.Generator().manual_seed(7)
    prompts = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in PROMPT_LENS]
    neg_modes = [1, 0, 1]
    tokens = [[] for _ in prompts]
    positions = [len(p) for p in prompts]
    st = dict(rows=0, token_mismatch=0, explained=0, fired=0, fired_mismatch=0, max_logit_err=0.0,
              max_entropy_err=0.0, logit_tol_fail=0, entropy_tol_fail=0)
    cfg = cpu.neg_config
    for step in range(STEPS + 1):
        decode = step > 0
        rows = _rows(prompts, tokens, positions, neg_modes, decode)
        lc, hc = _forward(cpu, rows, decode)
        lg, hg = _forward(gpu, rows, decode)
        tol = RTOL_OF_SCALE * max(1.0, float(lc.abs().max()))
        err = float((lg.cpu() - lc).abs().max())
        st["max_logit_err"] = common.worst(st["max_logit_err"], err)
        st["logit_tol_fail"] += int(not err <= tol)  # NaN logits fail too
        sc = cpu.sample(rows, lc, hc)
        sg = gpu.sample(rows, lg, hg)
        for i, (a, b) in enumerate(zip(sc, sg)):
            st["rows"] += 1
            st["fired"] += int(a.fired)
            dh = abs(a.entropy - b.entropy)
            st["max_entropy_err"] = common.worst(st["max_entropy_err"], dh)
            # sec_neg's H_hat tolerance; a NaN fails too (a mode-0 row's gate never tells)
            st["entropy_tol_fail"] += int(not dh <= common.fp32_tol(a.entropy))
            if a.fired != b.fired:
                thr = float(cpu.neg_weights.threshold)
                if math.isfinite(thr) and abs(a.entropy - thr) <= common.fp32_tol(thr):
                    st["explained"] += 1
                else:
                    st["fired_mismatch"] += 1
                continue
            if a.token != b.token:
                if a.fired:
                    u = philox_uniform(rows[i].neg_seed, rows[i].position)
                    near = _near_boundary(lc[i], min(cfg.top_k, lc.shape[1]), cfg.temperature, u, tol=1e-4)
                else:
                    near = _explained(lc[i], a.token, b.token, tol)
                st["explained" if near else "token_mismatch"] += 1
        for i, a in enumerate(sc):  # teacher forcing with the CPU's tokens
            tokens[i].append(a.token)
            positions[i] += 1
    for b in (cpu, gpu):
        for s in range(len(PROMPT_LENS)):
            b.release(s)  # free again for the next run
    return st


def run(ctx) -> str:
    from ..kernels import cuda_ext
    from ..reference import ops

    # Count the calls that tell which paths really ran.
    calls = ctx.data.setdefault("calls", {"fused_neg_kernel": 0, "fla": 0})
    orig_neg, orig_fla = cuda_ext.neg_step, ops._call_fla

    def neg_counted(*a, **k):
        calls["fused_neg_kernel"] += 1
        return orig_neg(*a, **k)

    def fla_counted(*a, **k):
        calls["fla"] += 1
        return orig_fla(*a, **k)

    cuda_ext.neg_step, ops._call_fla = neg_counted, fla_counted
    try:
        with torch.inference_mode():
            return _run(ctx)
    finally:
        cuda_ext.neg_step, ops._call_fla = orig_neg, orig_fla


def _run(ctx) -> str:
    from ..checkpoint.synthetic import write_checkpoint
    from ..kernels import cuda_ext
    from ..reference.ops import _fla_kernels
    from ..runtime.torch_backend import TorchBackend

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ok = True
    build_error = None
    if os.environ.get("TRT_NEG_CUDA_EXT", "1") != "0":
        try:
            cuda_ext.load()
        except Exception as e:  # noqa: BLE001 - run the rest on the torch fallback, report the failure
            build_error = f"{type(e).__name__}: {tail(str(e), 15)}"
            os.environ["TRT_NEG_CUDA_EXT"] = "0"
            ok = False
            ctx.log("FAIL: the NEG extension did not build/load; the rest runs with TRT_NEG_CUDA_EXT=0 (torch NEG):")
            for ln in build_error.splitlines():
                ctx.log("| " + ln)
    ctx.data["neg_extension_error"] = build_error
    with tempfile.TemporaryDirectory(prefix="trt_neg_tiny_") as tmp:
        path = write_checkpoint(Path(tmp) / "tiny", "tiny", seed=0)
        kw = dict(max_slots=4, max_seq_len=128)
        cpu = TorchBackend.from_pretrained(path, device="cpu", **kw)
        gpu = TorchBackend.from_pretrained(path, device=common.DEVICE, **kw)
        vocab = cpu.vocab_size
        tau0 = float(cpu.neg_weights.threshold)
        runs = {}
        for label, tau in (("checkpoint tau", None), ("tau=-inf (NEG fires on every mode-1 row)", -math.inf)):
            st = decode_compare(cpu, gpu, tau, vocab, ctx.log)
            good = (st["token_mismatch"] == 0 and st["fired_mismatch"] == 0 and st["logit_tol_fail"] == 0
                    and st["entropy_tol_fail"] == 0)
            ok &= good
            runs[label] = {**st, "ok": good}
            ctx.log(f"fp32 GPU vs CPU, {label}: {'ok' if good else 'FAIL'} -- {st['rows']} rows, {st['fired']} fired, "
                    f"{st['token_mismatch']} token mismatches ({st['explained']} near-tie/boundary), "
                    f"{st['fired_mismatch']} gate mismatches, max |dlogit| {st['max_logit_err']:.2e}, "
                    f"max |dH| {st['max_entropy_err']:.2e} ({st['entropy_tol_fail']} rows over 1e-4 (1 + |H|))")
        ctx.data["fp32"] = runs
        ctx.data["checkpoint_tau"] = tau0
        del gpu
        torch.cuda.empty_cache()

        # bf16 on the GPU: loose agreement with the fp32 CPU model.
        half = TorchBackend.from_pretrained(path, device=common.DEVICE, dtype="bfloat16", **kw)
        g = torch.Generator().manual_seed(11)
        ids = torch.randint(3, vocab, (60,), generator=g).tolist()
        lc, _ = cpu.runner.prefill(0, ids[:50])
        lh, _ = half.runner.prefill(0, ids[:50])
        agree, errs = [int(lc.float().argmax()) == int(lh.float().argmax())], [float((lh.float().cpu() - lc.float()).abs().max())]
        for t in ids[50:]:
            lc, _ = cpu.runner.decode([0], [t])
            lh, _ = half.runner.decode([0], [t])
            agree.append(int(lc.float().argmax()) == int(lh.float().argmax()))
            errs.append(float((lh.float().cpu() - lc.float()).abs().max()))
        rate = sum(agree) / len(agree)
        scale = float(lc.abs().max())
        bf_ok = rate >= 0.8
        ok &= bf_ok
        err = common.worst(*errs)
        ctx.data["bf16"] = dict(argmax_agreement=rate, max_logit_err=err, logit_scale=scale, ok=bf_ok)
        ctx.log(f"bf16 GPU vs fp32 CPU (prefill 50 + 10 decode steps): {'ok' if bf_ok else 'FAIL'} -- argmax "
                f"agreement {rate:.0%} (need >= 80%), max |dlogit| {err:.3g} (logit scale {scale:.3g})")

    calls = ctx.data["calls"]
    fused = calls["fused_neg_kernel"] > 0
    fla = calls["fla"] > 0
    paths = dict(neg=f"fused CUDA kernel (neg_step_fast -> trt_neg_cuda, {calls['fused_neg_kernel']} calls)" if fused
                 else "torch reference (neg_step_fast fell back: TRT_NEG_CUDA_EXT=0 or top_k > 1024)",
                 gdn=f"flash-linear-attention Triton kernels ({calls['fla']} calls)" if fla
                 else ("torch chunked/recurrent code (fla importable but not used)" if _fla_kernels() is not None
                       else "torch chunked/recurrent code (fla not importable)"))
    ctx.data["paths"] = paths
    ctx.log(f"paths: NEG {paths['neg']}; GDN {paths['gdn']}")
    fr = ctx.data["fp32"]
    n_mis = sum(r["token_mismatch"] + r["fired_mismatch"] for r in fr.values())
    ctx.summary = (f"fp32 tokens {'equal' if n_mis == 0 else f'{n_mis} mismatches'}; bf16 argmax "
                   f"{ctx.data['bf16']['argmax_agreement']:.0%}; NEG {'fused kernel' if fused else 'torch'}; "
                   f"GDN {'fla' if fla else 'torch'}")
    return PASS if ok else FAIL
