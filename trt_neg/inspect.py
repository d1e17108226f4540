"""Describe a Darwin-NEG checkpoint: validated config, derived figures, tensors.

    python -m trt_neg.inspect CHECKPOINT_DIR [--json]
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from .checkpoint.hf import HFCheckpoint
from .checkpoint.safetensors_io import CheckpointError
from .config import ConfigError


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
    """Validate CHECKPOINT (an HF Darwin-NEG directory) and describe it."""
    config_json = Path(checkpoint) / "config.json"
    if not config_json.is_file():
        raise click.ClickException(f"{config_json}: not found (expected an HF checkpoint directory with "
                                   "config.json)")
    try:
        ckpt = HFCheckpoint(checkpoint)
    except (ConfigError, CheckpointError) as exc:
        raise click.ClickException(str(exc)) from None
    summary = ckpt.config.summary()
    summary["tensors"] = len(ckpt.names())
    summary["ignored_tensors"] = ckpt.ignored
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    b, n, d = ckpt.config.backbone, ckpt.config.neg, summary["derived"]
    kinds = "".join("F" if t == "full_attention" else "L" for t in b.layer_types)
    rows = [
        ("checkpoint", checkpoint),
        ("architecture", summary["architecture"]),
        ("parameters", f"{d['total_parameters']:,} (backbone {d['backbone_parameters']:,}, NEG {d['neg_parameters']:,})"),
        ("layers", f"{b.num_hidden_layers} [{kinds}]  L = Gated DeltaNet, F = gated full attention"),
        ("hidden / MLP / vocab", f"{b.hidden_size} / {b.intermediate_size} / {b.vocab_size}"),
        ("attention", f"{b.num_attention_heads} q heads, {b.num_key_value_heads} kv heads, head_dim {b.head_dim}, "
                      f"rotary {b.rotary_dim} dims (theta {b.rope_theta:g})"),
        ("gated deltanet", f"{b.linear_num_key_heads} k heads x {b.linear_key_head_dim}, "
                           f"{b.linear_num_value_heads} v heads x {b.linear_value_head_dim}, conv {b.linear_conv_kernel_dim}"),
        ("state per sequence", f"{_bytes(d['recurrent_state_bytes_per_sequence'])} recurrent (fp32) + "
                               f"{_bytes(d['conv_state_bytes_per_sequence_fp32'])} conv (fp32)"),
        ("KV cache per token", f"{_bytes(d['kv_cache_bytes_per_token_bf16'])} (bf16)"),
        ("NEG", f"head {b.hidden_size}->{n.head_hidden_size}->1 ({n.activation}), top_k {n.top_k}, "
                f"T {n.temperature:g}, seed {n.seed}, {'enabled' if n.enabled else 'disabled'}"),
        ("tensors", f"{len(ckpt.names())} (ignored: {len(ckpt.ignored)} vision/MTP)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
