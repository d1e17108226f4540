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
    # said once: not added to a help that gives its own default, nor "None" or "False" for an unset option or a flag
    assert all(block.count("(default") <= 1 for block in options), options
    assert "(default: None)" not in text and "(default: False)" not in text


def test_ratio_columns_say_what_is_over_what(capsys):
    assert bench_neg_cpu.main(["--reps", "1", "--vocab", "512", "--threads", "1"]) == 0
    assert bench_sampler.main(["--reps", "1", "--vocab", "512", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "torch/host" in out and "sort/compact" in out
    assert machine.cpu_name() in out and "cores usable by this process" in out  # the machine each ran on


TICK = 0.25  # exact in binary: a difference of two ticks is exactly TICK


def _ticking_clock(monkeypatch, module) -> None:
    """Replace ``module``'s ``time`` by a clock whose ``perf_counter`` advances TICK at every read, so that a
    duration the module measures is a known number of reads (timings on a shared CPU mean nothing)."""
    import itertools
    import types

    ticks = itertools.count(4)  # not from 0: a sum of two reads must not equal their difference
    monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks) * TICK))


def _measured_in_one_second(*args, **kwargs) -> dict:
    """bench_convert.run_child's stand-in: a run of 1 s that read and wrote 1 byte in 1 MiB."""
    return {"seconds": 1.0, "read": 1, "written": 1, "peak_rss": 2**20}


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
    assert r.exit_code == 2 and "Invalid value for --work" in r.output, r.output
    assert "cannot create it (Not a directory)" in r.output, r.output

    monkeypatch.setattr(bench_convert, "run_child", _measured_in_one_second)
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

    monkeypatch.setattr(bench_convert, "run_child", _measured_in_one_second)
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
    assert r.exit_code == 1 and "could not write the table (File too large); it is printed above" in r.output
    assert record.read_text() == "the previous table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md", "w"]


def test_bench_convert_peak_rss_is_the_childs_own(tmp_path, tiny_checkpoint):
    """The parent here has imported torch (~200 MB resident); the copy child's 16 MiB buffer must not be
    reported with the parent's peak."""
    import torch  # noqa: F401

    result = bench_convert.run_child("copy", tiny_checkpoint, tmp_path / "copy")
    assert result["peak_rss"] < 100 * 2**20, result
    assert result["read"] == result["written"] == sum(p.stat().st_size for p in tiny_checkpoint.glob("*.safetensors"))


def test_bench_convert_copy_child_copies_every_byte_in_blocks(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_convert, "BLOCK", 4096)  # many blocks and a short last one
    sources = sorted(tiny_checkpoint.glob("*.safetensors"))
    _ticking_clock(monkeypatch, bench_convert)
    result = bench_convert._child_copy(str(tiny_checkpoint), str(tmp_path / "copy"))
    assert result["seconds"] == TICK  # the clock read before and after the copy, once each
    assert result["read"] == result["written"] == sum(p.stat().st_size for p in sources)
    assert sum(p.stat().st_size for p in sources) % 4096  # the last block is short
    assert all((tmp_path / "copy" / p.name).read_bytes() == p.read_bytes() for p in sources)
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == [p.name for p in sources]  # nothing else copied


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


# ------------------------------------------- bench_batch_invariance: what its table counts
def _entropy_result(tokens, entropies):
    from types import SimpleNamespace

    return SimpleNamespace(tokens=tokens, entropies=entropies)


def test_batch_invariance_compares_entropies_up_to_the_first_differing_token_only():
    # The entropy at the differing step was predicted from the same context, so it counts; later ones don't.
    batched = _entropy_result([5, 6, 7, 8], [0.5, 1.0, 2.0, 9.0])
    solo = _entropy_result([5, 6, 9, 9], [0.5, 1.25, 2.5, 0.0])
    assert bench_batch_invariance.compare(batched, solo) == (True, 0.5)
    same = _entropy_result([5, 6], [0.5, 1.0])
    assert bench_batch_invariance.compare(same, _entropy_result([5, 6], [0.75, 1.0])) == (False, 0.25)
    assert bench_batch_invariance.compare(_entropy_result([], []), _entropy_result([], [])) == (False, 0.0)


def test_batch_invariance_workload_mixes_greedy_and_seeded_sampled_requests_in_both_neg_modes():
    import random

    from trt_neg.runtime import SamplingParams

    reqs = bench_batch_invariance.workload(random.Random(3), 30, 512)
    greedy = [r for r in reqs if r.sampling == SamplingParams()]
    sampled = [r for r in reqs if r.sampling.temperature > 0]
    assert len(greedy) == 10 and len(sampled) == 20  # every third request is greedy
    assert all(r.sampling.seed is not None for r in sampled) and len({r.sampling.seed for r in sampled}) == 20
    assert len({(r.sampling.temperature, r.sampling.top_k, r.sampling.top_p) for r in sampled}) > 5
    assert [r.neg_mode for r in reqs] == [0, 1] * 15 and all(r.ignore_eos for r in reqs)
    assert all(1 <= len(r.prompt_token_ids) <= 48 and max(r.prompt_token_ids) < 512 for r in reqs)
    assert {r.max_new_tokens for r in reqs} <= set(range(1, 41)) and len({len(r.prompt_token_ids) for r in reqs}) > 5


def test_bench_batch_invariance_table_counts_requests_and_rates(monkeypatch, capsys):
    """Two workloads of 5 requests on 2 slots. Each busy run is given a fixed duration (default 0.5 s,
    batch-invariant 1 s) and the default mode's first request has its first token changed, so every figure
    of the table is known: only the real runs' tokens are compared."""
    import torch

    real_run = bench_batch_invariance.run
    generated = {False: 0, True: 0}  # tokens the busy runs generated, by backend.batch_invariant
    threads = set()
    _ticking_clock(monkeypatch, bench_batch_invariance)

    def run_with_fixed_seconds(backend, reqs, batch):
        results, seconds = real_run(backend, reqs, batch)
        assert seconds == TICK  # the clock read before and after the run, once each
        threads.add(torch.get_num_threads())
        if batch == 1:
            return results, 123.0  # a solo run: its time is not part of either rate
        generated[backend.batch_invariant] += sum(len(r.tokens) for r in results)
        if not backend.batch_invariant:
            results[0].tokens[0] += 1
            results[0].entropies[0] += 0.375
            return results, 0.5
        return results, 1.0

    monkeypatch.setattr(bench_batch_invariance, "run", run_with_fixed_seconds)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # so that the default --threads 1 shows
    try:
        assert bench_batch_invariance.main(["--workloads", "2", "--requests", "5", "--batch", "2"]) == 0
    finally:
        torch.set_num_threads(before)
    assert threads == {1}
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "workload 1/2: differing requests so far default 1, batch-invariant 0" in lines
    assert "workload 2/2: differing requests so far default 2, batch-invariant 0" in lines
    header = lines.index("| mode | requests whose tokens differ from the solo run | max entropy deviation before a "
                         "difference | tokens/s | tokens/s ratio this / batch-invariant |")
    assert lines[header + 1] == "|:--|--:|--:|--:|--:|"
    assert lines[header + 2].startswith("| default |") and lines[header + 3].startswith("| batch_invariant |")
    assert "1 thread(s); tiny checkpoint, fp32, 2 workloads x 5 requests, batch 2" in out
    tokens = generated[False]
    assert tokens == generated[True] > 10  # ignore_eos: every request runs to its max_new_tokens in both modes
    rows = {cells[0]: cells[1:] for cells in (line.strip("| ").split(" | ") for line in out.splitlines()
                                              if line.startswith("| default") or line.startswith("| batch_inv"))}
    # default: 2 requests changed on purpose; the entropy change at the differing token is the largest deviation
    assert rows["default"][:2] == ["2 / 10", "3.75e-01"]
    assert rows["batch_invariant"][:2] == ["0 / 10", "0.00e+00"]  # the exact mode equals the solo runs exactly
    assert rows["default"][2:] == [f"{tokens / 1.0:.0f}", "2.00"]
    assert rows["batch_invariant"][2:] == [f"{tokens / 2.0:.0f}", "1.00"]


# ------------------------------------------- bench_sampler: its table and its agreement check
def test_bench_sampler_prints_each_median_in_its_column_and_sort_over_compact(monkeypatch, capsys):
    """Every (N, top_k) case of the docstring, in order; the full sort's median, then the compact path's,
    then sort/compact; each path asked with the docstring's parameters."""
    asked, calls = [], []
    real_sample = bench_sampler.sample

    def median(fn, reps):  # the full sort's time, then the compact path's, per row
        fn()
        asked.append(reps)
        return 0.008 if len(asked) % 2 else 0.002

    def recording(logits, params, seeds, positions, **kw):
        calls.append((logits.shape[0], params[0].top_k, params[0].temperature, params[0].top_p,
                      kw.get("compact_width")))
        return real_sample(logits, params, seeds, positions, **kw)

    monkeypatch.setattr(bench_sampler, "median_seconds", median)
    monkeypatch.setattr(bench_sampler, "sample", recording)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # so that --threads 1 shows
    try:
        assert bench_sampler.main(["--reps", "2", "--vocab", "2000", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert ", 1 threads, torch " in out
    rows = [line.split() for line in out.splitlines() if re.match(r"\s*\d+\s+\d+\s+\d", line)]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(n, k) for n in (1, 8, 64) for k in (50, 1024, 0)]
    assert [r[2:] for r in rows] == [["8.0", "2.0", "4.0x"]] * 9 and asked == [2] * 18
    assert "V=2000" in out
    # per case: the agreement check (full, compact), then one call of each timed path
    assert calls[:4] == [(1, 50, 0.8, 0.95, 0), (1, 50, 0.8, 0.95, None)] * 2
    with pytest.raises(SystemExit):
        bench_sampler.main(["--help"])
    assert "vocabulary size V (default: 248320)" in capsys.readouterr().out  # Darwin-9B-NEG's V


def test_bench_sampler_stops_with_exit_1_where_the_two_paths_disagree(monkeypatch, capsys):
    real_sample = bench_sampler.sample

    def full_sort_off_by_one_at_top_k_1024(logits, params, seeds, positions, **kw):
        tokens = real_sample(logits, params, seeds, positions, **kw)
        return tokens + 1 if kw.get("compact_width") == 0 and params[0].top_k == 1024 else tokens

    monkeypatch.setattr(bench_sampler, "sample", full_sort_off_by_one_at_top_k_1024)
    assert bench_sampler.main(["--reps", "1", "--vocab", "2000", "--threads", "1"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "N=1 top_k=1024: the two paths disagree\n"
    assert len([line for line in captured.out.splitlines() if re.match(r"\s*1\s+50\s", line)]) == 1


# ------------------------------------------- timing.median_seconds and machine's description
import timing  # noqa: E402


def test_median_seconds_is_the_median_of_the_timed_calls_after_untimed_warmups(monkeypatch):
    clock = iter([10.0, 13.0, 20.0, 21.0, 30.0, 32.0, 40.0, 47.0])  # four timed calls: 3, 1, 2 and 7 s
    calls = []
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    assert timing.median_seconds(lambda: calls.append(1), reps=4, warmup=2) == 2.5
    assert len(calls) == 6 and next(clock, None) is None  # 2 warmups read no clock; each timed call reads two
    clock = iter([0.0, 1.0, 5.0, 8.0])
    assert timing.median_seconds(lambda: calls.append(2), reps=2) == 2.0 and calls.count(2) == 3  # one warmup


def _stand_in_for(monkeypatch, system_file: str, stand_in: Path) -> Path:
    """Make ``open(system_file)`` open ``stand_in`` instead (for the rest of the test)."""
    import builtins

    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(
        stand_in if path == system_file else path, *a, **k))
    return stand_in


def test_machine_names_the_cpu_from_cpuinfo_or_platform(monkeypatch, tmp_path):
    cpuinfo = _stand_in_for(monkeypatch, "/proc/cpuinfo", tmp_path / "cpuinfo")
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: X\nModel Name\t: Test CPU 9000: 3GHz \nflags\t: a\n")
    assert machine.cpu_name() == "Test CPU 9000: 3GHz"  # split at the first colon only
    cpuinfo.write_text("processor\t: 0\n")  # no model name line (some ARM kernels)
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
    assert machine.cpu_name() == "aarch64"
    monkeypatch.setattr(machine.platform, "processor", lambda: "arm")
    assert machine.cpu_name() == "arm"
    cpuinfo.unlink()  # no /proc (macOS)
    assert machine.cpu_name() == "arm"


def test_numeric_option_types_return_the_value_they_accept():
    assert machine.int_at_least(1)("7") == 7 and machine.thread_count(0)("0") == 0
    assert machine.thread_count(1)(str(os.cpu_count() or 1)) == (os.cpu_count() or 1)


def test_machine_summary_counts_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 3, 5} if pid == 0 else {0})  # 0: this process
    monkeypatch.setattr(machine.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(machine, "cpu_name", lambda: "Test CPU")
    assert "Test CPU (3 of 8 cores usable by this process), Python " in machine.machine_summary()
    monkeypatch.delattr(machine.os, "sched_getaffinity")  # macOS has none
    assert machine.usable_cores() == 8
    monkeypatch.setattr(machine.os, "cpu_count", lambda: None)
    assert machine.usable_cores() == 0


# ------------------------------------------- bench_convert: the runs it makes and the table it computes
def test_bench_convert_runs_copy_converts_copy_and_rates_each_against_the_faster_copy(tiny_checkpoint, tmp_path,
                                                                                       monkeypatch):
    """The default tp sizes (1, 2), each run after the source's pages are dropped and into an output cleared of
    a stale one; the table's figures from the runs' own (here: fixed) seconds, bytes and peak RSS."""
    size = sum(p.stat().st_size for p in tiny_checkpoint.glob("*.safetensors"))
    seconds = {("copy", 0): 0.2, ("convert", 1): 0.4, ("convert", 2): 0.5, ("copy", 1): 0.1}  # after: faster
    runs = []
    work = tmp_path / "w"
    (work / "trtllm-tp1").mkdir(parents=True)
    (work / "trtllm-tp1" / "rank0.safetensors").write_bytes(b"stale")  # an interrupted run's conversion

    def fake_child(kind, src, dst, tp=1):
        runs.append((kind, Path(src), Path(dst).name, tp, Path(dst).exists()))
        key = (kind, tp if kind == "convert" else len([r for r in runs if r[0] == "copy"]) - 1)
        return {"seconds": seconds[key], "read": 3 * 10**9, "written": 2 * 10**9 if kind == "convert" else size,
                "peak_rss": 300 * 2**20 if kind == "convert" else 20 * 2**20}

    monkeypatch.setattr(bench_convert, "run_child", fake_child)
    monkeypatch.setattr(bench_convert, "drop_cache", lambda files: runs.append(("drop", *sorted(p.name for p in files))))
    record = tmp_path / "table.md"
    r = CliRunner().invoke(bench_convert.main, ["--work", str(work), "--model", str(tiny_checkpoint),
                                                "--record", str(record)])
    assert r.exit_code == 0, r.output
    drop = ("drop", "model.safetensors")
    assert runs == [drop, ("copy", tiny_checkpoint, "copy", 1, False),
                    drop, ("convert", tiny_checkpoint, "trtllm-tp1", 1, False),
                    drop, ("convert", tiny_checkpoint, "trtllm-tp2", 2, False),
                    drop, ("copy", tiny_checkpoint, "copy", 1, False)]
    gbs = lambda s: f"{size / s / 1e9:.3f}"  # noqa: E731
    assert record.read_text().splitlines()[2:] == [
        f"| plain copy (before) | 0.2 | 3.00 | {size / 1e9:.2f} | {gbs(0.2)} | 0.50 | 20 |",
        f"| convert tp 1 | 0.4 | 3.00 | 2.00 | {gbs(0.4)} | 0.25 | 300 |",
        f"| convert tp 2 | 0.5 | 3.00 | 2.00 | {gbs(0.5)} | 0.20 | 300 |",
        f"| plain copy (after) | 0.1 | 3.00 | {size / 1e9:.2f} | {gbs(0.1)} | 1.00 | 20 |"]
    assert record.read_text() in r.output + "\n"  # the record is the printed table
    assert size > 10**5  # so that the MB/s below are not all 0
    assert f"convert tp2: 0.5 s, {size / 0.5 / 1e6:.0f} MB/s, wrote 2.00 GB, peak RSS 300 MiB" in r.output
    assert f"plain copy (after): 0.1 s, {size / 0.1 / 1e6:.0f} MB/s, peak RSS 20 MiB" in r.output
    assert f"source: {tiny_checkpoint} (1 files, {size / 1e9:.2f} GB)" in r.output
    assert f"--work on {bench_convert.filesystem_of(work)}" in r.output and bench_convert.filesystem_of(work)
    import shutil

    free = int(re.search(r"disk free (\d+) GB", r.output).group(1))
    assert abs(free - shutil.disk_usage(work).free / 1e9) < 1.5
    assert sorted(p.name for p in work.iterdir()) == []  # the stale conversion went too


def test_bench_convert_children_time_and_count_their_own_work(tiny_checkpoint, tmp_path, monkeypatch):
    from safetensors import safe_open

    _ticking_clock(monkeypatch, bench_convert)
    result = bench_convert._child_convert(str(tiny_checkpoint), str(tmp_path / "out"), 1)
    assert result["seconds"] == TICK  # the clock read before and after the conversion, once each

    tensor_bytes = 0  # the converter counts tensor data, not the files' headers
    for shard in (tmp_path / "out").rglob("*.safetensors"):
        with safe_open(shard, "pt") as f:
            tensor_bytes += sum(f.get_tensor(k).nbytes for k in f.keys())
    assert result["written"] == tensor_bytes and result["read"] > 0


def test_bench_convert_peak_rss_falls_back_to_getrusage_without_proc(monkeypatch, tmp_path):
    from_proc = bench_convert.peak_rss_bytes()
    _stand_in_for(monkeypatch, "/proc/self/status", tmp_path / "missing")
    from_getrusage = bench_convert.peak_rss_bytes()  # this process's peak either way, in bytes
    assert from_proc > 50 * 2**20 and abs(from_getrusage - from_proc) < 0.1 * from_proc


def test_clear_leftover_refuses_links_files_and_folders_it_did_not_write(tmp_path):
    import click

    target = tmp_path / "target"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"x")
    cases = {"link": target, "dangling": tmp_path / "nowhere"}
    for name, to in cases.items():
        (tmp_path / name).symlink_to(to)
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "nested" / "sub.safetensors").mkdir(parents=True)  # a folder, though named like a shard
    for name in ("link", "dangling", "file", "nested"):
        with pytest.raises(click.UsageError, match=f"{tmp_path / name} exists and is not a leftover plain copy"):
            bench_convert.clear_leftover(tmp_path / name, "plain copy")
    assert (target / "model.safetensors").read_bytes() == b"x" and (tmp_path / "nested" / "sub.safetensors").is_dir()
    bench_convert.clear_leftover(tmp_path / "absent", "plain copy")  # nothing there: nothing to do


def test_bench_convert_option_errors_name_the_option(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_convert, "run_child", lambda *a, **k: pytest.fail("the benchmark started"))
    (tmp_path / "file").write_text("x")
    model, work, file = str(tiny_checkpoint), str(tmp_path / "w"), str(tmp_path / "file")
    for args, message in ((["--model", model], "Missing option '--work'"),
                          (["--work", file, "--model", model], "Invalid value for '--work': Directory"),
                          (["--work", work, "--model", file], "Invalid value for '--model': Directory"),
                          (["--work", work, "--model", str(tmp_path / "none")], "does not exist"),
                          (["--work", work, "--model", model, "--tp", "0"], "Invalid value for '--tp': 0 is not in"),
                          (["--work", work, "--model", model, "--record", str(tmp_path)],
                           "Invalid value for '--record': File")):
        r = CliRunner().invoke(bench_convert.main, args)
        assert r.exit_code == 2 and message in r.output, (args, r.output)
    r = CliRunner().invoke(bench_convert.main, ["--help"])
    assert "[default: 1, 2; x>=1]" in r.output


def test_bench_convert_writes_the_9b_model_once_and_removes_it_unless_kept(tiny_checkpoint, tmp_path, monkeypatch):
    """Without --model it writes the 9b checkpoint into --work (here: the tiny one, 18 GB being too much for a
    test), converts it, and removes it afterwards unless --keep-model; a kept one is reused, not rewritten."""
    import shutil

    from trt_neg.checkpoint import synthetic

    written = []

    def write_tiny_instead(path, preset, seed, progress):
        written.append((Path(path).name, preset, seed))
        shutil.copytree(tiny_checkpoint, path)
        return path

    monkeypatch.setattr(synthetic, "write_checkpoint", write_tiny_instead)
    monkeypatch.setattr(bench_convert, "run_child", _measured_in_one_second)
    work = tmp_path / "new" / "w"  # made with its parents
    for args, files_after in ((["--keep-model"], ["hf-9b"]), ([], [])):  # the second run reuses the kept model
        r = CliRunner().invoke(bench_convert.main, ["--work", str(work), "--tp", "1", *args])
        assert r.exit_code == 0, r.output
        assert sorted(p.name for p in work.iterdir()) == files_after
        assert bool(re.search(r"^wrote 9b checkpoint in \d s$", r.output, re.M)) == (args == ["--keep-model"])
    assert written == [("hf-9b", "9b", 0)]


def test_filesystem_of_is_the_longest_mount_that_holds_the_path(monkeypatch, tmp_path):
    mounts = _stand_in_for(monkeypatch, "/proc/mounts", tmp_path / "mounts")
    # the root is mounted twice (the later one is on top, the one in use) and listed after /work
    mounts.write_text("rootfs / rootfs rw 0 0\n/dev/b /work xfs rw 0 0\ntmpfs /workspace tmpfs rw 0 0\n"
                      "/dev/a / overlay rw 0 0\n")
    assert bench_convert.filesystem_of(Path("/work/bench/x")) == "/work (xfs)"
    assert bench_convert.filesystem_of(Path("/work")) == "/work (xfs)"
    assert bench_convert.filesystem_of(Path("/workspaces")) == "/ (overlay)"  # a prefix of the text is not a parent
    monkeypatch.chdir("/")
    assert bench_convert.filesystem_of(Path("work/x")) == "/work (xfs)"  # relative to the current directory
    mounts.write_text("garbled\n")
    assert bench_convert.filesystem_of(Path("/work")) == ""


def test_help_formatter_adds_a_default_only_where_one_is_set_and_not_already_said():
    import argparse

    ap = argparse.ArgumentParser(prog="p", formatter_class=machine.HelpFormatter)
    ap.add_argument("--unset", help="no default")
    ap.add_argument("--flag", action="store_true", help="a flag")
    ap.add_argument("--said", type=int, default=5, help="five (default: the fifth)")
    ap.add_argument("--plain", type=int, default=7, help="seven")
    blocks = {b.split()[0]: " ".join(b.split()) for b in re.split(r"\n  (?=-)", ap.format_help())[1:]}
    assert blocks["--unset"] == "--unset UNSET no default"
    assert blocks["--flag"] == "--flag a flag"
    assert blocks["--said"] == "--said SAID five (default: the fifth)"
    assert blocks["--plain"] == "--plain PLAIN seven (default: 7)"
