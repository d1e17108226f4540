"""Gated DeltaNet CUDA kernel (plugins/gdn/gdnKernel.cu, launcher included, and the TensorRT
plugin's enqueue) on the CPU simulation of CUDA (tests/_cuda_sim.py), vs the CPU host library
(trt_neg.kernels.gdn_host) run with the same context algorithm and chunk size, and vs the fp64
recurrence of tests/test_gdn_host.py.

Every simulated call runs three times -- threads and blocks forward, reversed and shuffled --
and the three results must be equal bit for bit: a difference is a race between barriers.
Device buffers are guarded and poisoned, so an out-of-bounds access or an output row the
kernel never writes (NaN) fails the test.

Tolerances: vs fp64, the host tests' (test_gdn_host.assert_close: rtol 2e-4, atol 2e-5); vs
the host library with the same path, the one test_gdn_chunked.py allows between paths that
sum the same terms in different orders (rtol 1e-4, atol 1e-5) -- kernel and host differ
only in the order of the norms' reductions; fp16/bf16 outputs within one rounding of the
output format (test_gdn_chunked.test_io_dtypes).
"""

from __future__ import annotations

import os

import pytest
import torch
from _cuda_sim import GDN_ARCHS, ORDERS, SimulatedKernelError, gdn_forward, gdn_plugin_enqueue
from test_gdn_chunked import HEAD_CONFIGS, close_to_scan, extreme_inputs
from test_gdn_host import CTX, GEN, assert_close, make_inputs, ref_gdn, rows

from trt_neg.kernels import gdn_host

ALGOS = list(gdn_host.ALGOS)
QWEN_9B_HEAD = (1, 1, 128, 128)  # the 9B's head dims (dk = dv = 128), one head: chunks 64/32/16 by arch
SCAN_SHARED_BYTES_9B = 66816  # gdnKernel.h: the scan-only launch's 65.3 KB for dk = dv = 128
OUTPUT_ULP = {torch.float32: 1e-4, torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7}


def op_args(x, cfg, lens, *, types=None, slots=None, gated=True, padded_to=None):
    """gated_delta_rule's arguments (the host library's and the simulation's) for sequences of
    `lens` tokens: packed rows of x, or padded to [B, padded_to, C] (padding NaN: never read)."""
    hk, hv, dk, dv = cfg
    if padded_to is None:
        data, last = x, torch.tensor(lens).cumsum(0).tolist()
    else:
        data, last = {n: to_padded(t, lens, padded_to) if t.dim() == 2 else t for n, t in x.items()}, list(lens)
    return dict(qkv=data["qkv"], a=data["a"], b=data["b"], A_log=x["A_log"], dt_bias=x["dt_bias"],
                num_k_heads=hk, num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, last_token_ids=last,
                request_types=types, slot_mapping=slots, z=data["z"] if gated else None,
                norm_weight=x["norm_weight"] if gated else None, remove_padding=padded_to is None)


def to_padded(t, lens, L):
    buf = torch.full((len(lens), L, t.shape[1]), float("nan"), dtype=t.dtype)
    start = 0
    for i, n in enumerate(lens):
        buf[i, :n] = t[start:start + n]
        start += n
    return buf


def same_bits(a, b):
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def simulate(args, pool, *, algo, arch="sm_90", **kw):
    """The kernel in every run order (bit-identical results required); `pool` is updated like
    the device's. Returns (y, the launch's dynamic shared memory bytes)."""
    runs = []
    for order in ORDERS:
        p = pool.clone()
        y, shared = gdn_forward(**args, state_pool=p, algo=algo, arch=arch, order=order, shuffle_seed=7, **kw)
        runs.append((y, p, shared))
    y, p, shared = runs[0]
    for order, (y_o, p_o, shared_o) in zip(list(ORDERS)[1:], runs[1:]):
        assert same_bits(y_o, y) and same_bits(p_o, p), f"{order} run differs from the forward run: a race"
        assert shared_o == shared
    pool.copy_(p)
    return y, shared


def device_plan(args, arch):
    """The launcher's chunk plan (gdnChunk.h) for these heads on the simulated `arch`."""
    dims = (args["num_k_heads"], args["num_v_heads"], args["head_k_dim"], args["head_v_dim"])
    return gdn_host.chunk_plan(*dims, GDN_ARCHS[arch][2])


def host(args, pool, *, algo, arch="sm_90", **kw):
    """The host library with the kernel's algorithm at the chunk size the device fits (none: scan)."""
    chunk = device_plan(args, arch)["chunk"]
    return gdn_host.gated_delta_rule(**args, state_pool=pool, algo=algo if chunk else "scan",
                                     chunk_size=chunk or gdn_host.HOST_CHUNK_SIZE, **kw)


def kernel_vs_host(args, pool, *, algo, arch="sm_90", **kw):
    """Simulated kernel and host library from copies of `pool`: outputs and pools agree.
    Returns (y, pool, launch shared bytes) of the kernel."""
    pool_sim, pool_host = pool.clone(), pool.clone()
    y, shared = simulate(args, pool_sim, algo=algo, arch=arch, **kw)
    y_host = host(args, pool_host, algo=algo, arch=arch, **kw)
    assert y.dtype == y_host.dtype
    assert_close(y, y_host, rtol=OUTPUT_ULP[y.dtype], atol=1e-5)
    close_to_scan(pool_sim, pool_host)
    return y, pool_sim, shared


def check_vs_fp64(x, cfg, y, pool, lens, slots, S0=None, gated=True, tol=None):
    """Each sequence's rows and final state vs the fp64 recurrence (S0[i]: its carried state)."""
    start = 0
    for i, (n, s) in enumerate(zip(lens, slots)):
        y_ref, S_ref = ref_gdn(rows(x, start, start + n), *cfg, S0=None if S0 is None else S0[i], gated=gated)
        assert_close(y[start:start + n], y_ref, **({} if tol is None else dict(rtol=tol, atol=tol)))
        assert_close(pool[s], S_ref)
        start += n


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("arch,chunk", [("sm_90", 64), ("sm_80", 32), ("sm_89", 16)])
def test_9b_head_each_arch_and_algo(arch, chunk, algo):
    """The 9B's head dims on each simulated GPU: the launcher's chunk size (64 / 32 / 16 by
    opt-in shared memory), a mixed batch -- a decode step from carried state, a prompt
    shorter than the chunk threshold, prompts over one and several chunks -- vs the host
    library at that chunk size and vs fp64."""
    cfg = QWEN_9B_HEAD
    lens, types, slots = [1, 5, 20, 40], [GEN, CTX, CTX, CTX], [2, 0, 3, 1]
    x = make_inputs(sum(lens), *cfg, seed=chunk)
    pool = torch.randn(4, *cfg[1:]) * 0.3  # stale for the context requests, carried for the decode step
    args = op_args(x, cfg, lens, types=types, slots=slots)
    y, pool_out, shared = kernel_vs_host(args, pool, algo=algo, arch=arch)
    plan = device_plan(args, arch)
    assert plan["chunk"] == chunk
    assert shared == (SCAN_SHARED_BYTES_9B if algo == "scan" else plan["shared_bytes"])
    check_vs_fp64(x, cfg, y, pool_out, lens, slots, S0=[pool[s] if t == GEN else None for s, t in zip(slots, types)])


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("cfg,gated", list(zip(HEAD_CONFIGS, [True, False, True])))
def test_packed_batch_small_heads(cfg, gated, algo):
    """GQA and dk != dv heads, with and without the gated norm: prompts of 1..70 tokens
    (below, at and over the threshold, over one 64-token chunk) beside decode steps, slots
    permuted; unused slots untouched and packed rows past the last sequence zero."""
    lens, types, slots = [1, 5, 16, 1, 70], [GEN, CTX, CTX, GEN, CTX], [3, 0, 5, 1, 2]
    x = make_inputs(sum(lens) + 3, *cfg, seed=sum(cfg))  # 3 rows owned by no sequence
    pool = torch.randn(6, *cfg[1:]) * 0.3
    y, pool_out, _ = kernel_vs_host(op_args(x, cfg, lens, types=types, slots=slots, gated=gated), pool, algo=algo)
    check_vs_fp64(x, cfg, y, pool_out, lens, slots, S0=[pool[s] if t == GEN else None for s, t in zip(slots, types)],
                  gated=gated)
    assert torch.equal(y[sum(lens):], torch.zeros_like(y[sum(lens):]))
    assert torch.equal(pool_out[4], pool[4])


@pytest.mark.parametrize("algo", ALGOS)
def test_padded_layout_equals_packed(algo):
    """Padded [B, L, C] gives the packed layout's rows bit for bit, zeros past each length."""
    cfg, lens, L = (2, 4, 8, 16), [5, 1, 17, 40], 41
    x = make_inputs(sum(lens), *cfg, seed=5)
    pool_packed, pool_pad = torch.zeros(4, *cfg[1:]), torch.zeros(4, *cfg[1:])
    y_packed, _ = simulate(op_args(x, cfg, lens), pool_packed, algo=algo)
    y_pad, _ = simulate(op_args(x, cfg, lens, padded_to=L), pool_pad, algo=algo)
    start = 0
    for i, n in enumerate(lens):
        assert same_bits(y_pad[i, :n], y_packed[start:start + n])
        assert torch.equal(y_pad[i, n:], torch.zeros_like(y_pad[i, n:]))
        start += n
    assert same_bits(pool_pad, pool_packed)
    check_vs_fp64(x, cfg, y_packed, pool_packed, lens, range(4))


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("continue_context", [False, True])
def test_carried_state(continue_context, algo):
    """State carried in: multi-token generation-type requests, or context requests with
    continue_context (chunked prefill), continue from the slot's state."""
    cfg, lens = (2, 4, 16, 16), [70, 9, 33]
    x = make_inputs(sum(lens), *cfg, seed=21)
    S0 = torch.randn(3, *cfg[1:]) * 0.3
    types = [CTX] * 3 if continue_context else [GEN] * 3
    args = op_args(x, cfg, lens, types=types)
    y, pool, _ = kernel_vs_host(args, S0, algo=algo, continue_context=continue_context)
    check_vs_fp64(x, cfg, y, pool, lens, range(3), S0=S0)


def test_decode_steps_continue_a_prompt():
    """A prompt, then single-token decode steps from the carried state (auto: the scan-only
    launch, 65.3 KB): together the fp64 recurrence of the whole sequence."""
    cfg, n, steps = QWEN_9B_HEAD, 20, 3
    x = make_inputs(n + steps, *cfg, seed=7)
    pool = torch.full((2, *cfg[1:]), 5.0)  # stale: the context request must ignore it
    ys = [simulate(op_args(rows(x, 0, n), cfg, [n], slots=[1]), pool, algo="auto", arch="sm_89")[0]]
    for t in range(n, n + steps):
        y, shared = simulate(op_args(rows(x, t, t + 1), cfg, [1], types=[GEN], slots=[1]), pool, algo="auto",
                             arch="sm_89")
        assert shared == SCAN_SHARED_BYTES_9B
        ys.append(y)
    check_vs_fp64(x, cfg, torch.cat(ys), pool, [n + steps], [1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_io(dtype):
    """fp16/bf16 activations (fp32 state): within one output rounding of the host library."""
    cfg, lens = (2, 4, 16, 16), [40, 7]
    x = make_inputs(sum(lens), *cfg, seed=9, dtype=dtype)
    y, pool, _ = kernel_vs_host(op_args(x, cfg, lens), torch.zeros(2, *cfg[1:]), algo="auto")
    check_vs_fp64(x, cfg, y, pool, lens, range(2), tol=1e-2 if dtype == torch.bfloat16 else 2e-3)


@pytest.mark.parametrize("algo", ["scan", "chunked"])
def test_extreme_gates_and_beta(algo):
    """Decay from ~1 to 0 (and g = -inf), gate swings inside a chunk, beta near 0 and 1."""
    cfg, T = (4, 8, 16, 16), 70
    x = extreme_inputs(T, cfg, seed=3)
    S0 = torch.randn(1, *cfg[1:]) * 0.5
    y, pool, _ = kernel_vs_host(op_args(x, cfg, [T], types=[GEN], gated=False), S0, algo=algo)
    assert bool(torch.isfinite(y).all()) and bool(torch.isfinite(pool).all())
    check_vs_fp64(x, cfg, y, pool, [T], [0], S0=S0, gated=False)


@pytest.mark.parametrize("cfg,limit", [((1, 1, 12, 8), 1024), ((1, 2, 16, 64), 32)],
                         ids=["dk_not_multiple_of_8", "block_over_chunk_kernel_thread_limit"])
def test_shapes_the_chunked_kernel_cannot_run(cfg, limit):
    """dk % 8 != 0, or a block wider than the chunk-capable kernel's maxThreadsPerBlock:
    auto launches the scan-only kernel (bit-identical to scan), forced chunked is refused."""
    x = make_inputs(40, *cfg, seed=1)
    args = op_args(x, cfg, [40])
    run = {a: simulate(args, torch.zeros(1, *cfg[1:]), algo=a, func_max_threads=limit) for a in ("auto", "scan")}
    assert same_bits(run["auto"][0], run["scan"][0]) and run["auto"][1] == run["scan"][1]
    with pytest.raises(SimulatedKernelError, match="invalid argument"):
        gdn_forward(**args, state_pool=torch.zeros(1, *cfg[1:]), algo="chunked", func_max_threads=limit)


def test_empty_batch_and_zero_length_context():
    """No sequence: every packed row zero and no kernel launch. A zero-length context request
    resets its slot and owns no row."""
    cfg = (1, 2, 8, 8)
    x = make_inputs(6, *cfg, seed=2)
    y, shared = simulate(op_args(x, cfg, []), torch.ones(1, *cfg[1:]), algo="auto")
    assert shared == -1 and torch.equal(y, torch.zeros_like(y))
    pool = torch.ones(2, *cfg[1:])
    y, _ = simulate(op_args(x, cfg, [0, 6], slots=[1, 0]), pool, algo="auto")
    assert torch.equal(pool[1], torch.zeros_like(pool[1]))
    check_vs_fp64(x, cfg, y, pool, [6], [0])


@pytest.mark.parametrize("padded,dtype,gated,continue_context", [
    (False, torch.float32, True, False), (False, torch.bfloat16, False, False),
    (True, torch.float32, False, True), (True, torch.bfloat16, True, False)],
    ids=["packed-fp32-gated", "packed-bf16", "padded-fp32-continue_context", "padded-bf16-gated"])
def test_tensorrt_plugin_enqueue(padded, dtype, gated, continue_context):
    """The plugin's enqueue (gdn::pluginEnqueue: batch from last_token_ids' dims, the kernel
    parameters from the plugin's fields and inputs in its order, the state pool behind the
    host rnn_state_ptr, request types from the host) on a mixed context + generation batch,
    slots permuted: bit for bit the direct launch, and vs the host library and fp64."""
    cfg, lens, types, slots = (2, 4, 16, 16), [1, 5, 40, 1], [GEN, CTX, CTX, GEN], [3, 0, 4, 1]
    x = make_inputs(sum(lens) + (0 if padded else 3), *cfg, seed=11, dtype=dtype)  # packed: 3 unowned rows
    pool = torch.randn(5, *cfg[1:]) * 0.3  # slot 2 unused
    args = op_args(x, cfg, lens, types=types, slots=slots, gated=gated, padded_to=max(lens) if padded else None)
    args["continue_context"] = continue_context
    pool_plugin, pool_launch, pool_host = pool.clone(), pool.clone(), pool.clone()
    y = gdn_plugin_enqueue(**args, state_pool=pool_plugin)
    y_launch, _ = gdn_forward(**args, state_pool=pool_launch)
    assert same_bits(y, y_launch) and same_bits(pool_plugin, pool_launch)
    y_host = host(args, pool_host, algo="auto")
    assert_close(y, y_host, rtol=OUTPUT_ULP[dtype], atol=1e-5)
    close_to_scan(pool_plugin, pool_host)
    y_rows = torch.cat([y[i, :n] for i, n in enumerate(lens)]) if padded else y
    S0 = [pool[s] if t == GEN or continue_context else None for s, t in zip(slots, types)]
    check_vs_fp64(x, cfg, y_rows, pool_plugin, lens, slots, S0=S0, gated=gated,
                  tol=1e-2 if dtype == torch.bfloat16 else None)
    assert torch.equal(pool_plugin[2], pool[2])


def test_tensorrt_plugin_enqueue_refuses_a_bad_request_type():
    """A host_request_types entry other than 0 / 1: enqueue fails with makeParams' message."""
    cfg = (1, 2, 8, 8)
    x = make_inputs(6, *cfg, seed=4)
    message = r"host_request_types\[1\] = 2 \(expected 0 context or 1 generation\)"
    with pytest.raises(SimulatedKernelError, match=message):
        gdn_plugin_enqueue(**op_args(x, cfg, [2, 4], types=[CTX, 2]), state_pool=torch.zeros(2, *cfg[1:]))


def test_gpu_test_program_passes_on_the_simulation(tmp_path):
    """plugins/gdn/tests/gdnKernelTest.cu -- the GPU program test_gdn_plugin_core.py's gpu-marked
    test builds with nvcc -- built by g++ on the simulation (its cudaMalloc / cudaMemcpy over
    guarded buffers) and run on the small head configs: its cases, comparisons and tolerances
    work before a GPU runs them. 3 configs x 3 algorithms x 3 dtypes x gated or not."""
    from _build import GXX, PLUGINS, run
    from _cuda_sim import SIM_FLAGS

    gdn = PLUGINS / "gdn"
    exe = tmp_path / "gdnKernelTest"
    run([GXX, "-std=c++17", *SIM_FLAGS, "-x", "c++", gdn / "tests" / "gdnKernelTest.cu", gdn / "gdnKernel.cu",
         "-x", "none", gdn / "gdnHost.cpp", "-o", exe])
    # UBSan reports to stderr and ends the run (the suite's UBSAN_OPTIONS log to a file instead).
    env = {**os.environ, "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
    out = run([exe, "--small-heads"], env=env).stdout
    lines = [line for line in out.splitlines() if line.startswith(("ok", "FAIL"))]
    assert len(lines) == 3 * 3 * 3 * 2 and all(line.startswith("ok ") for line in lines), out
    assert "dk=128" not in out and "chunk=64" in out and out.rstrip().endswith("gdnKernelTest: all cases passed")


def test_tensorrt_plugin_enqueue_passes_norm_eps():
    """The plugin's norm_eps field reaches the gated norm: with eps 0.5 (large enough to move
    every output) the enqueue equals the direct launch with that eps bit for bit, differs
    from the default eps's output, and matches the fp64 recurrence with that eps."""
    cfg, lens = (1, 2, 16, 16), [9]
    x = make_inputs(sum(lens), *cfg, seed=6)
    args = op_args(x, cfg, lens, types=[CTX], slots=[0])
    pools = [torch.zeros(1, *cfg[1:]) for _ in range(3)]
    y = gdn_plugin_enqueue(**args, state_pool=pools[0], norm_eps=0.5)
    y_launch, _ = gdn_forward(**args, state_pool=pools[1], norm_eps=0.5)
    y_default = gdn_plugin_enqueue(**args, state_pool=pools[2])
    assert same_bits(y, y_launch) and not torch.allclose(y, y_default, rtol=1e-3, atol=1e-4)
    y_ref, _ = ref_gdn(x, *cfg, norm_eps=0.5)
    assert_close(y, y_ref)
