"""The benchmark scripts' own behaviour (not their figures): what they print about the runs and the
machine, how they write their reports, and how they treat a leftover of an interrupted run."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_convert  # noqa: E402
import bench_neg_cpu  # noqa: E402
import bench_runtime  # noqa: E402


def test_bench_neg_cpu_prints_the_fired_count_of_every_row(capsys):
    assert bench_neg_cpu.main(["--reps", "1", "--vocab", "512", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "p95" in bench_neg_cpu.__doc__ and "about 5 %" in bench_neg_cpu.__doc__
    rows = [line.split() for line in out.splitlines() if re.match(r"\s*\d+\s+(p95|all)\s", line)]
    fired = {(int(r[0]), r[1]): r[2] for r in rows}
    # tau at the batch's own 95th percentile: no row at N=1, 1 of 8, 4 of 64 (strictly above it)
    assert fired == {(1, "p95"): "0/1", (1, "all"): "1/1", (8, "p95"): "1/8", (8, "all"): "8/8",
                     (64, "p95"): "4/64", (64, "all"): "64/64"}


def test_bench_runtime_describes_the_machine_it_ran_on():
    import torch

    line = bench_runtime.machine_line(torch.device("cpu"), 3, 2)
    assert "Shared 2-core" not in line and "device cpu" in line and "3 torch thread(s)" in line
    assert f"of {os.cpu_count()} cores" in line and "best of 2 runs" in line


def test_bench_runtime_refuses_an_output_in_a_missing_directory_before_measuring(tmp_path, monkeypatch, capsys):
    from trt_neg.runtime.torch_backend import TorchBackend

    monkeypatch.setattr(TorchBackend, "from_pretrained", lambda *a, **k: pytest.fail("the benchmark started"))
    with pytest.raises(SystemExit) as info:
        bench_runtime.main(["--output", str(tmp_path / "missing" / "rt.md")])
    assert info.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_bench_convert_clears_its_own_leftover_copy_and_refuses_anything_else(tiny_checkpoint, tmp_path):
    work = tmp_path / "work"
    (work / "copy").mkdir(parents=True)
    (work / "copy" / "model.safetensors").write_bytes(b"half a copy")  # an interrupted run's plain copy
    record = tmp_path / "table.md"
    r = CliRunner().invoke(bench_convert.main, ["--work", str(work), "--model", str(tiny_checkpoint), "--tp", "1",
                                                "--record", str(record)])
    assert r.exit_code == 0, r.output
    assert f"removing {work / 'copy'}, left over from an interrupted run" in r.output
    assert "| convert tp 1 |" in record.read_text() and sorted(p.name for p in work.iterdir()) == []

    (work / "copy").mkdir()
    (work / "copy" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(bench_convert.main, ["--work", str(work), "--model", str(tiny_checkpoint), "--tp", "1"])
    assert r.exit_code == 2 and "is not a leftover plain copy of this benchmark" in r.output
    assert (work / "copy" / "notes.txt").read_text() == "mine"
