"""The GPU check's timings as a figure, ``report.png`` beside ``report.txt`` / ``report.json``.

One log-log panel per timing table the sections produced: the NEG step against N (the fused
kernel's automatic plan and one block per row, plain torch, and the memory-bandwidth floors),
the NEG-Head at large N (GEMV, tensor-core tiles, cuBLAS + torch tail), and the Gated DeltaNet
kernel's generation and context phases against the batch.  Sections that did not run, or
failed before timing, add no panel.  :func:`panels` is the data (tested on the CPU);
:func:`plot_report` draws it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..figure import pyplot, save_png


@dataclass
class Series:
    label: str
    xs: list[float]
    ys: list[float]
    style: str = "-"  # matplotlib line style: the floors are dashed / dotted


@dataclass
class Panel:
    title: str
    xlabel: str
    series: list[Series] = field(default_factory=list)


# (key in a timing row, legend label, line style) per panel; a key missing or None in every
# row draws no line (the measured floor without a machine section, fla where it is absent).
# Every panel ends with the bandwidth floors.
_FLOORS = [("floor_measured", "floor at the measured copy bandwidth", ":"),
           ("floor_4p8", "floor at 4.8 TB/s", "--")]
_NEG_STEP = [("fused_gate5", "fused kernel (automatic plan)", "-"),
             ("fused1_gate5", "fused kernel, one block per row", "-"),
             ("fused_warm_gate5", "fused kernel, L2 left warm", "-"),
             ("torch_gate5", "plain torch", "-"), *_FLOORS,
             ("floor_logits_read_4p8", "logits read alone at 4.8 TB/s", "-.")]
_NEG_HEAD = [("kernel_head", "GEMV (default)", "-"),
             ("mma_head", "tensor-core tiles (opt-in)", "-"),
             ("cublas_plus_tail", "cuBLAS GEMM + torch tail", "-"), *_FLOORS]
_GDN_GENERATION = [("kernel_us", "kernel", "-"),
                   ("torch_recurrent_fp32_us", "torch recurrence (fp32)", "-"), *_FLOORS]
_GDN_CONTEXT = [("kernel_us", "kernel", "-"),
                ("torch_chunk_fp32_us", "torch chunked (fp32)", "-"),
                ("fla_us", "flash-linear-attention", "-"), *_FLOORS]


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _series(rows: list[dict], x: str, columns) -> list[Series]:
    out = []
    for key, label, style in columns:
        points = [(r[x], r[key]) for r in rows if _number(r.get(x)) and _number(r.get(key))]
        if points:
            out.append(Series(label, [p[0] for p in points], [p[1] for p in points], style))
    return out


def panels(data: dict[str, Any]) -> list[Panel]:
    """The figure's panels from a report's JSON (:func:`report.report_json`)."""
    by_name = {s.get("name"): (s.get("data") or {}) for s in data.get("sections", [])}
    out = []
    neg, gdn = by_name.get("neg", {}), by_name.get("gdn", {}).get("timing") or {}
    tables = [(neg.get("timing"), "NEG step: head + gate + sampling + guided logits (gate at the batch's p95 H_hat)", "N (rows)",
               "N", _NEG_STEP),
              (neg.get("head_vs_cublas"), "NEG-Head alone at large N", "N (rows)", "N", _NEG_HEAD),
              (gdn.get("generation"), "Gated DeltaNet generation step (9B head config)", "batch", "B",
               _GDN_GENERATION),
              (gdn.get("context"), "Gated DeltaNet context phase (9B head config)", "batch", "B", _GDN_CONTEXT)]
    for rows, title, xlabel, x, columns in tables:
        series = _series(rows or [], x, columns)
        if series:
            out.append(Panel(title, xlabel, series))
    return out


def plot_report(data: dict[str, Any], path: str | Path) -> Path | None:
    """Draw :func:`panels` into the PNG ``path`` (written whole or not at all); None, and no
    file, when no section produced a timing table."""
    drawn = panels(data)
    if not drawn:
        return None
    plt = pyplot()
    cols = 2 if len(drawn) > 1 else 1
    rows = math.ceil(len(drawn) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.6 * rows), constrained_layout=True, squeeze=False)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax, panel in zip(axes.flat, drawn):
        for s in panel.series:  # floors marked too: a one-point table still shows them
            ax.plot(s.xs, s.ys, s.style, marker="o" if s.style == "-" else "x", markersize=5, label=s.label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted({x for s in panel.series for x in s.xs}))  # the measured N / B, as numbers
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel("time per call (us)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(drawn):]:
        ax.set_visible(False)
    header = data.get("header") or []
    if header:
        fig.suptitle("  ".join(h.lstrip("# ") for h in header), fontsize=10)
    return save_png(fig, path)
