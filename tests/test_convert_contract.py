"""The checkpoint contract and its transforms: names, layouts, split rules, config.json, streaming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trt_neg.checkpoint import contract as C
from trt_neg.checkpoint.convert import RowReader, convert_checkpoint
from trt_neg.checkpoint.hf import HFCheckpoint
from trt_neg.checkpoint.simulate import ShardedCheckpoint
from trt_neg.checkpoint.synthetic import preset_config
from trt_neg.config import config_from_dict

DOC = Path(__file__).resolve().parents[1] / "docs" / "checkpoint_contract.md"


@pytest.fixture(scope="module")
def converted(tiny_checkpoint, tmp_path_factory):
    """tiny converted at tp 2 x pp 2 (fp32) and the HF tensors."""
    out = convert_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("conv") / "tp2pp2", tp_size=2, pp_size=2,
                             dtype="float32").output
    ranks = [load_file(str(out / f"rank{r}.safetensors")) for r in range(4)]
    hf = HFCheckpoint(tiny_checkpoint)
    return out, ranks, {n: hf.get(n) for n in hf.names()}, hf.config.backbone


def test_pp_layers_follow_tensorrt_llm_mapping():
    for layers in range(1, 12):
        for pp in range(1, layers + 1):
            got = [C.Mapping(pp_size=pp).pp_layers(layers, r) for r in range(pp)]
            assert got == [t.tolist() for t in torch.tensor_split(torch.arange(layers), pp)]
    m = C.Mapping(tp_size=2, pp_size=3)
    assert [(m.tp_rank(r), m.pp_rank(r)) for r in range(6)] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]


def test_rank_files_and_stage_contents(converted):
    out, ranks, _, b = converted
    assert sorted(p.name for p in out.iterdir()) == ["config.json"] + [f"rank{r}.safetensors" for r in range(4)]
    for r in (0, 1):  # first stage: layers 0, 1 (linear) + embedding, no final norm / head
        assert "transformer.vocab_embedding.weight" in ranks[r] and "lm_head.weight" not in ranks[r]
        assert "transformer.layers.1.recurrent.A_log" in ranks[r] and "transformer.layers.2.mlp.fc.weight" not in ranks[r]
    for r in (2, 3):  # second stage: global layers 2 (linear) and 3 (full) as local 0 and 1
        assert "transformer.vocab_embedding.weight" not in ranks[r] and "lm_head.weight" in ranks[r]
        assert "transformer.layers.0.recurrent.in_proj_qkv.weight" in ranks[r]
        assert "transformer.layers.1.attention.qkv.weight" in ranks[r]
    for r in range(4):  # NEG everywhere, fp32, identical
        for name in ("neg_head.fc1.weight", "neg_head.fc1.bias", "neg_head.fc2.weight", "neg_head.fc2.bias",
                     "neg_gate.threshold"):
            assert ranks[r][name].dtype == torch.float32 and torch.equal(ranks[r][name], ranks[0][name])
    assert ranks[0]["neg_gate.threshold"].shape == ()


def test_zero_centred_norms_are_folded(converted):
    _, ranks, hf, _ = converted
    for r in (2, 3):
        assert torch.equal(ranks[r]["transformer.ln_f.weight"], 1 + hf["model.norm.weight"])
        assert torch.equal(ranks[r]["transformer.layers.1.input_layernorm.weight"],
                           1 + hf["model.layers.3.input_layernorm.weight"])
        assert torch.equal(ranks[r]["transformer.layers.1.post_layernorm.weight"],
                           1 + hf["model.layers.3.post_attention_layernorm.weight"])
        assert torch.equal(ranks[r]["transformer.layers.1.attention.q_layernorm.weight"],
                           1 + hf["model.layers.3.self_attn.q_norm.weight"])
        assert torch.equal(ranks[r]["transformer.layers.1.attention.k_layernorm.weight"],
                           1 + hf["model.layers.3.self_attn.k_norm.weight"])
        # The Gated DeltaNet output norm is a plain RMSNorm: not folded.
        assert torch.equal(ranks[r]["transformer.layers.0.recurrent.norm.weight"],
                           hf["model.layers.2.linear_attn.norm.weight"])


def test_q_proj_deinterleaved_into_fused_qkv_and_output_gate(converted):
    _, ranks, hf, b = converted
    hd, hq, hkv, h = b.head_dim, b.num_attention_heads, b.num_key_value_heads, b.hidden_size
    per_head = hf["model.layers.3.self_attn.q_proj.weight"].reshape(hq, 2, hd, h)  # per head [query | gate]
    query, gate = per_head[:, 0], per_head[:, 1]
    k = hf["model.layers.3.self_attn.k_proj.weight"].reshape(hkv, hd, h)
    v = hf["model.layers.3.self_attn.v_proj.weight"].reshape(hkv, hd, h)
    for tp_rank, r in enumerate((2, 3)):
        qs, ks = slice(tp_rank * hq // 2, (tp_rank + 1) * hq // 2), slice(tp_rank * hkv // 2, (tp_rank + 1) * hkv // 2)
        expected = torch.cat([query[qs].reshape(-1, h), k[ks].reshape(-1, h), v[ks].reshape(-1, h)])
        assert torch.equal(ranks[r]["transformer.layers.1.attention.qkv.weight"], expected)
        assert torch.equal(ranks[r]["transformer.layers.1.attention.output_gate.weight"], gate[qs].reshape(-1, h))
        o = hf["model.layers.3.self_attn.o_proj.weight"]
        assert torch.equal(ranks[r]["transformer.layers.1.attention.dense.weight"], o.chunk(2, dim=1)[tp_rank])


def test_kv_heads_are_replicated_when_tp_exceeds_them():
    b = config_from_dict(preset_config("9b")).backbone  # 16 q heads, 4 kv heads
    qkv = C.CONTRACT[3]
    assert qkv.name.endswith("attention.qkv.weight")
    srcs = qkv.source_names(3)
    shape = (2 * 16 * 256, 4096)
    for tp_rank in range(8):
        parts = C.pieces(qkv, srcs, b, shape, 8, tp_rank)
        q, k, v = parts[:2], parts[2], parts[3]
        assert [p.start // 512 for p in q] == [2 * tp_rank, 2 * tp_rank + 1]  # its two query heads
        assert k.start // 256 == v.start // 256 == tp_rank // 2  # the KV head those query heads use
        assert k.rows == v.rows == 256


def test_gated_deltanet_key_heads_stay_with_their_value_heads(converted):
    _, ranks, hf, b = converted
    hk, hv, dk, dv = b.linear_num_key_heads, b.linear_num_value_heads, b.linear_key_head_dim, b.linear_value_head_dim
    kd, vd = hk * dk, hv * dv
    w = hf["model.layers.0.linear_attn.in_proj_qkv.weight"]
    conv = hf["model.layers.0.linear_attn.conv1d.weight"]
    for tp_rank in (0, 1):
        keys = range(tp_rank * hk // 2, (tp_rank + 1) * hk // 2)
        values = range(tp_rank * hv // 2, (tp_rank + 1) * hv // 2)
        assert {v // (hv // hk) for v in values} == set(keys)  # the value heads' key heads are local
        channels = torch.cat([torch.arange(g * dk, (g + 1) * dk) for g in keys]
                             + [kd + torch.arange(g * dk, (g + 1) * dk) for g in keys]
                             + [2 * kd + torch.arange(j * dv, (j + 1) * dv) for j in values])
        t = ranks[tp_rank]
        assert torch.equal(t["transformer.layers.0.recurrent.in_proj_qkv.weight"], w[channels])
        assert t["transformer.layers.0.recurrent.conv1d.weight"].shape == (len(channels), 1, conv.shape[-1], 1)
        assert torch.equal(t["transformer.layers.0.recurrent.conv1d.weight"][..., 0], conv[channels])
        rows = slice(values.start * dv, values.stop * dv)
        assert torch.equal(t["transformer.layers.0.recurrent.in_proj_z.weight"],
                           hf["model.layers.0.linear_attn.in_proj_z.weight"][rows])
        heads = slice(values.start, values.stop)
        for name in ("in_proj_b.weight", "in_proj_a.weight"):
            assert torch.equal(t[f"transformer.layers.0.recurrent.{name}"],
                               hf[f"model.layers.0.linear_attn.{name}"][heads])
        assert t["transformer.layers.0.recurrent.A_log"].dtype == torch.float32
        assert torch.equal(t["transformer.layers.0.recurrent.A_log"], hf["model.layers.0.linear_attn.A_log"][heads].float())
        assert t["transformer.layers.0.recurrent.norm.weight"].dtype == torch.float32
        assert torch.equal(t["transformer.layers.0.recurrent.dt_bias"], hf["model.layers.0.linear_attn.dt_bias"][heads])
        assert torch.equal(t["transformer.layers.0.recurrent.out_proj.weight"],
                           hf["model.layers.0.linear_attn.out_proj.weight"][:, rows])
    assert sum(C.linear_conv_dim_per_rank(b, 2) for _ in range(2)) == b.linear_conv_dim


def test_gated_deltanet_key_heads_replicated_when_tp_exceeds_them():
    b = config_from_dict(preset_config("tiny")).backbone  # 2 key heads, 4 value heads
    entry = next(e for e in C.CONTRACT if e.name.endswith("recurrent.in_proj_qkv.weight"))
    for tp_rank in range(4):
        q, k, v = C.pieces(entry, entry.source_names(0), b, (b.linear_conv_dim, b.hidden_size), 4, tp_rank)
        assert q.start // 16 == tp_rank // 2 and (k.start - 32) // 16 == tp_rank // 2  # key head r // 2
        assert (v.start - 64) // 16 == tp_rank  # value head r, which uses key head r // 2
    assert C.linear_conv_dim_per_rank(b, 4) == 2 * 16 + 16


def test_mlp_names_follow_gated_mlp(converted):
    _, ranks, hf, _ = converted
    for tp_rank in (0, 1):
        t = ranks[tp_rank]
        assert torch.equal(t["transformer.layers.0.mlp.fc.weight"],  # fc: the activated branch
                           hf["model.layers.0.mlp.gate_proj.weight"].chunk(2)[tp_rank])
        assert torch.equal(t["transformer.layers.0.mlp.gate.weight"], hf["model.layers.0.mlp.up_proj.weight"].chunk(2)[tp_rank])
        assert torch.equal(t["transformer.layers.0.mlp.proj.weight"],
                           hf["model.layers.0.mlp.down_proj.weight"].chunk(2, dim=1)[tp_rank])


def test_embedding_replicated_lm_head_split_over_the_vocabulary(converted):
    _, ranks, hf, b = converted
    assert torch.equal(ranks[0]["transformer.vocab_embedding.weight"], hf["model.embed_tokens.weight"])
    assert torch.equal(ranks[1]["transformer.vocab_embedding.weight"], hf["model.embed_tokens.weight"])
    assert torch.equal(torch.cat([ranks[2]["lm_head.weight"], ranks[3]["lm_head.weight"]]), hf["lm_head.weight"])


def test_vocab_padding_and_tied_embeddings():
    data = preset_config("tiny")
    data["text_config"].update(vocab_size=301, tie_word_embeddings=True, eos_token_id=300, pad_token_id=None)
    data["tie_word_embeddings"] = True
    config = config_from_dict(data)
    shapes = C.hf_shapes_for(config)
    assert "lm_head.weight" not in shapes
    plans = [C.rank_plan(config, C.Mapping(tp_size=4), r, torch.bfloat16, shapes) for r in range(4)]
    heads = [next(t for t in plan if t.name == "lm_head.weight") for plan in plans]
    assert [h.shape for h in heads] == [(76, 64)] * 4  # 301 padded to 304
    assert all(p.source == "model.embed_tokens.weight" for h in heads for p in h.parts if p.source)
    assert heads[3].parts[-1] == C.Piece(None, 0, 3)  # three zero rows of padding on the last rank


def test_config_json(converted):
    out, _, _, b = converted
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == C.ARCHITECTURE and cfg["dtype"] == "float32" and cfg["logits_dtype"] == "float32"
    assert cfg["mapping"] == {"world_size": 4, "tp_size": 2, "pp_size": 2}
    assert cfg["layer_types"] == ["recurrent", "recurrent", "recurrent", "attention"]
    assert (cfg["state_size"], cfg["rnn_head_size"]) == (b.linear_key_head_dim, b.linear_value_head_dim)
    # One rank's state sizes (the C++ runtime sizes every rank's pools with them, undivided):
    # they match what each rank's shards actually hold.
    assert cfg["rnn_hidden_size"] == b.linear_value_dim // 2
    assert cfg["rnn_conv_dim_size"] == 2 * (b.linear_num_key_heads // 2) * b.linear_key_head_dim \
        + b.linear_value_dim // 2
    _, ranks, _, _ = converted
    for shard in ranks:
        for name, t in shard.items():
            if name.endswith("recurrent.conv1d.weight"):
                assert t.shape[0] == cfg["rnn_conv_dim_size"], name
            if name.endswith("recurrent.A_log"):
                assert t.numel() * cfg["rnn_head_size"] == cfg["rnn_hidden_size"], name
    assert cfg["conv_kernel"] == 4 and cfg["state_dtype"] == "float32"
    assert cfg["rotary_embedding_dim"] == 4 and cfg["rotary_base"] == 10000.0
    assert cfg["position_embedding_type"] == "rope_gpt_neox" and cfg["qk_layernorm"] is True
    assert cfg["head_size"] == 16 and cfg["num_key_value_heads"] == 2 and cfg["norm_epsilon"] == 1e-6
    assert cfg["neg_config"]["head_hidden_size"] == 32 and cfg["neg_config"]["top_k"] == 8
    config, mapping, dtype = C.config_from_checkpoint(cfg)
    assert config.backbone == b and mapping == C.Mapping(2, 2) and dtype == "float32"


def test_simulation_loader_checks_the_contract(converted, tmp_path):
    import shutil

    out = shutil.copytree(converted[0], tmp_path / "ckpt")
    tensors = load_file(str(out / "rank1.safetensors"))
    tensors["transformer.layers.0.recurrent.A_log"] = tensors["transformer.layers.0.recurrent.A_log"][:1].clone()
    save_file(tensors, str(out / "rank1.safetensors"))
    with pytest.raises(Exception, match=r"rank1.safetensors: tensor 'transformer.layers.0.recurrent.A_log': shape"):
        ShardedCheckpoint(out)
    del tensors["transformer.layers.0.recurrent.A_log"]
    save_file(tensors, str(out / "rank1.safetensors"))
    with pytest.raises(Exception, match="missing tensor required by the checkpoint contract"):
        ShardedCheckpoint(out)


def _record_read_sizes(monkeypatch) -> list[int]:
    """The bytes of every RowReader.read from now on, in order (the converter's chunked reads)."""
    sizes = []
    original = RowReader.read

    def spy(self, name, start, stop):
        tensor = original(self, name, start, stop)
        sizes.append(tensor.numel() * tensor.element_size())
        return tensor

    monkeypatch.setattr(RowReader, "read", spy)
    return sizes


def test_streaming_bounds_reads_and_does_not_change_bytes(tiny_checkpoint, tmp_path, monkeypatch):
    big = convert_checkpoint(tiny_checkpoint, tmp_path / "big", tp_size=2, dtype="bfloat16").output
    sizes = _record_read_sizes(monkeypatch)
    small = convert_checkpoint(tiny_checkpoint, tmp_path / "small", tp_size=2, dtype="bfloat16",
                               chunk_bytes=1000).output
    assert max(sizes) <= 1000 and len(sizes) > 200
    for name in ("config.json", "rank0.safetensors", "rank1.safetensors"):
        assert (big / name).read_bytes() == (small / name).read_bytes()


def test_9b_layout_is_possible_for_tp_1_2_4_8():
    config = config_from_dict(preset_config("9b"))
    shapes = C.hf_shapes_for(config)
    for tp in (1, 2, 4, 8):
        C.check_mapping(config.backbone, C.Mapping(tp_size=tp))
        plan = C.rank_plan(config, C.Mapping(tp_size=tp), 0, torch.bfloat16, shapes)
        by_name = {t.name: t.shape for t in plan}
        assert by_name["transformer.layers.0.recurrent.in_proj_qkv.weight"] == (8192 // tp, 4096)
        assert by_name["transformer.layers.3.attention.qkv.weight"] == ((16 // tp + 2 * max(1, 4 // tp)) * 256, 4096)
        assert by_name["lm_head.weight"] == (248320 // tp, 4096)
    with pytest.raises(C.ShardingError, match="num_attention_heads"):
        C.check_mapping(config.backbone, C.Mapping(tp_size=3))


def test_every_contract_entry_is_documented():
    text = DOC.read_text()
    rows = {line.split("|")[1].strip().split(" ")[0]: line for line in text.splitlines() if line.startswith("| `")}
    for entry in C.CONTRACT:
        doc_name = f"`{entry.name.replace('transformer.layers.{i}.', '')}`"
        assert doc_name in text, entry.name
        # The table row gives the entry's transform, split rule and dtype ("model" or a fixed one).
        cells = [c.strip() for c in rows[doc_name].strip().strip("|").split("|")]
        assert (cells[2], cells[3], cells[-1]) == (f"`{entry.transform}`", f"`{entry.split}`", entry.dtype), cells
    for rule in C.SPLIT_RULES:
        assert f"`{rule}`" in text, rule
    for transform in C.TRANSFORMS:
        assert f"`{transform}`" in text, transform


def test_unshard_inverts_the_conversion(converted, tmp_path):
    import shutil

    from trt_neg.checkpoint.safetensors_io import CheckpointError
    from trt_neg.checkpoint.simulate import unshard

    out, _, hf, _ = converted
    config, tensors = unshard(out)
    assert set(tensors) == set(hf)
    for name, expected in hf.items():
        torch.testing.assert_close(tensors[name], expected, rtol=1e-6, atol=1e-6, msg=name)
    # Replicated copies must agree: a rank whose copy differs is reported.
    broken = shutil.copytree(out, tmp_path / "broken")
    t = load_file(str(broken / "rank1.safetensors"))
    t["transformer.layers.0.input_layernorm.weight"] += 1
    save_file(t, str(broken / "rank1.safetensors"))
    with pytest.raises(CheckpointError, match="replicated rows disagree"):
        unshard(broken)


def test_config_json_round_trips_the_rotary_dims_whatever_the_head_size():
    """config.json stores rotary_embedding_dim; reading it back must give the same rotary_dim even where
    rotary / head_size * head_size rounds below rotary in floating point (30 / 104 * 104 = 29.99...)."""
    data = preset_config("tiny")
    text = data["text_config"]
    text.update(head_dim=104, rope_parameters={**text["rope_parameters"], "partial_rotary_factor": 0.2885})
    b = config_from_dict(data).backbone
    assert b.rotary_dim == 30
    cfg = C.checkpoint_config(config_from_dict(data), C.Mapping(1, 1), "float32")
    assert cfg["rotary_embedding_dim"] == 30
    config, _, _ = C.config_from_checkpoint(cfg)
    assert config.backbone.rotary_dim == 30


@pytest.mark.parametrize("field, value, words", [
    ("neg_config", {"head_hidden_size": 32, "topk": 8}, "neg_config.topk"),
    ("neg_config", {"head_hidden_size": 32, "temperature": -1.0}, "neg_config.temperature"),
    ("num_key_value_heads", 3, "num_key_value_heads"),
    ("eos_token_id", [100000], "eos_token_id"),
])
def test_converted_config_json_is_validated_like_the_hf_one(field, value, words):
    """config_from_checkpoint runs config.py's checks: a bad converted config.json names the field."""
    from trt_neg.config import ConfigError

    cfg = C.checkpoint_config(config_from_dict(preset_config("tiny")), C.Mapping(1, 1), "float32")
    cfg[field] = value
    with pytest.raises(ConfigError, match=words) as info:
        C.config_from_checkpoint(cfg, "ckpt/config.json")
    assert "ckpt/config.json" in str(info.value)


def _set(path: str, value):
    """An edit of one (dotted) field of a converted config.json."""
    def edit(cfg):
        *parents, name = path.split(".")
        target = cfg
        for parent in parents:
            target = target[parent]
        target[name] = value
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set("head_size", 0), "field 'head_size': must be >= 1, got 0"),
    (_set("head_size", "16"), "field 'head_size': must be an integer, got '16'"),
    (_set("rotary_embedding_dim", "4"), "field 'rotary_embedding_dim': must be an integer, got '4'"),
    (_set("rotary_embedding_dim", 32), "field 'rotary_embedding_dim': must be <= 16 (head_size), got 32"),
    (_set("rotary_embedding_dim", 5), "field 'rotary_embedding_dim': must be even (RoPE rotates pairs of dims), "
                                      "got 5"),
    (_set("vocab_size", "512"), "field 'vocab_size': must be an integer, got '512'"),
    (_set("eos_token_id", "x"), "field 'eos_token_id': must be a token id or a list of token ids, got 'x'"),
    (_set("eos_token_id", {"a": 1}), "field 'eos_token_id': must be a token id or a list of token ids, got {'a': 1}"),
    (_set("layer_types", None), "field 'layer_types': is required but missing"),
    (_set("layer_types", "recurrent"), "field 'layer_types': must be a list of strings, got 'recurrent'"),
    (_set("rotary_base", "x"), "field 'rotary_base': must be a number, got 'x'"),
    (_set("hidden_act", None), "field 'hidden_act': is required but missing"),
    (_set("norm_epsilon", -1), "field 'norm_epsilon': must be a finite positive number, got -1.0"),
    (_set("conv_kernel", 1), "field 'conv_kernel': must be >= 2, got 1"),
    (_set("attention_bias", "no"), "field 'attention_bias': must be true or false, got 'no'"),
    (_set("mapping.tp_size", "1"), "field 'mapping.tp_size': must be an integer, got '1'"),
    (_set("mapping.tp_size", 1.0), "field 'mapping.tp_size': must be an integer, got 1.0"),
    (_set("mapping.pp_size", 0), "field 'mapping.pp_size': must be >= 1, got 0"),
    (_set("mapping", [1, 1]), "field 'mapping': expected a JSON object, got list"),
    (_set("mapping", {"world_size": 3, "tp_size": 3, "pp_size": 1}),
     "field 'mapping': tensor parallel size 3 is not possible for this model: num_attention_heads (4)"),
    (_set("trt_neg", "x"), "field 'trt_neg': expected a JSON object, got str"),
    (_set("trt_neg.contract_version", 2), "field 'trt_neg.contract_version': is 2, this trt_neg reads version 1; "
                                          "convert the HF checkpoint again"),
])
def test_every_field_of_a_converted_config_json_is_checked(edit, message):
    """A hand-edited or corrupt converted config.json gives ConfigError naming the file and field, never a
    TypeError or ZeroDivisionError, nor a misleading field (a string tp_size once read as world_size's fault)."""
    from trt_neg.config import ConfigError

    cfg = C.checkpoint_config(config_from_dict(preset_config("tiny")), C.Mapping(1, 1), "float32")
    edit(cfg)
    with pytest.raises(ConfigError) as info:
        C.config_from_checkpoint(cfg, "ckpt/config.json")
    assert str(info.value).startswith(f"ckpt/config.json: {message}"), str(info.value)


def test_check_rank_files_reads_headers_only_and_names_the_tensor(converted, tmp_path):
    """The checks inspect and --reuse-checkpoint run: every rank file of the layout against the contract."""
    import shutil

    from trt_neg.checkpoint.safetensors_io import CheckpointError

    out = shutil.copytree(converted[0], tmp_path / "ckpt")
    config, mapping, dtype = C.config_from_checkpoint(json.loads((out / "config.json").read_text()))
    assert C.check_rank_files(out, config, mapping, dtype) == [out / f"rank{r}.safetensors" for r in range(4)]
    tensors = load_file(str(out / "rank3.safetensors"))
    tensors["neg_gate.threshold"] = tensors["neg_gate.threshold"].double()
    save_file(tensors, str(out / "rank3.safetensors"), metadata={"rank": "3"})
    with pytest.raises(CheckpointError, match=r"rank3\.safetensors: tensor 'neg_gate\.threshold': dtype torch\.float64, "
                                              r"contract says torch\.float32"):
        C.check_rank_files(out, config, mapping, dtype)


# ---------------------------------------------------------------------------------------------
# Found by mutation testing (mutants of contract.py / convert.py that the suite above let through)
# ---------------------------------------------------------------------------------------------

def _tiny_backbone(**changes):
    import dataclasses

    return dataclasses.replace(config_from_dict(preset_config("tiny")).backbone, **changes)


@pytest.mark.parametrize("tp, pp", [(0, 1), (1, 0), (-2, 1)])
def test_check_mapping_refuses_sizes_below_one(tp, pp):
    with pytest.raises(C.ShardingError, match=f"tp_size and pp_size must be >= 1; got tp {tp}, pp {pp}"):
        C.check_mapping(_tiny_backbone(), C.Mapping(tp, pp))


@pytest.mark.parametrize("changes, tp, fragment", [
    # Gated DeltaNet key heads that neither divide nor are divisible by tp (value heads do divide)
    (dict(linear_num_key_heads=3, linear_num_value_heads=6), 2,
     "linear_num_key_heads (3) neither divides nor is divisible by tp 2"),
    (dict(linear_num_value_heads=6), 4, "linear_num_value_heads (6) is not divisible by tp 4"),
    (dict(num_key_value_heads=3, num_attention_heads=6), 2, "num_key_value_heads (3) neither divides"),
    (dict(intermediate_size=126), 4, "intermediate_size (126) is not divisible by tp 4"),
])
def test_check_mapping_names_each_dimension_that_does_not_split(changes, tp, fragment):
    with pytest.raises(C.ShardingError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        C.check_mapping(_tiny_backbone(**changes), C.Mapping(tp, 1))


@pytest.mark.parametrize("changes, tp", [
    (dict(), 4),                                           # every head count divisible
    (dict(num_key_value_heads=1), 4),                      # one KV head, replicated
    (dict(linear_num_key_heads=1, linear_num_value_heads=4), 4),  # one GDN key head, replicated
    (dict(linear_num_key_heads=2, linear_num_value_heads=8), 8),  # tp 8 > Hk 2 (8 % 2 == 0)
])
def test_check_mapping_accepts_replicated_heads(changes, tp):
    b = _tiny_backbone(**changes, **({"num_attention_heads": 8, "intermediate_size": 128} if tp == 8 else {}))
    C.check_mapping(b, C.Mapping(tp, 1))
    C.check_mapping(b, C.Mapping(tp, b.num_hidden_layers))  # pp up to the number of layers


def test_rank_file_with_a_tensor_outside_the_contract_is_refused(converted, tmp_path):
    import shutil

    from trt_neg.checkpoint.safetensors_io import CheckpointError

    out = shutil.copytree(converted[0], tmp_path / "ckpt")
    config, mapping, dtype = C.config_from_checkpoint(json.loads((out / "config.json").read_text()))
    tensors = load_file(str(out / "rank1.safetensors"))
    tensors["transformer.layers.0.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(out / "rank1.safetensors"), metadata={"rank": "1"})
    with pytest.raises(CheckpointError, match=r"rank1\.safetensors: tensor 'transformer\.layers\.0\.extra\.weight': "
                                              r"tensor not in the checkpoint contract"):
        C.check_rank_files(out, config, mapping, dtype)
    tensors = load_file(str(out / "rank1.safetensors"))
    del tensors["transformer.layers.0.extra.weight"]
    save_file(tensors, str(out / "rank1.safetensors"), metadata={"rank": "2"})
    with pytest.raises(CheckpointError, match="written for rank 2, not rank 1"):
        C.check_rank_files(out, config, mapping, dtype)
    save_file(tensors, str(out / "rank1.safetensors"))  # no rank recorded (another writer): accepted
    C.check_rank_files(out, config, mapping, dtype)
    (out / "rank2.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"rank2\.safetensors: missing rank file \(a tp 2 pp 2 checkpoint has one "
                                              r"per rank: rank0\.safetensors \.\. rank3\.safetensors\)"):
        C.check_rank_files(out, config, mapping, dtype)


@pytest.mark.parametrize("edit, message, derived", [
    (_set("architecture", "Qwen3NextForCausalLM"), "field 'architecture': expected DarwinNegForCausalLM", False),
    (_set("layer_types", ["recurrent", "linear", "recurrent", "attention"]),
     "field 'layer_types': unknown layer type(s) ['linear']", False),
    (_set("mapping", {"world_size": 2, "tp_size": 1, "pp_size": 1}),
     "field 'mapping.world_size': is 2, tp_size * pp_size is 1", False),
    (_set("rnn_conv_dim_size", 1), "field 'rnn_conv_dim_size': is 1; the contract writes", True),
    (_set("quantization", {"quant_algo": "FP8", "kv_cache_quant_algo": None}), "field 'quantization': is", True),
    (_set("attn_output_gate", 1), "field 'attn_output_gate': is 1; the contract writes true", True),
])
def test_config_from_checkpoint_checks_identity_mapping_and_derived_fields(edit, message, derived):
    """Derived fields are checked only with check_derived (TensorRT-LLM's own to_dict may write them
    in its own forms); the architecture, layer kinds and mapping always."""
    from trt_neg.config import ConfigError

    cfg = C.checkpoint_config(config_from_dict(preset_config("tiny")), C.Mapping(1, 1), "float32")
    edit(cfg)
    with pytest.raises(ConfigError) as info:
        C.config_from_checkpoint(cfg, "ckpt/config.json")
    assert str(info.value).startswith(f"ckpt/config.json: {message}"), str(info.value)
    if derived:
        C.config_from_checkpoint(cfg, "ckpt/config.json", check_derived=False)
    else:
        with pytest.raises(ConfigError):
            C.config_from_checkpoint(cfg, "ckpt/config.json", check_derived=False)


def test_token_ids_are_read_in_their_own_form():
    cfg = C.checkpoint_config(config_from_dict(preset_config("tiny")), C.Mapping(1, 1), "float32")
    cfg["eos_token_id"] = [509, 508]
    assert C.config_from_checkpoint(cfg)[0].backbone.eos_token_id == (509, 508)
    cfg["eos_token_id"] = 509
    assert C.config_from_checkpoint(cfg)[0].backbone.eos_token_id == (509,)


def test_same_json_keeps_booleans_apart_and_compares_objects_by_keys_and_values():
    assert C._same_json({"a": 1, "b": [1, 2.0]}, {"b": [1.0, 2], "a": 1.0})
    assert not C._same_json({"a": 1}, {"a": 1, "b": 2})
    assert not C._same_json({"a": 1, "c": 2}, {"a": 1, "b": 2})
    assert not C._same_json({"a": 1}, {"a": 2})
    assert not C._same_json(True, 1) and not C._same_json(1, True) and C._same_json(False, False)
    assert not C._same_json([1, 2], [1, 2, 3]) and not C._same_json([1, 2], [2, 1])
    assert not C._same_json([1, 2], [1, 3]) and not C._same_json(True, False)
    assert not C._same_json([1], {"a": 1}) and not C._same_json({"a": 1}, [1]) and not C._same_json("ab", ["a", "b"])
    assert not C._same_json("1", 1) and not C._same_json(None, 0) and C._same_json(None, None)
    # quantization: the contract's fields, others (TensorRT-LLM's whole QuantConfig) ignored
    want = {"quant_algo": None, "kv_cache_quant_algo": None}
    assert C._same_quantization({**want, "group_size": 128}, want)
    assert not C._same_quantization({"quant_algo": None}, want) and not C._same_quantization(None, want)


def test_describe_lists_every_entry():
    rows = C.describe()
    assert [r["name"] for r in rows] == [e.name for e in C.CONTRACT]
    qkv = next(r for r in rows if r["name"] == "transformer.layers.{i}.attention.qkv.weight")
    assert qkv == {"name": "transformer.layers.{i}.attention.qkv.weight",
                   "sources": "model.layers.{j}.self_attn.q_proj.weight, model.layers.{j}.self_attn.k_proj.weight, "
                              "model.layers.{j}.self_attn.v_proj.weight",
                   "transform": "fuse_qkv", "split": "qkv_heads", "scope": "attention_layer", "dtype": "model",
                   "optional": ""}


def test_row_reader_resumes_short_reads_and_names_a_file_that_ends_early(tiny_checkpoint, tmp_path, monkeypatch):
    """os.preadv may return fewer bytes than asked (regular files do past 2 GiB a call): the reader
    continues from where it stopped; a read that returns nothing is a truncated file, not a loop."""
    import os
    import shutil

    from trt_neg.checkpoint import convert as convert_module
    from trt_neg.checkpoint.safetensors_io import CheckpointError

    hf = HFCheckpoint(tiny_checkpoint)
    name = "model.layers.0.mlp.up_proj.weight"
    want = hf.get(name)[3:9]
    real = os.preadv
    calls = []

    def short(fd, buffers, offset):  # one byte a call
        calls.append(offset)
        if len(calls) > 100_000:  # fail, rather than hang, if a read that returns nothing is retried forever
            raise AssertionError("the read loop does not end at the end of the file")
        view = memoryview(buffers[0])
        return real(fd, [view[:1]], offset)

    monkeypatch.setattr(convert_module.os, "preadv", short)
    reader = RowReader(hf)
    try:
        assert torch.equal(reader.read(name, 3, 9), want)
        assert len(calls) > 100 and calls == sorted(calls)
        handles = [handle for handle, _, _ in reader._files.values()]
    finally:
        reader.close()
    assert handles and all(handle.closed for handle in handles) and not reader._files

    copy = shutil.copytree(tiny_checkpoint, tmp_path / "hf")
    hf = HFCheckpoint(copy)
    reader = RowReader(hf)
    path, stored, shape, _ = reader.info(name)
    with open(path, "r+b") as fh:  # the file shrinks after it was validated
        fh.truncate(reader._file(path)[1] + _data_offset(reader, path, stored) + 10)
    calls.clear()
    with pytest.raises(CheckpointError, match=r"truncated: could only read \d+ of \d+ bytes"):
        reader.read(name, 0, shape[0])
    assert len(calls) < 100
    reader.close()


def _data_offset(reader, path, stored):
    return reader._file(path)[2][stored]["data_offsets"][0]


def test_resolve_dtype_order_and_validation(tiny_checkpoint, tmp_path):
    """--dtype if given (validated), else config.json's dtype, else torch_dtype, else the embedding's."""
    import shutil

    from trt_neg.checkpoint.convert import resolve_dtype

    hf = HFCheckpoint(tiny_checkpoint)
    assert resolve_dtype(hf, "bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="float8"):
        resolve_dtype(hf, "float8")
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "hf")
    data = json.loads((copy / "config.json").read_text())
    data.pop("dtype", None)
    data.pop("torch_dtype", None)
    data["torch_dtype"] = "float16"
    (copy / "config.json").write_text(json.dumps(data))
    assert resolve_dtype(HFCheckpoint(copy), None) == "float16"
    data["dtype"] = "bfloat16"
    (copy / "config.json").write_text(json.dumps(data))
    assert resolve_dtype(HFCheckpoint(copy), None) == "bfloat16"
    data.pop("dtype")
    data["torch_dtype"] = "int8"  # not a conversion dtype: fall back to the embedding's
    (copy / "config.json").write_text(json.dumps(data))
    assert resolve_dtype(HFCheckpoint(copy), None) == "float32"
    embedding = "model.language_model.embed_tokens.weight"
    for stored, want in ((torch.float16, "float16"), (torch.float64, "float32")):
        tensors = load_file(str(copy / "model.safetensors"))
        tensors[embedding] = tensors[embedding].to(stored)
        save_file(tensors, str(copy / "model.safetensors"), metadata={"format": "pt"})
        assert resolve_dtype(HFCheckpoint(copy), None) == want, stored


def _fd_targets():
    import os

    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return targets


def test_report_counts_bytes_chunks_use_their_budget_and_files_are_closed(tiny_checkpoint, tmp_path, monkeypatch):
    """tp 1 pp 1 reads every HF tensor once and writes what the rank file holds; row chunks fill the
    chunk budget (up to one row short of it); no handle on the source stays open after conversion."""
    import os

    from safetensors import safe_open

    hf = HFCheckpoint(tiny_checkpoint)
    sizes = _record_read_sizes(monkeypatch)

    def open_sources():
        return [t for t in _fd_targets() if t.startswith(str(tiny_checkpoint))]

    before = open_sources()
    report = convert_checkpoint(tiny_checkpoint, tmp_path / "out", dtype="float32", chunk_bytes=1000)
    assert open_sources() == before
    assert report.bytes_read == sum(hf.get(n).numel() * hf.get(n).element_size() for n in hf.names())
    with safe_open(str(report.output / "rank0.safetensors"), "pt") as f:
        written = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys())
        assert report.tensors_written == len(list(f.keys()))
    assert report.bytes_written == written
    assert 1000 - 64 * 4 <= max(sizes) <= 1000  # the widest row of tiny is 64 fp32 values
    # tp 2: replicated tensors are read once for both ranks, split ones once in all
    report = convert_checkpoint(tiny_checkpoint, tmp_path / "tp2", tp_size=2, dtype="float32")
    assert report.bytes_read == sum(hf.get(n).numel() * hf.get(n).element_size() for n in hf.names())
    for rank in range(2):
        with safe_open(str(report.output / f"rank{rank}.safetensors"), "pt") as f:
            assert f.metadata() == {"format": "pt", C.RANK_METADATA_KEY: str(rank)}
    # a conversion that fails half way leaves no handle open on its output either
    monkeypatch.undo()  # reads are no longer recorded
    from trt_neg.checkpoint import convert as convert_module

    def fail(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(convert_module, "_push", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        convert_checkpoint(tiny_checkpoint, tmp_path / "failed", tp_size=2, dtype="float32")
    assert not [t for t in _fd_targets() if t.startswith(str(tmp_path))]


def test_an_existing_output_is_refused_before_the_checkpoint_is_read(tmp_path):
    """convert_checkpoint checks the output first: an existing output and a broken source give the
    output's error (FileExistsError), not the source's."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "rank0.safetensors").write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_checkpoint(tmp_path / "no-such-checkpoint", out)


def test_vocab_padding_rows_are_streamed_in_chunks_of_the_budget(tmp_path):
    """lm_head's zero padding rows (vocab 509 at tp 4: three on the last rank) written in chunks of
    two rows (chunk_bytes = two bf16 rows of 64): every chunk has the rows still missing, no more,
    in the conversion dtype."""
    from trt_neg.checkpoint.synthetic import write_checkpoint_from_config

    data = preset_config("tiny")
    data["text_config"].update(vocab_size=509, eos_token_id=508, pad_token_id=507)
    hf_dir = write_checkpoint_from_config(tmp_path / "hf", data, seed=4)
    out = convert_checkpoint(hf_dir, tmp_path / "tp4", tp_size=4, dtype="bfloat16", chunk_bytes=2 * 64 * 2).output
    head = HFCheckpoint(hf_dir).get("lm_head.weight")
    last = load_file(str(out / "rank3.safetensors"))["lm_head.weight"]
    assert last.shape == (128, 64) and last.dtype == torch.bfloat16  # the zero rows in the model dtype too
    assert torch.equal(last[:125], head[384:].bfloat16()) and not last[125:].any()


def test_mapping_is_an_immutable_value():
    import dataclasses

    assert C.Mapping() == C.Mapping(1, 1) and C.Mapping().world_size == 1  # one GPU by default
    m = C.Mapping(tp_size=2, pp_size=3)
    assert {m: 1}[C.Mapping(2, 3)] == 1 and m.to_dict() == {"world_size": 6, "tp_size": 2, "pp_size": 3}
    assert len(set(C.CONTRACT)) == len(C.CONTRACT)  # entries are hashable values too
    with pytest.raises(dataclasses.FrozenInstanceError):
        C.CONTRACT[0].split = "row"
    config = config_from_dict(preset_config("tiny"))
    plan = C.rank_plan(config, m, 0, torch.float32, C.hf_shapes_for(config))
    assert len(set(plan)) == len(plan)  # planned tensors are values (hashable, immutable)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan[0].shape = (1,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.tp_size = 4


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_recurrent_state_sizes_are_integers_that_match_each_ranks_shards(tp):
    """config.json's rnn_* sizes (one rank's, as ints: TensorRT-LLM's C++ reads them as integers) equal
    what the rank plan puts on each rank -- tp 1 (two GDN key heads a rank), 2 (one) and 4 (one,
    replicated) give three different conv widths."""
    config = config_from_dict(preset_config("tiny"))
    mapping = C.Mapping(tp_size=tp)
    cfg = C.checkpoint_config(config, mapping, "float32")
    sizes = {k: cfg[k] for k in ("state_size", "rnn_head_size", "rnn_hidden_size", "rnn_conv_dim_size")}
    assert all(type(v) is int for v in sizes.values()), sizes
    assert sizes["rnn_conv_dim_size"] == {1: 128, 2: 64, 4: 48}[tp]
    assert C.linear_conv_dim_per_rank(config.backbone, tp) == sizes["rnn_conv_dim_size"]
    for rank in range(tp):
        plan = {t.name: t for t in C.rank_plan(config, mapping, rank, torch.float32, C.hf_shapes_for(config))}
        assert plan["transformer.layers.0.recurrent.conv1d.weight"].shape[0] == sizes["rnn_conv_dim_size"]
        assert plan["transformer.layers.0.recurrent.in_proj_qkv.weight"].shape[0] == sizes["rnn_conv_dim_size"]
        assert plan["transformer.layers.0.recurrent.in_proj_z.weight"].shape[0] == sizes["rnn_hidden_size"]
        a_log = plan["transformer.layers.0.recurrent.A_log"]
        assert a_log.shape[0] * sizes["rnn_head_size"] == sizes["rnn_hidden_size"]


def test_every_entry_uses_a_known_transform_split_scope_and_dtype():
    """The table's vocabulary is closed: a misspelt transform would silently fall back to a copy (an
    unfolded norm), a misspelt split rule or scope would drop or misplace the tensor."""
    scopes = {C.FIRST_STAGE, C.LAST_STAGE, C.EVERY_RANK, C.EVERY_LAYER, C.ATTENTION_LAYER, C.RECURRENT_LAYER}
    assert scopes == {"first_pp_stage", "last_pp_stage", "every_rank", "every_layer", "attention_layer",
                      "recurrent_layer"}  # the names describe() and docs/checkpoint_contract.md show
    for e in C.CONTRACT:
        assert e.transform in C.TRANSFORMS and e.split in C.SPLIT_RULES and e.scope in scopes, e
        assert e.dtype in ("model", *C.DTYPES) and e.optional in ("", "attention_bias"), e
        assert e.name.startswith(("transformer.", "lm_head.", "neg_")), e
        if e.transform == "fold_norm":
            assert e.dtype == "float32" and e.split == "replicated", e
    by_name = {e.name: e for e in C.CONTRACT}
    assert by_name["transformer.layers.{i}.attention.output_gate.weight"].transform == "gate_rows"
    assert by_name["transformer.layers.{i}.attention.output_gate.weight"].split == "query_heads"
    assert {e.transform for e in C.CONTRACT} == set(C.TRANSFORMS)
    assert {e.split for e in C.CONTRACT} == set(C.SPLIT_RULES)


def test_scalar_pieces_are_one_row_and_pieces_are_values():
    config = config_from_dict(preset_config("tiny"))
    entry = next(e for e in C.CONTRACT if e.name == "neg_gate.threshold")
    assert C.pieces(entry, ("neg_gate.threshold",), config.backbone, (), 2, 1) == [C.Piece("neg_gate.threshold", 0, 1)]
    assert C.Piece("x", 0, 1).rows == 1 and len({C.Piece("x", 0, 1), C.Piece("x", 0, 1)}) == 1


def test_config_json_tensorrt_llm_flags():
    """The PretrainedConfig flags TensorRT-LLM's build reads, pinned (config_from_checkpoint only checks
    a file against checkpoint_config itself, so a wrong constant there would pass every round trip)."""
    cfg = C.checkpoint_config(config_from_dict(preset_config("tiny")), C.Mapping(1, 1), "bfloat16")
    assert {k: cfg[k] for k in ("attn_output_gate", "qk_layernorm", "use_parallel_embedding", "embedding_sharding_dim",
                                "share_embedding_table", "rotary_scaling", "quantization", "logits_dtype",
                                "position_embedding_type", "tie_word_embeddings", "attention_bias", "dtype")} == {
        "attn_output_gate": True, "qk_layernorm": True, "use_parallel_embedding": False, "embedding_sharding_dim": 0,
        "share_embedding_table": False, "rotary_scaling": None,
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None}, "logits_dtype": "float32",
        "position_embedding_type": "rope_gpt_neox", "tie_word_embeddings": False, "attention_bias": False,
        "dtype": "bfloat16"}


@pytest.mark.parametrize("edit, ok", [
    (_set("layer_types", [{"kind": "recurrent"}, "recurrent", "recurrent", "attention"]), False),
    (_set("layer_types", ["recurrent", 3, "recurrent", "attention"]), False),
    (_set("rotary_embedding_dim", 2), True),   # the smallest RoPE: one pair of dims
    (_set("rotary_embedding_dim", 16), True),  # the whole head
    (_set("max_position_embeddings", 2), True),  # one prompt token and one generated token
])
def test_layer_types_must_be_strings_and_rotary_dims_range_from_two_to_the_head(edit, ok):
    from trt_neg.config import ConfigError

    cfg = C.checkpoint_config(config_from_dict(preset_config("tiny")), C.Mapping(1, 1), "float32")
    edit(cfg)
    if ok:
        config, _, _ = C.config_from_checkpoint(cfg, "ckpt/config.json", check_derived=False)
        assert config.backbone.rotary_dim == cfg["rotary_embedding_dim"]
        assert config.backbone.max_position_embeddings == cfg["max_position_embeddings"]
    else:
        with pytest.raises(ConfigError, match="field 'layer_types': must be a list of strings"):
            C.config_from_checkpoint(cfg, "ckpt/config.json")


def test_config_from_checkpoint_defaults_source_and_architecture():
    """TensorRT-LLM's own to_dict() may leave out the flags it does not know (check_derived=False):
    attention_bias and tie_word_embeddings then default to false; max_position_embeddings must be >= 2.
    The description records the file it came from and the architecture."""
    from trt_neg.config import ConfigError

    cfg = C.checkpoint_config(config_from_dict(preset_config("tiny")), C.Mapping(1, 1), "float32")
    config, _, _ = C.config_from_checkpoint(cfg, "ckpt/config.json")
    assert config.source == "ckpt/config.json" and config.architecture == C.ARCHITECTURE
    for key in ("attention_bias", "tie_word_embeddings"):
        cfg.pop(key)
    config, _, _ = C.config_from_checkpoint(cfg, "ckpt/config.json", check_derived=False)
    assert config.backbone.attention_bias is False and config.backbone.tie_word_embeddings is False
    cfg["max_position_embeddings"] = 1
    with pytest.raises(ConfigError, match="field 'max_position_embeddings': must be >= 2, got 1"):
        C.config_from_checkpoint(cfg, "ckpt/config.json", check_derived=False)


def test_first_difference_names_the_first_field_that_differs():
    """build_engine.py's check that a reused checkpoint describes the same model: backbone fields first,
    then NEG ("neg_config." + field); the rotary fraction is compared as the rotary dims it gives."""
    import dataclasses

    a = config_from_dict(preset_config("tiny"))
    assert C.first_difference(a, a) is None
    b = dataclasses.replace(a, backbone=dataclasses.replace(a.backbone, partial_rotary_factor=0.26))
    assert b.backbone.rotary_dim == a.backbone.rotary_dim == 4 and C.first_difference(a, b) is None
    c = dataclasses.replace(a, backbone=dataclasses.replace(a.backbone, partial_rotary_factor=0.5))
    assert C.first_difference(a, c) == ("rotary_dim", 4, 8)
    d = dataclasses.replace(a, backbone=dataclasses.replace(a.backbone, intermediate_size=256, rms_norm_eps=1e-5))
    assert C.first_difference(a, d) == ("intermediate_size", 128, 256)
    e = dataclasses.replace(a, neg=dataclasses.replace(a.neg, top_k=5))
    assert C.first_difference(a, e) == ("neg_config.top_k", 8, 5)
    assert C.first_difference(e, a) == ("neg_config.top_k", 5, 8)


def test_progress_bar_counts_every_byte(tiny_checkpoint, tmp_path, capsys):
    report = convert_checkpoint(tiny_checkpoint, tmp_path / "out", tp_size=2, dtype="float32", progress=True)
    err = capsys.readouterr().err
    assert "converting tp2 pp1 float32" in err and "100%" in err
    assert report.bytes_written > 0
