"""A rehearsal of the GPU session: ``python -m trt_neg.gpu_check`` run whole, as a lent GPU runs
it (the parent, the extension prebuild and one child process per section, the reports and the
figure written at the end), with the machine, NEG and GDN sections on the real bindings and
kernels built on the CPU simulation of CUDA (tests/_sim_extensions.py).  Every process gets a
sitecustomize that makes torch.cuda answer as an H200, puts the sections' tensors on the CPU,
cuts their sizes down (tests/_gpu_stand_ins.py) and serves ``cuda_ext.load`` / ``load_gdn``
from the simulation.  Timings are meaningless here and not asserted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

SITECUSTOMIZE = """
import sys
sys.path.insert(0, {tests!r})
import torch
import _gpu_stand_ins
import _sim_extensions
from trt_neg.gpu_check import common, sec_gdn, sec_machine, sec_neg
from trt_neg.kernels import cuda_ext

_gpu_stand_ins.fake_h200(setattr)
_gpu_stand_ins.small_shapes(setattr)
common.DEVICE = "cpu"
for module in (common, sec_gdn, sec_neg):
    module.cuda_time_us = _gpu_stand_ins.fake_time


def _simulated(ext):
    print("rehearsal: serving", ext.module.__name__, "from the CUDA simulation", flush=True)
    return ext


cuda_ext.load = lambda verbose=False: _simulated(_sim_extensions.neg_extension())
cuda_ext.load_gdn = lambda verbose=False: _simulated(_sim_extensions.gdn_extension())
"""


def test_the_whole_check_passes_on_the_cuda_simulation(tmp_path):
    pytest.importorskip("_sim_extensions")  # g++ and Python's headers
    fake = tmp_path / "site"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(SITECUSTOMIZE.format(tests=str(ROOT / "tests")))
    out = tmp_path / "gc"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), str(ROOT)]), PYTHONUNBUFFERED="1",
               TMPDIR=str(tmp_path))  # to see what is left there
    proc = subprocess.Popen([sys.executable, "-m", "trt_neg.gpu_check", "--out-dir", str(out), "--only",
                             "machine,neg,gdn", "--quick"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        log, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the check stops its sections and prebuild itself
        proc.communicate(timeout=60)
        raise
    assert proc.returncode == 0, log[-6000:]
    text = (out / "report.txt").read_text()
    assert "overall: PASS" in text and "correctness: PASS" in text and "FAIL" not in text
    data = json.loads((out / "report.json").read_text())
    assert [(s["name"], s["status"]) for s in data["sections"]] == [("machine", "PASS"), ("neg", "PASS"),
                                                                    ("gdn", "PASS")]
    assert data["machine"]["gpu"] == "NVIDIA H200" and data["machine"]["copy_bandwidth_Bps"] > 0
    neg, gdn = (s["data"] for s in data["sections"][1:])
    assert [row["N"] for row in neg["timing"]] == [1, 8] and neg["correctness"] is True
    assert all(row["ok"] for row in gdn["vs_host"]) and [row["B"] for row in gdn["timing"]["generation"]] == [1, 4, 8]
    for module in ("trt_neg_neg_sim", "trt_neg_gdn_sim"):
        assert f"rehearsal: serving {module} from the CUDA simulation" in log
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot written to {out}" in log
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("gc", "site", "torchinductor_root"))
    assert left == [], "the check left temporary files"  # (torch's own cache folder may stay)
