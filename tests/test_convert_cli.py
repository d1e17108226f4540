"""build_engine.py: the --checkpoint-only conversion CLI."""

from __future__ import annotations

import json
import re
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
    assert result.exit_code == 3
    assert "tensorrt_llm 1.2" in result.output and "--checkpoint-only" in result.output
    assert not (tmp_path / "engine").exists()
    assert (tmp_path / "engine.ckpt" / "rank0.safetensors").is_file()


def test_errors_are_one_clear_line(cli, tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "o"),
                                      "--checkpoint-only", "--tp-size", "3"])
    assert result.exit_code == 2  # an option that does not fit the model: a usage error
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


# ------------------------------------------------------------------ what --overwrite may replace
def _precious_project(directory: Path) -> Path:
    """A folder that is no trt-neg output: a git repository with a file of notes."""
    (directory / ".git").mkdir(parents=True)
    (directory / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (directory / "notes.txt").write_text("precious")
    return directory


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*"))


def test_overwrite_refuses_a_folder_that_is_not_a_previous_checkpoint(cli, tiny_checkpoint, tmp_path):
    project = _precious_project(tmp_path / "project")
    before = _files(project)
    for extra in ([], ["--overwrite"]):
        result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(project),
                                          "--checkpoint-only", "--no-progress", *extra])
        assert result.exit_code == 1, result.output
        assert (f"{project}: holds files that are not part of a trt-neg TensorRT-LLM checkpoint (e.g. .git); "
                "--overwrite replaces only an empty directory or a previous TensorRT-LLM checkpoint (config.json, "
                "rank*.safetensors); remove it yourself or choose another output directory") in result.output
        assert _files(project) == before and (project / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]  # no temporary left beside it


@pytest.mark.parametrize("output, relation", [(".", "is"), ("..", "contains")])
def test_overwrite_refuses_the_current_directory_and_its_parents(cli, tiny_checkpoint, tmp_path, monkeypatch,
                                                                 output, relation):
    """`--output . --overwrite` inside a git repository once replaced the whole repository."""
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    monkeypatch.chdir(project / "sub")
    target = (project / "sub" / output).resolve()
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", output, "--checkpoint-only",
                                      "--overwrite", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert f"{target}: {relation} the current directory; replacing it would delete the directory" in result.output
    assert _files(project) == ["sub"]


def test_overwrite_refuses_a_file(cli, tiny_checkpoint, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("precious")
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(target), "--checkpoint-only",
                                      "--overwrite", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert f"{target}: is a file, not a trt-neg TensorRT-LLM checkpoint directory" in result.output
    assert target.read_text() == "precious"


def test_overwrite_replaces_an_empty_folder_and_a_previous_checkpoint(cli, tiny_checkpoint, tmp_path):
    out = tmp_path / "ckpt"
    out.mkdir()
    args = ["--model", str(tiny_checkpoint), "--output", str(out), "--checkpoint-only", "--no-progress", "--overwrite"]
    assert CliRunner().invoke(cli, [*args, "--tp-size", "2"]).exit_code == 0
    assert _files(out) == ["config.json", "rank0.safetensors", "rank1.safetensors"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert _files(out) == ["config.json", "rank0.safetensors"]


# ------------------------------------------------------------------------------- review r9: Ctrl-C
def test_ctrl_c_during_conversion_exits_130_and_leaves_nothing(cli, tiny_checkpoint, tmp_path, monkeypatch):
    """KeyboardInterrupt in the middle of writing the rank files: exit 130 with one line, not click's "Aborted!"
    and exit 1; neither --output nor the temporary .partial folder beside it (nor its created parents) is left."""
    from trt_neg.checkpoint import convert

    real_push, pushes = convert._push, [0]

    def push(*args):
        pushes[0] += 1
        if pushes[0] == 5:
            raise KeyboardInterrupt
        return real_push(*args)

    monkeypatch.setattr(convert, "_push", push)
    out = tmp_path / "new" / "trtllm"
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(out), "--checkpoint-only",
                                      "--tp-size", "2", "--no-progress"])
    assert result.exit_code == 130 and isinstance(result.exception, SystemExit), result.output
    assert result.stderr == "interrupted\n" and pushes[0] == 5
    assert list(tmp_path.iterdir()) == []


def test_sigint_during_conversion_exits_130_and_leaves_nothing(tiny_checkpoint, tmp_path):
    """A real SIGINT, sent once the conversion is writing its first tensor."""
    import signal

    driver = ("import sys, time\n"
              f"sys.path.insert(0, {str(ROOT)!r})\n"
              "from trt_neg.checkpoint import convert\n"
              "def slow_tensor(*args):\n"
              "    print('writing a tensor', file=sys.stderr, flush=True)\n"
              "    time.sleep(60)\n"
              "convert._write_tensor = slow_tensor\n"
              "import runpy\n"
              f"sys.argv = ['build_engine.py', '--model', {str(tiny_checkpoint)!r}, '--output', 'out', "
              "'--checkpoint-only', '--no-progress']\n"
              f"runpy.run_path({str(ROOT / 'build_engine.py')!r}, run_name='__main__')\n")
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr.readline() == b"writing a tensor\n"
    assert [p.suffix for p in work.iterdir()] == [".partial"]  # what the interrupt must remove
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.decode() == "interrupted\n" and out == b""
    assert list(work.iterdir()) == []


def test_checkpoint_records_its_source_absolutely_and_sizes_below_a_gib_in_mib(cli, tiny_checkpoint, tmp_path,
                                                                                 monkeypatch):
    import shutil

    shutil.copytree(tiny_checkpoint, tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--model", "tiny", "--output", "ckpt", "--checkpoint-only", "--no-progress"])
    assert result.exit_code == 0, result.output
    source = json.loads((tmp_path / "ckpt" / "config.json").read_text())["trt_neg"]["source"]
    assert source == str(tmp_path.resolve() / "tiny" / "config.json")
    written = (tmp_path / "ckpt" / "rank0.safetensors").stat().st_size
    size = re.search(r"1 rank file\(s\), ([0-9.]+) MiB\)", result.output)
    assert size and abs(float(size.group(1)) - written / 2**20) < 0.01, result.output  # the header aside


def test_reuse_checkpoint_accepts_the_same_model_spelled_relative_or_absolute(cli, tiny_checkpoint, tmp_path,
                                                                               monkeypatch):
    import shutil

    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    shutil.copytree(tiny_checkpoint, tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    converted = CliRunner().invoke(cli, ["--model", "tiny", "--output", "engine", "--no-progress"])
    assert converted.exit_code == 3, converted.output
    for model in (str(tmp_path / "tiny"), "tiny", "./tiny/"):
        reused = CliRunner().invoke(cli, ["--model", model, "--output", "engine", "--reuse-checkpoint"])
        assert reused.exit_code == 3 and "reusing TensorRT-LLM checkpoint" in reused.output, (model, reused.output)
        assert "was not converted from" not in reused.output
