"""Simulation parity: converted checkpoints of every tp/pp give the unsharded HF model's logits.

Each converted checkpoint is run by ``simulate.ShardedCheckpoint`` — every tp rank on its
own shard, partial sums added where the engine all-reduces, pipeline stages chained —
and compared in fp32 with transformers' Qwen3.5 on the original HF checkpoint (the
independent reference, DESIGN.md section 3). Four models: the built-in ``tiny`` and three
random configs chosen to hit the awkward cases (KV-head and key-head replication, a
vocabulary tp does not divide, tied embeddings, attention biases, dk != dv, uneven
pipeline stages, conv kernels 2, 3 and 5, full attention in the first layer, an odd
head_dim, hidden_act "swish").
"""

from __future__ import annotations

import pytest
import torch

from trt_neg.checkpoint import synthetic
from trt_neg.checkpoint.convert import convert_checkpoint
from trt_neg.checkpoint.simulate import ShardedCheckpoint

RANDOM_CONFIGS = {
    # GQA 8 q / 2 kv heads (tp 4 replicates KV heads), GDN 2 key / 8 value heads (tp 4 replicates key
    # heads), vocab 301 (padded at tp 2 and 4), tied embeddings, attention biases, 5 layers (pp 2: 3 + 2).
    "random_a": dict(
        layer_types=["full_attention", "linear_attention", "linear_attention", "full_attention", "linear_attention"],
        vocab_size=301, hidden_size=48, intermediate_size=96, num_attention_heads=8, num_key_value_heads=2,
        head_dim=12, linear_num_key_heads=2, linear_num_value_heads=8, linear_key_head_dim=8,
        linear_value_head_dim=6, linear_conv_kernel_dim=3, rms_norm_eps=1e-5, rope_theta=5000.0,
        partial_rotary_factor=0.5, max_position_embeddings=512, tie_word_embeddings=True, attention_bias=True,
        eos_token_id=300, pad_token_id=None, bos_token_id=None,
    ),
    # MHA 4/4 heads, GDN 4 key / 4 value heads (ratio 1), dk 12 != dv 10, conv kernel 2, 3 layers.
    "random_b": dict(
        layer_types=["linear_attention", "full_attention", "linear_attention"],
        vocab_size=260, hidden_size=40, intermediate_size=88, num_attention_heads=4, num_key_value_heads=4,
        head_dim=10, linear_num_key_heads=4, linear_num_value_heads=4, linear_key_head_dim=12,
        linear_value_head_dim=10, linear_conv_kernel_dim=2, rms_norm_eps=1e-6, rope_theta=1e6,
        partial_rotary_factor=0.4, max_position_embeddings=256, tie_word_embeddings=False, attention_bias=False,
        eos_token_id=[258, 259], pad_token_id=257, bos_token_id=None,
    ),
    # hidden_act "swish" (transformers' alias of silu: the same model), GQA 4 q / 1 kv head (replicated
    # at tp 2 and 4), odd head_dim 9 with 8 rotary dims, GDN 1 key / 4 value heads, conv kernel 5, 4 layers.
    "random_c": dict(
        layer_types=["full_attention", "linear_attention", "linear_attention", "full_attention"],
        vocab_size=130, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=1,
        head_dim=9, linear_num_key_heads=1, linear_num_value_heads=4, linear_key_head_dim=8,
        linear_value_head_dim=6, linear_conv_kernel_dim=5, rms_norm_eps=1e-6, rope_theta=300.0,
        partial_rotary_factor=8 / 9, max_position_embeddings=256, tie_word_embeddings=False, attention_bias=False,
        hidden_act="swish", eos_token_id=129, pad_token_id=None, bos_token_id=None,
    ),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_config(dims: dict) -> dict:
    """The tiny preset's ``config.json`` (published layout) with the text dimensions of ``dims``."""
    config = synthetic.preset_config("tiny")
    dims = dict(dims)
    rope = {"rope_type": "default", "rope_theta": dims.pop("rope_theta"),
            "partial_rotary_factor": dims.pop("partial_rotary_factor")}
    config["text_config"].update(dims, num_hidden_layers=len(dims["layer_types"]), rope_parameters=rope)
    config["tie_word_embeddings"] = dims["tie_word_embeddings"]
    config["vision_config"]["out_hidden_size"] = dims["hidden_size"]
    config["neg_config"] = {"head_hidden_size": 16, "activation": "gelu", "top_k": 4, "temperature": 0.7,
                            "seed": 3, "enabled": True}
    return config


@pytest.fixture(scope="module", params=["tiny", "random_a", "random_b", "random_c"])
def model(request, tmp_path_factory, tiny_checkpoint):
    """(name, HF checkpoint dir, input ids, transformers fp32 logits)."""
    from transformers import AutoModelForCausalLM

    name = request.param
    if name == "tiny":
        path = tiny_checkpoint
    else:
        path = synthetic.write_checkpoint_from_config(tmp_path_factory.mktemp(name) / "hf",
                                                      random_config(RANDOM_CONFIGS[name]), seed=7,
                                                      init={"logit_scale": 0.5})
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    vocab = hf.config.vocab_size
    ids = torch.randint(0, vocab, (2, 19), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        logits = hf(ids).logits
    return name, path, ids, logits


@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("pp", [1, 2])
def test_sharded_logits_match_hf(model, tp, pp, tmp_path):
    name, path, ids, expected = model
    out = tmp_path / f"{name}-tp{tp}-pp{pp}"
    report = convert_checkpoint(path, out, tp_size=tp, pp_size=pp, dtype="float32", check_finite=True,
                                chunk_bytes=4096)  # tiny chunks: every tensor is streamed in pieces
    assert sorted(p.name for p in out.iterdir()) == ["config.json"] + sorted(
        f"rank{r}.safetensors" for r in range(tp * pp))
    assert report.tensors_written > 0
    got = ShardedCheckpoint(out)(ids)
    assert got.shape == expected.shape
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-5 * max(1.0, scale))
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_is_the_cast_of_fp32(tiny_checkpoint, tmp_path, dtype):
    """bf16/fp16 checkpoints hold exactly the fp32 checkpoint's values rounded once (fp32-only tensors kept)."""
    from safetensors.torch import load_file

    ref = convert_checkpoint(tiny_checkpoint, tmp_path / "fp32", tp_size=2, dtype="float32").output
    low = convert_checkpoint(tiny_checkpoint, tmp_path / dtype, tp_size=2, dtype=dtype).output
    for rank in range(2):
        a = load_file(str(ref / f"rank{rank}.safetensors"))
        b = load_file(str(low / f"rank{rank}.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            if key.endswith((".A_log", ".dt_bias", "recurrent.norm.weight", "layernorm.weight", "ln_f.weight")) \
                    or key.startswith("neg_"):  # fp32 whatever the model dtype (the folded norms: 1 + w)
                assert b[key].dtype == torch.float32 and torch.equal(a[key], b[key]), key
            else:
                assert b[key].dtype == getattr(torch, dtype), key
                assert torch.equal(a[key].to(b[key].dtype), b[key]), key
    # ...and still compute the same model, within reduced-precision noise (DESIGN.md section 3: bf16 on
    # the tiny model moves logits by up to ~1 and flips a few per cent of the argmaxes).
    ids = torch.arange(3, 60).unsqueeze(0)
    exact, approx = ShardedCheckpoint(ref)(ids), ShardedCheckpoint(low)(ids)
    assert (exact - approx).abs().max() < 0.15 * exact.abs().max()
    assert (exact.argmax(-1) == approx.argmax(-1)).float().mean() >= 0.8


@pytest.mark.parametrize("tp, pp", [(1, 1), (2, 2), (4, 1)])
def test_reference_backend_loads_converted_checkpoints(model, tp, pp, tmp_path):
    """The reference model (trt_neg.reference) runs a converted checkpoint, unsharded via the contract."""
    pytest.importorskip("trt_neg.reference.model")
    from trt_neg.checkpoint.simulate import reference_model_from_converted

    name, path, ids, expected = model
    out = convert_checkpoint(path, tmp_path / "ckpt", tp_size=tp, pp_size=pp, dtype="float32").output
    reference = reference_model_from_converted(out)
    got = reference(ids)
    scale = expected.abs().max().item()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-5 * max(1.0, scale))
    assert set(reference.neg_state_dict) == {"neg_head.fc1.weight", "neg_head.fc1.bias", "neg_head.fc2.weight",
                                             "neg_head.fc2.bias", "neg_gate.threshold"}


def _tie_variant(root, case):
    """An HF checkpoint whose tie_word_embeddings and stored lm_head disagree in one way (see callers)."""
    import json

    from safetensors.torch import load_file, save_file

    config = synthetic.preset_config("tiny")
    if case == "tied config, different head stored":  # untied weights under a tied config
        path = synthetic.write_checkpoint_from_config(root / "hf", config, seed=1)
        config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = True
    elif case == "tied config, equal head stored":  # e.g. saved from a .bin that held both keys
        config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = True
        path = synthetic.write_checkpoint_from_config(root / "hf", config, seed=1)
        tensors = load_file(str(path / "model.safetensors"))
        tensors["lm_head.weight"] = tensors["model.language_model.embed_tokens.weight"].clone()
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:  # "outer tied, text untied, no head": only the wrapper (which the architecture reads) says tied
        config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = True
        path = synthetic.write_checkpoint_from_config(root / "hf", config, seed=1)
        config["text_config"]["tie_word_embeddings"] = False
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("case, tied", [("tied config, different head stored", False),
                                        ("tied config, equal head stored", True),
                                        ("outer tied, text untied, no head", True)])
def test_lm_head_is_the_one_transformers_loads(tmp_path, caplog, case, tied):
    """transformers ties only when the checkpoint does not store a different lm_head (tie_weights keeps
    both, with a warning, when both are stored and differ), and the published architecture
    (Qwen3_5ForConditionalGeneration) reads the wrapper's tie_word_embeddings: the converted checkpoint,
    its config and the reference model all take the head transformers uses."""
    import json
    import logging

    import transformers
    from transformers import Qwen3_5ForConditionalGeneration

    from trt_neg.checkpoint.hf import HFCheckpoint
    from trt_neg.reference import DarwinNegForCausalLM

    transformers.logging.set_verbosity_error()
    path = _tie_variant(tmp_path, case)
    ids = torch.arange(3, 20).unsqueeze(0)
    # (the synthetic checkpoint's one vision tensor has a placeholder shape; text logits do not use it)
    hf = Qwen3_5ForConditionalGeneration.from_pretrained(path, dtype=torch.float32, ignore_mismatched_sizes=True)
    assert (hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()) is tied
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
    with caplog.at_level(logging.WARNING, logger="trt_neg"):
        out = convert_checkpoint(path, tmp_path / "conv", tp_size=2, dtype="float32").output
    warned = [r.getMessage() for r in caplog.records if "NOT tied" in r.getMessage()]
    if case == "tied config, different head stored":
        assert warned and "lm_head.weight" in warned[0] and "model.language_model.embed_tokens.weight" in warned[0]
        assert str(path / "config.json") in warned[0]
    else:
        assert not warned
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is tied
    assert HFCheckpoint(path).config.backbone.tie_word_embeddings is tied
    scale = expected.abs().max().item()
    torch.testing.assert_close(ShardedCheckpoint(out)(ids), expected, rtol=1e-4, atol=2e-5 * max(1.0, scale))
    reference = DarwinNegForCausalLM.from_pretrained(path)
    assert (reference.lm_head.weight is reference.model.embed_tokens.weight) is tied
    torch.testing.assert_close(reference(ids), expected, rtol=1e-4, atol=2e-5 * max(1.0, scale))


def test_stored_head_comparison_reads_row_blocks(tmp_path, monkeypatch):
    """The tied-head comparison streams (row blocks, not whole tensors) and finds a difference in the last row."""
    from safetensors.torch import load_file, save_file

    from trt_neg.checkpoint import hf as hf_module

    path = _tie_variant(tmp_path, "tied config, equal head stored")
    tensors = load_file(str(path / "model.safetensors"))
    tensors["lm_head.weight"][-1, -1] += 1.0
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    monkeypatch.setattr(hf_module, "COMPARE_CHUNK_BYTES", 1000)
    monkeypatch.setattr(hf_module.SafetensorsFile, "get", lambda *a: pytest.fail("read a whole tensor"))
    assert hf_module.load_model_config(path).backbone.tie_word_embeddings is False
