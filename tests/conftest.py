"""Shared fixtures: the built-in tiny checkpoint, and skips for GPU/TensorRT-LLM tests."""

from __future__ import annotations

import importlib.util

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    has_gpu = torch.cuda.is_available()
    has_trtllm = importlib.util.find_spec("tensorrt_llm") is not None
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "trtllm" in item.keywords and not (has_gpu and has_trtllm):
            item.add_marker(pytest.mark.skip(reason="needs tensorrt_llm 1.2.x and a GPU (docker self-test)"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The built-in tiny Darwin-NEG checkpoint (published layout, seed 0), written once."""
    from trt_neg.checkpoint.synthetic import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=0)
