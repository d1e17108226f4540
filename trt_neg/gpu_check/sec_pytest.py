"""Section 5: ``pytest -m gpu -q tests/`` in a subprocess with a timeout, summarised from
its JUnit XML (counts, failed test ids, and the output's tail when something failed)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from ..kernels import NEG_EXTENSION
from . import NEW_PROCESS_GROUP, _clear_stale_build_lock
from .report import ERROR, FAIL, PASS, SKIP, tail

ROOT = Path(__file__).resolve().parents[2]


def parse_junit(path: str | Path) -> dict:
    """Counts and the ids of failed/errored tests from a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out = dict(tests=0, passed=0, failed=0, errors=0, skipped=0, failed_ids=[], skip_reasons={})
    for s in suites:
        for case in s.iter("testcase"):
            out["tests"] += 1
            cid = f"{case.get('classname', '')}::{case.get('name', '')}"
            if case.find("failure") is not None:
                out["failed"] += 1
                out["failed_ids"].append(cid)
            elif case.find("error") is not None:
                out["errors"] += 1
                out["failed_ids"].append(cid)
            elif case.find("skipped") is not None:
                out["skipped"] += 1
                msg = (case.find("skipped").get("message") or "").strip()[:120]
                out["skip_reasons"][msg] = out["skip_reasons"].get(msg, 0) + 1
            else:
                out["passed"] += 1
    return out


@contextlib.contextmanager
def _passing_sigterm_to(proc: subprocess.Popen, tmp: str):
    """While pytest runs in its own process group, a SIGTERM to this section (the check stopping
    it) ends that group too, which would otherwise run on, holding the GPU.  The section then
    exits at once, so it removes its temporary folder ``tmp`` itself, and the build lock that
    the killed run may have held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        shutil.rmtree(tmp, ignore_errors=True)
        _clear_stale_build_lock(NEG_EXTENSION)  # test_neg_gpu builds it where the neg section did not
        os._exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(ctx) -> str:
    timeout = max(10.0, ctx.time_left() - 10)
    with tempfile.TemporaryDirectory(prefix="trt_neg_pytest_") as tmp:
        junit = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rfEs",
               f"--junitxml={junit}", "tests/"]
        ctx.log("$ " + " ".join(cmd[2:]) + f"  (timeout {timeout:.0f} s)")
        t0 = time.time()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", **NEW_PROCESS_GROUP)
        with _passing_sigterm_to(proc, tmp):
            try:
                out, _ = proc.communicate(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
                timed_out = True
                _clear_stale_build_lock(NEG_EXTENSION)
        secs = time.time() - t0
        ctx.data.update(returncode=proc.returncode, seconds=round(secs, 1), timed_out=timed_out)
        summary_line = next((ln for ln in reversed(out.strip().splitlines()) if " in " in ln and "=" not in ln[:1]),
                            out.strip().splitlines()[-1] if out.strip() else "")
        counts = parse_junit(junit) if junit.exists() else None
    ctx.data["counts"] = counts
    if counts:
        ctx.log(f"{counts['passed']} passed, {counts['failed']} failed, {counts['errors']} errors, "
                f"{counts['skipped']} skipped of {counts['tests']} collected gpu tests ({secs:.0f} s, rc {proc.returncode})")
        for cid in counts["failed_ids"]:
            ctx.log(f"  FAILED {cid}")
        for msg, n in counts["skip_reasons"].items():
            ctx.log(f"  skipped x{n}: {msg}")
    else:
        ctx.log(f"no JUnit report; pytest said: {summary_line}")
    if timed_out:
        ctx.log(tail(out, 20))
        ctx.summary = f"timed out after {timeout:.0f} s"
        return ERROR
    if proc.returncode == 5:
        ctx.summary = "no gpu tests collected"
        return SKIP
    if proc.returncode != 0:
        ctx.log("-- pytest output (tail) --")
        for ln in tail(out, 40).splitlines():
            ctx.log("| " + ln)
        # No failed test counted (a usage error, a crash): pytest's exit code says more than "0 failed".
        failed = counts["failed"] + counts["errors"] if counts else 0
        ctx.summary = f"{failed} failed/errors of {counts['tests']}" if failed else f"pytest rc {proc.returncode}"
        return FAIL
    ctx.summary = (f"{counts['passed']} passed, {counts['skipped']} skipped" if counts else summary_line)
    return PASS
