"""Section 1: the machine (GPU, driver, CUDA, torch, memory) and the measured copy bandwidth."""

from __future__ import annotations

import ctypes
import datetime
import platform
import shutil
import subprocess

import torch

from ..kernels import cuda_ext
from . import common
from .report import PASS

COPY_BYTES = 2 << 30  # 2 GiB source, 2 GiB destination


def _cmd(args, timeout=20) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _driver_cuda_version() -> str:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(v)) == 0:
            return f"{v.value // 1000}.{(v.value % 1000) // 10}"
    except OSError:
        pass
    return "?"


def _versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda}
    for mod in ("triton", "transformers", "cupy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - informational only
            out[mod] = None
    from torch.utils.cpp_extension import CUDA_HOME

    try:  # the toolkit the extensions build with (torch's guess, checked: kernels/cuda_ext.py)
        out["cuda_toolkit"] = cuda_ext.cuda_toolkit(CUDA_HOME)
        nvcc = cuda_ext.toolkit_nvcc(out["cuda_toolkit"])
    except RuntimeError as e:
        out["cuda_toolkit"] = f"none: {e}"
        nvcc = shutil.which("nvcc")
    out["nvcc"] = cuda_ext.nvcc_release(nvcc) if nvcc else None
    try:
        import importlib.util

        out["fla"] = importlib.util.find_spec("fla") is not None
    except Exception:  # noqa: BLE001
        out["fla"] = False
    return out


def copy_bandwidth(nbytes: int = COPY_BYTES, reps: int = 10) -> tuple[float, float]:
    """(bytes/s counting read + write, median us) of a device-to-device copy of ``nbytes``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=common.DEVICE).uniform_()
    dst = torch.empty_like(src)
    us = common.cuda_time_us(lambda: dst.copy_(src), reps, cold_l2=False)  # 2 GiB: the L2 cannot hold it
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / (us * 1e-6), us


def run(ctx) -> str:
    props = torch.cuda.get_device_properties(0)
    free, total = torch.cuda.mem_get_info()
    smi = _cmd(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,clocks.max.mem", "--format=csv,noheader"])
    driver = smi.split(",")[0].strip() if smi else "?"
    v = _versions()
    d = ctx.data
    d.update(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), host=platform.node(),
        gpu=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
        sms=props.multi_processor_count, memory_total_bytes=int(total), memory_free_bytes=int(free),
        l2_bytes=int(getattr(props, "L2_cache_size", 0) or 0), driver=driver,
        driver_cuda=_driver_cuda_version(), nvidia_smi=smi or None, gpu_count=torch.cuda.device_count(), **v)
    ctx.log(f"GPU      {d['gpu']} (sm_{props.major}{props.minor}, {d['sms']} SMs, "
            f"L2 {d['l2_bytes'] / 2**20:.0f} MiB), {d['gpu_count']} visible")
    ctx.log(f"memory   {total / 2**30:.1f} GiB total, {free / 2**30:.1f} GiB free")
    ctx.log(f"driver   {driver} (CUDA driver API {d['driver_cuda']}); nvcc {v['nvcc']} (toolkit {v['cuda_toolkit']})")
    ctx.log(f"software python {v['python']}, torch {v['torch']} (CUDA {v['torch_cuda']}), triton {v['triton']}, "
            f"transformers {v['transformers']}, cupy {v['cupy']}, fla importable: {v['fla']}")
    bw, us = copy_bandwidth(reps=5 if ctx.quick else 10)
    d["copy_bandwidth_Bps"] = bw
    d["copy_us"] = us
    ctx.log(f"copy     {COPY_BYTES / 2**30:.0f} GiB device-to-device in {us:.0f} us: {bw / 1e12:.2f} TB/s "
            f"(read + write), {bw / 4.8e12:.0%} of 4.8 TB/s; floors below are given at both")
    d["one_line"] = (f"{d['gpu']}, driver {driver} (CUDA {d['driver_cuda']}), torch {v['torch']}, "
                     f"{total / 2**30:.0f} GiB, copy {bw / 1e12:.2f} TB/s, {d['date']}")
    ctx.summary = f"{d['gpu']}, copy {bw / 1e12:.2f} TB/s"
    return PASS
