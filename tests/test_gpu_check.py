"""The GPU check's CPU-testable parts: the no-GPU exit, section isolation (a crash, a
timeout, an exception is reported and does not stop the others), the report text and
its JSON structure.  No GPU needed; fake section results stand in for real ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from trt_neg import gpu_check
from trt_neg.gpu_check import report
from trt_neg.gpu_check.report import ERROR, FAIL, PASS, SKIP, SectionResult

ROOT = Path(__file__).resolve().parents[1]


def fake_results() -> list[SectionResult]:
    return [
        SectionResult("machine", "Machine and copy bandwidth", PASS, 3.2, "NVIDIA H200, copy 4.30 TB/s",
                      ["  GPU      NVIDIA H200"], {"gpu": "NVIDIA H200", "copy_bandwidth_Bps": 4.3e12,
                                                   "one_line": "NVIDIA H200, driver 580, torch 2.11"}),
        SectionResult("neg", "NEG fused kernel", FAIL, 61.0, "correctness FAILED", ["  sample ... FAIL"],
                      {"correctness": False, "timing": [{"N": 1, "fused_gate5": 12.5}]}),
        SectionResult("gdn", "Gated DeltaNet kernel", ERROR, 20.0, "RuntimeError: Error building extension",
                      [], {}, "Traceback ...\nRuntimeError: Error building extension 'trt_neg_gdn_cuda'\n"
                              "gdnKernel.cu(12): error: identifier \"x\" is undefined"),
        SectionResult("pytest", "pytest -m gpu", SKIP, 0.0, "not run: the --budget of 60 s is spent"),
    ]


def test_no_gpu_exits_3_with_one_line_before_doing_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    assert gpu_check.main(["--out-dir", str(out)]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "Nothing was run" in lines[0]
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_no_gpu_command_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "trt_neg.gpu_check", "--out-dir", str(tmp_path / "x")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and not (tmp_path / "x").exists()
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1 and "no CUDA GPU" in r.stderr


def test_unknown_section_is_refused():
    ap = gpu_check.build_parser()
    with pytest.raises(SystemExit):
        gpu_check._parse_names(ap, "--only", "neg,bogus")
    assert gpu_check._parse_names(ap, "--only", " neg, gdn ") == ["neg", "gdn"]
    assert gpu_check._parse_names(ap, "--only", None) == []


def test_report_text_and_exit_code():
    res = fake_results()
    text = report.format_report(["# trt-neg GPU check  2026-01-01", "# NVIDIA H200"], res, 84.2)
    assert text.startswith("# trt-neg GPU check")
    assert "== 1. Machine and copy bandwidth [PASS] (3.2 s)" in text
    assert "== 2. NEG fused kernel [FAIL] (61.0 s)" in text
    assert "== 3. Gated DeltaNet kernel [ERROR]" in text
    assert "  | gdnKernel.cu(12): error: identifier \"x\" is undefined" in text  # compiler tail kept
    summary = text[text.index("== Summary"):].splitlines()
    assert summary[1].split()[:2] == ["PASS", "machine"]
    assert summary[4].split()[:2] == ["SKIP", "pytest"]
    assert summary[-1].strip() == "overall: FAIL in 84.2 s"
    assert report.exit_code(res) == 1
    assert report.exit_code([res[0], res[3]]) == 0  # PASS and SKIP are success
    assert report.exit_code([res[3]]) == 1 and report.overall([res[3]]).startswith("NOTHING CHECKED")
    with pytest.raises(ValueError):
        SectionResult("x", "x", "MAYBE")


def test_report_text_of_a_passing_run_is_exactly_this():
    """Every section's own lines (its tables) are in the text, a section built without a time
    (one skipped for the budget) shows 0.0 s, the summary's name column is as wide as the
    longest name (4 at least), and the last line says PASS."""
    res = [SectionResult("machine", "Machine and copy bandwidth", PASS, 3.2, "NVIDIA H200, copy 4.30 TB/s",
                         ["  GPU      NVIDIA H200", "  copy     2 GiB in 900 us"]),
           SectionResult("pytest", "pytest -m gpu", SKIP, summary="not run: the --budget of 60 s is spent")]
    assert report.format_report(["# trt-neg GPU check  2026-01-01", "# NVIDIA H200"], res, 12.34) == (
        "# trt-neg GPU check  2026-01-01\n"
        "# NVIDIA H200\n"
        "\n"
        "== 1. Machine and copy bandwidth [PASS] (3.2 s)\n"
        "  GPU      NVIDIA H200\n"
        "  copy     2 GiB in 900 us\n"
        "\n"
        "== 2. pytest -m gpu [SKIP] (0.0 s)\n"
        "\n"
        "== Summary\n"
        "  PASS  machine    3.2 s  NVIDIA H200, copy 4.30 TB/s\n"
        "  SKIP  pytest     0.0 s  not run: the --budget of 60 s is spent\n"
        "  overall: PASS in 12.3 s\n")
    short = [SectionResult("neg", "NEG", PASS, 1.0, "ok"), SectionResult("gdn", "GDN", PASS, 2.0, "ok")]
    assert report.format_report([], short, 3.0).split("== Summary\n")[1] == (
        "  PASS  neg     1.0 s  ok\n"
        "  PASS  gdn     2.0 s  ok\n"
        "  overall: PASS in 3.0 s\n")


def test_report_keeps_the_last_40_lines_of_a_sections_error():
    error = "\n".join(f"line {i}" for i in range(1, 46)) + "\n"
    res = [SectionResult("gdn", "GDN", ERROR, 5.0, "RuntimeError: boom", ["  started"], error=error)]
    lines = report.format_report(["#"], res, 5.0).splitlines()
    start = lines.index("  -- error (tail):")
    assert lines[start - 1] == "  started"
    assert lines[start + 1:start + 42] == [f"  | line {i}" for i in range(6, 46)] + [""]


def test_report_json_structure_and_files(tmp_path):
    res = fake_results()
    header = ["# trt-neg GPU check", "# NVIDIA H200"]
    data = report.report_json(header, res[0].data, res, 84.23456, ["--quick"])
    assert data["total_seconds"] == 84.235
    assert report.report_json(header, {}, res[:1], 1.0)["argv"] == []  # argv not given
    # write_report makes every folder it needs, not only the last one.
    txt, js = report.write_report(tmp_path / "benchmarks" / "gc", report.format_report(header, res, 84.2), data)
    assert txt.read_text().startswith("# trt-neg GPU check")
    loaded = json.loads(js.read_text())
    assert loaded["version"] == report.REPORT_VERSION and loaded["tool"] == "trt_neg.gpu_check"
    assert loaded["overall"] == "FAIL" and loaded["exit_code"] == 1 and loaded["argv"] == ["--quick"]
    assert loaded["machine"]["gpu"] == "NVIDIA H200"
    assert [s["name"] for s in loaded["sections"]] == ["machine", "neg", "gdn", "pytest"]
    for s in loaded["sections"]:
        assert set(s) == {"name", "title", "status", "seconds", "summary", "lines", "data", "error"}
        assert s["status"] in report.STATUSES
    assert loaded["sections"][1]["data"]["timing"][0]["fused_gate5"] == 12.5
    assert SectionResult.from_dict(loaded["sections"][2]) == res[2]  # round trip
    assert sorted(p.name for p in (tmp_path / "benchmarks" / "gc").iterdir()) == ["report.json", "report.txt"]


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_child_reads_the_result_and_echoes_output(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    res = SectionResult("neg", "NEG", PASS, summary="fine", lines=["  a"], data={"x": 1})
    code = f"import json; print('hello from the section'); open({str(path)!r}, 'w').write({json.dumps(json.dumps(res.to_dict()))})"
    seen = []
    reads = iter([1000.0])  # the clock says 1000.0 when the section starts, 1012.5 from then on
    monkeypatch.setattr(gpu_check, "time", types.SimpleNamespace(time=lambda: next(reads, 1012.5)))
    got = gpu_check.run_child(_child(code), "neg", path, timeout=60, echo=seen.append)
    assert got.status == PASS and got.data == {"x": 1} and got.summary == "fine"
    assert "hello from the section" in seen
    assert got.seconds == 12.5  # the wall time the parent measured, shown in the report (the child said 0.0)


def test_run_child_crash_is_an_error_with_the_output_tail(tmp_path):
    code = "import sys; print('compiling...'); print('Segmentation fault', flush=True); sys.exit(139)"
    got = gpu_check.run_child(_child(code), "gdn", tmp_path / "none.json", timeout=60, echo=lambda s: None)
    assert got.status == ERROR
    assert got.title == "Gated DeltaNet kernel (plugins/gdn) vs host library / reference"  # the report's heading
    assert "exited with code 139" in got.summary
    assert "Segmentation fault" in got.error


def test_a_section_that_cannot_start_is_an_error(tmp_path):
    got = gpu_check.run_child([str(tmp_path / "no-python"), "-m", "trt_neg.gpu_check"], "neg", tmp_path / "none.json",
                              timeout=60, echo=lambda s: None)
    assert (got.name, got.status) == ("neg", ERROR)
    assert got.summary == f"could not start: [Errno 2] No such file or directory: '{tmp_path / 'no-python'}'"


def test_run_child_timeout_kills_the_section(tmp_path):
    # A child that would sleep for 10 minutes: run_child returning at all shows it was killed.
    code = "import time; [print('line', i) for i in range(1, 46)]; print('started', flush=True); time.sleep(600)"
    got = gpu_check.run_child(_child(code), "backend", tmp_path / "none.json", timeout=2, echo=lambda s: None)
    assert got.status == ERROR and got.summary == "timed out after 2 s (killed)"
    # The report shows the output's last 30 lines; the error keeps all of it (its own tail is cut when printed).
    assert got.lines == [f"line {i}" for i in range(17, 46)] + ["started"]
    assert got.error.splitlines() == [f"line {i}" for i in range(1, 46)] + ["started"]


def test_a_sections_output_is_read_to_its_end_before_the_result(tmp_path):
    """The section has exited while its last lines are still being echoed (a slow terminal or
    ``| tee``): the error's tail must still hold them (the last lines are where a crash says why)."""
    code = "[print('line', i) for i in range(1, 9)]"
    seen = []

    def slow_echo(line):
        time.sleep(0.05)
        seen.append(line)

    got = gpu_check.run_child(_child(code), "gdn", tmp_path / "none.json", timeout=60, echo=slow_echo)
    assert got.summary == "section process exited with code 0 and no result (FileNotFoundError)"
    assert got.error.splitlines() == seen == [f"line {i}" for i in range(1, 9)]


class _SectionGroup:
    """A section's process group as os.killpg and its Popen see it; ``log`` records the signals that
    reached it and each wait's timeout. It ends on SIGTERM unless ``ignores_sigterm``, always on
    SIGKILL; with ``refused``, killpg raises PermissionError (a process of another user in it)."""

    pid = 4242

    def __init__(self, ignores_sigterm=False, refused=False):
        self.ignores_sigterm, self.refused = ignores_sigterm, refused
        self.running, self.log = True, []

    def killpg(self, pgid, signum):
        assert pgid == self.pid
        if self.refused:
            raise PermissionError(1, "Operation not permitted")
        if not self.running:
            raise ProcessLookupError(3, "No such process")
        self.log.append(signal.Signals(signum).name)
        self.running = self.ignores_sigterm and signum != signal.SIGKILL

    def wait(self, timeout=None):
        self.log.append(f"wait {timeout}")
        if self.running:
            raise subprocess.TimeoutExpired("section", timeout)
        return -signal.SIGKILL

    def poll(self):
        return None if self.running else -signal.SIGKILL

    def kill(self):
        self.log.append("kill")
        self.running = False


@pytest.mark.parametrize("behaviour, log", [
    ({}, ["SIGTERM", "wait 3.0", "wait 10"]),
    ({"ignores_sigterm": True}, ["SIGTERM", "wait 3.0", "SIGKILL", "wait 10"]),
    ({"refused": True}, ["kill", "wait 10"]),  # the section itself, at least
], ids=["ends on SIGTERM", "ignores SIGTERM", "killpg refused"])
def test_a_killed_section_gets_3_s_to_end_its_own_groups_then_its_group_is_killed(monkeypatch, behaviour, log):
    """SIGTERM first (section 5 passes it on to its pytest run's group), SIGKILL 3 s later for
    whatever is left (compilers), and the section is reaped before the next one starts."""
    group = _SectionGroup(**behaviour)
    monkeypatch.setattr(gpu_check.os, "killpg", group.killpg)
    gpu_check._kill_group(group)
    assert group.log == log and not group.running


class _EndingChild:
    """A section process that ends ``runs`` seconds into ``clock`` (a one-item list), as Popen.wait sees it."""

    def __init__(self, clock: list, runs: float):
        self.clock, self.ends = clock, clock[0] + runs

    def wait(self, timeout):
        if self.clock[0] + timeout >= self.ends:
            self.clock[0] = max(self.clock[0], self.ends)
            return 0
        self.clock[0] += timeout
        raise subprocess.TimeoutExpired("section", timeout)


def test_a_section_is_cut_at_its_timeout_not_before(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(gpu_check, "time", types.SimpleNamespace(time=lambda: clock[0]))
    assert gpu_check._wait(_EndingChild(clock, 9.5), 10.0, None) is None and clock == [1009.5]
    clock[0] = 1000.0
    assert gpu_check._wait(_EndingChild(clock, 10.5), 10.0, None) == "timeout"
    assert clock[0] == pytest.approx(1010.0)
    stop = gpu_check.StopRequest()
    stop.reason = "stopped by SIGTERM"
    assert gpu_check._wait(_EndingChild(clock, 5.0), 10.0, stop) == "stop"


def test_section_exception_becomes_error_with_traceback(monkeypatch, capsys):
    def boom(ctx):
        ctx.log("before the failure")
        ctx.data["partial"] = 1
        raise RuntimeError("Error building extension 'trt_neg_gdn_cuda': gdnKernel.cu(3): error: bad")

    monkeypatch.setitem(sys.modules, "trt_neg.gpu_check.sec_gdn", types.SimpleNamespace(run=boom))
    res = gpu_check.run_section_here("gdn", timeout=10)
    assert res.status == ERROR
    assert res.lines == ["  before the failure"] and res.data == {"partial": 1}
    assert "RuntimeError" in res.summary
    assert "compiler output" in res.error and "gdnKernel.cu(3): error: bad" in res.error
    # The child's output is the live log (and the tail kept if it is killed later): the error's tail is in it.
    assert capsys.readouterr().out == "  before the failure\n" + report.tail(res.error) + "\n"


def _raising(message: str, summary: str = ""):
    """A section module whose run() sets ``summary`` and raises RuntimeError(message)."""
    def run(ctx):
        ctx.summary = summary
        raise RuntimeError(message)

    return types.SimpleNamespace(run=run)


def test_a_sections_exception_summary_is_its_first_line_unless_the_section_wrote_one(monkeypatch):
    name = "trt_neg.gpu_check.sec_neg"
    monkeypatch.setitem(sys.modules, name, _raising("CUDA error: an illegal memory access\nsecond line"))
    assert gpu_check.run_section_here("neg").summary == "RuntimeError: CUDA error: an illegal memory access"
    monkeypatch.setitem(sys.modules, name, _raising("x" * 200))
    assert gpu_check.run_section_here("neg").summary == "RuntimeError: " + "x" * 150
    monkeypatch.setitem(sys.modules, name, _raising(""))
    assert gpu_check.run_section_here("neg").summary == "RuntimeError: "
    monkeypatch.setitem(sys.modules, name, _raising("boom", summary="correctness ok; timing failed"))
    assert gpu_check.run_section_here("neg").summary == "correctness ok; timing failed"


def test_the_compiler_output_tail_follows_a_build_error_only():
    nvcc = "\n".join(f"nvcc line {i}" for i in range(1, 71)) + "\nnegKernel.cu(7): error: expected a ';'"
    text = gpu_check._describe_exception(RuntimeError(nvcc))  # "error:" without torch's "Error building"
    assert text.endswith("-- compiler output (tail) --\n" + "\n".join(nvcc.splitlines()[-60:]))
    assert "compiler output" not in gpu_check._describe_exception(RuntimeError("CUDA out of memory"))
    ninja = "Error building extension 'trt_neg_cuda'\nFAILED: negKernel.cuda.o\nninja: build stopped: subcommand failed."
    assert gpu_check._describe_exception(RuntimeError(ninja)).endswith("-- compiler output (tail) --\n" + ninja)


def test_a_section_child_writes_its_result_for_the_parent(tmp_path, monkeypatch):
    """``--section NAME --result FILE`` (what the parent starts): the section runs in this process
    with the parent's --bandwidth, --quick and --timeout, and its result is written as JSON."""
    def run(ctx):
        ctx.log(f"bandwidth {ctx.bandwidth:g}, quick {ctx.quick}, {ctx.time_left():.0f} s left")
        ctx.data["x"] = 1
        ctx.summary = "fine"
        return PASS

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "trt_neg.gpu_check.sec_gdn", types.SimpleNamespace(run=run))
    result = tmp_path / "gdn.json"
    assert gpu_check.main(["--section", "gdn", "--result", str(result), "--bandwidth", "4.1e12", "--quick",
                           "--timeout", "120"]) == 0
    got = SectionResult.from_dict(json.loads(result.read_text()))
    assert (got.name, got.title, got.status, got.summary, got.data) == ("gdn", gpu_check.TITLES["gdn"], PASS, "fine",
                                                                       {"x": 1})
    assert got.lines == ["  bandwidth 4.1e+12, quick True, 120 s left"]


def test_section_context_floors():
    ctx = gpu_check.SectionContext("x", 4.0e12, quick=True, timeout=10)
    meas, at48 = ctx.floors(4.8e6)
    assert meas == pytest.approx(1.2) and at48 == pytest.approx(1.0)
    assert gpu_check.SectionContext("x", None, False, 10).floors(4.8e6) == (None, pytest.approx(1.0))


class _Clock:
    """torch.cuda's events and sync as a log of calls, and a flush buffer that logs its reads."""

    def __init__(self):
        self.log: list[str] = []
        self.now = 0.0
        clock = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing
                self.t = None

            def record(self):
                clock.log.append("record")
                self.t = clock.now

            def synchronize(self):
                clock.log.append("sync")

            def elapsed_time(self, other):  # ms, as torch's
                return other.t - self.t

        self.Event = Event

    def fn(self):
        self.log.append("fn")
        self.now += 0.004  # 4 us

    def sum(self):
        self.log.append("flush")

    def sleep(self, cycles):
        assert cycles >= 500_000  # longer than any timed call's host work
        self.log.append("hold")


def test_cuda_time_us_flushes_the_l2_before_each_timed_call_outside_the_events(monkeypatch):
    from trt_neg.gpu_check import common

    clock = _Clock()
    monkeypatch.setattr(torch.cuda, "Event", clock.Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: clock.log.append("device sync"))
    monkeypatch.setattr(torch.cuda, "_sleep", clock.sleep, raising=False)
    monkeypatch.setattr(common, "_l2_flush_buffer", lambda: clock)
    assert common.cuda_time_us(clock.fn, reps=3, warmup=2) == pytest.approx(4.0)
    # The GPU waits ahead of the start event, so the host's work for fn is never timed.
    timed = ["flush", "hold", "record", "fn", "record", "sync"]
    assert clock.log == ["fn", "fn", "device sync"] + timed * 3
    clock.log.clear()
    assert common.cuda_time_us(clock.fn, reps=2, warmup=1, cold_l2=False) == pytest.approx(4.0)
    assert clock.log == ["fn", "device sync"] + timed[1:] * 2
    clock.log.clear()
    assert common.cuda_time_us(clock.fn, reps=0, warmup=0) == pytest.approx(4.0)  # one timed call at least
    assert clock.log == ["device sync"] + timed


def test_cuda_time_us_is_the_median_of_an_even_count_too(monkeypatch):
    from trt_neg.gpu_check import common

    clock = _Clock()
    durations = iter([0.004, 0.004, 0.004, 0.006, 0.002, 0.008])  # ms: 3 warm-ups, then 6, 2, 8 us

    def fn():
        clock.now += next(durations)

    monkeypatch.setattr(torch.cuda, "Event", clock.Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "_sleep", clock.sleep, raising=False)
    monkeypatch.setattr(common, "_l2_flush_buffer", lambda: clock)
    assert common.cuda_time_us(fn, reps=3) == pytest.approx(6.0)
    durations = iter([0.004, 0.006, 0.002, 0.008, 0.010])  # 1 warm-up, then 6, 2, 8, 10 us
    assert common.cuda_time_us(fn, reps=4, warmup=1) == pytest.approx(7.0)  # (6 + 8) / 2, not 8


def test_the_l2_flush_reads_its_buffer_and_writes_nothing_into_it():
    # A written flush leaves dirty lines whose write-back the next timed call would pay.
    from trt_neg.gpu_check import common

    buffer = torch.arange(1 << 12, dtype=torch.int32)
    version = buffer._version  # torch counts every in-place write
    common._evict_l2(buffer)
    assert buffer._version == version
    assert torch.equal(buffer, torch.arange(1 << 12, dtype=torch.int32))


def test_l2_flush_size_covers_twice_the_l2_and_at_least_256_mib():
    from trt_neg.gpu_check import common

    assert common.l2_flush_bytes(60 * 2**20) == 256 * 2**20  # H200: 60 MiB L2
    assert common.l2_flush_bytes(0) == 256 * 2**20  # torch without L2_cache_size
    assert common.l2_flush_bytes(200 * 2**20) == 400 * 2**20


def test_the_flush_buffer_is_made_once_per_process_at_the_flush_size(monkeypatch):
    from _gpu_stand_ins import fake_h200

    from trt_neg.gpu_check import common

    fake_h200(monkeypatch.setattr)  # 60 MiB of L2
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(common, "DEVICE", "cpu")
    monkeypatch.setattr(common, "_flush_buffer", None)
    buffer = common._l2_flush_buffer()
    assert buffer.dtype == torch.int32 and buffer.numel() * 4 == 256 * 2**20 and not bool(buffer.any())
    assert common._l2_flush_buffer() is buffer
    # Twice the L2 where that is more than the minimum (a smaller minimum here, to keep it small).
    monkeypatch.setattr(common, "MIN_FLUSH_BYTES", 2**20)
    for l2, flushed in ((3 * 2**20, 6 * 2**20), (None, 2**20)):  # None: torch without the attribute's value
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: types.SimpleNamespace(L2_cache_size=l2))
        monkeypatch.setattr(common, "_flush_buffer", None)
        assert common._l2_flush_buffer().numel() * 4 == flushed


def test_the_timing_stand_in_takes_cuda_time_us_parameters():
    import inspect

    from trt_neg.gpu_check import common
    from _gpu_stand_ins import fake_time

    assert inspect.signature(fake_time) == inspect.signature(common.cuda_time_us)


def test_parse_junit(tmp_path):
    from trt_neg.gpu_check.sec_pytest import parse_junit

    xml = tmp_path / "j.xml"
    xml.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="4">'
        '<testcase classname="tests.test_a" name="test_ok"/>'
        '<testcase classname="tests.test_a" name="test_bad"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_b" name="test_err"><error message="y"/></testcase>'
        '<testcase classname="tests.test_b" name="test_skip"><skipped message="fla not importable"/></testcase>'
        "</testsuite></testsuites>")
    c = parse_junit(xml)
    assert (c["tests"], c["passed"], c["failed"], c["errors"], c["skipped"]) == (4, 1, 1, 1, 1)
    assert c["failed_ids"] == ["tests.test_a::test_bad", "tests.test_b::test_err"]
    assert c["skip_reasons"] == {"fla not importable": 1}


def test_every_section_module_imports_and_has_run():
    import importlib

    for name in gpu_check.SECTION_NAMES:
        mod = importlib.import_module(f"trt_neg.gpu_check.sec_{name}")
        assert callable(mod.run)


@pytest.mark.parametrize("args, message", [
    (["--only", "neg,bogus"], "--only: unknown section(s) bogus"),
    (["--skip", "nope"], "--skip: unknown section(s) nope"),
    (["--only", ""], "--only '': names no section"),  # it ran every section
    (["--only", ","], "--only ',': names no section"),
    (["--budget", "0"], "--budget 0: must be a number of seconds >= 10"),
    (["--budget", "-5"], "--budget -5: must be a number of seconds >= 10"),
    (["--budget", "inf"], "--budget inf: must be a number"),
    (["--budget", "1"], "--budget 1: must be a number of seconds >= 10"),  # every section SKIP, "PASS"
    (["--only", "neg", "--skip", "neg"], "--only neg --skip neg: no section left to run; known: machine, neg, gdn,"),
    (["--skip", "machine,neg,gdn,backend,pytest"], "--only  --skip machine,neg,gdn,backend,pytest: no section left"),
    (["--section", "machine"], "--section (internal: one section in this process) needs --result FILE"),
])
def test_options_are_checked_before_the_gpu(monkeypatch, capsys, args, message):
    """A typo in --only/--skip/--budget is a usage error (exit 2), reported first, also on a machine
    without a GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("the GPU was checked first"))
    with pytest.raises(SystemExit) as info:
        gpu_check.main(args)
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("where", ["a file", "under a file", "out is a directory"])
def test_outputs_that_cannot_be_written_are_refused_before_any_section(tmp_path, monkeypatch, capsys, where):
    """The report is written at the end, minutes of GPU time later: an --out-dir or --out it cannot be
    written to is refused first (the sections ran, then the report was lost)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "_start_prebuild", lambda *a: pytest.fail("a section started"))
    (tmp_path / "f").write_text("x")
    args = {"a file": ["--out-dir", str(tmp_path / "f")], "under a file": ["--out-dir", str(tmp_path / "f" / "gc")],
            "out is a directory": ["--out-dir", str(tmp_path / "gc"), "--out", str(tmp_path)]}[where]
    with pytest.raises(SystemExit) as info:
        gpu_check.main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and ("the report cannot be written there" in err or "is a directory" in err), err


def test_report_files_get_the_usual_permissions(tmp_path):
    import os

    res = fake_results()
    old = os.umask(0o022)
    try:
        txt, js = report.write_report(tmp_path / "gc", "text\n", report.report_json(["#"], {}, res, 1.0, []))
    finally:
        os.umask(old)
    assert txt.stat().st_mode & 0o777 == 0o644 and js.stat().st_mode & 0o777 == 0o644


def test_a_stop_names_the_first_signal_and_the_old_handlers_come_back():
    stop = gpu_check.StopRequest()
    before = {s: signal.getsignal(s) for s in stop.SIGNALS}
    with stop.on_signals():
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)  # the terminal closed, then a time limit
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
    assert stop.reason == "stopped by SIGHUP"
    assert {s: signal.getsignal(s) for s in stop.SIGNALS} == before


def test_sections_run_in_a_group_of_their_own_within_this_session(tmp_path):
    """killpg reaches a section and its compilers, and whoever ends this command's session (a
    device call's time limit) ends them too: a child in a new session would outlive it."""
    code = "import os; print('ids', os.getpid(), os.getpgid(0), os.getsid(0), flush=True)"
    seen = []
    gpu_check.run_child(_child(code), "machine", tmp_path / "none.json", timeout=60, echo=seen.append)
    pid, pgid, sid = (int(x) for x in next(s for s in seen if s.startswith("ids ")).split()[1:])
    assert pgid == pid
    assert sid == os.getsid(0)


# Pretends a GPU exists and makes every section hang (as a stuck build or kernel would); the
# section writes its pid to PID_FILE so that the test can see it killed.
HANGING_SECTIONS = '''
import os, sys, time, types
import torch
torch.cuda.is_available = lambda: True
torch.cuda.get_device_capability = lambda device=None: (9, 0)
if "--section" in sys.argv:
    def run(ctx):
        ctx.log("section started")
        with open(os.environ["PID_FILE"] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(os.environ["PID_FILE"] + ".tmp", os.environ["PID_FILE"])
        time.sleep(600)
    for name in ("machine", "neg", "gdn", "backend", "pytest"):
        sys.modules["trt_neg.gpu_check.sec_" + name] = types.SimpleNamespace(run=run)
'''


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float) -> None:
    end = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, f"gpu_check exited early with {proc.returncode}"
        assert time.time() < end, f"{path.name} did not appear in {seconds:.0f} s"
        time.sleep(0.2)


def _gone(pid: int, seconds: float = 15.0) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _stop_while_hanging(tmp_path: Path, sitecustomize: str, args: list[str], while_hanging, outlived: str) -> None:
    """Runs the check with ``sitecustomize`` (it fakes a GPU and makes a process hang, writing its
    pid to PID_FILE), calls ``while_hanging()``, sends SIGTERM, and asserts that the check exits 1
    and that the hanging process is gone, leaving nothing in the temporary folder."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(sitecustomize)
    pid_file = tmp_path / "hanging.pid"
    temp = tmp_path / "temp"
    temp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(fake), PID_FILE=str(pid_file), TMPDIR=str(temp))
    with open(tmp_path / "log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "trt_neg.gpu_check", *args], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    pid = None
    try:
        _wait_for(pid_file, proc, 120)
        pid = int(pid_file.read_text())
        while_hanging()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 1, (tmp_path / "log").read_text()
        assert _gone(pid), outlived
        assert sorted(p.name for p in temp.iterdir()) == [], "the stopped check left temporary files"
    finally:
        if proc.poll() is None:
            proc.kill()
        if pid is not None and not _gone(pid, 0.5):
            os.kill(pid, signal.SIGKILL)


def test_sigterm_kills_the_running_section_and_still_writes_the_report(tmp_path):
    """A device call's time limit sends SIGTERM: the running section is killed (not left holding the
    GPU), and the report says which section was stopped and which never ran.  A report is on disk
    from the start of each section, in case the kill is a SIGKILL."""
    out = tmp_path / "gc"

    def while_hanging():
        running = (out / "report.txt").read_text()
        assert "== 1. Machine and copy bandwidth [ERROR]" in running
        assert "running when this report was written" in running and "not reached" in running

    _stop_while_hanging(tmp_path, HANGING_SECTIONS, ["--out-dir", str(out), "--only", "machine,neg"], while_hanging,
                        "the running section outlived the stopped check")
    text = (out / "report.txt").read_text()
    assert "running when this report was written" not in text
    summary = text[text.index("== Summary"):].splitlines()
    assert summary[1].split()[:2] == ["ERROR", "machine"] and "stopped by SIGTERM" in summary[1]
    assert summary[2].split()[:2] == ["ERROR", "neg"] and "not run: the check was stopped" in summary[2]
    data = json.loads((out / "report.json").read_text())
    assert data["overall"] == "FAIL" and [s["status"] for s in data["sections"]] == [ERROR, ERROR]
    assert "section started" in "\n".join(data["sections"][0]["lines"])


def test_extensions_are_built_for_this_gpu_alone(monkeypatch, capsys):
    """An image's own TORCH_CUDA_ARCH_LIST (more or older architectures) is replaced, with a note."""
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.0;8.0;9.0+PTX")
    env = gpu_check._child_env((9, 0))
    assert env["TORCH_CUDA_ARCH_LIST"] == "9.0"
    assert "TORCH_CUDA_ARCH_LIST=7.0;8.0;9.0+PTX replaced by 9.0 (this GPU)" in capsys.readouterr().out
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    assert gpu_check._child_env((8, 9))["TORCH_CUDA_ARCH_LIST"] == "8.9" and capsys.readouterr().out == ""
    assert gpu_check._child_env()["PYTHONPATH"].split(os.pathsep)[0] == str(gpu_check.ROOT)
    # A section's output reaches the log as it is printed, and is in the tail kept when it is killed.
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    assert gpu_check._child_env()["PYTHONUNBUFFERED"] == "1"


# Pretends a GPU exists and makes section 5's pytest run hang (a stuck GPU test); the pytest
# process writes its pid to PID_FILE.
HANGING_PYTEST = '''
import os, sys, time
if sys.argv[1:3] == ["-m", "gpu"]:
    with open(os.environ["PID_FILE"] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(os.environ["PID_FILE"] + ".tmp", os.environ["PID_FILE"])
    time.sleep(600)
    sys.exit(0)
import torch
torch.cuda.is_available = lambda: True
torch.cuda.get_device_capability = lambda device=None: (9, 0)
'''


def test_sigterm_also_ends_the_pytest_run_of_section_5(tmp_path):
    """Section 5 runs pytest in a process group of its own (so that its timeout can end it and its
    children): a stopped check must end that group too, not leave it running on the GPU."""
    out = tmp_path / "gc"
    _stop_while_hanging(tmp_path, HANGING_PYTEST, ["--out-dir", str(out), "--only", "pytest"], lambda: None,
                        "section 5's pytest run outlived the stopped check")
    summary = (out / "report.txt").read_text().split("== Summary")[1].splitlines()
    assert summary[1].split()[:2] == ["ERROR", "pytest"] and "stopped by SIGTERM" in summary[1]


class _Prebuild:
    """The background GDN build: still running (``returncode`` None; it holds torch's build lock
    legitimately) or ended; one that ``hangs`` outlasts any wait. ``waited`` logs the waits' timeouts."""

    def __init__(self, returncode, hangs=False):
        self.returncode, self.hangs = returncode, hangs
        self.waited = []

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        self.waited.append(timeout)
        if self.hangs:
            raise subprocess.TimeoutExpired("prebuild", timeout)
        return 0


def _main_with_fake_sections(monkeypatch, tmp_path, args, outcomes, prebuild=None, stop_at=None):
    """gpu_check.main on a pretend GPU with a clock of its own: section NAME takes outcomes[NAME] =
    (seconds, status, summary) of that clock; the machine section measures 4.25 TB/s (its one-line
    summary "NVIDIA H200, copy 4.25 TB/s"); the check is stopped (as by SIGTERM) while section
    ``stop_at`` runs. Returns the exit code, each section started as (name, timeout, its command
    line from --timeout on), and the build locks cleared."""
    now = [1000.0]
    started, cleared = [], []

    def run_child(cmd, name, result_path, timeout, echo=print, env=None, cwd=None, stop=None):
        seconds, status, summary = outcomes[name]
        started.append((name, timeout, cmd[cmd.index("--timeout"):]))
        now[0] += seconds
        if name == stop_at:
            stop.reason = "stopped by SIGTERM"
        data = {"copy_bandwidth_Bps": 4.25e12, "one_line": "NVIDIA H200, copy 4.25 TB/s"} if name == "machine" else {}
        return SectionResult(name, gpu_check.TITLES[name], status, seconds, summary, data=data)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(gpu_check, "time", types.SimpleNamespace(time=lambda: now[0]))
    monkeypatch.setattr(gpu_check, "run_child", run_child)
    monkeypatch.setattr(gpu_check, "_start_prebuild", lambda *a: prebuild)
    monkeypatch.setattr(gpu_check, "_clear_stale_build_lock", cleared.append)
    argv = ["--out-dir", str(tmp_path / "gc"), *args]
    monkeypatch.setattr(sys, "argv", ["gpu_check", *argv])  # main() reads them, as ``python -m`` runs it
    return gpu_check.main(), started, cleared


def _figures_drawn(monkeypatch) -> list:
    """plot.plot_report as a stand-in that writes b"figure" to its path; returns the log of the
    (path, overall) it was asked to draw."""
    from trt_neg.gpu_check import plot

    drawn = []

    def plot_report(data, path):
        drawn.append((path, data["overall"]))
        path.write_bytes(b"figure")
        return path

    monkeypatch.setattr(plot, "plot_report", plot_report)
    return drawn


def test_each_section_gets_its_cap_less_what_the_later_ones_keep(tmp_path, monkeypatch, capsys):
    """The default --budget 480: each section's timeout is min(cap, budget left - the later sections'
    reserves); the child is told 5 s less, the machine's measured bandwidth and --quick."""
    durations = {"machine": 50, "neg": 200, "gdn": 100, "backend": 60, "pytest": 5}
    outcomes = {name: (seconds, PASS, f"{name} ok") for name, seconds in durations.items()}
    drawn = _figures_drawn(monkeypatch)
    code, started, cleared = _main_with_fake_sections(
        monkeypatch, tmp_path, ["--quick", "--out", str(tmp_path / "copy.txt")], outcomes)
    assert code == 0 and cleared == []
    assert drawn == [(tmp_path / "gc" / "report.png", "PASS")]
    bandwidth = ["--bandwidth", "4250000000000.0"]
    assert started == [("machine", 90, ["--timeout", "85", "--quick"]),  # 480 - 225 reserved: the cap
                       ("neg", 265.0, ["--timeout", "260.0", *bandwidth, "--quick"]),  # 480 - 50 - 165
                       ("gdn", 125.0, ["--timeout", "120.0", *bandwidth, "--quick"]),  # 480 - 250 - 105
                       ("backend", 70.0, ["--timeout", "65.0", *bandwidth, "--quick"]),  # 480 - 350 - 60
                       ("pytest", 70.0, ["--timeout", "65.0", *bandwidth, "--quick"])]  # 480 - 410
    text = (tmp_path / "gc" / "report.txt").read_text()
    assert "# INCOMPLETE" not in text and text.endswith("  overall: PASS in 415.0 s\n")
    assert text.splitlines()[1] == "# NVIDIA H200, copy 4.25 TB/s"  # the machine section's one line heads the report
    assert (tmp_path / "copy.txt").read_text() == text
    assert json.loads((tmp_path / "gc" / "report.json").read_text())["argv"] == [
        "--out-dir", str(tmp_path / "gc"), "--quick", "--out", str(tmp_path / "copy.txt")]
    out = capsys.readouterr().out
    gc = tmp_path / "gc"
    assert out.endswith("\n" + text + f"report written to {gc / 'report.txt'} and {gc / 'report.json'}\n"
                        f"text report also written to {tmp_path / 'copy.txt'}\nplot written to {gc / 'report.png'}\n")
    assert "\n== 1. Machine and copy bandwidth  (timeout 90 s)\n" in out and "-> PASS (200.0 s) neg ok\n" in out


def test_a_short_budget_drops_the_last_sections_and_killed_builds_lose_their_lock(tmp_path, monkeypatch, capsys):
    """--budget 150 cannot hold every section's minimum share (neg 60, gdn 60, backend 45, pytest
    60): each section in turn still gets its own share, and the last ones are dropped."""
    outcomes = {"neg": (60, ERROR, "timed out after 55 s (killed)"), "gdn": (60, PASS, "gdn ok"),
                "backend": (30, ERROR, "timed out after 25 s (killed)")}
    code, started, cleared = _main_with_fake_sections(monkeypatch, tmp_path, ["--skip", "machine", "--budget", "150"],
                                                      outcomes)
    assert code == 1
    # No machine section: no measured bandwidth to pass on. Backend gets the 30 s left, pytest none.
    assert started == [("neg", 60, ["--timeout", "55"]), ("gdn", 60, ["--timeout", "55"]),
                       ("backend", 30.0, ["--timeout", "25.0"])]
    assert cleared == ["trt_neg_cuda", "trt_neg_cuda"]  # the NEG extension, built by neg and by backend
    data = json.loads((tmp_path / "gc" / "report.json").read_text())
    assert [(s["name"], s["status"]) for s in data["sections"]] == [("neg", ERROR), ("gdn", PASS), ("backend", ERROR),
                                                                    ("pytest", SKIP)]
    assert data["header"][1] == "# machine: (machine section did not run)" and data["machine"] == {}
    assert data["sections"][3]["summary"] == "not run: the --budget of 150 s is spent"
    assert "\n== pytest -m gpu: SKIP (budget spent)\n" in capsys.readouterr().out
    # The machine section is never the one dropped: at --budget 100 it runs (its 15 s share), then neg.
    code, started, _ = _main_with_fake_sections(monkeypatch, tmp_path, ["--budget", "100"],
                                                {"machine": (10, PASS, "ok"), "neg": (60, PASS, "ok"),
                                                 "gdn": (30, PASS, "ok")})
    assert [(name, timeout) for name, timeout, _ in started] == [("machine", 15), ("neg", 60), ("gdn", 30.0)]
    # A killed gdn section's lock is cleared unless the background build still runs (and holds it).
    outcomes = {"gdn": (30, ERROR, "timed out after 30 s (killed)")}
    assert _main_with_fake_sections(monkeypatch, tmp_path, ["--only", "gdn"], outcomes)[2] == ["trt_neg_gdn_cuda"]
    assert _main_with_fake_sections(monkeypatch, tmp_path, ["--only", "gdn"], outcomes, _Prebuild(None))[2] == []
    assert _main_with_fake_sections(monkeypatch, tmp_path, ["--only", "gdn"], outcomes, _Prebuild(0))[2] == [
        "trt_neg_gdn_cuda"]
    outcomes = {"pytest": (30, ERROR, "stopped by SIGTERM after 30 s (killed)")}  # its run may build NEG's
    assert _main_with_fake_sections(monkeypatch, tmp_path, ["--only", "pytest"], outcomes)[2] == ["trt_neg_cuda"]
    outcomes = {"gdn": (30, ERROR, "RuntimeError: Error building extension")}  # failed, not killed: no lock left
    assert _main_with_fake_sections(monkeypatch, tmp_path, ["--only", "gdn"], outcomes)[2] == []


def test_with_budget_to_spare_each_section_gets_its_documented_cap(tmp_path, monkeypatch):
    outcomes = {name: (1, PASS, "ok") for name in gpu_check.SECTION_NAMES}
    code, started, _ = _main_with_fake_sections(monkeypatch, tmp_path, ["--budget", "10000"], outcomes)
    assert code == 0
    assert [(name, timeout) for name, timeout, _ in started] == [("machine", 90), ("neg", 300), ("gdn", 300),
                                                                 ("backend", 180), ("pytest", 330)]


def test_the_least_budget_runs_one_section_for_exactly_10_s(tmp_path, monkeypatch, capsys):
    """--budget 10 is the documented least (a budget under 10 s is the usage error): the section is
    started with its 10 s, not SKIPped, and its child is told 5 s."""
    code, started, _ = _main_with_fake_sections(monkeypatch, tmp_path, ["--only", "neg", "--budget", "10"],
                                                {"neg": (10, PASS, "ok")})
    assert code == 0 and started == [("neg", 10.0, ["--timeout", "5.0"])]
    out = capsys.readouterr().out
    assert out.startswith("# trt-neg GPU check  ") and out.splitlines()[0].endswith("  (budget 10 s)")


def test_a_stopped_check_ends_the_background_gdn_build_and_clears_its_lock(tmp_path, monkeypatch, capsys):
    ended = []
    monkeypatch.setattr(gpu_check, "_kill_group", ended.append)
    building = _Prebuild(None)
    drawn = _figures_drawn(monkeypatch)
    (tmp_path / "gc").mkdir()
    (tmp_path / "gc" / "report.png").write_bytes(b"an earlier run's figure")
    outcomes = {"machine": (5, ERROR, "stopped by SIGTERM after 5 s (killed)")}
    code, started, cleared = _main_with_fake_sections(monkeypatch, tmp_path, ["--only", "machine,gdn"], outcomes,
                                                      building, stop_at="machine")
    assert code == 1 and [name for name, _, _ in started] == ["machine"]
    assert ended == [building] and building.waited == [] and cleared == ["trt_neg_gdn_cuda"]
    assert drawn == [] and not (tmp_path / "gc" / "report.png").exists()  # no figure, and none left older
    gc = tmp_path / "gc"
    data = json.loads((gc / "report.json").read_text())
    assert [(s["name"], s["status"], s["summary"]) for s in data["sections"]] == [
        ("machine", ERROR, "stopped by SIGTERM after 5 s (killed)"),
        ("gdn", ERROR, "not run: the check was stopped by SIGTERM")]
    assert f"report written to {gc / 'report.txt'} and {gc / 'report.json'} (stopped by SIGTERM)\n" in \
        capsys.readouterr().out


@pytest.mark.parametrize("hangs", [False, True])
def test_a_finished_check_waits_30_s_for_the_background_build_then_ends_it(tmp_path, monkeypatch, hangs):
    ended = []
    monkeypatch.setattr(gpu_check, "_kill_group", ended.append)
    building = _Prebuild(None, hangs=hangs)
    code, _, cleared = _main_with_fake_sections(monkeypatch, tmp_path, ["--only", "gdn"], {"gdn": (5, PASS, "ok")},
                                                building)
    assert code == 0 and building.waited == [30]
    assert (ended, cleared) == (([building], ["trt_neg_gdn_cuda"]) if hangs else ([], []))


def test_a_report_that_cannot_be_written_at_the_end_exits_1(tmp_path, monkeypatch, capsys):
    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gpu_check, "write_report", full)
    assert _main_with_fake_sections(monkeypatch, tmp_path, ["--only", "neg"], {"neg": (5, PASS, "ok")})[0] == 1
    assert "trt_neg.gpu_check: could not write the report: [Errno 28] No space left on device" in capsys.readouterr().err


def test_the_default_report_folder_is_the_repositorys_whatever_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Path(gpu_check.build_parser().parse_args([]).out_dir) == ROOT / "benchmarks" / "gpu_check"


def test_a_stopped_check_leaves_a_finished_background_build_alone(tmp_path, monkeypatch):
    """A build that has ended holds no lock, and its process id may be another process's by now:
    no signal is sent to it."""
    ended = []
    monkeypatch.setattr(gpu_check, "_kill_group", ended.append)
    outcomes = {"machine": (5, ERROR, "stopped by SIGTERM after 5 s (killed)")}
    code, _, cleared = _main_with_fake_sections(monkeypatch, tmp_path, ["--only", "machine,gdn"], outcomes,
                                                _Prebuild(0), stop_at="machine")
    assert (code, ended, cleared) == (1, [], [])


def test_a_killed_builds_lock_is_removed_and_nothing_else(tmp_path, monkeypatch, capsys):
    """A build killed mid-way leaves torch's ``lock`` in its extension's build folder, and the next
    load of that extension (a later section, the next run) would wait for it forever: that lock
    goes; the folder's other files and another extension's lock stay."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    for ext in ("trt_neg_gdn_cuda", "trt_neg_cuda"):
        (tmp_path / ext).mkdir()
        (tmp_path / ext / "lock").write_text("")
        (tmp_path / ext / "build.ninja").write_text("rule cxx\n")
    gpu_check._clear_stale_build_lock("trt_neg_gdn_cuda")
    assert sorted(p.name for p in (tmp_path / "trt_neg_gdn_cuda").iterdir()) == ["build.ninja"]
    assert sorted(p.name for p in (tmp_path / "trt_neg_cuda").iterdir()) == ["build.ninja", "lock"]
    gpu_check._clear_stale_build_lock("trt_neg_gdn_cuda")  # no lock left: nothing to do
    assert capsys.readouterr() == ("", "")


def test_the_report_written_as_a_section_starts_names_it_running_and_the_later_ones_not_reached(tmp_path,
                                                                                                monkeypatch):
    """What a SIGKILL leaves: the sections done, the one running, the ones never reached."""
    monkeypatch.setattr(gpu_check, "time", types.SimpleNamespace(time=lambda: 1042.0))
    done = [SectionResult("machine", gpu_check.TITLES["machine"], PASS, 3.0, "ok", data={"one_line": "NVIDIA H200"})]
    gc = tmp_path / "gc"
    gpu_check._write_progress(gc, "2026-11-30T07:00:00+00:00", gpu_check.SECTIONS[:4], done, 1000.0, ["--quick"])
    data = json.loads((gc / "report.json").read_text())
    assert data["header"] == ["# trt-neg GPU check  2026-11-30T07:00:00+00:00", "# NVIDIA H200",
                              "# INCOMPLETE: written as section 2 of 4 started; the check replaces it when it ends"]
    assert (gc / "report.txt").read_text().startswith("\n".join(data["header"]) + "\n\n== 1. ")
    assert [(s["name"], s["title"], s["status"]) for s in data["sections"]] == [
        ("machine", "Machine and copy bandwidth", PASS), ("neg", "NEG fused kernel (plugins/neg) vs trt_neg.neg", ERROR),
        ("gdn", "Gated DeltaNet kernel (plugins/gdn) vs host library / reference", ERROR),
        ("backend", "Reference backend on CUDA vs CPU (tiny checkpoint)", ERROR)]
    running = data["sections"][1]["summary"]
    assert running.startswith("running when this report was written (") and running.endswith("); nothing later came")
    time.strptime(running.split("(")[1].split(")")[0], "%H:%M:%S")  # when it started, as HH:MM:SS
    assert [s["summary"] for s in data["sections"][2:]] == ["not reached when this report was written"] * 2
    assert (data["total_seconds"], data["argv"], data["overall"]) == (42.0, ["--quick"], "FAIL")


def test_a_progress_report_that_cannot_be_written_is_reported_and_the_check_goes_on(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    gpu_check._write_progress(tmp_path / "f", "2026-11-30", gpu_check.SECTIONS[:1], [], 0.0, [])
    assert capsys.readouterr() == ("", f"trt_neg.gpu_check: could not write the report: [Errno 17] File exists: "
                                       f"'{tmp_path / 'f'}'\n")  # on stderr, as at the end


@pytest.mark.skipif(torch.cuda.is_available(), reason="it would build the GDN extension")
def test_the_gdn_extension_is_built_in_the_background_only_for_a_gdn_section(tmp_path):
    """The build's output goes to its log, which the gdn section reports; without a GPU the build
    stops at once with that reason."""
    log = tmp_path / "prebuild_gdn.log"
    assert gpu_check._start_prebuild(dict(os.environ), gpu_check.SECTIONS[:2], log) is None and not log.exists()
    gdn = [s for s in gpu_check.SECTIONS if s[0] == "gdn"]
    proc = gpu_check._start_prebuild(gpu_check._child_env(), gdn, log)
    # The check holds no descriptor of the log for the rest of its run: the build has its own.
    assert str(log) not in {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert proc.wait(timeout=120) == 1
    assert log.read_text().splitlines()[-1] == ("RuntimeError: trt_neg_gdn_cuda: needs a CUDA build of torch and a "
                                                 "visible GPU")
