#!/usr/bin/env python3
"""Build a TensorRT-LLM artefact from an HF Darwin-NEG checkpoint.

    python build_engine.py --model DIR --output DIR --checkpoint-only [--tp-size N] [--pp-size N]
                           [--dtype bfloat16|float16|float32] [--check-finite] [--key-map FILE] [--overwrite]

With ``--checkpoint-only`` it writes the sharded TensorRT-LLM checkpoint (``config.json`` +
``rank{N}.safetensors``, see docs/checkpoint_contract.md): streamed, validated, written to
a temporary directory and renamed into place when complete. Compiling the engine needs
tensorrt_llm 1.2.x, i.e. NVIDIA's TensorRT-LLM container; this command does not build
engines yet and says so.
"""

from __future__ import annotations

import sys
import time

import click

ENGINE_BUILD_UNAVAILABLE = (
    "building a TensorRT engine needs tensorrt_llm 1.2.x and TensorRT (NVIDIA's TensorRT-LLM 1.2 container, "
    "see docker/); this command can only write the TensorRT-LLM checkpoint so far. "
    "Pass --checkpoint-only to convert the checkpoint.")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="HF Darwin-NEG checkpoint directory (config.json + *.safetensors).")
@click.option("--output", "output_dir", required=True, type=click.Path(),
              help="Directory to write (replaced only with --overwrite).")
@click.option("--checkpoint-only", is_flag=True,
              help="Write the sharded TensorRT-LLM checkpoint and stop (no engine build).")
@click.option("--tp-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tensor-parallel size (must suit the head counts: 1, 2, 4, 8 for the 9B).")
@click.option("--pp-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Pipeline-parallel size (layers split as evenly as possible, first stages get the extra).")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default=None,
              help="Weight dtype of the checkpoint [default: the HF checkpoint's dtype].")
@click.option("--check-finite", is_flag=True,
              help="Refuse weights holding NaN or inf (one extra pass over each chunk in memory).")
@click.option("--key-map", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSON object mapping stored tensor names to expected names (e.g. for NEG tensors).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def main(model_dir: str, output_dir: str, checkpoint_only: bool, tp_size: int, pp_size: int, dtype: str | None,
         check_finite: bool, key_map: str | None, overwrite: bool, progress: bool) -> None:
    """Convert an HF Darwin-NEG checkpoint into a sharded TensorRT-LLM checkpoint."""
    if not checkpoint_only:
        raise click.UsageError(ENGINE_BUILD_UNAVAILABLE)

    from trt_neg.checkpoint.contract import ShardingError
    from trt_neg.checkpoint.convert import convert_checkpoint
    from trt_neg.checkpoint.hf import read_key_map
    from trt_neg.checkpoint.safetensors_io import CheckpointError
    from trt_neg.config import ConfigError

    start = time.perf_counter()
    try:
        report = convert_checkpoint(model_dir, output_dir, tp_size=tp_size, pp_size=pp_size, dtype=dtype,
                                    check_finite=check_finite, key_map=read_key_map(key_map),
                                    overwrite=overwrite, progress=progress)
    except (CheckpointError, ConfigError, ShardingError, FileExistsError, PermissionError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    seconds = time.perf_counter() - start
    click.echo(f"wrote TensorRT-LLM checkpoint {report.output} (tp {tp_size}, pp {pp_size}, {report.dtype}, "
               f"{report.mapping.world_size} rank file(s), {report.bytes_written / 2**30:.2f} GiB) "
               f"in {seconds:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
