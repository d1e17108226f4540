#!/usr/bin/env python3
"""Conversion benchmark: the full-size 9B checkpoint -> TensorRT-LLM checkpoint at tp 1 and tp 2.

    python benchmarks/bench_convert.py --work /path/with/60GB/free [--model HF_DIR] [--tp 1 --tp 2]
                                       [--record FILE] [--keep-model]

Writes the ``9b`` synthetic checkpoint (bf16, ~18 GB, streamed) into ``--work`` unless
``--model`` is given, then, for the baseline and each tp size, in a fresh subprocess:

* baseline: a plain copy of the same safetensors bytes to the same disk (user-space
  read/write in 16 MiB blocks, fsync at the end — the least any converter must do), run
  before and after the conversions; ratios are taken against the faster of the two;
* conversion: ``convert_checkpoint`` (fsync included), output deleted afterwards.

Before every run the source files' pages are dropped from the page cache
(``posix_fadvise(DONTNEED)``), so every run reads from disk. Printed per run: wall time,
bytes read and written, throughput (source bytes / s), the ratio to the copy's throughput,
and the peak RSS of the subprocess ("ratio to copy" is the run's throughput over the plain
copy's: 1.00 = as fast as copying). Targets (issue #5): ratio >= 0.7, peak RSS <= 2 GB.
Not run in CI (needs ~60 GB of disk and several minutes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
BLOCK = 16 * 2**20

from machine import machine_summary  # noqa: E402


def drop_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _child_copy(src: str, dst: str) -> dict:
    src_dir, dst_dir = Path(src), Path(dst)
    dst_dir.mkdir(parents=True)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    total = 0
    start = time.perf_counter()
    for path in sorted(src_dir.glob("*.safetensors")):
        with open(path, "rb", buffering=0) as fin, open(dst_dir / path.name, "wb", buffering=0) as fout:
            while True:
                n = fin.readinto(buf)
                if not n:
                    break
                fout.write(view[:n])
                total += n
            os.fsync(fout.fileno())
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "read": total, "written": total}


def _child_convert(src: str, dst: str, tp: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from trt_neg.checkpoint.convert import convert_checkpoint

    start = time.perf_counter()
    report = convert_checkpoint(src, dst, tp_size=tp, progress=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "read": report.bytes_read, "written": report.bytes_written}


def peak_rss_bytes() -> int:
    """This process's peak resident set size. Linux's VmHWM starts afresh at exec; ru_maxrss does not (it
    keeps the forking parent's peak, a few hundred MB once the parent has imported torch)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(kind: str, src: Path, dst: Path, tp: int = 1) -> dict:
    """Run one measurement in a fresh interpreter; returns its figures and peak RSS."""
    # The child runs in ROOT: hand it absolute paths so that relative ones keep meaning the caller's directory.
    src, dst = Path(src).resolve(), Path(dst).resolve()
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            f"import bench_convert as b; r = b._child_{kind}({str(src)!r}, {str(dst)!r}"
            + (f", {tp})" if kind == "convert" else ")")
            + "; r['peak_rss'] = b.peak_rss_bytes(); print(json.dumps(r))")
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise click.ClickException(f"the {kind} run into {dst} failed (exit code {proc.returncode}; its error is "
                                   "printed above)")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def clear_leftover(path: Path, what: str) -> None:
    """Remove ``path`` if it is this benchmark's leftover from an interrupted run (only the
    ``*.safetensors`` a copy run writes, or nothing); refuse anything else with one line."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and all(p.is_file() and p.suffix == ".safetensors"
                                                       for p in path.iterdir()):
        click.echo(f"removing {path}, left over from an interrupted run")
        shutil.rmtree(path)
        return
    raise click.UsageError(f"{path} exists and is not a leftover {what} of this benchmark; move it away or choose "
                           "another --work directory")


def check_tp_sizes(model: str | None, tps: tuple[int, ...]) -> None:
    """Refuse tp sizes the model's head counts do not allow, before copying gigabytes."""
    sys.path.insert(0, str(ROOT))
    from trt_neg.checkpoint import contract
    from trt_neg.checkpoint.hf import load_model_config
    from trt_neg.checkpoint.synthetic import preset_config
    from trt_neg.checkpoint.safetensors_io import CheckpointError
    from trt_neg.config import ConfigError, config_from_dict

    try:
        config = load_model_config(model) if model else config_from_dict(preset_config("9b"), "<preset 9b>")
    except (ConfigError, CheckpointError) as exc:  # the model, not --tp, is at fault
        raise click.BadParameter(str(exc), param_hint="--model") from None
    try:
        for tp in tps:
            contract.check_mapping(config.backbone, contract.Mapping(tp, 1))
    except contract.ShardingError as exc:
        raise click.UsageError(f"--tp: {exc}") from None


def check_record_path(record: str) -> None:
    sys.path.insert(0, str(ROOT))
    from trt_neg.atomic_file import unwritable_reason

    if reason := unwritable_reason(record):
        raise click.BadParameter(f"{record}: {reason}", param_hint="--record")


def filesystem_of(path: Path) -> str:
    """The mount point and type of the filesystem holding ``path`` (Linux /proc/mounts), or ''."""
    path = path.resolve()
    best = ("", "")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                mount, kind = fields[1], fields[2]
                # >=: of two mounts at one path, the later one is on top
                if (path == Path(mount) or Path(mount) in path.parents) and len(mount) >= len(best[0]):
                    best = (mount, kind)
    except (OSError, IndexError):
        return ""
    return f"{best[0]} ({best[1]})" if best[0] else ""


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--work", type=click.Path(file_okay=False), required=True,
              help="Scratch directory on the disk to measure (needs ~60 GB free).")
@click.option("--model", type=click.Path(file_okay=False, exists=True), default=None,
              help="HF checkpoint to convert [default: write the 9b synthetic checkpoint into --work].")
@click.option("--tp", "tps", type=click.IntRange(min=1), multiple=True, default=(1, 2), show_default=True,
              help="Tensor-parallel size to convert to (repeatable).")
@click.option("--record", type=click.Path(dir_okay=False), default=None,
              help="Also write the Markdown table here (atomically).")
@click.option("--keep-model", is_flag=True, help="Keep the generated 9b checkpoint afterwards.")
def main(work: str, model: str | None, tps: tuple[int, ...], record: str | None, keep_model: bool) -> None:
    """Measure conversion throughput (vs a plain copy) and peak memory."""
    check_tp_sizes(model, tps)
    if record:
        check_record_path(record)
    work_dir = Path(work)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"{work}: cannot create it ({exc.strerror or exc})", param_hint="--work") from None
    generated = model is None
    src = Path(model) if model else work_dir / "hf-9b"
    if generated and not src.exists():
        sys.path.insert(0, str(ROOT))
        from trt_neg.checkpoint.synthetic import write_checkpoint

        t = time.perf_counter()
        write_checkpoint(src, "9b", seed=0, progress=True)
        click.echo(f"wrote 9b checkpoint in {time.perf_counter() - t:.0f} s")
    files = sorted(src.glob("*.safetensors"))
    size = sum(p.stat().st_size for p in files)
    click.echo(f"machine: {machine_summary()}; --work on {filesystem_of(work_dir) or work_dir}")
    click.echo(f"source: {src} ({len(files)} files, {size / 1e9:.2f} GB); "
               f"disk free {shutil.disk_usage(work_dir).free / 1e9:.0f} GB")

    rows = []

    copy_dir = work_dir / "copy"
    clear_leftover(copy_dir, "plain copy")

    def copy_run(label: str) -> dict:
        drop_cache(files)
        try:
            result = run_child("copy", src, copy_dir)
        finally:  # also on failure or Ctrl-C: the next run must not find it
            shutil.rmtree(copy_dir, ignore_errors=True)
        rows.append((label, result))
        click.echo(f"{label}: {result['seconds']:.1f} s, {size / result['seconds'] / 1e6:.0f} MB/s, "
                   f"peak RSS {result['peak_rss'] / 2**20:.0f} MiB")
        return result

    try:
        copies = [copy_run("plain copy (before)")]
        for tp in tps:
            drop_cache(files)
            out = work_dir / f"trtllm-tp{tp}"
            shutil.rmtree(out, ignore_errors=True)
            try:
                result = run_child("convert", src, out, tp)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            rows.append((f"convert tp {tp}", result))
            click.echo(f"convert tp{tp}: {result['seconds']:.1f} s, {size / result['seconds'] / 1e6:.0f} MB/s, "
                       f"wrote {result['written'] / 1e9:.2f} GB, peak RSS {result['peak_rss'] / 2**20:.0f} MiB")
        copies.append(copy_run("plain copy (after)"))
    finally:
        if generated and not keep_model:
            shutil.rmtree(src, ignore_errors=True)
    # The baseline is the faster of the two copies (the stricter comparison; disk noise on shared machines).
    copy_tput = size / min(c["seconds"] for c in copies)

    table = ["| run | wall time (s) | read (GB) | written (GB) | source GB/s | ratio to copy | peak RSS (MiB) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        tput = size / r["seconds"]
        table.append(f"| {name} | {r['seconds']:.1f} | {r['read'] / 1e9:.2f} | {r['written'] / 1e9:.2f} | "
                     f"{tput / 1e9:.3f} | {tput / copy_tput:.2f} | {r['peak_rss'] / 2**20:.0f} |")
    click.echo("\n".join(table))
    if record:
        sys.path.insert(0, str(ROOT))
        from trt_neg.atomic_file import atomic_write_text

        try:
            atomic_write_text(record, "\n".join(table) + "\n")
        except OSError as exc:
            raise click.ClickException(f"--record {record}: could not write the table ({exc.strerror or exc}); it "
                                       "is printed above") from None


if __name__ == "__main__":
    main()
