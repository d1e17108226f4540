"""GPU-only: the fused CUDA kernel (torch extension) vs the torch reference."""

import pytest
import torch


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernel_matches_reference():
    from trt_neg.gpu_check.sec_neg import correctness
    from trt_neg.kernels import cuda_ext

    assert correctness(cuda_ext, torch.device("cuda"), print)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_head_pass_matches_reference():
    """The kernel's head-only pass (logits=None), GEMV and tensor-core tiles, used by the GPU
    check's cuBLAS comparison."""
    from trt_neg import neg
    from trt_neg.gpu_check.sec_neg import _weights
    from trt_neg.kernels import cuda_ext

    g = torch.Generator().manual_seed(0)
    # (N, H, d): tile-aligned, and the tensor-core tiles' edges (one row, N and d not multiples
    # of 64, H not a multiple of the K step 32)
    for n, h, d in ((37, 512, 64), (1, 40, 65), (70, 72, 100), (130, 4096, 1024)):
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            w = _weights(h, d, dtype, torch.device("cuda"), g)
            hid = torch.randn(n, h, generator=g).to("cuda", dtype)
            ref = neg.neg_head(hid, w)
            for algo in ("gemv", "mma"):  # fp32 takes the GEMV either way
                got = cuda_ext.neg_head(hid, w, head_algo=algo)
                err = float((got - ref).abs().max())
                assert err <= 1e-4 * (1 + float(ref.abs().max())), (n, h, d, dtype, algo, err)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_reference_on_cuda_equals_reference_on_cpu_at_tiny_temperature():
    """The torch reference is the fallback on GPUs: on CUDA, dividing by a Python float is a
    multiply by its fp32 reciprocal, inf below T = 2.9e-39, which would turn a logit of 0 into NaN."""
    from trt_neg import neg

    z = torch.tensor([[0.0, 0.0, -1.0]] * 4)
    for T in (1e-40, 1e-45, 0.3, 1.0):
        kw = dict(entropy=torch.ones(4), threshold=0.0, top_k=3, temperature=T, seeds=torch.full((4,), 9),
                  offsets=torch.arange(4))
        cpu, gpu = neg.gated_topk_sample(z, **kw), neg.gated_topk_sample(z.cuda(), **kw)
        assert torch.equal(gpu.token.cpu(), cpu.token), T
        assert torch.equal(gpu.guided_logits.cpu(), cpu.guided_logits), T


def test_gpu_check_cpu_only_message(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from trt_neg import gpu_check

    assert gpu_check.main(["--out-dir", str(tmp_path / "gc")]) == 3  # 3: no GPU (2 is a usage error)
    assert "no CUDA GPU" in capsys.readouterr().err
