"""NEG GPU check: build the CUDA extension, compare it with trt_neg.neg, time it.

    python -m trt_neg.gpu_check [--out benchmarks/gpu_check_neg.txt] [--quick]

Needs a GPU and CUDA torch (no TensorRT).  Steps:
  1. build the torch extension (plugins/neg/negKernel.cu + negTorch.cpp);
  2. correctness on random inputs vs the torch reference run on the same GPU:
     gated sampling with identical entropies (tokens/fired/status/guided exact except
     draws within rounding of a cumulative boundary), NEG-Head entropies (fp32
     tolerance), and the whole step;
  3. timing at V = 248320, H = 4096, d = 1024, bf16 hidden, top_k = 8, N in
     {1, 8, 64, 256}: fused kernel (gate firing on ~5 % of rows, and on all rows) vs the
     same op in plain torch on the GPU (trt_neg.neg) vs the memory-bandwidth floor
     (bytes of logits read / 4.8 TB/s).
Prints one table and writes it to --out.  Designed to finish well under 5 minutes on an H200.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path

import torch

from . import neg

H200_BW = 4.8e12
V_BENCH, H_BENCH, D_BENCH = 248320, 4096, 1024


def _weights(h, d, dtype, device, g):
    return neg.NegWeights(
        fc1_weight=(torch.randn(d, h, generator=g) / math.sqrt(h)).to(device, dtype),
        fc1_bias=(torch.randn(d, generator=g) * 0.1).to(device),
        fc2_weight=(torch.randn(d, generator=g) / math.sqrt(d)).to(device),
        fc2_bias=torch.tensor([0.3]).to(device),
        threshold=torch.tensor(0.0).to(device),
    )


def _logits(kind, n, v, g, device):
    z = torch.randn(n, v, generator=g) * 3
    if kind == "ties":
        z = torch.round(z)
    elif kind == "nonfinite":
        m = torch.rand(n, v, generator=g)
        z[m < 0.1] = float("nan")
        z[(m >= 0.1) & (m < 0.2)] = -math.inf
        z[0] = float("nan")
        if n > 1:
            z[1] = -math.inf
        if n > 2:
            z[2, v // 2] = math.inf
    return z.to(device)


def _near_boundary(z_row, k, temperature, u, tol=5e-5):
    zz = torch.where(torch.isnan(z_row), -math.inf, z_row.double()).cpu()
    vals = torch.sort(zz, descending=True, stable=True).values[:k] / temperature
    if not math.isfinite(float(vals[0])):
        return False
    c = torch.cumsum(torch.softmax(vals, 0), 0)
    return bool(((c - u).abs() < tol).any())


def _compare(ref, got, z, top_k, temperature, seeds, offsets, tau=None):
    """Returns (n_rows, n_boundary_mismatches, list of hard failures)."""
    fails, boundary = [], 0
    n = z.shape[0]
    rt, gt = ref.token.cpu(), got.token.cpu()
    rf, gf = ref.fired.cpu(), got.fired.cpu()
    rs, gs = ref.status.cpu(), got.status.cpu()
    for r in range(n):
        if bool(rf[r]) != bool(gf[r]):
            e = float(ref.entropy[r])
            if tau is None or abs(e - tau) > 1e-4 * (1 + abs(tau)):
                fails.append(f"row {r}: fired {bool(gf[r])} != {bool(rf[r])}")
            continue
        if int(rt[r]) != int(gt[r]):
            u = neg.philox_uniform(int(seeds[r]), int(offsets[r]))
            if bool(rf[r]) and _near_boundary(z[r], min(top_k, z.shape[1]), temperature, u):
                boundary += 1
            else:
                fails.append(f"row {r}: token {int(gt[r])} != {int(rt[r])} (fired={bool(rf[r])})")
            continue
        if int(rs[r]) != int(gs[r]):
            fails.append(f"row {r}: status {int(gs[r])} != {int(rs[r])}")
        if got.guided_logits is not None and not torch.equal(got.guided_logits[r], ref.guided_logits[r]):
            fails.append(f"row {r}: guided logits differ")
    return n, boundary, fails


def correctness(ext_mod, device, log) -> bool:
    g = torch.Generator().manual_seed(0)
    ok = True
    cases = [("normal", 1, 7, 3, 1.0), ("ties", 64, 100, 5, 0.5), ("nonfinite", 16, 50, 10, 1.0),
             ("ties", 37, 7, 1024, 1.0), ("normal", 256, 4099, 1024, 0.8), ("ties", 8, V_BENCH, 1024, 1.0),
             ("normal", 256, V_BENCH, 8, 1.0), ("nonfinite", 4, V_BENCH, 64, 1.0)]
    for kind, n, v, k, T in cases:
        z = _logits(kind, n, v, g, device)
        ent = (torch.rand(n, generator=g) * 2).to(device)
        ent[::5] = float("nan")
        seeds = torch.randint(-(2**62), 2**62, (n,), generator=g).to(device)
        offs = torch.randint(0, 2**40, (n,), generator=g).to(device)
        for tau in (1.0, -math.inf, math.inf):
            ref = neg.gated_topk_sample(z, ent, tau, k, T, seeds, offs)
            w = neg.NegWeights(torch.zeros(1, 1), torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.tensor(tau))
            got = ext_mod.neg_step(None, z, w, top_k=k, temperature=T, seeds=seeds, offsets=offs, entropy=ent)
            rows, boundary, fails = _compare(ref, got, z, k, T, seeds.cpu(), offs.cpu())
            status = "ok" if not fails else "FAIL"
            ok &= not fails
            log(f"  sample  {kind:9s} N={n:<4d} V={v:<7d} k={k:<5d} tau={tau:<5}: {status} "
                f"({rows} rows, {int(ref.fired.sum())} fired, {boundary} boundary draws)"
                + ("" if not fails else " " + "; ".join(fails[:3])))
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        for act in ("silu", "gelu", "relu", "gelu_tanh"):
            w = _weights(H_BENCH, D_BENCH, dtype, device, g)
            hid = torch.randn(64, H_BENCH, generator=g).to(device, dtype)
            z = _logits("normal", 64, 1000, g, device)
            ref_e = neg.neg_head(hid, w, act)
            tau = float(ref_e.median())
            seeds, offs = torch.full((64,), 5, device=device), torch.arange(64, device=device)
            ref = neg.neg_step(hid, z, w, activation=act, top_k=8, seeds=seeds, offsets=offs, threshold=tau)
            got = ext_mod.neg_step(hid, z, w, activation=act, top_k=8, seeds=seeds, offsets=offs, threshold=tau)
            err = float((got.entropy - ref.entropy).abs().max())
            rows, boundary, fails = _compare(ref, got, z, 8, 1.0, seeds.cpu(), offs.cpu(), tau=tau)
            good = err <= 1e-4 * (1 + float(ref.entropy.abs().max())) and not fails
            ok &= good
            log(f"  step    {str(dtype):15s} {act:9s}: {'ok' if good else 'FAIL'} (max |dH| {err:.2e}, "
                f"{boundary} boundary draws)" + ("" if not fails else " " + "; ".join(fails[:3])))
    return ok


def _cuda_time(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        ts.append(start.elapsed_time(end) * 1e3)  # us
    ts.sort()
    return ts[len(ts) // 2]


def benchmark(ext_mod, device, log, quick=False):
    g = torch.Generator().manual_seed(1)
    w = _weights(H_BENCH, D_BENCH, torch.bfloat16, device, g)
    rows = []
    for n in (1, 8, 64, 256):
        hid = torch.randn(n, H_BENCH, generator=g).to(device, torch.bfloat16)
        z = (torch.randn(n, V_BENCH, generator=g) * 4).to(device)
        ent = neg.neg_head(hid, w)
        tau5 = float(torch.quantile(ent, 0.95)) if n > 1 else float(ent[0]) + 1.0
        seeds, offs = torch.full((n,), 7, device=device), torch.arange(n, device=device) + 100
        reps = 10 if quick else 50
        res = {}
        for label, tau in (("gate5", tau5), ("all", -math.inf)):
            kw = dict(activation="silu", top_k=8, temperature=1.0, seeds=seeds, offsets=offs, threshold=torch.tensor(tau, device=device))
            res["fused_" + label] = _cuda_time(lambda: ext_mod.neg_step(hid, z, w, **kw), reps)
            res["torch_" + label] = _cuda_time(lambda: neg.neg_step(hid, z, w, **kw), max(3, reps // 5))
        floor = n * V_BENCH * 4 / H200_BW * 1e6
        rows.append((n, res, floor))
    header = (f"{'N':>4} {'fused5%':>9} {'fusedAll':>9} {'torch5%':>9} {'torchAll':>9} {'floor':>7} "
              f"{'speedup5%':>9} {'floor/fused5%':>13}  (us; V={V_BENCH}, H={H_BENCH}, d={D_BENCH}, bf16, top_k=8)")
    log(header)
    for n, r, floor in rows:
        log(f"{n:>4} {r['fused_gate5']:>9.1f} {r['fused_all']:>9.1f} {r['torch_gate5']:>9.1f} {r['torch_all']:>9.1f} "
            f"{floor:>7.1f} {r['torch_gate5'] / r['fused_gate5']:>9.1f} {floor / r['fused_gate5']:>13.2f}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/gpu_check_neg.txt", help="where to write the report")
    ap.add_argument("--quick", action="store_true", help="fewer timing repetitions")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("trt_neg.gpu_check: no CUDA GPU visible to torch (torch %s, cuda %s). This check needs a GPU "
              "machine with a CUDA build of torch and nvcc; nothing was run." % (torch.__version__, torch.version.cuda),
              file=sys.stderr)
        return 2
    from .kernels import cuda_ext

    lines = []

    def log(s=""):
        print(s, flush=True)
        lines.append(s)

    device = torch.device("cuda")
    t0 = time.time()
    log(f"# NEG GPU check  {datetime.datetime.now().isoformat(timespec='seconds')}  "
        f"{torch.cuda.get_device_name()}  torch {torch.__version__}  cuda {torch.version.cuda}")
    cuda_ext.load(verbose=False)
    log(f"extension built/loaded in {time.time() - t0:.1f} s")
    ok = correctness(cuda_ext, device, log)
    log(f"correctness: {'PASS' if ok else 'FAIL'}")
    benchmark(cuda_ext, device, log, quick=args.quick)
    log(f"total {time.time() - t0:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    print(f"report written to {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
