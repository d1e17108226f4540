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


def test_bench_neg_cpu_prints_each_median_in_its_column_and_torch_over_host(monkeypatch, capsys):
    """The host op is timed as the docstring says (top_k 8, temperature 1, silu, --threads), and
    each median goes to its column: torch ms, host ms, torch/host."""
    asked, host_calls = [], []
    host_neg_step = bench_neg_cpu.host.neg_step

    def median(fn, reps):  # the reference's time, then the host library's, per row
        fn()
        asked.append(reps)
        return 0.006 if len(asked) % 2 else 0.002

    def recording(hidden, logits, weights, **kw):
        host_calls.append({k: kw[k] for k in ("top_k", "temperature", "activation", "num_threads")})
        return host_neg_step(hidden, logits, weights, **kw)

    monkeypatch.setattr(bench_neg_cpu, "median_seconds", median)
    monkeypatch.setattr(bench_neg_cpu.host, "neg_step", recording)
    assert bench_neg_cpu.main(["--reps", "3", "--vocab", "512", "--threads", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if re.match(r"\s*\d+\s+(p95|all)\s", line)]
    assert [r[3:] for r in rows] == [["6.00", "2.00", "3.00"]] * 6 and asked == [3] * 12
    assert host_calls == [dict(top_k=8, temperature=1.0, activation="silu", num_threads=1)] * 6
    with pytest.raises(SystemExit):
        bench_neg_cpu.main(["--help"])
    assert "vocabulary size V (default: 248320)" in capsys.readouterr().out  # Darwin-9B-NEG's V


def test_bench_runtime_describes_the_machine_it_ran_on():
    import torch

    line = bench_runtime.machine_line(torch.device("cpu"), 3, 2)
    assert "Shared 2-core" not in line and "device cpu" in line and "3 torch thread(s)" in line
    assert f"of {os.cpu_count()} cores" in line and "best of 2 runs" in line


def test_bench_runtime_counts_fired_steps_from_token_outputs_only(tiny_checkpoint):
    # A step's outputs also hold the RequestResults it finished, whose `fired` is a (non-empty) list.
    from trt_neg.runtime.torch_backend import TorchBackend

    backend = TorchBackend.from_pretrained(tiny_checkpoint, max_slots=2, max_seq_len=64)
    _, fired_share = bench_runtime.decode_step_times(backend, 2, mode=0, prompt_len=4, new=5, reps=1)
    assert fired_share == 0.0  # mode 0 never fires


def test_bench_runtime_sampling_layer_fires_where_it_says():
    out = bench_runtime.sampling_layer_times(4, 1, sizes=(64, 1000, 16))
    assert out["fired"] == 0.25 and out["fired_all"] == 1.0  # one row, then every row
    out = bench_runtime.sampling_layer_times(1, 1, sizes=(64, 1000, 16))  # --batch 1 (an IndexError before)
    assert out["fired"] == out["fired_all"] == 1.0


def test_bench_runtime_end_to_end_on_the_tiny_model(tiny_checkpoint, tmp_path, capsys):
    """The whole benchmark on a small workload: the in-flight engine's greedy tokens equal HF
    generate's request by request, HF's count is each static batch's longest output times its
    rows, and the report written is the one printed."""
    from trt_neg.runtime.torch_backend import TorchBackend

    report = tmp_path / "rt.md"
    assert bench_runtime.main(["--model", str(tiny_checkpoint), "--requests", "5", "--batch", "2", "--prompt-len",
                               "2", "6", "--new-tokens", "1", "5", "--reps", "1", "--threads", "1",
                               "--skip-9b-sampling", "--output", str(report)]) == 0
    printed = capsys.readouterr().out
    text = report.read_text()
    assert text in printed and text.startswith("# Runtime benchmark (`benchmarks/bench_runtime.py`)")
    vocab = TorchBackend.from_pretrained(tiny_checkpoint, max_slots=1, max_seq_len=64).vocab_size
    work = bench_runtime.workload(5, vocab, (2, 6), (1, 5), 0)
    useful = sum(n for _, n in work)
    generated = sum(len(work[i:i + 2]) * max(n for _, n in work[i:i + 2]) for i in range(0, 5, 2))
    assert f"HF `generate` decodes every row of a batch to the batch's longest output: {generated} tokens " \
           f"generated for {useful} requested ({100 * (1 - useful / generated):.0f} % waste)" in text
    assert "Greedy tokens agree with HF on 100.0 % of positions (5/5 requests identical" in text
    assert f"[2, 6], output lengths uniform in [1, 5] ({useful} tokens requested)" in text
    assert re.search(r"\| in-flight \(LLMEngine \+ TorchBackend\) \| [\d.]+ \| \d+ \| \d+ \| 1\.00 \|", text)
    assert "9B sizes (V 248320" not in text  # --skip-9b-sampling


def test_bench_runtime_names_a_model_that_is_not_a_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        bench_runtime.main(["--model", str(tmp_path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"error: --model {tmp_path}: " in err and "Traceback" not in err


@pytest.mark.parametrize("output, problem", [("missing/rt.md", "does not exist"), (".", "is a directory")])
def test_bench_runtime_refuses_an_output_it_cannot_write_before_measuring(tmp_path, monkeypatch, capsys, output,
                                                                        problem):
    from trt_neg.runtime.torch_backend import TorchBackend

    monkeypatch.setattr(TorchBackend, "from_pretrained", lambda *a, **k: pytest.fail("the benchmark started"))
    with pytest.raises(SystemExit) as info:
        bench_runtime.main(["--output", str(tmp_path / output)])
    assert info.value.code == 2 and problem in capsys.readouterr().err


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


# ------------------------------------------- review r9: arguments, help, labels, machine, atomic record, RSS
import bench_batch_invariance  # noqa: E402
import bench_sampler  # noqa: E402
import machine  # noqa: E402

ARGPARSE_SCRIPTS = {"bench_neg_cpu": bench_neg_cpu, "bench_sampler": bench_sampler, "bench_runtime": bench_runtime,
                    "bench_batch_invariance": bench_batch_invariance}


# libgomp crashes (bench_sampler: a segfault) when it cannot create the threads asked for.
TOO_MANY_THREADS = f"argument --threads: 100000 is more than the {os.cpu_count() or 1} CPUs of this machine"


@pytest.mark.parametrize("script, args, message", [
    ("bench_neg_cpu", ["--reps", "0"], "argument --reps: 0 is below the minimum of 1"),
    ("bench_neg_cpu", ["--threads", "100000"], TOO_MANY_THREADS),
    ("bench_sampler", ["--threads", "100000"], TOO_MANY_THREADS),
    ("bench_runtime", ["--threads", "100000"], TOO_MANY_THREADS),
    ("bench_batch_invariance", ["--threads", "100000"], TOO_MANY_THREADS),
    ("bench_neg_cpu", ["--threads", "-1"], "argument --threads: -1 is below the minimum of 0"),
    ("bench_neg_cpu", ["--vocab", "0"], "argument --vocab: 0 is below the minimum of 1"),
    ("bench_sampler", ["--vocab", "0"], "argument --vocab: 0 is below the minimum of 1"),
    ("bench_sampler", ["--reps", "x"], "argument --reps: 'x' is not an integer"),
    ("bench_runtime", ["--requests", "0"], "argument --requests: 0 is below the minimum of 1"),
    ("bench_runtime", ["--batch", "0"], "argument --batch: 0 is below the minimum of 1"),
    ("bench_runtime", ["--reps", "0"], "argument --reps: 0 is below the minimum of 1"),
    ("bench_runtime", ["--prompt-len", "5", "2"], "--prompt-len 5 2: MIN is above MAX"),
    ("bench_runtime", ["--new-tokens", "0", "3"], "argument --new-tokens: 0 is below the minimum of 1"),
    ("bench_runtime", ["--prompt-len", "4", "200", "--new-tokens", "4", "100"],
     "--prompt-len MAX + --new-tokens MAX is 300; the engine holds 256 tokens per sequence"),
    ("bench_batch_invariance", ["--workloads", "0"], "argument --workloads: 0 is below the minimum of 1"),
    ("bench_batch_invariance", ["--batch", "0"], "argument --batch: 0 is below the minimum of 1"),
])
def test_bad_arguments_are_one_line_usage_errors(script, args, message, monkeypatch, capsys):
    from trt_neg.runtime.torch_backend import TorchBackend

    monkeypatch.setattr(TorchBackend, "from_pretrained", lambda *a, **k: pytest.fail("the benchmark started"))
    monkeypatch.setattr(bench_neg_cpu.host, "load", lambda *a, **k: pytest.fail("the benchmark started"))
    monkeypatch.setattr(bench_sampler, "sample", lambda *a, **k: pytest.fail("the benchmark started"))
    with pytest.raises(SystemExit) as info:
        ARGPARSE_SCRIPTS[script].main(args)
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f".py: error: {message}")


@pytest.mark.parametrize("script", sorted(ARGPARSE_SCRIPTS))
def test_help_shows_the_whole_description_and_every_default(script, capsys):
    module = ARGPARSE_SCRIPTS[script]
    with pytest.raises(SystemExit):
        module.main(["--help"])
    text = capsys.readouterr().out
    first_paragraph = module.__doc__.split("\n\n")[0]
    assert first_paragraph in text  # as written, not cut or re-wrapped
    options = re.split(r"\n  (?=-)", text.split("\noptions:\n", 1)[1])[1:]  # one block per option, after -h
    valued = [" ".join(block.split()) for block in options if re.match(r"--[\w-]+ [A-Z]", block)]
    assert valued and all("(default: " in block for block in valued), valued


def test_ratio_columns_say_what_is_over_what(capsys):
    assert bench_neg_cpu.main(["--reps", "1", "--vocab", "512", "--threads", "1"]) == 0
    assert bench_sampler.main(["--reps", "1", "--vocab", "512", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "torch/host" in out and "sort/compact" in out
    assert machine.cpu_name() in out and "cores usable by this process" in out  # the machine each ran on


def test_bench_convert_names_the_machine_and_refuses_a_bad_tp_before_copying(tiny_checkpoint, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(bench_convert, "run_child", lambda *a, **k: pytest.fail("the benchmark started"))
    r = CliRunner().invoke(bench_convert.main, ["--work", str(tmp_path / "w"), "--model", str(tiny_checkpoint),
                                                "--tp", "3"])
    assert r.exit_code == 2 and "--tp: tensor parallel size 3 is not possible for this model" in r.output
    r = CliRunner().invoke(bench_convert.main, ["--work", str(tmp_path / "w"), "--model", str(tiny_checkpoint),
                                                "--tp", "1", "--record", str(tmp_path / "missing" / "t.md")])
    assert r.exit_code == 2 and "does not exist" in r.output and "--record" in r.output
    # Not an HF checkpoint: --model is at fault (it was reported as --tp's); a --work that cannot be made.
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(bench_convert.main, ["--work", str(tmp_path / "w"), "--model", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "Invalid value for --model" in r.output and "--tp" not in r.output, r.output
    (tmp_path / "file").write_text("x")
    r = CliRunner().invoke(bench_convert.main, ["--work", str(tmp_path / "file" / "w"), "--model", str(tiny_checkpoint),
                                                "--tp", "1"])
    assert r.exit_code == 2 and "Invalid value for --work" in r.output and "cannot create it" in r.output, r.output

    monkeypatch.setattr(bench_convert, "run_child", lambda *a, **k: {"seconds": 1.0, "read": 1, "written": 1,
                                                                     "peak_rss": 2**20})
    r = CliRunner().invoke(bench_convert.main, ["--work", str(tmp_path / "w"), "--model", str(tiny_checkpoint),
                                                "--tp", "1"])
    assert r.exit_code == 0, r.output
    assert f"machine: {machine.machine_summary()}" in r.output


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_bench_convert_record_is_replaced_whole_or_not_at_all(tiny_checkpoint, tmp_path, monkeypatch):
    """A write of the record that fails half way (here: a file-size limit of 100 bytes) leaves the previous
    record as it was and no temporary file."""
    import resource
    import signal

    monkeypatch.setattr(bench_convert, "run_child", lambda *a, **k: {"seconds": 1.0, "read": 1, "written": 1,
                                                                     "peak_rss": 2**20})
    record = tmp_path / "table.md"
    record.write_text("the previous table\n")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, limits[1]))
    try:
        r = CliRunner().invoke(bench_convert.main, ["--work", str(tmp_path / "w"), "--model", str(tiny_checkpoint),
                                                    "--tp", "1", "--record", str(record)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert r.exit_code == 1 and "could not write the table" in r.output
    assert record.read_text() == "the previous table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md", "w"]


def test_bench_convert_peak_rss_is_the_childs_own(tmp_path, tiny_checkpoint):
    """The parent here has imported torch (~200 MB resident); the copy child's 16 MiB buffer must not be
    reported with the parent's peak."""
    import torch  # noqa: F401

    result = bench_convert.run_child("copy", tiny_checkpoint, tmp_path / "copy")
    assert result["peak_rss"] < 100 * 2**20, result


def test_bench_convert_relative_work_and_model_mean_the_callers_directory(tiny_checkpoint, tmp_path, monkeypatch):
    """Relative --work/--model are relative to the caller's directory, for the measurement children too:
    nothing may land under the repository, and both copy runs (which must each find no copy) succeed."""
    import shutil

    shutil.copytree(tiny_checkpoint, tmp_path / "m")
    work = f"bench-rel-{os.getpid()}"
    monkeypatch.chdir(tmp_path)
    try:
        r = CliRunner().invoke(bench_convert.main, ["--work", work, "--model", "m", "--tp", "1"])
        assert r.exit_code == 0, r.output
        assert not (ROOT / work).exists() and not (ROOT / "m").exists()
        assert sorted(p.name for p in (tmp_path / work).iterdir()) == []
    finally:
        shutil.rmtree(ROOT / work, ignore_errors=True)


@pytest.mark.parametrize("script", [bench_convert])
def test_dash_h_is_help(script):
    r = CliRunner().invoke(script.main, ["-h"])
    assert r.exit_code == 0 and "--work" in r.output, r.output
