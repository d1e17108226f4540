"""Shared fixtures: the built-in tiny checkpoint, build_engine.py's CLI, the tensorrt_llm
recording stub (or no tensorrt_llm at all), and skips for GPU/TensorRT-LLM tests."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Recording fakes of the tensorrt / tensorrt_llm 1.2.x APIs: put on sys.path per test, never installed.
TRTLLM_STUB = Path(__file__).parent / "trtllm_stub"


def pytest_collection_modifyitems(config, items):
    has_gpu = torch.cuda.is_available()
    has_trtllm = importlib.util.find_spec("tensorrt_llm") is not None
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "trtllm" in item.keywords and not (has_gpu and has_trtllm):
            item.add_marker(pytest.mark.skip(reason="needs tensorrt_llm 1.2.x and a GPU (docker self-test)"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Many small tensor ops (tiny models, fuzzing): one intra-op thread avoids OpenMP spin-waiting
    on the shared 2-core CI machine. Modules opt in with ``pytestmark``; the count is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """The built-in tiny Darwin-NEG checkpoint (published layout, seed 0), written once."""
    from trt_neg.checkpoint.synthetic import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="module")
def cli():
    """build_engine.py's click command (loaded from the file: it is a script, not a module)."""
    spec = importlib.util.spec_from_file_location("build_engine", ROOT / "build_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def purge_trtllm(keep=()):
    """Forget tensorrt, tensorrt_llm and trt_neg.trtllm modules (except ``keep``), so the next
    import binds to whatever sys.path / sys.modules then offer: the stub, nothing, the real one."""
    for name in list(sys.modules):
        if (name.split(".")[0] in ("tensorrt", "tensorrt_llm") or name.startswith("trt_neg.trtllm")) \
                and name not in keep:
            del sys.modules[name]


def _trtllm_keep(request):
    # A test module that imports trt_neg.trtllm modules at its top (and so must keep those very
    # module objects) names them in TRTLLM_KEEP.
    return tuple(getattr(request.module, "TRTLLM_KEEP", ()))


@pytest.fixture
def trtllm_stub(monkeypatch, request):
    """tests/trtllm_stub on sys.path for one test; yields its ``tensorrt_llm``."""
    keep = _trtllm_keep(request)
    purge_trtllm(keep)
    monkeypatch.syspath_prepend(str(TRTLLM_STUB))
    module = importlib.import_module("tensorrt_llm")
    assert getattr(module, "_TRT_NEG_STUB", False)
    yield module
    purge_trtllm(keep)


@pytest.fixture
def no_trtllm(monkeypatch, request):
    """tensorrt and tensorrt_llm unimportable for one test (import -> ImportError), even in the container."""
    keep = _trtllm_keep(request)
    purge_trtllm(keep)
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    yield
    purge_trtllm(keep)
