"""Section results and the report (text + JSON).  Plain Python: no torch, no CUDA."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_file import atomic_write_text

# A section's status.  PASS and SKIP count as success; FAIL (a check disagreed) and ERROR
# (the section could not run: exception, build failure, crash, timeout) make the exit code 1.
PASS, FAIL, SKIP, ERROR = "PASS", "FAIL", "SKIP", "ERROR"
STATUSES = (PASS, FAIL, SKIP, ERROR)
REPORT_VERSION = 1
TAIL_LINES = 40


@dataclass
class SectionResult:
    name: str
    title: str
    status: str = ERROR
    seconds: float = 0.0
    summary: str = ""  # one line for the summary table
    lines: list[str] = field(default_factory=list)  # the section's report lines
    data: dict[str, Any] = field(default_factory=dict)  # measurements, for the JSON report
    error: str | None = None  # exception / compiler / crash tail

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: must be one of {', '.join(STATUSES)}, got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status in (PASS, SKIP)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SectionResult":
        known = {k: d[k] for k in ("name", "title", "status", "seconds", "summary", "lines", "data", "error") if k in d}
        return cls(**known)


def tail(text: str, n: int = TAIL_LINES) -> str:
    lines = [ln for ln in str(text).rstrip().splitlines()]
    return "\n".join(lines[-n:])


def exit_code(results: list[SectionResult]) -> int:
    """0 when every section passed or was skipped and one at least passed (a run where every section
    was skipped, say for want of --budget, checked nothing), else 1."""
    return 0 if all(r.ok for r in results) and any(r.status == PASS for r in results) else 1


def overall(results: list[SectionResult]) -> str:
    if exit_code(results) == 0:
        return "PASS"
    return "FAIL" if not all(r.ok for r in results) else "NOTHING CHECKED (every section was skipped)"


def format_report(header: list[str], results: list[SectionResult], total_seconds: float) -> str:
    out = list(header)
    for i, r in enumerate(results, 1):
        out.append("")
        out.append(f"== {i}. {r.title} [{r.status}] ({r.seconds:.1f} s)")
        out.extend(r.lines)
        if r.error:
            out.append("  -- error (tail):")
            out.extend("  | " + ln for ln in tail(r.error).splitlines())
    out.append("")
    out.append("== Summary")
    width = max([len(r.name) for r in results] + [4])
    for r in results:
        out.append(f"  {r.status:5s} {r.name:{width}s} {r.seconds:6.1f} s  {r.summary}")
    out.append(f"  overall: {overall(results)} in {total_seconds:.1f} s")
    return "\n".join(out) + "\n"


def report_json(header: list[str], machine: dict[str, Any], results: list[SectionResult], total_seconds: float,
                argv: list[str] | None = None) -> dict[str, Any]:
    return {
        "version": REPORT_VERSION,
        "tool": "trt_neg.gpu_check",
        "argv": list(argv or []),
        "header": list(header),
        "machine": dict(machine),
        "overall": overall(results),
        "exit_code": exit_code(results),
        "total_seconds": round(total_seconds, 3),
        "sections": [r.to_dict() for r in results],
    }


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it into place (never half a report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def write_report(out_dir: str | Path, text: str, data: dict[str, Any]) -> tuple[Path, Path]:
    """Writes ``report.txt`` and ``report.json`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    txt, js = out / "report.txt", out / "report.json"
    _atomic_write(txt, text)
    _atomic_write(js, json.dumps(data, indent=1, default=str) + "\n")
    return txt, js
