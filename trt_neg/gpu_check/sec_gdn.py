"""Section 3: the Gated DeltaNet CUDA kernel (plugins/gdn, torch extension gdnTorch.cpp).

* vs the CPU host library (:mod:`trt_neg.kernels.gdn_host`, the same ``gdnMath.h`` /
  ``gdnChunk.h`` maths), once per context path (the per-token scan, and the chunked form
  forced for every sequence; the host runs the same path at the device's chunk size):
  a mixed packed batch (context prompts of 1..150 tokens from a zero state, generation
  rows continuing a random state; slots permuted through a slot mapping) followed by three
  generation steps for every sequence; head configs with Hv/Hk 1 and 2 (the 9B's 16/32
  heads, 128x128, included); fp32 and bf16; with and without the fused gated norm; plus
  the padded layout.  Outputs and the whole state pool are compared.
* vs the reference recurrence (:func:`trt_neg.reference.ops.recurrent_gated_delta_rule`,
  fp32 on the GPU) for raw outputs (no norm) and final states, both paths.
* chunked vs scan vs the fp64 recurrence at the 9B shapes for T in CHUNK_TS (one sequence,
  fp32 I/O, raw o), and both timed (bf16, gated, as deployed) with their ratio: the check
  of the dispatch threshold (gdnChunk.h kChunkMinTokens) and of the chunked path's gain.
* timing, 9B head config (Hk 16, Hv 32, dk = dv = 128), bf16, gated: context phase
  (T = 1024, batch 1 and 8) vs the torch chunked reference on the GPU, and generation
  (one token, batch 1..256) vs the state-bytes floor (each step reads and writes the fp32
  state: Hv*dk*dv*4*2 bytes per sequence per layer).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .common import cuda_time_us
from . import common
from .report import FAIL, PASS

CTX, GEN = 0, 1
CFG_9B = (16, 32, 128, 128)
# (Hk, Hv, dk, dv): Hv/Hk = 1 and 2; dk != dv; the 9B's shape.
CONFIGS = ((2, 2, 16, 16), (2, 4, 32, 16), (1, 2, 64, 64), (4, 4, 128, 128), CFG_9B)
TOL_OUT = {torch.float32: 1e-4, torch.bfloat16: 1.6e-2}  # per element, relative to 1 + |host|
TOL_STATE = 1e-4  # the state is fp32 whatever the activation dtype
CTX_T = 1024
CTX_BATCHES = (1, 8)
ALGOS = ("scan", "chunked")
CHUNK_TS = (1, 16, 64, 512, 4096)
TOL_CHUNK_REF = 2e-4  # fp32 kernel vs fp64 recurrence, relative to 1 + |ref| (as vs_reference)
GEN_BATCHES = (1, 8, 32, 64, 128, 256)


def _inputs(T, hk, hv, dk, dv, g, dtype, lead=None):
    conv = 2 * hk * dk + hv * dv
    lead = (T,) if lead is None else lead
    r = lambda *s, scale=1.0: torch.randn(*s, generator=g) * scale  # noqa: E731
    return dict(qkv=r(*lead, conv).to(dtype), a=r(*lead, hv).to(dtype), b=r(*lead, hv, scale=2.0).to(dtype),
                z=r(*lead, hv * dv).to(dtype), A_log=r(hv, scale=0.5), dt_bias=r(hv, scale=0.5),
                norm_weight=1.0 + 0.3 * r(dv))


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest |got - want| / (1 + |want|); inf where either side holds a NaN or an inf (the inputs keep
    every output finite), so that a NaN can neither compare as small nor be dropped by ``max``."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if not (bool(torch.isfinite(got).all()) and bool(torch.isfinite(want).all())):
        return float("inf")
    return float(((got - want).abs() / (1.0 + want.abs())).max()) if want.numel() else 0.0


def device_chunk(cfg) -> int:
    """The chunk size the launcher picks for ``cfg`` on this GPU (0: scan only)."""
    from ..kernels import cuda_ext

    return int(cuda_ext.load_gdn().chunk_size(*cfg))


def _both(x, cfg, pool_cpu, pool_gpu, last, types, slots, gated, padded=False, algo="auto"):
    from ..kernels import cuda_ext, gdn_host

    hk, hv, dk, dv = cfg
    kw = dict(num_k_heads=hk, num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, last_token_ids=last,
              request_types=types, slot_mapping=slots, remove_padding=not padded, algo=algo)
    chunk = device_chunk(cfg) or gdn_host.HOST_CHUNK_SIZE
    host = gdn_host.gated_delta_rule(x["qkv"], x["a"], x["b"], x["A_log"], x["dt_bias"], pool_cpu,
                                     z=x["z"] if gated else None, norm_weight=x["norm_weight"] if gated else None,
                                     chunk_size=chunk, **kw)
    cu = {k: v.to(common.DEVICE) for k, v in x.items()}
    dev = cuda_ext.gdn_forward(cu["qkv"], cu["a"], cu["b"], cu["A_log"], cu["dt_bias"], pool_gpu,
                               z=cu["z"] if gated else None, norm_weight=cu["norm_weight"] if gated else None, **kw)
    torch.cuda.synchronize()
    return host, dev


def vs_host(cfg, dtype, gated, seed, padded=False, algo="auto") -> tuple[float, float]:
    """(max output error, max state error) over a mixed batch and three generation steps."""
    hk, hv, dk, dv = cfg
    g = torch.Generator().manual_seed(seed)
    lens = [1, 150, 1, 37, 64, 1]
    types = [GEN, CTX, GEN, CTX, CTX, GEN]
    slots = [7, 0, 3, 5, 1, 2]
    num_slots = 8
    pool_cpu = torch.randn(num_slots, hv, dk, dv, generator=g) * 0.1
    pool_gpu = pool_cpu.clone().to(common.DEVICE)
    err_out = 0.0
    if padded:
        L = max(lens)
        x = _inputs(None, hk, hv, dk, dv, g, dtype, lead=(len(lens), L))
        host, dev = _both(x, cfg, pool_cpu, pool_gpu, lens, types, slots, gated, padded=True, algo=algo)
    else:
        x = _inputs(sum(lens), hk, hv, dk, dv, g, dtype)
        last = torch.tensor(lens).cumsum(0).tolist()
        host, dev = _both(x, cfg, pool_cpu, pool_gpu, last, types, slots, gated, algo=algo)
    err_out = max(err_out, _rel_err(dev, host))
    err_state = _rel_err(pool_gpu, pool_cpu)
    for _ in range(3):  # generation steps for every sequence
        x = _inputs(len(lens), hk, hv, dk, dv, g, dtype)
        host, dev = _both(x, cfg, pool_cpu, pool_gpu, list(range(1, len(lens) + 1)), [GEN] * len(lens), slots, gated,
                          algo=algo)
        err_out = max(err_out, _rel_err(dev, host))
    err_state = max(err_state, _rel_err(pool_gpu, pool_cpu))
    return err_out, err_state


def _ref_qkvgb(x, cfg):
    """Reference-op inputs [1, T, H, d] (fp32, CUDA) from the op's raw inputs [T, ...]."""
    from ..reference.ops import l2norm

    hk, hv, dk, dv = cfg
    qkv = x["qkv"].float().to(common.DEVICE)
    T = qkv.shape[0]
    q = qkv[:, : hk * dk].reshape(1, T, hk, dk)
    k = qkv[:, hk * dk: 2 * hk * dk].reshape(1, T, hk, dk)
    v = qkv[:, 2 * hk * dk:].reshape(1, T, hv, dv)
    q = (l2norm(q) * dk ** -0.5).repeat_interleave(hv // hk, dim=2)
    k = l2norm(k).repeat_interleave(hv // hk, dim=2)
    a, b = x["a"].float().to(common.DEVICE).reshape(1, T, hv), x["b"].float().to(common.DEVICE).reshape(1, T, hv)
    g = -x["A_log"].to(common.DEVICE).exp() * F.softplus(a + x["dt_bias"].to(common.DEVICE))
    return q, k, v, g, torch.sigmoid(b)


def vs_reference(cfg, seed, algo="auto") -> tuple[float, float]:
    """fp32, no norm: kernel raw outputs and final states vs the reference recurrence."""
    from ..kernels import cuda_ext
    from ..reference.ops import recurrent_gated_delta_rule

    hk, hv, dk, dv = cfg
    g = torch.Generator().manual_seed(seed)
    lens = [1, 77, 150]
    x = _inputs(sum(lens), hk, hv, dk, dv, g, torch.float32)
    pool = torch.full((len(lens), hv, dk, dv), float("nan"), device=common.DEVICE)  # context: never read
    last = torch.tensor(lens).cumsum(0).tolist()
    cu = {k: v.to(common.DEVICE) for k, v in x.items()}
    out = cuda_ext.gdn_forward(cu["qkv"], cu["a"], cu["b"], cu["A_log"], cu["dt_bias"], pool, num_k_heads=hk,
                               num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, last_token_ids=last,
                               request_types=[CTX] * len(lens), algo=algo)
    err_out = err_state = 0.0
    begin = 0
    for i, n in enumerate(lens):
        part = {k: (v[begin:begin + n] if v.dim() == 2 else v) for k, v in x.items()}
        q, k, v, gg, beta = _ref_qkvgb(part, cfg)
        o, s = recurrent_gated_delta_rule(q, k, v, gg, beta, torch.zeros(1, hv, dk, dv, device=common.DEVICE))
        err_out = max(err_out, _rel_err(out[begin:begin + n], o.reshape(n, hv * dv)))
        err_state = max(err_state, _rel_err(pool[i], s[0]))
        begin += n
    return err_out, err_state


def correctness(ctx) -> bool:
    ok = True
    seed = 10
    ctx.log("vs host library (max |gpu - cpu| / (1 + |cpu|); mixed batch + 3 generation steps):")
    rows = []
    cases = [(cfg, dt, gated, False) for cfg in CONFIGS for dt in (torch.float32, torch.bfloat16)
             for gated in (True, False)]
    cases += [((2, 4, 32, 16), torch.float32, True, True), ((2, 4, 32, 16), torch.bfloat16, False, True)]
    for cfg, dt, gated, padded in cases:
        for algo in ALGOS:
            if algo == "chunked" and device_chunk(cfg) == 0:
                continue  # the launcher refuses a forced chunked path that does not fit
            seed += 1
            e_out, e_state = vs_host(cfg, dt, gated, seed, padded, algo)
            good = e_out <= TOL_OUT[dt] and e_state <= TOL_STATE
            ok &= good
            name = "fp32" if dt == torch.float32 else "bf16"
            rows.append(dict(cfg=list(cfg), dtype=name, gated=gated, padded=padded, algo=algo, err_out=e_out,
                             err_state=e_state, ok=good))
            ctx.log(f"  {'ok  ' if good else 'FAIL'} Hk={cfg[0]:<2} Hv={cfg[1]:<2} dk={cfg[2]:<3} dv={cfg[3]:<3} "
                    f"{name} gated={int(gated)} {'padded' if padded else 'packed'} {algo:<7}: out {e_out:.2e} "
                    f"(tol {TOL_OUT[dt]:.0e}), state {e_state:.2e} (tol {TOL_STATE:.0e})")
    ctx.data["vs_host"] = rows
    ctx.log("vs reference recurrence (trt_neg.reference.ops, fp32 on the GPU; raw o, no norm; lens 1, 77, 150):")
    ref_rows = []
    for cfg in ((2, 2, 64, 64), (2, 4, 64, 64), CFG_9B):
        for algo in ALGOS:
            seed += 1
            e_out, e_state = vs_reference(cfg, seed, algo)
            good = e_out <= 2e-4 and e_state <= 2e-4
            ok &= good
            ref_rows.append(dict(cfg=list(cfg), algo=algo, err_out=e_out, err_state=e_state, ok=good))
            ctx.log(f"  {'ok  ' if good else 'FAIL'} Hk={cfg[0]:<2} Hv={cfg[1]:<2} dk={cfg[2]:<3} dv={cfg[3]:<3} "
                    f"{algo:<7}: out {e_out:.2e}, state {e_state:.2e} (tol 2e-4)")
    ctx.data["vs_reference"] = ref_rows
    return ok


def chunked_vs_scan(ctx, lengths=CHUNK_TS, cfg=CFG_9B) -> tuple[bool, list]:
    """One fresh sequence of T tokens per length: chunked vs scan vs the fp64 recurrence
    (fp32 I/O, raw o, errors relative to 1 + |ref|), then both timed in bf16 with the gated
    norm. Returns (all within TOL_CHUNK_REF, rows)."""
    from ..kernels import cuda_ext
    from ..reference.ops import recurrent_gated_delta_rule

    hk, hv, dk, dv = cfg
    reps = 5 if ctx.quick else 10
    chunk = device_chunk(cfg)
    g = torch.Generator().manual_seed(77)
    ok = True
    rows = []
    ctx.log(f"chunked vs scan (Hk={hk} Hv={hv} dk={dk} dv={dv}, one fresh sequence; device chunk size {chunk}; "
            f"errors vs the fp64 recurrence, fp32 I/O, raw o; times bf16 gated, median of {reps}, "
            "L2 flushed before each call):")
    ctx.log(f"{'T':>5} {'scan out':>9} {'chunk out':>9} {'scan st':>8} {'chunk st':>8} {'chk-scan':>8} "
            f"{'scan us':>9} {'chunk us':>9} {'auto us':>9} {'scan/chunk':>10}")
    kw = dict(num_k_heads=hk, num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, request_types=[CTX])
    for T in lengths:
        x = _inputs(T, hk, hv, dk, dv, g, torch.float32)
        cu = {k: v.to(common.DEVICE) for k, v in x.items()}
        outs, states = {}, {}
        for algo in ALGOS:
            states[algo] = torch.zeros(1, hv, dk, dv, device=common.DEVICE)
            outs[algo] = cuda_ext.gdn_forward(cu["qkv"], cu["a"], cu["b"], cu["A_log"], cu["dt_bias"], states[algo],
                                              last_token_ids=[T], algo=algo, **kw)
        q, k, v, gg, beta = (t.double() for t in _ref_qkvgb(x, cfg))
        o_ref, s_ref = recurrent_gated_delta_rule(q, k, v, gg, beta,
                                                  torch.zeros(1, hv, dk, dv, dtype=torch.float64, device=common.DEVICE))
        o_ref = o_ref.reshape(T, hv * dv)
        err = {a: (_rel_err(outs[a], o_ref), _rel_err(states[a], s_ref)) for a in ALGOS}
        diff = max(_rel_err(outs["chunked"], outs["scan"]), _rel_err(states["chunked"], states["scan"]))
        good = all(e <= TOL_CHUNK_REF for pair in err.values() for e in pair)
        ok &= good

        xb = {k: v.to(torch.bfloat16) if v.dim() == 2 else v for k, v in cu.items()}
        pool = torch.zeros(1, hv, dk, dv, device=common.DEVICE)
        times = {}
        # On the device already: a list would be copied from pageable host memory inside each timed call, a
        # copy that synchronises the stream and so puts the host's work after it inside the timing.
        last = torch.tensor([T], dtype=torch.int32, device=common.DEVICE)
        for algo in ALGOS + ("auto",):
            times[algo] = cuda_time_us(lambda: cuda_ext.gdn_forward(
                xb["qkv"], xb["a"], xb["b"], xb["A_log"], xb["dt_bias"], pool, last_token_ids=last, z=xb["z"],
                norm_weight=xb["norm_weight"], algo=algo, **kw), reps)
        ratio = times["scan"] / times["chunked"]
        rows.append(dict(T=T, chunk=chunk, err_out_scan=err["scan"][0], err_out_chunked=err["chunked"][0],
                         err_state_scan=err["scan"][1], err_state_chunked=err["chunked"][1], chunked_vs_scan=diff,
                         scan_us=times["scan"], chunked_us=times["chunked"], auto_us=times["auto"],
                         scan_over_chunked=ratio, ok=good))
        ctx.log(f"{T:>5} {err['scan'][0]:>9.1e} {err['chunked'][0]:>9.1e} {err['scan'][1]:>8.1e} "
                f"{err['chunked'][1]:>8.1e} {diff:>8.1e} {times['scan']:>9.0f} {times['chunked']:>9.0f} "
                f"{times['auto']:>9.0f} {ratio:>10.2f}" + ("" if good else f"  FAIL (tol {TOL_CHUNK_REF:.0e})"))
        del x, cu, xb, outs, states, pool, q, k, v, gg, beta, o_ref, s_ref
    return ok, rows


def benchmark(ctx) -> dict:
    from ..kernels import cuda_ext
    from ..reference.ops import _fla_kernels, chunk_gated_delta_rule, gated_delta_rule, recurrent_gated_delta_rule

    hk, hv, dk, dv = CFG_9B
    conv = 2 * hk * dk + hv * dv
    state_bytes = hv * dk * dv * 4
    g = torch.Generator().manual_seed(5)
    reps = 5 if ctx.quick else 10
    torch_reps = max(3, reps // 2)  # the torch chunked reference is far slower per call
    fla = _fla_kernels() is not None
    res = {"context": [], "generation": [], "fla": fla}
    ctx.log(f"context phase (9B config Hk={hk} Hv={hv} dk={dk} dv={dv}, bf16, gated norm, T={CTX_T} per sequence, "
            f"fresh state; median of {reps} (torch chunk: of {torch_reps}), L2 flushed before each call; "
            "floor = activations + state write):")
    ctx.log(f"{'B':>4} {'kernel us':>10} {'us/token':>9} {'Mtok/s':>7} {'torch chunk fp32':>16}"
            + (f" {'fla':>9}" if fla else "") + f" {'floor@meas':>10} {'floor@4.8':>9}")
    for B in CTX_BATCHES:
        x = {k: v.to(common.DEVICE) for k, v in _inputs(B * CTX_T, hk, hv, dk, dv, g, torch.bfloat16).items()}
        pool = torch.zeros(B, hv, dk, dv, device=common.DEVICE)
        last = torch.arange(1, B + 1, dtype=torch.int32, device=common.DEVICE) * CTX_T
        slots = torch.arange(B, dtype=torch.int32, device=common.DEVICE)
        ext = cuda_ext.load_gdn()
        kw = dict(num_k_heads=hk, num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, norm_eps=1e-6, remove_padding=True,
                  continue_context=False)
        us = cuda_time_us(lambda: ext.gdn_forward(
            qkv=x["qkv"], a=x["a"], b=x["b"], z=x["z"], a_log=x["A_log"], dt_bias=x["dt_bias"],
            norm_weight=x["norm_weight"], state_pool=pool, slot_mapping=slots, last_token_ids=last,
            request_types=[CTX] * B, **kw), reps)
        q, k, v, gg, beta = _ref_qkvgb({n: t.cpu() for n, t in x.items()}, CFG_9B)
        q, k, v, gg, beta = (t.reshape(B, CTX_T, *t.shape[2:]) for t in (q, k, v, gg, beta))
        s0 = torch.zeros(B, hv, dk, dv, device=common.DEVICE)
        torch_us = cuda_time_us(lambda: chunk_gated_delta_rule(q, k, v, gg, beta, s0), torch_reps, warmup=1)
        fla_us = cuda_time_us(lambda: gated_delta_rule(q, k, v, gg, beta, s0), reps) if fla else None
        nbytes = B * CTX_T * (conv + 2 * hv + 2 * hv * dv) * 2 + B * state_bytes
        fm, f48 = ctx.floors(nbytes)
        row = dict(B=B, T=CTX_T, kernel_us=us, us_per_token=us / (B * CTX_T), tokens_per_s=B * CTX_T / (us * 1e-6),
                   torch_chunk_fp32_us=torch_us, fla_us=fla_us, floor_measured=fm, floor_4p8=f48)
        res["context"].append(row)
        ctx.log(f"{B:>4} {us:>10.0f} {row['us_per_token']:>9.2f} {row['tokens_per_s'] / 1e6:>7.2f} {torch_us:>16.0f}"
                + (f" {fla_us:>9.0f}" if fla else "") + f" {fm if fm is not None else float('nan'):>10.1f} {f48:>9.1f}")
        del x, pool, q, k, v, gg, beta, s0
    ctx.log(f"generation phase (one token per sequence, permuted slots, bf16, gated norm; median of {reps * 2}, "
            "L2 flushed before each call; "
            f"floor = B x {state_bytes * 2 / 2**20:.0f} MiB state read + write per layer):")
    ctx.log(f"{'B':>4} {'kernel us':>10} {'torch rec fp32':>14} {'floor@meas':>10} {'floor@4.8':>9} "
            f"{'floor/kernel':>12} {'GB/s':>7}")
    for B in GEN_BATCHES:
        x = {k: v.to(common.DEVICE) for k, v in _inputs(B, hk, hv, dk, dv, g, torch.bfloat16).items()}
        pool = torch.randn(B, hv, dk, dv, generator=g).mul_(0.05).to(common.DEVICE)
        slots = torch.randperm(B, generator=g).to(torch.int32).to(common.DEVICE)
        last = torch.arange(1, B + 1, dtype=torch.int32, device=common.DEVICE)
        ext = cuda_ext.load_gdn()
        us = cuda_time_us(lambda: ext.gdn_forward(
            qkv=x["qkv"], a=x["a"], b=x["b"], z=x["z"], a_log=x["A_log"], dt_bias=x["dt_bias"],
            norm_weight=x["norm_weight"], state_pool=pool, slot_mapping=slots, last_token_ids=last,
            request_types=[GEN] * B, num_k_heads=hk, num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, norm_eps=1e-6,
            remove_padding=True, continue_context=False), reps * 2)
        q, k, v, gg, beta = (t.reshape(B, 1, *t.shape[2:]) for t in _ref_qkvgb({n: t.cpu() for n, t in x.items()}, CFG_9B))
        st = pool.clone()
        torch_us = cuda_time_us(lambda: recurrent_gated_delta_rule(q, k, v, gg, beta, st), reps)
        nbytes = B * 2 * state_bytes + B * (conv + 2 * hv + 2 * hv * dv) * 2
        fm, f48 = ctx.floors(nbytes)
        row = dict(B=B, kernel_us=us, torch_recurrent_fp32_us=torch_us, floor_measured=fm, floor_4p8=f48,
                   floor_over_kernel=(fm or f48) / us, achieved_GBps=nbytes / (us * 1e-6) / 1e9)
        res["generation"].append(row)
        ctx.log(f"{B:>4} {us:>10.1f} {torch_us:>14.1f} {fm if fm is not None else float('nan'):>10.1f} {f48:>9.1f} "
                f"{row['floor_over_kernel']:>12.2f} {row['achieved_GBps']:>7.0f}")
        del x, pool, st, q, k, v, gg, beta
    torch.cuda.empty_cache()
    return res


def run(ctx) -> str:
    from ..kernels import cuda_ext

    torch.backends.cuda.matmul.allow_tf32 = False
    t0 = time.time()
    cuda_ext.load_gdn(verbose=False)
    ctx.data["build_seconds"] = round(time.time() - t0, 2)
    ctx.log(f"extension trt_neg_gdn_cuda built/loaded in {time.time() - t0:.1f} s (built in the background "
            "from the start of the check)")
    t1 = time.time()
    ok = correctness(ctx)
    ctx.data["correctness"] = ok
    ctx.log(f"correctness: {'PASS' if ok else 'FAIL'} ({time.time() - t1:.1f} s)")
    chunk_ok, chunk_rows = chunked_vs_scan(ctx)
    ctx.data["chunked_vs_scan"] = chunk_rows
    ok &= chunk_ok
    bench = benchmark(ctx)
    ctx.data["timing"] = bench
    c1 = bench["context"][0]
    gmax = bench["generation"][-1]
    longest = chunk_rows[-1]
    ctx.summary = (f"correctness {'ok' if ok else 'FAILED'}; context T={CTX_T} B=1 {c1['kernel_us'] / 1e3:.2f} ms; "
                   f"T={longest['T']} scan/chunked {longest['scan_over_chunked']:.1f}x; "
                   f"generation B={gmax['B']} {gmax['kernel_us']:.0f} us = {gmax['floor_over_kernel']:.0%} of floor")
    return PASS if ok else FAIL
