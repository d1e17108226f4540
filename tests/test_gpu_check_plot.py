"""The GPU check's figure (trt_neg/gpu_check/plot.py): which panels and lines a report gives,
the PNG written whole or not at all, and a plot that cannot be drawn leaving the check alone.
The sections' own data feed :func:`panels` in test_gpu_check_neg_on_cpu.py and
test_gpu_check_gdn_on_cpu.py."""

from __future__ import annotations

import builtins
import math

import pytest

from trt_neg import gpu_check
from trt_neg.gpu_check import plot


def _report(neg=None, gdn=None):
    sections = [{"name": "machine", "data": {"gpu": "NVIDIA H200"}}]
    if neg is not None:
        sections.append({"name": "neg", "data": neg})
    if gdn is not None:
        sections.append({"name": "gdn", "data": gdn})
    return {"header": ["# trt-neg GPU check  2026-11-29", "# NVIDIA H200"], "sections": sections}


NEG = {"timing": [{"N": n, "fused_gate5": 10.0 * n, "fused1_gate5": 12.0 * n, "torch_gate5": 90.0 * n,
                   "floor_measured": None, "floor_4p8": 2.0 * n} for n in (1, 8, 64, 256)],
       "head_vs_cublas": [{"N": n, "kernel_head": 5.0, "mma_head": 6.0, "cublas_plus_tail": float("nan"),
                           "floor_measured": 1.0, "floor_4p8": 0.9} for n in (256, 1024)]}
GDN = {"timing": {"generation": [{"B": b, "kernel_us": 3.0 * b, "torch_recurrent_fp32_us": 40.0 * b,
                                  "floor_measured": 2.5 * b, "floor_4p8": 2.0 * b} for b in (1, 4)],
                  "context": [{"B": 1, "kernel_us": 800.0, "torch_chunk_fp32_us": 5000.0, "fla_us": None,
                               "floor_measured": None, "floor_4p8": 100.0}]}}


def test_panels_follow_the_timing_tables():
    got = plot.panels(_report(NEG, GDN))
    assert [p.title.split(":")[0] for p in got] == [
        "NEG step", "NEG-Head alone at large N", "Gated DeltaNet generation step (9B head config)",
        "Gated DeltaNet context phase (9B head config)"]
    step = {s.label: s for s in got[0].series}
    # No machine bandwidth measured: that floor is left out, the 4.8 TB/s one drawn dashed.
    assert list(step) == ["fused kernel (automatic plan)", "fused kernel, one block per row", "plain torch",
                          "floor at 4.8 TB/s"]
    assert step["plain torch"].xs == [1, 8, 64, 256] and step["plain torch"].ys == [90.0, 720.0, 5760.0, 23040.0]
    assert step["floor at 4.8 TB/s"].style == "--" and step["plain torch"].style == "-"
    head = {s.label: s for s in got[1].series}
    assert "cuBLAS GEMM + torch tail" not in head  # NaN everywhere: no line
    assert head["floor at the measured copy bandwidth"].style == ":"
    assert [s.label for s in got[3].series] == ["kernel", "torch chunked (fp32)", "floor at 4.8 TB/s"]


def test_sections_without_timings_give_no_panels_and_no_file(tmp_path):
    """A section that failed before timing, or did not run: nothing to draw, no PNG."""
    failed = {"correctness": False}
    assert plot.panels(_report(failed, {"timing": {}})) == []
    assert plot.panels({"sections": []}) == []
    assert plot.plot_report(_report(failed), tmp_path / "report.png") is None
    assert list(tmp_path.iterdir()) == []


def test_plot_is_a_png_written_whole(tmp_path):
    path = plot.plot_report(_report(NEG, GDN), tmp_path / "report.png")
    assert path == tmp_path / "report.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.png"]  # no temporary file left
    one = plot.plot_report(_report(None, GDN), tmp_path / "gdn.png")  # two panels
    assert one.stat().st_size > 1000


def test_a_plot_that_cannot_be_drawn_is_reported_and_changes_nothing(tmp_path, monkeypatch, capsys):
    """matplotlib missing (a GPU machine with CUDA torch only): one stderr line, no file, no raise."""
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    gpu_check._write_plot(tmp_path / "report.png", _report(NEG))
    err = capsys.readouterr().err
    assert "plot not written (ImportError: No module named 'matplotlib')" in err
    assert not (tmp_path / "report.png").exists()


@pytest.mark.parametrize("bad", [float("inf"), "12.0", None, True])
def test_values_that_are_not_finite_numbers_are_left_out(bad):
    rows = [{"N": 1, "fused_gate5": 3.0}, {"N": 8, "fused_gate5": bad}]
    (panel,) = plot.panels(_report({"timing": rows}))
    assert panel.series[0].xs == [1] and all(math.isfinite(y) for y in panel.series[0].ys)


def test_an_earlier_figure_is_removed_and_none_drawn_after_a_stop(tmp_path):
    """A figure is never older than the reports beside it: an earlier run's goes first, and a
    stopped run (or one without timings) leaves none."""
    png = tmp_path / "report.png"
    png.write_bytes(b"old figure")
    gpu_check._write_plot(png, _report(NEG), drawn=False)
    assert not png.exists()
    png.write_bytes(b"old figure")
    gpu_check._write_plot(png, _report({"correctness": False}))
    assert not png.exists()
    gpu_check._write_plot(png, _report(NEG))
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_failing_plot_with_its_output_gone_still_returns(tmp_path, monkeypatch):
    """After a stop the ``| tee`` may be gone: the plot's failure message must not raise either."""
    class Gone:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(plot, "plot_report", lambda data, path: 1 / 0)
    monkeypatch.setattr("sys.stderr", Gone())
    monkeypatch.setattr("sys.stdout", Gone())
    gpu_check._write_plot(tmp_path / "report.png", _report(NEG))  # no exception


def test_the_figure_has_one_log_log_panel_per_table_with_every_line_and_the_header(tmp_path, monkeypatch):
    """What is drawn (the figure as handed to save_png): three tables on a 2 x 2 grid, the fourth
    axes hidden; log2 x at the measured N / B, log y; one line per series, floors dashed and
    marked x; the report's header as the title. Styling (sizes, fonts, grid) is left free."""
    drawn = {}

    def keep(fig, path):
        drawn["fig"] = fig
        return path

    monkeypatch.setattr(plot, "save_png", keep)
    assert plot.plot_report(_report(NEG, {"timing": {"generation": GDN["timing"]["generation"]}}),
                            tmp_path / "r.png") == tmp_path / "r.png"
    fig = drawn["fig"]
    axes = fig.axes
    assert len(axes) == 4 and [ax.get_visible() for ax in axes] == [True, True, True, False]
    assert [ax.get_title() for ax in axes[:3]] == [p.title for p in plot.panels(_report(NEG, GDN))[:3]]
    assert fig.get_suptitle() == "trt-neg GPU check  2026-11-29  NVIDIA H200"
    step = axes[0]
    assert (step.get_xscale(), step.get_yscale(), step.xaxis.get_transform().base) == ("log", "log", 2)
    assert list(step.get_xticks()) == [1, 8, 64, 256] and step.get_xlabel() == "N (rows)"
    fig.canvas.draw()  # the tick labels: the measured N as plain numbers, no minor labels
    assert [t.get_text() for t in step.get_xticklabels()] == ["1", "8", "64", "256"]
    assert {t.get_text() for t in step.xaxis.get_minorticklabels()} <= {""}
    assert step.get_ylabel() == "time per call (us)" and axes[2].get_xlabel() == "batch"
    lines = {ln.get_label(): ln for ln in step.get_lines()}
    assert list(lines) == ["fused kernel (automatic plan)", "fused kernel, one block per row", "plain torch",
                           "floor at 4.8 TB/s"]
    assert list(lines["plain torch"].get_ydata()) == [90.0, 720.0, 5760.0, 23040.0]
    assert (lines["plain torch"].get_linestyle(), lines["plain torch"].get_marker()) == ("-", "o")
    assert (lines["floor at 4.8 TB/s"].get_linestyle(), lines["floor at 4.8 TB/s"].get_marker()) == ("--", "x")
    assert [t.get_text() for t in step.get_legend().get_texts()] == list(lines)
    import matplotlib.pyplot as plt

    plt.close(fig)
    # One table alone: one panel filling the figure.
    plot.plot_report(_report(None, {"timing": {"context": GDN["timing"]["context"]}}), tmp_path / "one.png")
    assert len(drawn["fig"].axes) == 1 and drawn["fig"].axes[0].get_visible()
    plt.close(drawn["fig"])


@pytest.mark.parametrize("bad_n", [None, "8", float("nan"), True])
def test_rows_whose_n_is_not_a_finite_number_are_left_out(bad_n):
    rows = [{"N": 1, "fused_gate5": 3.0}, {"N": bad_n, "fused_gate5": 4.0}]
    (panel,) = plot.panels(_report({"timing": rows}))
    assert (panel.series[0].xs, panel.series[0].ys) == ([1], [3.0])


def test_each_panel_keeps_its_size_and_two_tables_sit_side_by_side(tmp_path, monkeypatch):
    """One table: one panel; two: one row of two; three: a 2 x 2 grid. The figure grows with the
    grid, so a panel is as large whatever the number of tables; a one-point series is marked."""
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plot, "save_png", lambda fig, path: figures.append(fig) or path)
    generation, context = ({"timing": {k: GDN["timing"][k]}} for k in ("generation", "context"))
    for report in (_report(None, generation), _report(None, GDN), _report(NEG, generation)):
        plot.plot_report(report, tmp_path / "r.png")
    grids = [fig.axes[0].get_subplotspec().get_geometry()[:2] for fig in figures]
    assert grids == [(1, 1), (1, 2), (2, 2)]
    per_panel = {tuple(fig.get_size_inches() / (cols, rows)) for fig, (rows, cols) in zip(figures, grids)}
    assert len(per_panel) == 1
    # The context table has one batch: one point per series, which only its marker shows.
    one_point = figures[1].axes[1].get_lines()
    assert len(one_point) == 3 and all(len(ln.get_xdata()) == 1 and ln.get_markersize() > 0 for ln in one_point)
    for fig in figures:
        plt.close(fig)
