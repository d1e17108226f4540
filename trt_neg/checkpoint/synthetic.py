"""Built-in Darwin-NEG checkpoints: deterministic random weights in the published layout.

``tiny`` (a few hundred thousand parameters, both layer kinds, GQA, partial rotary, with a
small byte-level BPE tokenizer) is what the tests and the demo run on; ``9b`` has the real
9B shapes and is streamed to disk tensor by tensor (about 18 GB in bf16, peak memory far
below 2 GB) so conversion can be measured at full size.

Every parameter is random — norm weights, ``A_log``, ``dt_bias`` and the conv weights
included — because the default initialisation (zeros, ones) hides convention errors such
as a missing ``1 + w`` or a transposed conv.

    python -m trt_neg.checkpoint.synthetic --preset tiny --seed 0 --output checkpoints/tiny
"""

from __future__ import annotations

import contextlib
import copy
import json
import zlib
from pathlib import Path
from typing import Iterator

import click
import torch

from ..cli import InterruptibleCommand
from ..config import FULL_ATTENTION, LINEAR_ATTENTION, config_from_dict
from .hf import NEG_FILE, hf_text_weight_shapes, neg_weight_shapes, published_name
from .safetensors_io import (INDEX_FILE, SINGLE_FILE, OutputKind, StreamingSafetensorsWriter, atomic_output_dir,
                             torch_dtype)

SHARD_BYTES = 4 * 2**30
CHUNK_ELEMENTS = 32 * 2**20
# What the writers below put in a checkpoint: --overwrite replaces only a directory holding nothing else.
BUILTIN_CHECKPOINT = OutputKind("built-in HF checkpoint", (
    "config.json", "generation_config.json", SINGLE_FILE, "model-*-of-*.safetensors", INDEX_FILE, NEG_FILE,
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"))


def _text_config(layers: list[str], **dims) -> dict:
    rope = {"rope_type": "default", "rope_theta": dims.pop("rope_theta"),
            "partial_rotary_factor": dims.pop("partial_rotary_factor")}
    return {"model_type": "qwen3_5_text", "num_hidden_layers": len(layers), "layer_types": layers,
            "rope_parameters": rope, "hidden_act": "silu", "attention_bias": False,
            "attention_dropout": 0.0, **dims}


PRESETS: dict[str, dict] = {
    "tiny": {
        "dtype": "float32",
        "text_config": _text_config(
            [LINEAR_ATTENTION, LINEAR_ATTENTION, LINEAR_ATTENTION, FULL_ATTENTION],
            vocab_size=512, hidden_size=64, intermediate_size=128,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=16,
            linear_conv_kernel_dim=4, rms_norm_eps=1e-6, rope_theta=10000.0, partial_rotary_factor=0.25,
            max_position_embeddings=2048, tie_word_embeddings=False,
            eos_token_id=509, pad_token_id=507, bos_token_id=None,
        ),
        "neg_config": {"head_hidden_size": 32, "activation": "silu", "top_k": 8, "temperature": 1.0,
                       "seed": 0, "enabled": True},
        # Calibrated on the tiny model so the gate fires on a minority of decode steps.
        "neg_fc2_bias": 0.0,
        "neg_threshold": 0.9,
        "logit_scale": 0.35,
        "tokenizer": True,
    },
    "9b": {
        "dtype": "bfloat16",
        "text_config": _text_config(
            [LINEAR_ATTENTION, LINEAR_ATTENTION, LINEAR_ATTENTION, FULL_ATTENTION] * 8,
            vocab_size=248320, hidden_size=4096, intermediate_size=12288,
            num_attention_heads=16, num_key_value_heads=4, head_dim=256,
            linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
            linear_value_head_dim=128, linear_conv_kernel_dim=4, rms_norm_eps=1e-6,
            rope_theta=10000000.0, partial_rotary_factor=0.25, max_position_embeddings=262144,
            tie_word_embeddings=False, eos_token_id=248044, bos_token_id=None, pad_token_id=None,
        ),
        "neg_config": {"head_hidden_size": 1024, "activation": "silu", "top_k": 8, "temperature": 1.0,
                       "seed": 0, "enabled": True},
        "neg_fc2_bias": 0.0,
        "neg_threshold": 1.0,
        "logit_scale": 1.0,
        "tokenizer": False,
    },
}


def preset_config(preset: str, dtype: str | None = None) -> dict:
    """The ``config.json`` (published vision-language layout) of a preset."""
    if preset not in PRESETS:
        raise click.BadParameter(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}", param_hint="--preset")
    p = copy.deepcopy(PRESETS[preset])  # the caller's to edit: nested dicts (rope_parameters) must not be the preset's
    text = p["text_config"]
    return {
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "model_type": "qwen3_5",
        "dtype": dtype or p["dtype"],
        "tie_word_embeddings": text["tie_word_embeddings"],
        "text_config": text,
        "vision_config": {"model_type": "qwen3_5_vision", "depth": 1, "hidden_size": 16, "intermediate_size": 32,
                          "num_heads": 2, "out_hidden_size": text["hidden_size"]},
        "neg_config": p["neg_config"],
    }


def _generator(seed: int, name: str) -> torch.Generator:
    # One generator per tensor, keyed by its name: the bytes of a tensor do not depend on
    # which other tensors exist or on the order they are written in.
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)


def _random_chunks(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int, preset: dict,
                   hidden_size: int) -> Iterator[torch.Tensor]:
    gen = _generator(seed, name)
    leaf = name.rsplit(".", 2)
    rows = shape[0] if shape else 1
    row_elems = max(1, int(torch.Size(shape[1:]).numel())) if shape else 1
    rows_per_chunk = max(1, CHUNK_ELEMENTS // row_elems)
    for start in range(0, rows, rows_per_chunk):
        n = min(rows_per_chunk, rows - start)
        chunk_shape = (n, *shape[1:]) if shape else ()
        yield _init(name, leaf, chunk_shape, gen, preset, hidden_size).to(dtype)


def _init(name: str, leaf: list[str], shape, gen: torch.Generator, preset: dict, hidden_size: int) -> torch.Tensor:
    randn = lambda: torch.randn(shape, generator=gen)  # noqa: E731
    if name == "neg_gate.threshold":
        return torch.full(shape, float(preset["neg_threshold"]))
    if name == "neg_head.fc2.bias":
        return torch.full(shape, float(preset["neg_fc2_bias"])) + 0.1 * randn()
    if name.endswith("linear_attn.norm.weight"):  # plain (not zero-centred) gated norm
        return 1.0 + 0.2 * randn()
    if name.endswith("norm.weight"):  # zero-centred RMSNorms: the model uses (1 + w)
        return 0.2 * randn()
    if name.endswith("A_log"):
        return torch.empty(shape).uniform_(0.2, 4.0, generator=gen).log()
    if name.endswith("dt_bias"):
        return 0.5 * randn()
    if name.endswith("conv1d.weight"):
        return randn() / shape[-1] ** 0.5
    if name.endswith(".bias"):
        return 0.1 * randn()
    if name == "model.embed_tokens.weight":
        return randn()
    if name == "lm_head.weight":
        return preset["logit_scale"] * randn()
    fan_in = shape[-1] if len(shape) > 1 else hidden_size
    return randn() / fan_in ** 0.5


def _ignored_tensors(text: dict) -> dict[str, tuple[int, ...]]:
    """One vision and one MTP tensor: readers of the published layout must skip them."""
    return {"model.visual.patch_embed.proj.weight": (16, 3, 2, 4, 4),
            "mtp.fc.weight": (text["hidden_size"], 2 * text["hidden_size"])}


def write_checkpoint(output: str | Path, preset: str = "tiny", seed: int = 0, dtype: str | None = None,
                     overwrite: bool = False, progress: bool = False) -> Path:
    """Write a preset's checkpoint to ``output`` (atomically) and return its path."""
    config_json = preset_config(preset, dtype)
    p = PRESETS[preset]
    config = config_from_dict(config_json, f"<preset {preset}>")
    b = config.backbone
    torch_dt = torch_dtype(config_json["dtype"])

    tensors: list[tuple[str, str, tuple[int, ...]]] = []  # (stored name, canonical name, shape)
    for canonical, shape in {**hf_text_weight_shapes(b), **neg_weight_shapes(b, config.neg)}.items():
        tensors.append((published_name(canonical), canonical, shape))
    for name, shape in _ignored_tensors(config_json["text_config"]).items():
        tensors.append((name, name, shape))

    shards: list[list[tuple[str, str, tuple[int, ...]]]] = [[]]
    shard_bytes = 0
    for entry in tensors:
        nbytes = torch.Size(entry[2]).numel() * torch_dt.itemsize
        if shards[-1] and shard_bytes + nbytes > SHARD_BYTES:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(entry)
        shard_bytes += nbytes
    total_bytes = sum(torch.Size(e[2]).numel() * torch_dt.itemsize for e in tensors)

    bar = None
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_output_dir(output, overwrite=overwrite, kind=BUILTIN_CHECKPOINT))
        if progress:  # drawn only once the output is known to be writable; closed (its line ended) on any exit
            from tqdm import tqdm

            bar = stack.enter_context(tqdm(total=total_bytes, unit="B", unit_scale=True,
                                           desc=f"writing {preset} checkpoint"))
        weight_map: dict[str, str] = {}
        for index, shard in enumerate(shards):
            fname = (SINGLE_FILE if len(shards) == 1
                     else f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors")
            writer = StreamingSafetensorsWriter(tmp / fname, [(s, shape, torch_dt) for s, _, shape in shard],
                                                metadata={"format": "pt"})
            try:
                for stored, canonical, shape in shard:
                    chunks = _random_chunks(canonical, shape, torch_dt, seed, p, b.hidden_size)
                    if bar is not None:
                        chunks = _count(chunks, bar)
                    writer.write(stored, chunks)
                    weight_map[stored] = fname
                writer.close()
            except BaseException:
                writer.abort()
                raise
        if len(shards) > 1:
            index_json = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
            (tmp / INDEX_FILE).write_text(json.dumps(index_json, indent=2, sort_keys=True) + "\n")
        (tmp / "config.json").write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(
            {"eos_token_id": list(b.eos_token_id), "pad_token_id": b.pad_token_id, "do_sample": False},
            indent=2, sort_keys=True) + "\n")
        if p["tokenizer"]:
            from .tiny_tokenizer import write_tokenizer

            write_tokenizer(tmp, b.vocab_size)
    return Path(output)


def write_checkpoint_from_config(output: str | Path, config_json: dict, seed: int = 0, overwrite: bool = False,
                                 init: dict | None = None, neg_file: bool = False) -> Path:
    """Write a small random checkpoint for any ``config_json`` (one shard, no tokenizer).

    For test configs beyond the presets. The key layout follows the config: published
    (``model.language_model.*`` plus one vision and one MTP tensor) when it has a
    ``text_config``, text (``model.*``) otherwise. ``init`` overrides the tiny preset's
    ``neg_threshold``, ``neg_fc2_bias`` and ``logit_scale``; ``neg_file`` puts the NEG
    tensors in a separate ``neg.safetensors``.
    """
    p = {**{k: PRESETS["tiny"][k] for k in ("neg_threshold", "neg_fc2_bias", "logit_scale")}, **(init or {})}
    config = config_from_dict(config_json, "<config_json>")
    b = config.backbone
    torch_dt = torch_dtype(config_json.get("dtype", "float32"))
    published = "text_config" in config_json
    backbone = [(published_name(n) if published else n, n, s) for n, s in hf_text_weight_shapes(b).items()]
    neg = [(n, n, s) for n, s in neg_weight_shapes(b, config.neg).items()]
    if published:
        backbone += [(n, n, s) for n, s in _ignored_tensors(config_json["text_config"]).items()]
    files = {SINGLE_FILE: backbone + ([] if neg_file else neg)}
    if neg_file:
        files[NEG_FILE] = neg
    with atomic_output_dir(output, overwrite=overwrite, kind=BUILTIN_CHECKPOINT) as tmp:
        for fname, entries in files.items():
            writer = StreamingSafetensorsWriter(tmp / fname, [(s, shape, torch_dt) for s, _, shape in entries],
                                                metadata={"format": "pt"})
            try:
                for stored, canonical, shape in entries:
                    writer.write(stored, _random_chunks(canonical, shape, torch_dt, seed, p, b.hidden_size))
                writer.close()
            except BaseException:
                writer.abort()
                raise
        (tmp / "config.json").write_text(json.dumps(config_json, indent=2, sort_keys=True) + "\n")
    return Path(output)


def _count(chunks, bar):
    for chunk in chunks:
        bar.update(chunk.numel() * chunk.element_size())
        yield chunk


@click.command(cls=InterruptibleCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="tiny", show_default=True,
              help="Model shapes: 'tiny' for tests and the demo, '9b' for full-size measurements.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Random seed in [0, 2**63); the same seed gives the same bytes, different seeds different ones.")
@click.option("--output", type=click.Path(file_okay=False), required=True, help="Checkpoint directory to write.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="Weight dtype (default: the preset's; tiny float32, 9b bfloat16).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output directory: only an empty one or a previous built-in checkpoint.")
def main(preset: str, seed: int, output: str, dtype: str | None, overwrite: bool) -> None:
    """Write a deterministic random Darwin-NEG checkpoint (published HF layout)."""
    try:
        path = write_checkpoint(output, preset, seed, dtype, overwrite, progress=True)
    except OSError as exc:  # exists, not replaceable, not writable: the message names the path
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {preset} checkpoint (seed {seed}) to {path}")


if __name__ == "__main__":
    main()
