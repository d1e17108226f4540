"""GPU-only: the fused CUDA kernel (torch extension) vs the torch reference."""

import pytest
import torch

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernel_matches_reference():
    from trt_neg import gpu_check
    from trt_neg.kernels import cuda_ext

    assert gpu_check.correctness(cuda_ext, torch.device("cuda"), print)


def test_gpu_check_cpu_only_message(capsys):
    if torch.cuda.is_available():
        pytest.skip("GPU present")
    from trt_neg import gpu_check

    assert gpu_check.main(["--out", "/dev/null"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
