"""Describe a Darwin-NEG checkpoint: validated config, derived figures, tensors.

    python -m trt_neg.inspect DIR [--json]

DIR is an HF checkpoint, a TensorRT-LLM checkpoint written by ``build_engine.py --checkpoint-only``,
or (one line) an engine directory. A TensorRT-LLM checkpoint is validated first: every config.json
field, and every rank file's safetensors header against the checkpoint contract (headers only).
Exit code 1 names the bad file and field or tensor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .checkpoint.hf import HFCheckpoint
from .checkpoint.safetensors_io import CheckpointError, SafetensorsFile
from .config import ConfigError, DarwinNegConfig, read_json_object

THRESHOLD = "neg_gate.threshold"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
def main(checkpoint: str, as_json: bool) -> None:
    """Validate CHECKPOINT (an HF Darwin-NEG directory, a TensorRT-LLM checkpoint written by
    build_engine.py, or an engine directory) and describe it."""
    config_json = Path(checkpoint) / "config.json"
    if not config_json.is_file():
        raise click.ClickException(f"{config_json}: not found (expected an HF checkpoint directory with "
                                   "config.json)")
    try:
        data = read_json_object(config_json)
        if isinstance(data.get("pretrained_config"), dict) and isinstance(data.get("build_config"), dict):
            summary, rows = _engine_directory(checkpoint)
        elif isinstance(data.get("architecture"), str) and "mapping" in data:  # a bad mapping is named there
            summary, rows = _trtllm_checkpoint(checkpoint, config_json, data)
        else:
            summary, rows = _hf_checkpoint(checkpoint)
    except (ConfigError, CheckpointError, ValueError) as exc:  # EngineDirError, ShardingError: ValueErrors
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    width = max(len(k) for k, _ in rows) if len(rows) > 1 else 0
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}" if width else value)


def _engine_directory(directory: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    from .trtllm.engine_dir import read_engine_dir

    engine = read_engine_dir(directory)
    summary = {"kind": "engine_directory", "path": directory, "tp_size": engine.tp_size, "pp_size": engine.pp_size,
               "engine_files": [p.name for p in engine.engine_files],
               "hf_model_dir": None if engine.hf_model_dir is None else str(engine.hf_model_dir),
               "tensorrt_llm_version": engine.tensorrt_llm_version, "max_batch_size": engine.max_batch_size,
               "max_seq_len": engine.max_seq_len, "neg_enabled": engine.neg_enabled}
    return summary, [("", f"{directory}: {engine.describe()}")]


def _hf_checkpoint(directory: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    from .checkpoint.convert import resolve_dtype

    ckpt = HFCheckpoint(directory)
    dtype = resolve_dtype(ckpt, None)
    tau = ckpt.get(THRESHOLD).item()
    summary = _summary(ckpt.config, "hf_checkpoint", dtype, tau)
    summary["tensors"] = len(ckpt.names())
    summary["ignored_tensors"] = ckpt.ignored
    rows = [("checkpoint", directory), ("architecture", summary["architecture"]), ("dtype", dtype),
            *_model_rows(ckpt.config, dtype, tau),
            ("tensors", f"{len(ckpt.names())} (ignored: {len(ckpt.ignored)} vision/MTP)")]
    return summary, rows


def _trtllm_checkpoint(directory: str, config_json: Path,
                       data: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    from .checkpoint.contract import check_rank_files, config_from_checkpoint

    config, mapping, dtype = config_from_checkpoint(data, source=str(config_json))
    ranks = check_rank_files(directory, config, mapping, dtype)
    tau = SafetensorsFile(ranks[0]).get(THRESHOLD).item()
    ours = data.get("trt_neg") if isinstance(data.get("trt_neg"), dict) else {}
    summary = _summary(config, "trtllm_checkpoint", dtype, tau)
    summary.update(mapping=mapping.to_dict(), ranks=[p.name for p in ranks],
                   converted_from=ours.get("source"), contract_version=ours.get("contract_version"))
    kind = "TensorRT-LLM checkpoint" + (f" (written by build_engine.py, contract version "
                                        f"{ours.get('contract_version')})" if ours else "")
    rows = [("checkpoint", directory), ("kind", kind), ("architecture", config.architecture), ("dtype", dtype),
            ("mapping", f"tp {mapping.tp_size}, pp {mapping.pp_size} (world size {mapping.world_size})"),
            ("ranks", ", ".join(p.name for p in ranks)),
            ("rank file sizes", ", ".join(_bytes(p.stat().st_size) for p in ranks)),
            ("converted from", ours.get("source") or "(not recorded)"),
            *_model_rows(config, dtype, tau)]
    return summary, rows


def _summary(config: DarwinNegConfig, kind: str, dtype: str, tau: float) -> dict[str, Any]:
    summary = config.summary()
    summary.update(kind=kind, dtype=dtype, neg_threshold=tau)
    summary["derived"]["kv_cache_bytes_per_token"] = config.backbone.kv_cache_bytes_per_token(dtype)
    return summary


def _model_rows(config: DarwinNegConfig, dtype: str, tau: float) -> list[tuple[str, str]]:
    b, n, d = config.backbone, config.neg, config.summary()["derived"]
    kinds = "".join("F" if t == "full_attention" else "L" for t in b.layer_types)
    kv = _bytes(b.kv_cache_bytes_per_token(dtype)) + f" ({dtype}" + (
        "" if dtype == "bfloat16" else f"; {_bytes(b.kv_cache_bytes_per_token('bfloat16'))} in bf16") + ")"
    return [
        ("parameters", f"{d['total_parameters']:,} (backbone {d['backbone_parameters']:,}, NEG {d['neg_parameters']:,})"),
        ("layers", f"{b.num_hidden_layers} [{kinds}]  L = Gated DeltaNet, F = gated full attention"),
        ("hidden / MLP / vocab", f"{b.hidden_size} / {b.intermediate_size} / {b.vocab_size}"),
        ("attention", f"{b.num_attention_heads} q heads, {b.num_key_value_heads} kv heads, head_dim {b.head_dim}, "
                      f"rotary {b.rotary_dim} dims (theta {b.rope_theta:g})"),
        ("gated deltanet", f"{b.linear_num_key_heads} k heads x {b.linear_key_head_dim}, "
                           f"{b.linear_num_value_heads} v heads x {b.linear_value_head_dim}, conv {b.linear_conv_kernel_dim}"),
        ("state per sequence", f"{_bytes(d['recurrent_state_bytes_per_sequence'])} recurrent (fp32) + "
                               f"{_bytes(d['conv_state_bytes_per_sequence_fp32'])} conv (fp32)"),
        ("KV cache per token", kv),
        ("NEG", f"head {b.hidden_size}->{n.head_hidden_size}->1 ({n.activation}), top_k {n.top_k}, "
                f"T {n.temperature:g}, seed {n.seed}, {'enabled' if n.enabled else 'disabled'}, tau {tau:g}"),
    ]


if __name__ == "__main__":
    main()
