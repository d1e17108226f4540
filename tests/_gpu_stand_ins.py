"""Host-library stand-ins for the CUDA extensions, for running GPU-check sections on a CPU."""

from __future__ import annotations

from _cuda_sim import GDN_ARCHS

from trt_neg.kernels import gdn_host, host

H200_SHARED_OPTIN = GDN_ARCHS["sm_90"][2]  # cudaDevAttrMaxSharedMemoryPerBlockOptin on an H200 (227 KiB)
GDN_ALGO_NAMES = {code: name for name, code in gdn_host.ALGOS.items()}  # gdnTorch.cpp's algo codes


def host_neg_step(hidden, logits, weights, *, activation="silu", top_k=8, temperature=1.0, seeds=0, offsets=0,
                  threshold=None, entropy=None, with_guided=True, splits=0, head_algo="gemv"):
    """:func:`trt_neg.kernels.cuda_ext.neg_step`'s signature, served by the host library (which has
    one head: ``head_algo`` is checked, then ignored)."""
    assert head_algo in ("gemv", "mma")
    if entropy is not None:
        tau = weights.threshold if threshold is None else threshold
        return host.gated_topk_sample(logits, entropy, tau, top_k, temperature, seeds, offsets,
                                      with_guided=with_guided, splits=splits)
    return host.neg_step(hidden, logits, weights, activation=activation, top_k=top_k, temperature=temperature,
                         seeds=seeds, offsets=offsets, threshold=threshold, with_guided=with_guided, splits=splits)


def host_neg_head(hidden, weights, activation="silu", head_algo="gemv"):
    """:func:`trt_neg.kernels.cuda_ext.neg_head`'s signature, served by the host library."""
    assert head_algo in ("gemv", "mma")
    return host.neg_head(hidden, weights, activation)


def _checked(t, name: str, dtype=None, dim: int = -1):
    """negTorch.cpp's checkTensor(): on the check's device, contiguous, of the expected dtype and rank."""
    import torch

    from trt_neg.gpu_check import common

    assert isinstance(t, torch.Tensor), f"{name}: expected a tensor, got {type(t).__name__}"
    assert t.device.type == torch.device(common.DEVICE).type, f"{name}: on {t.device}, not {common.DEVICE}"
    assert t.is_contiguous(), f"{name}: must be contiguous"
    assert dtype is None or t.dtype == dtype, f"{name}: expected {dtype}, got {t.dtype}"
    assert dim < 0 or t.dim() == dim, f"{name}: expected {dim} dims, got {t.dim()}"
    return t


class HostNegExtension:
    """Stand-in for the trt_neg_cuda module: negTorch.cpp's ``neg_step`` binding (its parameter
    names, which ones have defaults, its argument types and tensor checks, its five outputs),
    served by the host library, so that the wrappers in :mod:`trt_neg.kernels.cuda_ext` run too."""

    def neg_step(self, hidden, logits, w1, b1, w2, b2, tau, seeds, offsets, entropy_in, activation, top_k, temperature,
                 with_guided, splits=0, head_algo=0):
        import torch

        from trt_neg.neg import ACTIVATION_CODES, NegWeights

        for name, v in (("activation", activation), ("top_k", top_k), ("splits", splits), ("head_algo", head_algo)):
            assert isinstance(v, int) and not isinstance(v, bool), f"{name}: int64_t, got {v!r}"
        assert isinstance(temperature, float) and isinstance(with_guided, bool)
        assert head_algo in (0, 1), f"head_algo: {head_algo}"
        assert entropy_in is not None or hidden is not None, "give hidden (with w1, b1, w2, b2) or entropy_in"
        assert _checked(tau, "tau", torch.float32).numel() >= 1
        if entropy_in is None:
            _checked(hidden, "hidden", None, 2)
            _checked(w1, "w1", hidden.dtype, 2)
            assert _checked(b2, "b2", torch.float32).numel() == 1, "b2: 1 element"
            weights = NegWeights(w1, _checked(b1, "b1", torch.float32, 1), _checked(w2, "w2", torch.float32, 1),
                                 _checked(b2, "b2", torch.float32), tau.reshape(()))
        else:
            _checked(entropy_in, "entropy_in", torch.float32, 1)
        n = (hidden if entropy_in is None else entropy_in).shape[0]
        act = {code: name for name, code in ACTIVATION_CODES.items()}[activation]
        if logits is None:
            ent = host.neg_head(hidden, weights, act)
            return [torch.empty(n, dtype=torch.int32), ent, torch.empty(n, dtype=torch.int32),
                    torch.empty(n, dtype=torch.int32), None]
        _checked(logits, "logits", torch.float32, 2)
        assert _checked(seeds, "seeds", torch.int64, 1).numel() == n
        assert _checked(offsets, "offsets", torch.int64, 1).numel() == n
        sampling = dict(top_k=top_k, temperature=temperature, seeds=seeds, offsets=offsets, with_guided=with_guided,
                        splits=splits)
        if entropy_in is not None:
            out = host.gated_topk_sample(logits, entropy_in, tau.reshape(()), **sampling)
        else:
            out = host.neg_step(hidden, logits, weights, activation=act, **sampling)
        return [out.token.int(), out.entropy, out.fired.int(), out.status, out.guided_logits if with_guided else None]


class HostGdnExtension:
    """Stand-in for the trt_neg_gdn_cuda module: the host library with the binding's
    signature (every argument keyword-able, only ``algo`` defaulted) and its checks."""

    def __init__(self, max_shared: int = H200_SHARED_OPTIN, corrupt_algo: int | None = None):
        self.max_shared = max_shared
        self.corrupt_algo = corrupt_algo  # add an error to this algo's outputs (negative test)
        self.calls = 0

    def chunk_size(self, hk, hv, dk, dv) -> int:
        return int(gdn_host.chunk_plan(int(hk), int(hv), int(dk), int(dv), self.max_shared)["chunk"])

    def gdn_forward(self, qkv, a, b, z, a_log, dt_bias, norm_weight, state_pool, slot_mapping, last_token_ids,
                    request_types, num_k_heads, num_v_heads, head_k_dim, head_v_dim, norm_eps, remove_padding,
                    continue_context, algo=0):
        import torch

        self.calls += 1
        assert isinstance(algo, int) and 0 <= algo <= 2, f"algo: {algo!r}"
        st = qkv.dtype
        _checked(qkv, "qkv", st)
        _checked(a, "a", st)
        _checked(b, "b", st)
        _checked(a_log, "A_log", torch.float32)
        _checked(dt_bias, "dt_bias", torch.float32)
        assert (z is None) == (norm_weight is None), "z and norm_weight go together"
        if z is not None:
            _checked(z, "z", st)
            _checked(norm_weight, "norm_weight", torch.float32)
        _checked(state_pool, "state_pool", torch.float32)
        _checked(last_token_ids, "last_token_ids", torch.int32)
        if slot_mapping is not None:
            _checked(slot_mapping, "slot_mapping", torch.int32)
        rtypes = [int(t) for t in request_types]  # std::vector<int64_t>
        assert len(rtypes) == last_token_ids.numel(), "last_token_ids: one per request"
        for name, v in (("num_k_heads", num_k_heads), ("num_v_heads", num_v_heads), ("head_k_dim", head_k_dim),
                        ("head_v_dim", head_v_dim)):
            assert isinstance(v, int) and v > 0, f"{name}: {v!r}"
        assert isinstance(norm_eps, float) and isinstance(remove_padding, bool) and isinstance(continue_context, bool)
        chunk = self.chunk_size(num_k_heads, num_v_heads, head_k_dim, head_v_dim)
        if algo == gdn_host.ALGOS["chunked"] and chunk == 0:
            raise RuntimeError("gdn: chunked forced but no chunk size fits the device")
        out = gdn_host.gated_delta_rule(
            qkv, a, b, a_log, dt_bias, state_pool, num_k_heads=num_k_heads, num_v_heads=num_v_heads,
            head_k_dim=head_k_dim, head_v_dim=head_v_dim, last_token_ids=last_token_ids.tolist(),
            request_types=rtypes, slot_mapping=None if slot_mapping is None else slot_mapping.tolist(), z=z,
            norm_weight=norm_weight, norm_eps=norm_eps, remove_padding=remove_padding,
            continue_context=continue_context, algo=GDN_ALGO_NAMES[algo], chunk_size=chunk or gdn_host.HOST_CHUNK_SIZE)
        if self.corrupt_algo == algo:
            out.view(-1)[0] += 0.5
        return out


SMALL_9B = (2, 4, 32, 32)  # stands in for the 9B's GDN heads (16, 32, 128, 128): Hv/Hk = 2, dk = dv


def small_shapes(set_attr) -> None:
    """The GPU check's sizes cut down for the CPU: the NEG section's vocabulary, head and
    batches, the GDN section's head configs, prompt lengths and batches, and the machine
    section's copy. ``set_attr`` is monkeypatch.setattr in a test, or setattr in a child
    process that runs the whole check (tests/test_gpu_check_rehearsal.py)."""
    from trt_neg.gpu_check import sec_gdn, sec_machine, sec_neg

    for name, value in (("V_BENCH", 4100), ("H_BENCH", 64), ("D_BENCH", 32), ("BENCH_N", (1, 8)),
                        ("HEAD_N", (4, 16))):
        set_attr(sec_neg, name, value)
    for name, value in (("CFG_9B", SMALL_9B), ("CONFIGS", ((2, 2, 16, 16), (2, 4, 32, 16), SMALL_9B)),
                        ("CTX_T", 48), ("CHUNK_TS", (1, 16, 80)), ("GEN_BATCHES", (1, 4, 8))):
        set_attr(sec_gdn, name, value)
    # chunked_vs_scan's and copy_bandwidth's defaults were bound to the full sizes at import.
    _defaults(set_attr, sec_gdn.chunked_vs_scan, lengths=(1, 16, 80), cfg=SMALL_9B)
    set_attr(sec_machine, "COPY_BYTES", 1 << 20)
    _defaults(set_attr, sec_machine.copy_bandwidth, nbytes=1 << 20)


def _defaults(set_attr, fn, **values) -> None:
    """Replaces the named parameters' defaults of ``fn`` (every name must be one of them)."""
    import inspect

    params = [p for p in inspect.signature(fn).parameters.values()
              if p.default is not inspect.Parameter.empty and p.kind is not inspect.Parameter.KEYWORD_ONLY]
    unknown = set(values) - {p.name for p in params}
    assert not unknown, f"{fn.__name__} has no defaulted parameter {sorted(unknown)}"
    set_attr(fn, "__defaults__", tuple(values.get(p.name, p.default) for p in params))


def fake_time(fn, reps: int, warmup: int = 3, *, cold_l2: bool = True) -> float:
    """cuda_time_us's stand-in: runs ``fn`` once and says 1 us (timings on a CPU mean nothing)."""
    fn()
    return 1.0


def fake_h200(set_attr) -> None:
    """torch.cuda's device queries answering as one H200 would (the machine section's and the
    check's own), and its synchronisation and cache calls as no-ops, for running the GPU check's
    code on a CPU-only torch; ``set_attr`` as in :func:`small_shapes`."""
    import types

    import torch

    props = types.SimpleNamespace(major=9, minor=0, multi_processor_count=132, L2_cache_size=60 * 2**20)

    def device_0(answer):  # the one GPU there is: another index fails, as torch's own check does
        def query(i=0):
            assert i == 0, f"Invalid device id {i}"
            return answer

        return query

    for name, value in (("is_available", lambda: True), ("get_device_capability", lambda device=None: (9, 0)),
                        ("get_device_properties", device_0(props)),
                        ("mem_get_info", lambda *a: (140 * 2**30, 143 * 2**30)),
                        ("get_device_name", device_0("NVIDIA H200")), ("device_count", lambda: 1),
                        ("synchronize", lambda *a, **k: None), ("empty_cache", lambda *a, **k: None)):
        set_attr(torch.cuda, name, value)


def scripted_timings(*us):
    """cuda_time_us's stand-in that runs ``fn`` once and says the next of ``us`` (the section's
    timed calls in their order), so that each table column shows which call it came from."""
    left = iter(us)

    def timed(fn, reps, warmup=3, *, cold_l2=True):
        fn()
        return next(left)

    return timed
