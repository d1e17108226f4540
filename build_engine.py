#!/usr/bin/env python3
"""Build a TensorRT-LLM engine (or only the TensorRT-LLM checkpoint) from an HF Darwin-NEG checkpoint.

    # engine (inside NVIDIA's TensorRT-LLM 1.2.x container, see docker/):
    python build_engine.py --model DIR --output ENGINE_DIR [--max-batch-size 8] [--max-seq-len N]
                           [--max-input-len N] [--max-num-tokens N] [--dtype bfloat16] [--tp-size 1]
                           [--pp-size 1] [--plugin-lib PATH] [--workers N] [--overwrite]
    # checkpoint only (any machine):
    python build_engine.py --model DIR --output CKPT_DIR --checkpoint-only [--tp-size N] [--pp-size N]
                           [--dtype ...] [--check-finite] [--key-map FILE] [--overwrite]

Stages (each timed; docs/engine_build.md): options validated against the model -> plugin library
found -> HF checkpoint converted to a sharded TensorRT-LLM checkpoint (``--checkpoint-dir``,
default ``<output>.ckpt`` beside the engine; kept, reusable with ``--reuse-checkpoint``) ->
``libtrt_neg_plugins.so`` loaded -> one engine per rank -> engine ``config.json`` rewritten with
the runtime alias -> plugin library copied in -> ``build_info.json`` -> the directory renamed
into place. Without tensorrt_llm 1.2.x the conversion still runs, then the command stops with
exit code 3 and says where to run the engine build.

Exit codes: 0 done; 1 a bad input file (HF checkpoint, reused checkpoint, key map) or another failure;
2 a usage error (an option's value, options that contradict each other or do not fit the model), as
for run.py; 3 converted, but the engine build needs tensorrt_llm 1.2.x (rerun in the container);
130 interrupted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from trt_neg.cli import InterruptibleCommand

CONTAINER = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"
ENGINE_ONLY_OPTIONS = ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens", "gemm_plugin",
                       "context_fmha", "tokens_per_block", "plugin_lib", "copy_plugin_lib", "workers",
                       "checkpoint_dir", "reuse_checkpoint")


class EngineBuildUnavailable(click.ClickException):
    """tensorrt_llm 1.2.x is missing: the converted checkpoint is kept, exit code 3 (not 2, click's usage
    errors, nor 1, a failure: a script can tell "rerun in the container" from both)."""

    exit_code = 3


def _default_checkpoint_dir(output: Path) -> Path:
    output = output.resolve()  # "." or "dir/.." have no name of their own
    if not output.name:
        raise click.UsageError(f"--output {output}: not a directory that can be replaced; give one below it")
    return output.with_name(output.name + ".ckpt")


def _check_apart(output: str | Path, other: str | Path, output_what: str, other_what: str) -> None:
    """``check_disjoint`` as a usage error: two of the options name nested directories."""
    from trt_neg.checkpoint.safetensors_io import check_disjoint

    try:
        check_disjoint(output, other, output_what, other_what)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.2f} MiB"


def _gpu_count() -> int | None:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001
        return None


@click.command(cls=InterruptibleCommand,
               context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="HF Darwin-NEG checkpoint directory (config.json + *.safetensors).")
@click.option("--output", "output_dir", required=True, type=click.Path(),
              help="Engine directory to write (with --checkpoint-only: the checkpoint directory). "
                   "Replaced only with --overwrite.")
@click.option("--checkpoint-only", is_flag=True,
              help="Write the sharded TensorRT-LLM checkpoint and stop (no engine build, no TensorRT needed).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
              help="Where the converted TensorRT-LLM checkpoint goes (kept after the build). [default: <output>.ckpt]")
@click.option("--reuse-checkpoint", is_flag=True,
              help="Build from the existing --checkpoint-dir instead of converting again (it must describe "
                   "--model's config, and its tp/pp/dtype must match the options given; --check-finite and "
                   "--key-map are refused with it).")
@click.option("--tp-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tensor-parallel size (must suit the head counts: 1, 2, 4, 8 for the 9B).")
@click.option("--pp-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Pipeline-parallel size (layers split as evenly as possible). Checkpoint conversion only "
                   "(--checkpoint-only): engine builds refuse pp > 1 for now (docs/engine_build.md).")
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default=None,
              help="Weight and activation dtype [default: the HF checkpoint's dtype].")
@click.option("--check-finite", is_flag=True,
              help="Refuse weights holding NaN or inf (one extra pass over each chunk in memory).")
@click.option("--key-map", type=click.Path(dir_okay=False, exists=True), default=None,
              help="JSON object mapping stored tensor names to expected names (e.g. for NEG tensors).")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Sequences decoded together (in-flight batching slots; one recurrent-state slot each); at most "
                   "4096, what one Gated DeltaNet plugin call takes.")
@click.option("--max-seq-len", type=click.IntRange(min=2), default=None,
              help="Prompt + generated tokens per sequence. [default: min(max_position_embeddings, 4096)]")
@click.option("--max-input-len", type=click.IntRange(min=1), default=None,
              help="Longest prompt; must be < --max-seq-len. [default: max-seq-len - 1]")
@click.option("--max-num-tokens", type=click.IntRange(min=1), default=None,
              help="Tokens per engine step (prefill tokens + decode rows); >= --max-input-len (no chunked "
                   "context with recurrent state). [default: max(max-input-len, min(8192, batch * max-input-len))]")
@click.option("--gemm-plugin", type=click.Choice(["auto", "disable"]), default="auto", show_default=True,
              help="cuBLASLt GEMM plugin in the model dtype (auto) or TensorRT's own GEMMs.")
@click.option("--context-fmha/--no-context-fmha", default=True, show_default=True,
              help="Fused multi-head attention in the context phase (the attention plugin falls back to unfused "
                   "kernels where it does not apply, e.g. float32).")
@click.option("--tokens-per-block", type=click.Choice(["16", "32", "64", "128"]), default="32", show_default=True,
              help="Tokens per paged KV-cache block.")
@click.option("--plugin-lib", type=click.Path(dir_okay=False), default=None,
              help="libtrt_neg_plugins.so to build with. [default: $TRT_NEG_PLUGIN_LIB, else build/plugins/]")
@click.option("--copy-plugin-lib/--no-copy-plugin-lib", default=True, show_default=True,
              help="Copy the plugin library into the engine directory (plugins/) and record that copy, so the "
                   "engine travels with the plugin build it was made with.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Ranks built in parallel, one process and GPU each (capped at tp*pp and the GPU count).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output (and checkpoint) directory: only an empty one or a previous output "
                   "of the same kind, never a folder holding other files or the current directory.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a conversion progress bar.")
@click.pass_context
def main(ctx: click.Context, model_dir: str, output_dir: str, checkpoint_only: bool, checkpoint_dir: str | None,
         reuse_checkpoint: bool, tp_size: int, pp_size: int, dtype: str | None, check_finite: bool,
         key_map: str | None, max_batch_size: int, max_seq_len: int | None, max_input_len: int | None,
         max_num_tokens: int | None, gemm_plugin: str, context_fmha: bool, tokens_per_block: str,
         plugin_lib: str | None, copy_plugin_lib: bool, workers: int, overwrite: bool, progress: bool) -> None:
    """Build a Darwin-NEG TensorRT-LLM engine (or only its TensorRT-LLM checkpoint) from an HF checkpoint."""
    from trt_neg.checkpoint.contract import ShardingError
    from trt_neg.checkpoint.convert import TRTLLM_CHECKPOINT, convert_checkpoint
    from trt_neg.checkpoint.hf import read_key_map
    from trt_neg.checkpoint.safetensors_io import CheckpointError, check_output_dir, check_replaceable
    from trt_neg.config import ConfigError
    from trt_neg.trtllm import TRTLLM_REQUIREMENT, TensorRTLLMUnavailable, require_tensorrt_llm
    from trt_neg.trtllm.build import (ENGINE_DIRECTORY, BuildOptionError, EngineConfigError, StageTimer,
                                      check_engine_neg, find_plugin_library, resolve_build_options)
    from trt_neg.trtllm.engine_dir import EngineDirError
    from trt_neg.trtllm.plugins import PluginLibraryError

    # Options that cannot work (with each other or with the model) exit 2 like click's own usage errors and
    # run.py's; a bad input file or another failure exits 1 (see the module docstring).
    usage_errors = (BuildOptionError, ShardingError)
    errors = (CheckpointError, ConfigError, EngineConfigError, EngineDirError, PluginLibraryError, FileExistsError,
              PermissionError, ValueError)
    start = time.perf_counter()
    config_json = Path(model_dir) / "config.json"
    if not config_json.is_file():
        raise click.BadParameter(f"{config_json}: not found (expected an HF checkpoint directory with config.json)",
                                 param_hint="--model")

    if checkpoint_only:
        given = [name for name in ENGINE_ONLY_OPTIONS
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            raise click.UsageError(f"{flags}: engine option(s), meaningless with --checkpoint-only")
        try:
            _check_apart(output_dir, model_dir, "--output directory", "the --model checkpoint")
            report = convert_checkpoint(model_dir, output_dir, tp_size=tp_size, pp_size=pp_size, dtype=dtype,
                                        check_finite=check_finite, key_map=read_key_map(key_map),
                                        overwrite=overwrite, progress=progress)
        except usage_errors as exc:
            raise click.UsageError(str(exc)) from None
        except errors as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"wrote TensorRT-LLM checkpoint {report.output} (tp {tp_size}, pp {pp_size}, {report.dtype}, "
                   f"{report.mapping.world_size} rank file(s), {_size(report.bytes_written)}) "
                   f"in {time.perf_counter() - start:.1f} s")
        return

    if reuse_checkpoint:
        # Both act on the conversion, which --reuse-checkpoint skips: refuse rather than ignore them.
        given = [flag for flag, value in (("--check-finite", check_finite), ("--key-map", key_map)) if value]
        if given:
            raise click.UsageError(f"{', '.join(given)}: conversion option(s), meaningless with --reuse-checkpoint "
                                   "(the checkpoint is not converted again); drop them, or convert again without "
                                   "--reuse-checkpoint")
    output = Path(output_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else _default_checkpoint_dir(output)
    timer = StageTimer(echo=click.echo)
    try:
        # 1. everything that can fail fast, before converting gigabytes
        # No output may be, contain or lie inside the source checkpoint or the other output: writing (or
        # replacing, with --overwrite) one must never delete or mix into another.
        _check_apart(output, model_dir, "--output directory", "the --model checkpoint")
        if not reuse_checkpoint:
            _check_apart(ckpt_dir, model_dir, "--checkpoint-dir", "the --model checkpoint")
        if ckpt_dir.resolve() == output.resolve():
            raise BuildOptionError("--checkpoint-dir must differ from --output")
        _check_apart(ckpt_dir, output, "--checkpoint-dir", "the --output directory")
        check_output_dir(output, ENGINE_DIRECTORY, overwrite)
        if ckpt_dir.exists() and not reuse_checkpoint:
            check_replaceable(ckpt_dir, TRTLLM_CHECKPOINT)
            if not overwrite:
                raise FileExistsError(f"{ckpt_dir.resolve()}: converted checkpoint already exists; pass "
                                      "--reuse-checkpoint to build from it or --overwrite to convert again")
        description, ckpt_dtype = timer.run("validate options", lambda: _describe(
            model_dir, key_map, ckpt_dir, reuse_checkpoint, dtype, tp_size, pp_size))
        check_engine_neg(description)
        options, notes = resolve_build_options(
            max_position_embeddings=description.backbone.max_position_embeddings, max_batch_size=max_batch_size,
            max_input_len=max_input_len, max_seq_len=max_seq_len, max_num_tokens=max_num_tokens, tp_size=tp_size,
            pp_size=pp_size, dtype=ckpt_dtype, gemm_plugin=gemm_plugin == "auto", context_fmha=context_fmha,
            tokens_per_block=int(tokens_per_block), workers=workers, gpu_count=_gpu_count())
        for note in notes:
            click.echo(f"note: {note}")
        click.echo(f"engine: tp {options.tp_size} pp {options.pp_size} {options.dtype}, max_batch_size "
                   f"{options.max_batch_size}, max_input_len {options.max_input_len}, max_seq_len "
                   f"{options.max_seq_len}, max_num_tokens {options.max_num_tokens} "
                   f"(run time: {options.world_size} GPU(s), one rank each)")
        trtllm_error = None
        try:
            require_tensorrt_llm()
        except TensorRTLLMUnavailable as exc:
            trtllm_error = exc
            if reuse_checkpoint:
                click.echo(f"note: {TRTLLM_REQUIREMENT} is not importable here: the reused checkpoint is checked, "
                           "then the command stops before the engine build")
            else:
                click.echo(f"note: {TRTLLM_REQUIREMENT} is not importable here: the checkpoint will be converted, "
                           "then the command stops before the engine build")
        library = None
        if trtllm_error is None:
            library = timer.run("find plugin library", lambda: find_plugin_library(plugin_lib))
            click.echo(f"plugin library: {library}")

        # 2. conversion (or reuse)
        if reuse_checkpoint:
            click.echo(f"reusing TensorRT-LLM checkpoint {ckpt_dir.resolve()}")
        else:
            timer.run("convert checkpoint", lambda: convert_checkpoint(
                model_dir, ckpt_dir, tp_size=tp_size, pp_size=pp_size, dtype=options.dtype,
                check_finite=check_finite, key_map=read_key_map(key_map), overwrite=overwrite, progress=progress))
            click.echo(f"TensorRT-LLM checkpoint: {ckpt_dir.resolve()}")
        if trtllm_error is not None:
            rerun = ("the same command" if reuse_checkpoint else
                     "the same command with --reuse-checkpoint (to skip the conversion)")
            only = "" if reuse_checkpoint else "; pass --checkpoint-only to only convert"
            raise EngineBuildUnavailable(
                f"the TensorRT-LLM checkpoint is ready in {ckpt_dir.resolve()}, but building the engine needs "
                f"{TRTLLM_REQUIREMENT} with TensorRT and a CUDA GPU ({trtllm_error.__cause__ or 'not importable'}). "
                f"Run {rerun} inside NVIDIA's TensorRT-LLM 1.2 container ({CONTAINER}, or the trt-neg "
                f"image: docker build -f docker/Dockerfile -t trt-neg .){only}.")

        # 3. engine
        from trt_neg.trtllm.build import build_engines

        report = build_engines(ckpt_dir, output, options, plugin_library=library, hf_model_dir=Path(model_dir),
                               overwrite=overwrite, copy_plugin_library=copy_plugin_lib,
                               checkpoint_reused=reuse_checkpoint, timer=timer)
    except usage_errors as exc:
        raise click.UsageError(str(exc)) from None
    except errors as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote engine directory {report.output.resolve()} ({options.world_size} rank engine(s), "
               f"plugin library {report.plugin_library}) in {time.perf_counter() - start:.1f} s")
    click.echo("stage timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in report.timings.items()))


def _describe(model_dir: str, key_map: str | None, ckpt_dir: Path, reuse: bool, dtype: str | None, tp_size: int,
              pp_size: int):
    """The model description and the engine dtype, from the HF checkpoint (or the reused checkpoint)."""
    from trt_neg.checkpoint import contract
    from trt_neg.checkpoint.convert import resolve_dtype
    from trt_neg.checkpoint.hf import HFCheckpoint, load_model_config, read_key_map
    from trt_neg.config import read_json_object
    from trt_neg.trtllm.build import BuildOptionError

    if reuse:
        path = ckpt_dir / "config.json"
        if not path.is_file():
            raise BuildOptionError(f"--reuse-checkpoint: {path} does not exist (convert first, without "
                                   "--reuse-checkpoint)")
        description, mapping, ckpt_dtype = contract.config_from_checkpoint(read_json_object(path), source=str(path))
        if dtype is not None and dtype != ckpt_dtype:
            raise BuildOptionError(f"--dtype {dtype}: the reused checkpoint {ckpt_dir} is {ckpt_dtype}")
        if (mapping.tp_size, mapping.pp_size) != (tp_size, pp_size):
            raise BuildOptionError(f"--tp-size {tp_size} --pp-size {pp_size}: the reused checkpoint {ckpt_dir} is "
                                   f"tp {mapping.tp_size}, pp {mapping.pp_size}")
        # The engine and its build_info are recorded as --model's: the reused checkpoint must describe it.
        model = load_model_config(model_dir)
        difference = contract.first_difference(description, model)
        if difference is not None:
            name, ours, theirs = difference
            raise BuildOptionError(f"--reuse-checkpoint: the checkpoint {path} was not converted from --model "
                                   f"{model_dir}: {name} is {ours!r} there but {theirs!r} in {model.source}; "
                                   "convert again without --reuse-checkpoint (with --overwrite)")
        # Each rank file's header against the contract (milliseconds): a missing, truncated or foreign rank
        # file is named here, not by the engine build or after "the checkpoint is ready".
        contract.check_rank_files(ckpt_dir, description, mapping, ckpt_dtype)
        return description, ckpt_dtype
    ckpt = HFCheckpoint(model_dir, key_map=read_key_map(key_map))
    contract.check_mapping(ckpt.config.backbone, contract.Mapping(tp_size, pp_size))
    return ckpt.config, resolve_dtype(ckpt, dtype)


if __name__ == "__main__":
    sys.exit(main())
