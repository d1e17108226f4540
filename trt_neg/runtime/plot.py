"""One PNG of a run's results: the gate at work and the latency distribution.

``run.py --plot FILE`` writes it next to (or instead of) the ``--json`` lines:

1. **Gate**: every request's predicted entropy H_hat per generated token, the gate threshold
   tau as a horizontal line (when known), and the tokens where NEG fired marked;
2. **Gate activation** per request (fired tokens / generated tokens; "off" for a NEG-off, mode-0,
   request) and over the NEG-on requests' tokens;
3. **Latency**: the distribution of inter-token latencies of all requests (histogram, p50 /
   p90 / p99 marked) with every request's TTFT as a tick on the same axis.

matplotlib is imported when a plot is drawn, with the Agg backend (:mod:`trt_neg.figure`);
the file is written to a temporary name and renamed into place, so a failed run leaves no
half image.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..figure import pyplot, save_png
from .request import RequestResult


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q))


def latency_summary(results: Sequence[RequestResult]) -> dict[str, float | None]:
    """p50/p90/p99 of inter-token latencies and of TTFT over ``results``, in milliseconds."""
    tokens = [x * 1e3 for r in results for x in r.token_latencies]
    ttft = [r.ttft * 1e3 for r in results if r.ttft is not None]
    out: dict[str, float | None] = {}
    for name, values in (("token", tokens), ("ttft", ttft)):
        for q in (50, 90, 99):
            out[f"{name}_p{q}_ms"] = _percentile(values, q) if values else None
    return out


def overall_gate_activation(results: Sequence[RequestResult]) -> float | None:
    """Fired steps / decoded steps over the requests NEG ran on (mode 0 requests left out); None if none did."""
    neg_on = [r for r in results if r.neg_mode != 0]
    if not neg_on:
        return None
    decoded = sum(len(r.fired) for r in neg_on)
    return sum(sum(r.fired) for r in neg_on) / decoded if decoded else 0.0


def plot_results(results: Sequence[RequestResult], labels: Sequence[str], path: str | os.PathLike[str], *,
                 threshold: float | None = None, title: str = "") -> Path:
    """Write the three-panel PNG for ``results`` (one label each) to ``path``; returns the path."""
    if len(labels) != len(results):
        raise ValueError(f"plot_results: {len(results)} results but {len(labels)} labels")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plot: {path}: the plot is a PNG file; name it *.png")
    fig, (ax_gate, ax_rate, ax_lat) = pyplot().subplots(3, 1, figsize=(10, 11), constrained_layout=True)
    _gate_panel(ax_gate, results, labels, threshold)
    _rate_panel(ax_rate, results, labels)
    _latency_panel(ax_lat, results)
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


def _gate_panel(ax, results, labels, threshold) -> None:
    many = len(results) > 10  # a legend of more than 10 entries hides the plot
    for r, label in zip(results, labels):
        steps = range(len(r.entropies))
        finite = [e if isinstance(e, float) and math.isfinite(e) else math.nan for e in r.entropies]
        # A line through one point draws nothing: a short dash shows it, not a dot (dots mark fired tokens).
        marker = "_" if len(finite) == 1 else None
        (line,) = ax.plot(steps, finite, lw=1.0, alpha=0.8, marker=marker, label=None if many else label)
        fired = [i for i, f in enumerate(r.fired) if f]
        ax.scatter(fired, [finite[i] for i in fired], s=18, color=line.get_color(), edgecolors="black",
                   linewidths=0.5, zorder=3)
    if threshold is not None and math.isfinite(threshold):
        ax.axhline(threshold, color="crimson", ls="--", lw=1.2, label=f"gate threshold tau = {threshold:.3g}")
    ax.set_xlabel("generated token")
    ax.set_ylabel("predicted entropy H_hat (nats)")
    ax.set_title("NEG gate: H_hat per token (dots: the gate fired and NEG chose the token)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper right")


def _rate_panel(ax, results, labels) -> None:
    rates = [100.0 * r.gate_activation_rate for r in results]
    neg_on = [i for i, r in enumerate(results) if r.neg_mode != 0]
    ax.bar(neg_on, [rates[i] for i in neg_on], color="tab:purple")
    for i, r in enumerate(results):
        if r.neg_mode == 0:  # not a 0 % bar: that would read as "NEG on, never fired"
            ax.text(i, 0, "off", ha="center", va="bottom", color="gray", fontsize=8)
    ax.set_xticks(range(len(results)))
    ax.set_xticklabels(labels if len(results) <= 20 else [str(i) for i in range(len(results))], rotation=45,
                       ha="right", fontsize=8)
    ax.set_ylabel("gate activation (%)")
    ax.set_xlim(-0.5, len(results) - 0.5)  # every request's place, "off" ones at the ends too
    ax.set_ylim(0, max(1.0, 1.1 * max((rates[i] for i in neg_on), default=0.0)))  # not -0.05..0.05 when nothing fired
    overall = overall_gate_activation(results)
    scope = "NEG off in every request" if overall is None else f"NEG-on tokens: {100 * overall:.1f} %"
    ax.set_title(f"Gate activation per request ({scope})")


def _latency_panel(ax, results) -> None:
    tokens_ms = [x * 1e3 for r in results for x in r.token_latencies]
    ttft_ms = [r.ttft * 1e3 for r in results if r.ttft is not None]
    if tokens_ms:
        ax.hist(tokens_ms, bins=min(50, max(5, len(tokens_ms) // 4)), color="tab:blue", alpha=0.75,
                label=f"inter-token latency ({len(tokens_ms)} intervals)")
        for q, style in ((50, "-"), (90, "--"), (99, ":")):
            v = _percentile(tokens_ms, q)
            ax.axvline(v, color="black", ls=style, lw=1.0, label=f"p{q} {v:.2f} ms")
    if ttft_ms:
        ax.plot(ttft_ms, [0] * len(ttft_ms), "|", color="tab:orange", markersize=18, mew=2,
                label=f"TTFT per request (p50 {_percentile(ttft_ms, 50):.1f} ms)")
    ax.set_xlabel("milliseconds")
    ax.set_ylabel("count")
    ax.set_title("Latency")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no latencies (no request produced a token)", ha="center", transform=ax.transAxes)
