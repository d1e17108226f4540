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
    """The kernel's head-only pass (logits=None), used by the GPU check's cuBLAS comparison."""
    from trt_neg import neg
    from trt_neg.gpu_check.sec_neg import _weights
    from trt_neg.kernels import cuda_ext

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        w = _weights(512, 64, dtype, torch.device("cuda"), g)
        hid = torch.randn(37, 512, generator=g).to("cuda", dtype)
        ref = neg.neg_head(hid, w)
        got = cuda_ext.neg_head(hid, w)
        assert float((got - ref).abs().max()) <= 1e-4 * (1 + float(ref.abs().max()))


def test_gpu_check_cpu_only_message(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from trt_neg import gpu_check

    assert gpu_check.main(["--out-dir", str(tmp_path / "gc")]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
