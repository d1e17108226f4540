"""The project's one GPU check: build the torch extensions, compare every kernel with its
reference, time them, run the gpu-marked tests, and write one compact report.

    python -m trt_neg.gpu_check [--out-dir benchmarks/gpu_check] [--quick] [--only neg,gdn]
                                [--skip pytest] [--budget 480]

Needs a CUDA GPU, a CUDA build of torch, nvcc and ninja (no TensorRT).  Without a GPU it
exits 3 with one line and does nothing else.  Sections (docs/gpu_check.md), each run in
its own Python process with a timeout, so a failure, a crash, a sticky CUDA error or a
hang in one is reported (with the compiler's or the traceback's tail) and the others
still run:

  1. machine  GPU, driver, CUDA, torch, memory; a device-to-device copy measures the
              bandwidth used for every floor below (floors are also given at 4.8 TB/s);
  2. neg      the fused NEG op (plugins/neg) vs trt_neg.neg: correctness, timing at
              V=248320 for N in {1,8,64,256} vs plain torch and the bandwidth floor, and
              the NEG-Head pass (GEMV and tensor-core tiles) vs a cuBLAS GEMM (+ torch
              tail) for N in {64,256,1024};
  3. gdn      the Gated DeltaNet kernel (plugins/gdn, torch extension) vs the CPU host
              library and the reference recurrence; context (T=1024) and generation
              (batch 1..256) timing vs the state-bytes floor;
  4. backend  the reference backend (TorchBackend) on CUDA vs CPU: greedy + NEG decode of
              the tiny checkpoint (fused NEG kernel path; fla dispatch when importable);
  5. pytest   ``pytest -m gpu -q tests/`` in a subprocess, summarised.

Writes ``report.txt``, ``report.json`` and the figure ``report.png`` to ``--out-dir``. Exit code: 0 when every
section passed or was skipped and one at least passed; 1 when one failed or could not run, or none ran;
2 for a usage error (an option, or an --out-dir / --out the reports cannot be written to, refused
before any section runs); 3 without a GPU.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from ..kernels import GDN_EXTENSION, NEG_EXTENSION
from .report import ERROR, SKIP, SectionResult, exit_code, format_report, report_json, tail, write_report

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT_DIR = ROOT / "benchmarks" / "gpu_check"  # the repository's (git-ignored), whatever the cwd
H200_BW = 4.8e12

# name, title, timeout cap (s), minimum kept in reserve for it while earlier sections run (s)
SECTIONS = (
    ("machine", "Machine and copy bandwidth", 90, 15),
    ("neg", "NEG fused kernel (plugins/neg) vs trt_neg.neg", 300, 60),
    ("gdn", "Gated DeltaNet kernel (plugins/gdn) vs host library / reference", 300, 60),
    ("backend", "Reference backend on CUDA vs CPU (tiny checkpoint)", 180, 45),
    ("pytest", "pytest -m gpu", 330, 60),
)
SECTION_NAMES = tuple(s[0] for s in SECTIONS)
TITLES = {s[0]: s[1] for s in SECTIONS}
# Popen arguments for a child that gets a process group of its own (one killpg ends it and its
# compilers) but stays in this session: whoever ends this command's session (a device call's
# time limit) ends it too, where a child in a new session would run on, holding the GPU.
NEW_PROCESS_GROUP = {"process_group": 0}
NO_GPU_MESSAGE = ("trt_neg.gpu_check: no CUDA GPU visible to torch (torch {torch}, cuda {cuda}); this check needs "
                  "a GPU machine with a CUDA build of torch, nvcc and ninja. Nothing was run.")


# --------------------------------------------------------------------------- child side
class SectionContext:
    """What a section's ``run(ctx)`` gets: a logger, a data dict for the JSON report."""

    def __init__(self, name: str, bandwidth: float | None, quick: bool, timeout: float):
        self.name = name
        self.bandwidth = bandwidth  # measured copy bandwidth (bytes/s, read + write) or None
        self.quick = quick
        self.deadline = time.time() + timeout
        self.lines: list[str] = []
        self.data: dict = {}
        self.summary = ""

    def log(self, s: str = "") -> None:
        line = "  " + s if s else ""
        print(line, flush=True)
        self.lines.append(line)

    def time_left(self) -> float:
        return self.deadline - time.time()

    def floors(self, nbytes: float) -> tuple[float | None, float]:
        """(us at the measured bandwidth or None, us at 4.8 TB/s) to move ``nbytes``."""
        meas = nbytes / self.bandwidth * 1e6 if self.bandwidth else None
        return meas, nbytes / H200_BW * 1e6


def run_section_here(name: str, bandwidth: float | None = None, quick: bool = False,
                     timeout: float = 300.0) -> SectionResult:
    """Runs one section in this process and returns its result (exceptions become ERROR)."""
    ctx = SectionContext(name, bandwidth, quick, timeout)
    res = SectionResult(name=name, title=TITLES.get(name, name))
    t0 = time.time()
    try:
        mod = importlib.import_module(f"{__name__}.sec_{name}")
        res.status = mod.run(ctx)
    except Exception as e:  # noqa: BLE001 - every failure is reported, never raised
        res.status = ERROR
        res.error = _describe_exception(e)
        ctx.summary = ctx.summary or f"{type(e).__name__}: {str(e).strip().splitlines()[0][:150] if str(e).strip() else ''}"
        print(tail(res.error), flush=True)
    res.seconds = time.time() - t0
    res.summary, res.lines, res.data = ctx.summary, ctx.lines, ctx.data
    return res


def _describe_exception(e: BaseException) -> str:
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    msg = str(e)
    # torch.utils.cpp_extension puts the compiler's output into the exception message.
    if "Error building extension" in msg or "error:" in msg:
        text += "\n-- compiler output (tail) --\n" + tail(msg, 60)
    return text


def _child_main(args) -> int:
    res = run_section_here(args.section, args.bandwidth, args.quick, args.timeout)
    Path(args.result).write_text(json.dumps(res.to_dict(), default=str))
    return 0


# --------------------------------------------------------------------------- parent side
class StopRequest:
    """Set by SIGTERM, SIGHUP or SIGINT while the sections run (a caller's time limit, a closed
    terminal, Ctrl-C): the running section is killed, the rest are not run, the report is written."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def __init__(self) -> None:
        self.reason: str | None = None

    def _set(self, signum, frame) -> None:
        self.reason = self.reason or f"stopped by {signal.Signals(signum).name}"

    @contextlib.contextmanager
    def on_signals(self):
        old = {s: signal.signal(s, self._set) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def _wait(proc: subprocess.Popen, timeout: float, stop: StopRequest | None) -> str | None:
    """Waits for ``proc``; "timeout" or "stop" (``proc`` still running) when one came first."""
    end = time.time() + timeout
    while True:
        if stop is not None and stop.reason:
            return "stop"
        left = end - time.time()
        if left <= 0:
            return "timeout"
        try:
            proc.wait(timeout=min(left, 0.2))
            return None
        except subprocess.TimeoutExpired:
            pass


def run_child(cmd: list[str], name: str, result_path: Path, timeout: float, echo=print,
              env: dict | None = None, cwd: str | Path | None = None, stop: StopRequest | None = None) -> SectionResult:
    """Runs ``cmd`` (a section child) with a timeout, echoing its output live; reads the
    result it wrote to ``result_path``.  A crash, a timeout, a ``stop`` or a missing result
    is an ERROR with the output's tail."""
    t0 = time.time()
    out_tail: collections.deque[str] = collections.deque(maxlen=200)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                bufsize=1, env=env, cwd=cwd, **NEW_PROCESS_GROUP)
    except OSError as e:
        return SectionResult(name=name, title=TITLES.get(name, name), status=ERROR, summary=f"could not start: {e}",
                             error=str(e))

    def pump():
        for line in proc.stdout:
            line = line.rstrip("\n")
            out_tail.append(line)
            echo(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    cut = _wait(proc, timeout, stop)
    if cut:
        _kill_group(proc)
    reader.join(timeout=5)
    seconds = time.time() - t0
    title = TITLES.get(name, name)
    if cut:
        why = f"timed out after {timeout:.0f} s" if cut == "timeout" else f"{stop.reason} after {seconds:.0f} s"
        return SectionResult(name=name, title=title, status=ERROR, seconds=seconds, summary=f"{why} (killed)",
                             lines=[ln for ln in list(out_tail)[-TAIL_KEEP:]], error="\n".join(out_tail))
    try:
        res = SectionResult.from_dict(json.loads(Path(result_path).read_text()))
    except (OSError, ValueError, TypeError) as e:
        return SectionResult(name=name, title=title, status=ERROR, seconds=seconds,
                             summary=f"section process exited with code {proc.returncode} and no result ({type(e).__name__})",
                             error="\n".join(out_tail))
    res.seconds = seconds
    return res


TAIL_KEEP = 30


KILL_GRACE_S = 3.0


def _kill_group(proc: subprocess.Popen) -> None:
    """Ends a child and its process group: SIGTERM first, which a section passes on to the process
    groups it started itself (section 5's pytest run), then SIGKILL for whatever is left (compilers)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=KILL_GRACE_S)
    except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if proc.poll() is None:
            proc.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _clear_stale_build_lock(ext_name: str) -> None:
    """A build killed mid-way leaves torch's baton ``lock`` behind; the next load would wait forever."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        lock = Path(_get_build_directory(ext_name, verbose=False)) / "lock"
        if lock.exists():
            lock.unlink()
    except Exception:  # noqa: BLE001 - best effort
        pass


def _child_env(capability: tuple[int, int] | None = None) -> dict:
    """The sections' environment. With the device's ``capability``, the torch extensions are built
    for that architecture alone: a TORCH_CUDA_ARCH_LIST set by the machine's image could name more
    (a slower build) or ones nvcc 13 no longer compiles (below 7.5), failing the whole check."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if capability is not None:
        arch = f"{capability[0]}.{capability[1]}"
        if env.get("TORCH_CUDA_ARCH_LIST", arch) != arch:
            print(f"TORCH_CUDA_ARCH_LIST={env['TORCH_CUDA_ARCH_LIST']} replaced by {arch} (this GPU) for the "
                  "extension builds", flush=True)
        env["TORCH_CUDA_ARCH_LIST"] = arch
    return env


# The shortest timeout a section is started with (a shorter one is SKIP): also the least --budget.
MIN_SECTION_SECONDS = 10.0


def _parse_names(ap: argparse.ArgumentParser, option: str, text: str | None) -> list[str]:
    if text is None:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:  # `--only ""` must not mean "everything"
        ap.error(f"{option} {text!r}: names no section; known: {', '.join(SECTION_NAMES)}")
    bad = [n for n in names if n not in SECTION_NAMES]
    if bad:
        ap.error(f"{option}: unknown section(s) {', '.join(bad)}; known: {', '.join(SECTION_NAMES)}")
    return names


def _check_outputs(ap: argparse.ArgumentParser, out_dir: str, out: str | None) -> None:
    """Refuse, before any section runs, an --out-dir or --out the reports could not be written to:
    the report is written only at the end, minutes of GPU time later. The folders are made here
    and written to once (``atomic_file.unwritable_reason``)."""
    from ..atomic_file import unwritable_reason

    for option, value, report_file in (("--out-dir", out_dir, Path(out_dir) / "report.txt"), ("--out", out, out)):
        reason = unwritable_reason(report_file, make_parents=True) if value else None
        if reason:
            ap.error(f"{option} {value}: the report cannot be written there: {reason}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m trt_neg.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="where report.txt, report.json and report.png go (default %(default)s)")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the text report to FILE (the option of the NEG-only check; prefer --out-dir)")
    ap.add_argument("--quick", action="store_true", help="fewer timing repetitions")
    ap.add_argument("--only", default=None, help=f"comma-separated sections to run ({','.join(SECTION_NAMES)})")
    ap.add_argument("--skip", default=None, help="comma-separated sections to skip")
    ap.add_argument("--budget", type=float, default=480.0,
                    help="wall-clock budget in seconds for all sections together (default %(default)s)")
    # internal: run one section in this process (used by the parent for each section)
    ap.add_argument("--section", choices=SECTION_NAMES, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--bandwidth", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=300.0, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    # The options are checked first: a typo is reported before (and on machines without) a GPU.
    only, skip = _parse_names(ap, "--only", args.only), _parse_names(ap, "--skip", args.skip)
    selected = [s for s in SECTIONS if (not only or s[0] in only) and s[0] not in skip]
    if args.section and not args.result:
        ap.error("--section (internal: one section in this process) needs --result FILE")
    if not args.section:
        if not (MIN_SECTION_SECONDS <= args.budget < float("inf")):
            ap.error(f"--budget {args.budget:g}: must be a number of seconds >= {MIN_SECTION_SECONDS:g} (the "
                     "shortest time a section is started with)")
        if not selected:
            ap.error(f"--only {args.only or ''} --skip {args.skip or ''}: no section left to run; known: "
                     f"{', '.join(SECTION_NAMES)}")
    import torch

    if not torch.cuda.is_available():
        print(NO_GPU_MESSAGE.format(torch=torch.__version__, cuda=torch.version.cuda), file=sys.stderr, flush=True)
        return 3
    if args.section:
        return _child_main(args)
    _check_outputs(ap, args.out_dir, args.out)

    t_start = time.time()
    deadline = t_start + args.budget
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"# trt-neg GPU check  {date}  (budget {args.budget:.0f} s)", flush=True)
    env = _child_env(torch.cuda.get_device_capability())
    argv_used = list(sys.argv[1:] if argv is None else argv)
    results: list[SectionResult] = []
    bandwidth = None
    stop = StopRequest()
    with stop.on_signals(), tempfile.TemporaryDirectory(prefix="trt_neg_gpu_check_") as tmp:
        prebuild = _start_prebuild(env, selected, Path(tmp) / "prebuild_gdn.log")
        for i, (name, title, cap, share) in enumerate(selected):
            if stop.reason:
                results.append(SectionResult(name=name, title=title, status=ERROR,
                                             summary=f"not run: the check was {stop.reason}"))
                continue
            # The later sections keep their minimum shares; where the budget left cannot hold them
            # all, this section keeps its own first (the sections run in order of importance), so
            # a short --budget drops the last sections, not the machine and NEG ones.
            left = deadline - time.time()
            reserve = sum(s[3] for s in selected[i + 1:])
            timeout = min(cap, max(left - reserve, share), left)
            if timeout < MIN_SECTION_SECONDS:
                results.append(SectionResult(name=name, title=title, status=SKIP,
                                             summary=f"not run: the --budget of {args.budget:.0f} s is spent"))
                print(f"\n== {title}: SKIP (budget spent)", flush=True)
                continue
            print(f"\n== {len(results) + 1}. {title}  (timeout {timeout:.0f} s)", flush=True)
            _write_progress(args.out_dir, date, selected, results, t_start, argv_used)
            result_path = Path(tmp) / f"{name}.json"
            cmd = [sys.executable, "-m", __name__, "--section", name, "--result", str(result_path),
                   "--timeout", str(max(5.0, timeout - 5))]
            if bandwidth:
                cmd += ["--bandwidth", repr(bandwidth)]
            if args.quick:
                cmd.append("--quick")
            res = run_child(cmd, name, result_path, timeout, env=env, cwd=ROOT, stop=stop)
            if res.status == ERROR and res.summary.endswith("(killed)"):
                if name in ("neg", "backend", "pytest"):  # pytest: test_neg_gpu builds it where neg did not
                    _clear_stale_build_lock(NEG_EXTENSION)
                if name == "gdn" and (prebuild is None or prebuild.poll() is not None):
                    _clear_stale_build_lock(GDN_EXTENSION)
            if name == "machine":
                bandwidth = res.data.get("copy_bandwidth_Bps") or None
            _print_quietly(f"-> {res.status} ({res.seconds:.1f} s) {res.summary}")
            results.append(res)
        if stop.reason:
            _kill_prebuild(prebuild)
        else:
            _finish_prebuild(prebuild)
    text, data = _compose(date, results, time.time() - t_start, argv_used)
    _print_quietly("\n" + text, end="")  # after a stop, the ``| tee`` may be gone: the files matter
    try:
        txt, js = write_report(args.out_dir, text, data)
        _print_quietly(f"report written to {txt} and {js}" + (f" ({stop.reason})" if stop.reason else ""))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text)
            print(f"text report also written to {args.out}", flush=True)
    except OSError as e:
        print(f"trt_neg.gpu_check: could not write the report: {e}", file=sys.stderr, flush=True)
        return 1
    _write_plot(Path(args.out_dir) / "report.png", data, drawn=not stop.reason)
    return exit_code(results)


def _write_plot(path: Path, data: dict, drawn: bool = True) -> None:
    """The timings as a figure (plot.py), after the reports. An earlier run's figure is removed
    first, so a figure is never older than the reports beside it; none is drawn after a stop
    (``drawn`` False). A plot that cannot be drawn (no matplotlib on the GPU machine, say) is
    reported and changes neither the reports nor the exit code."""
    try:
        path.unlink(missing_ok=True)
        if not drawn:
            return
        from .plot import plot_report

        if plot_report(data, path) is not None:
            _print_quietly(f"plot written to {path}")
    except Exception as e:  # noqa: BLE001 - the reports are written; the figure is extra
        _print_quietly(f"trt_neg.gpu_check: plot not written ({type(e).__name__}: {e})", file=sys.stderr)


def _compose(date: str, results: list[SectionResult], total: float, argv: list[str],
             note: str | None = None) -> tuple[str, dict]:
    """The report's text and JSON for ``results`` (``note``: an extra header line)."""
    machine = next((r.data for r in results if r.name == "machine"), {})
    header = [f"# trt-neg GPU check  {date}", "# " + machine.get("one_line", "machine: (machine section did not run)")]
    if note:
        header.append("# " + note)
    return format_report(header, results, total), report_json(header, machine, results, total, argv)


def _write_progress(out_dir, date: str, selected, results: list[SectionResult], t_start: float,
                    argv: list[str]) -> None:
    """The report as it stands when a section starts: if the check is killed outright (SIGKILL),
    this is what is left, naming the section that was running."""
    since = datetime.datetime.now().astimezone().strftime("%H:%M:%S")
    running, *later = selected[len(results):]
    pending = [SectionResult(name=running[0], title=running[1], status=ERROR,
                             summary=f"running when this report was written ({since}); nothing later came")]
    pending += [SectionResult(name=s[0], title=s[1], status=ERROR, summary="not reached when this report was written")
                for s in later]
    text, data = _compose(date, results + pending, time.time() - t_start, argv,
                          note=f"INCOMPLETE: written as section {len(results) + 1} of {len(selected)} started; "
                               "the check replaces it when it ends")
    try:
        write_report(out_dir, text, data)
    except OSError as e:
        _print_quietly(f"trt_neg.gpu_check: could not write the report: {e}", file=sys.stderr)


def _print_quietly(text: str, end: str = "\n", file=None) -> None:
    """Prints (to stdout, or ``file``) unless it is gone (a stopped command's ``| tee`` is
    killed with it)."""
    try:
        print(text, end=end, flush=True, file=file)
    except OSError:
        pass


def _start_prebuild(env: dict, selected, log_path: Path) -> subprocess.Popen | None:
    """Builds the GDN extension in the background while the first sections run (the NEG
    section builds its own); torch's build lock makes a later load wait for it.  Its output goes
    to ``log_path`` (the check's own temporary folder: the gdn section reports a failed build)."""
    if not any(s[0] == "gdn" for s in selected):
        return None
    try:
        with open(log_path, "w") as log:  # the build writes to its own copy of the descriptor
            return subprocess.Popen([sys.executable, "-c", "from trt_neg.kernels import cuda_ext; cuda_ext.load_gdn()"],
                                    stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, **NEW_PROCESS_GROUP)
    except OSError:
        return None


def _finish_prebuild(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        _kill_prebuild(proc)


def _kill_prebuild(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        _kill_group(proc)
        _clear_stale_build_lock(GDN_EXTENSION)
