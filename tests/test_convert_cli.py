"""build_engine.py: the --checkpoint-only conversion CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def test_checkpoint_only_writes_a_sharded_checkpoint(cli, tiny_checkpoint, tmp_path):
    out = tmp_path / "trtllm"
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(out), "--checkpoint-only",
                                      "--tp-size", "2", "--pp-size", "2", "--dtype", "bfloat16", "--check-finite",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "wrote TensorRT-LLM checkpoint" in result.output and "tp 2, pp 2, bfloat16" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["mapping"] == {"world_size": 4, "tp_size": 2, "pp_size": 2} and config["dtype"] == "bfloat16"
    assert sorted(p.name for p in out.glob("rank*.safetensors")) == [f"rank{r}.safetensors" for r in range(4)]

    again = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(out), "--checkpoint-only"])
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.output
    replaced = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(out), "--checkpoint-only",
                                        "--overwrite", "--no-progress"])
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((out / "config.json").read_text())["mapping"]["world_size"] == 1


def test_engine_build_needs_tensorrt_llm(cli, tiny_checkpoint, tmp_path, monkeypatch):
    # Without tensorrt_llm (simulated, so this also holds in the container) the checkpoint is converted
    # into <output>.ckpt and kept, then the command stops (tests/test_build_engine.py has the details).
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "engine"),
                                      "--no-progress"])
    assert result.exit_code == 2
    assert "tensorrt_llm 1.2" in result.output and "--checkpoint-only" in result.output
    assert not (tmp_path / "engine").exists()
    assert (tmp_path / "engine.ckpt" / "rank0.safetensors").is_file()


def test_errors_are_one_clear_line(cli, tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "o"),
                                      "--checkpoint-only", "--tp-size", "3"])
    assert result.exit_code == 1
    assert "Error: tensor parallel size 3 is not possible" in result.output and "Traceback" not in result.output
    bad_map = tmp_path / "map.json"
    bad_map.write_text("[1, 2]")
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "o"),
                                      "--checkpoint-only", "--key-map", str(bad_map)])
    assert result.exit_code == 1 and "key map must be a JSON object" in result.output
    assert not (tmp_path / "o").exists()


def test_script_entry_point_with_progress_bar(tiny_checkpoint, tmp_path):
    out = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, str(ROOT / "build_engine.py"), "--model", str(tiny_checkpoint),
                           "--output", str(out), "--checkpoint-only"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "converting tp1 pp1 float32" in proc.stderr  # tqdm progress bar on stderr
    assert (out / "rank0.safetensors").exists()
