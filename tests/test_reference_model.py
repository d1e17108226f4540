"""The torch reference model and its slot runner vs transformers' Qwen3_5ForCausalLM.

Three random checkpoints (every parameter random): the built-in ``tiny`` (published
layout, [lin, lin, lin, full], GQA 2, value heads 2x key heads, rotary 1/4), ``gqa4``
(text layout, NEG in a separate neg.safetensors, full attention first, GQA 4, 3 value
heads per key head, d_k != d_v, rotary 1/2, tied embeddings, conv kernel 3) and ``mha``
(published layout, no GQA, one value head per key head, full rotary, attention biases,
five layers). fp32 logits must match within 1e-4 of the logit scale. ``swish`` (text layout, hidden_act
"swish": transformers' alias of silu, the same model; odd head_dim 9 with 8 rotary dims, conv kernel 5,
all layers from full_attention_interval 2, MHA 2/2 heads, 1 key head for 4 value heads).
"""

from __future__ import annotations

import logging

import pytest
import torch

from trt_neg.checkpoint.hf import NEG_TENSORS, HFCheckpoint
from trt_neg.checkpoint.synthetic import preset_config, write_checkpoint_from_config
from trt_neg.config import FULL_ATTENTION as FULL
from trt_neg.config import LINEAR_ATTENTION as LIN
from trt_neg.reference import DarwinNegForCausalLM, ReferenceModelRunner

RTOL_OF_SCALE = 1e-4  # max |ours - transformers| <= 1e-4 * max(1, max |logit|)


def _gqa4_config() -> dict:
    text = preset_config("tiny")["text_config"]
    text.update(
        layer_types=[FULL, LIN, FULL, LIN], num_hidden_layers=4, vocab_size=300, hidden_size=48, intermediate_size=96,
        num_attention_heads=8, num_key_value_heads=2, head_dim=8,
        linear_num_key_heads=1, linear_num_value_heads=3, linear_key_head_dim=8, linear_value_head_dim=12,
        linear_conv_kernel_dim=3, tie_word_embeddings=True, eos_token_id=299, pad_token_id=298,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5},
    )
    text["architectures"] = ["Qwen3_5ForCausalLM"]
    text["neg_config"] = {"head_hidden_size": 16, "activation": "gelu", "top_k": 4}
    return text  # text layout: fields at top level, model.layers.* keys


def _mha_config() -> dict:
    config = preset_config("tiny")
    config["text_config"].update(
        layer_types=[LIN, FULL, LIN, LIN, FULL], num_hidden_layers=5, vocab_size=256, hidden_size=40,
        intermediate_size=72, num_attention_heads=3, num_key_value_heads=3, head_dim=16, attention_bias=True,
        linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=12, linear_value_head_dim=8,
        rms_norm_eps=1e-5, eos_token_id=255, pad_token_id=254,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 1.0},
    )
    config["vision_config"]["out_hidden_size"] = 40
    return config


def _swish_config() -> dict:
    text = preset_config("tiny")["text_config"]
    del text["layer_types"]
    text.update(
        full_attention_interval=2, num_hidden_layers=4, vocab_size=200, hidden_size=32, intermediate_size=48,
        hidden_act="swish", num_attention_heads=2, num_key_value_heads=2, head_dim=9,
        linear_num_key_heads=1, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=6,
        linear_conv_kernel_dim=5, eos_token_id=199, pad_token_id=198,
        rope_parameters={"rope_type": "default", "rope_theta": 300.0, "partial_rotary_factor": 8 / 9},
    )
    text["architectures"] = ["Qwen3_5ForCausalLM"]
    text["neg_config"] = {"head_hidden_size": 16, "activation": "silu", "top_k": 4}
    return text


@pytest.fixture(scope="module")
def checkpoints(tiny_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    return {
        "tiny": tiny_checkpoint,
        "gqa4": write_checkpoint_from_config(root / "gqa4", _gqa4_config(), seed=1, neg_file=True),
        "mha": write_checkpoint_from_config(root / "mha", _mha_config(), seed=2),
        "swish": write_checkpoint_from_config(root / "swish", _swish_config(), seed=3),
    }


_MODELS: dict = {}


def _load(checkpoints, name: str, dtype=torch.float32):
    """(ours, transformers') for a checkpoint and dtype, cached for the module."""
    key = (name, dtype)
    if key not in _MODELS:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        logging.getLogger("transformers").setLevel(logging.ERROR)
        path = checkpoints[name]
        ours = DarwinNegForCausalLM.from_pretrained(path, dtype=dtype)
        theirs = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        # Guard against transformers silently initialising instead of loading.
        ckpt = HFCheckpoint(path)
        for tensor_name in ("model.norm.weight", "model.layers.0.input_layernorm.weight"):
            torch.testing.assert_close(theirs.state_dict()[tensor_name], ckpt.get(tensor_name).to(dtype))
        _MODELS[key] = ours, theirs
    return _MODELS[key]


@pytest.fixture(scope="module", autouse=True)
def _clear_models():
    yield
    _MODELS.clear()


def _tokens(n: int, vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _hf(theirs, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' (logits [T, V], final-norm hidden [T, H]) for one whole sequence."""
    hidden = theirs.model(input_ids=ids[None]).last_hidden_state
    return theirs.lm_head(hidden)[0].float(), hidden[0].float()


def _assert_logits_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    atol = RTOL_OF_SCALE * max(1.0, ref.abs().max().item())
    err = (ours - ref).abs().max().item()
    assert err <= atol, f"{what}: max |diff| {err:.3g} > {atol:.3g}"


def _assert_hidden_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    atol = RTOL_OF_SCALE * max(1.0, ref.abs().max().item())
    err = (ours - ref).abs().max().item()
    assert err <= atol, f"{what} hidden: max |diff| {err:.3g} > {atol:.3g}"


# ------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------

def test_load_layouts_tied_and_neg(checkpoints):
    for name in ("tiny", "gqa4", "mha"):
        ours, _ = _load(checkpoints, name)
        neg = ours.neg_state_dict
        assert tuple(neg) == NEG_TENSORS
        ckpt = HFCheckpoint(checkpoints[name])
        for tensor_name, tensor in neg.items():
            assert tensor.dtype == torch.float32
            torch.testing.assert_close(tensor, ckpt.get(tensor_name).float(), rtol=0, atol=0)
    gqa4, _ = _load(checkpoints, "gqa4")
    assert gqa4.config.backbone.tie_word_embeddings
    assert gqa4.lm_head.weight is gqa4.model.embed_tokens.weight
    assert gqa4.model.layers[0].layer_type == FULL


def test_load_with_key_map(checkpoints, tmp_path):
    """NEG tensors stored under other names load through a key map."""
    import shutil

    from safetensors.torch import load_file, save_file

    src = checkpoints["gqa4"]
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, tmp_path / name)
    neg = load_file(src / "neg.safetensors")
    save_file({f"entropy_probe.{i}": t for i, t in enumerate(neg.values())}, tmp_path / "neg.safetensors")
    key_map = {f"entropy_probe.{i}": name for i, name in enumerate(neg)}
    model = DarwinNegForCausalLM.from_pretrained(tmp_path, key_map=key_map)
    for name, tensor in neg.items():
        torch.testing.assert_close(model.neg_state_dict[name], tensor.float(), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["gqa4", "mha"])
def test_from_state_dict(checkpoints, name):
    """A state dict (canonical names + NEG) gives the from_pretrained model; bad dicts name the tensor."""
    from trt_neg.checkpoint.safetensors_io import CheckpointError

    ckpt = HFCheckpoint(checkpoints[name])
    tensors = dict(ckpt.items())
    model = DarwinNegForCausalLM.from_state_dict(ckpt.config, tensors, dtype="float64")
    ours, _ = _load(checkpoints, name)
    assert model.dtype == torch.float64 and model.neg_state_dict["neg_gate.threshold"].dtype == torch.float32
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == ckpt.config.backbone.tie_word_embeddings
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value.double(), rtol=0, atol=0, msg=key)
    ids = _tokens(12, ckpt.config.backbone.vocab_size, seed=5)[None]
    _assert_logits_close(model(ids).float(), ours(ids), f"{name} from_state_dict fp64")

    with pytest.raises(CheckpointError, match="tensor 'neg_gate.threshold': missing"):
        DarwinNegForCausalLM.from_state_dict(ckpt.config, {k: v for k, v in tensors.items()
                                                           if k != "neg_gate.threshold"})
    with pytest.raises(CheckpointError, match="tensor 'model.extra.weight': not a tensor of this config"):
        DarwinNegForCausalLM.from_state_dict(ckpt.config, {**tensors, "model.extra.weight": torch.zeros(1)})
    bad = {**tensors, "model.norm.weight": tensors["model.norm.weight"][:-1]}
    with pytest.raises(CheckpointError, match=r"tensor 'model.norm.weight': shape \[\d+\], the config needs"):
        DarwinNegForCausalLM.from_state_dict(ckpt.config, bad)


# ------------------------------------------------------------------------------------
# Full-sequence forward
# ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", "gqa4", "mha", "swish"])
def test_forward_matches_transformers(checkpoints, name):
    """Two sequences of 150 tokens (more than two 64-token chunks, not a multiple of 64)."""
    ours, theirs = _load(checkpoints, name)
    vocab = ours.config.backbone.vocab_size
    ids = torch.stack([_tokens(150, vocab, 10), _tokens(150, vocab, 11)])
    with torch.no_grad():
        logits = ours(ids)
        ref = theirs(input_ids=ids).logits.float()
        hidden = ours.model(ids)
        ref_hidden = theirs.model(input_ids=ids).last_hidden_state
    assert logits.dtype == torch.float32 and logits.shape == ref.shape
    _assert_logits_close(logits, ref, f"{name} forward")
    _assert_hidden_close(hidden, ref_hidden, f"{name} forward")


# ------------------------------------------------------------------------------------
# Cached decode through the runner
# ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", "gqa4", "mha", "swish"])
def test_cached_decode_matches_transformers(checkpoints, name):
    """Prefill 70 tokens, then decode 10 more one at a time; every step vs the full forward."""
    ours, theirs = _load(checkpoints, name)
    seq = _tokens(80, ours.config.backbone.vocab_size, 20)
    ref_logits, ref_hidden = _hf(theirs, seq)
    runner = ReferenceModelRunner(ours, max_slots=2, max_seq_len=96)
    logits, hidden = runner.prefill(1, seq[:70].tolist())
    assert logits.shape == (runner.vocab_size,) and hidden.shape == (runner.hidden_size,)
    _assert_logits_close(logits, ref_logits[69], f"{name} prefill")
    _assert_hidden_close(hidden, ref_hidden[69], f"{name} prefill")
    for t in range(70, 80):
        logits, hidden = runner.decode([1], seq[t:t + 1])
        _assert_logits_close(logits[0], ref_logits[t], f"{name} decode position {t}")
        _assert_hidden_close(hidden[0], ref_hidden[t], f"{name} decode position {t}")
    assert runner.seq_len(1) == 80 and runner.free_slots() == [0]


@pytest.mark.parametrize("name", ["tiny", "gqa4"])
def test_batched_decode_of_different_lengths(checkpoints, name):
    """Four sequences (1, 5, 64 and 130 prompt tokens) decoded together, each vs transformers alone.

    Half-way one slot is released and refilled with a new sequence that joins the batch.
    """
    ours, theirs = _load(checkpoints, name)
    vocab = ours.config.backbone.vocab_size
    prompt_lengths = {3: 1, 0: 5, 2: 64, 1: 130}  # slot -> prompt length
    steps = 6
    seqs = {slot: _tokens(n + steps, vocab, 30 + slot) for slot, n in prompt_lengths.items()}
    newcomer = _tokens(9 + steps, vocab, 99)  # replaces slot 0 after 3 steps
    refs = {slot: _hf(theirs, s) for slot, s in seqs.items()}
    ref_new = _hf(theirs, newcomer)

    runner = ReferenceModelRunner(ours, max_slots=5, max_seq_len=160)
    for slot in (3, 0):  # one at a time ...
        logits, _ = runner.prefill(slot, seqs[slot][: prompt_lengths[slot]])
        _assert_logits_close(logits, refs[slot][0][prompt_lengths[slot] - 1], f"{name} prefill slot {slot}")
    logits, hidden = runner.prefill_batch([2, 1], [seqs[2][:64], seqs[1][:130]])  # ... and batched
    for row, slot in enumerate((2, 1)):
        _assert_logits_close(logits[row], refs[slot][0][prompt_lengths[slot] - 1], f"{name} batch prefill {slot}")
        _assert_hidden_close(hidden[row], refs[slot][1][prompt_lengths[slot] - 1], f"{name} batch prefill {slot}")
    assert runner.free_slots() == [4]

    positions = dict(prompt_lengths)  # slot -> index of the next token to feed
    sources = dict(seqs)
    references = dict(refs)
    for step in range(steps):
        if step == 3:
            runner.release(0)
            assert runner.free_slots() == [0, 4]
            logits, _ = runner.prefill(0, newcomer[:9])
            _assert_logits_close(logits, ref_new[0][8], f"{name} refill slot 0")
            positions[0], sources[0], references[0] = 9, newcomer, ref_new
        slots = [1, 3, 0, 2]  # any order
        tokens = [int(sources[s][positions[s]]) for s in slots]
        logits, hidden = runner.decode(slots, tokens)
        assert logits.shape == (4, runner.vocab_size)
        for row, slot in enumerate(slots):
            t = positions[slot]
            _assert_logits_close(logits[row], references[slot][0][t], f"{name} step {step} slot {slot} pos {t}")
            _assert_hidden_close(hidden[row], references[slot][1][t], f"{name} step {step} slot {slot} pos {t}")
            positions[slot] += 1
            assert runner.seq_len(slot) == t + 1


def test_a_previous_occupants_nonfinite_kv_does_not_reach_the_next_one(checkpoints):
    """A request whose keys/values went non-finite (an fp16 overflow, say) leaves them in its
    slot; the next request there, batched with a longer row (so its gathered span reaches past
    its own length), must get exactly the logits it gets alone."""
    ours, _ = _load(checkpoints, "tiny")
    vocab = ours.config.backbone.vocab_size
    short, long_ = _tokens(6, vocab, 5), _tokens(30, vocab, 6)
    solo = ReferenceModelRunner(ours, max_slots=2, max_seq_len=64)
    want_prefill, _ = solo.prefill(0, short[:5])
    want_decode, _ = solo.decode([0], [int(short[5])])

    runner = ReferenceModelRunner(ours, max_slots=2, max_seq_len=64)
    runner.prefill(0, _tokens(40, vocab, 7))
    for tensor in (*runner.cache.key.values(), *runner.cache.value.values()):
        # what an overflowing occupant leaves behind, from the first position the short row does
        # not write itself (its own length: the boundary of the stale-entry mask)
        tensor[0, :, 5:] = float("nan")
    runner.release(0)
    logits, _ = runner.prefill_batch([0, 1], [short[:5], long_[:25]])
    assert torch.isfinite(logits).all()
    _assert_logits_close(logits[0], want_prefill.reshape(-1), "short row of a batched prefill")
    logits, _ = runner.decode([0, 1], [int(short[5]), int(long_[25])])
    assert torch.isfinite(logits).all()
    _assert_logits_close(logits[0], want_decode[0], "short row of a batched decode")


def test_chunked_prefill_and_recurrent_decode_reach_the_same_state(checkpoints):
    """150 tokens prefilled at once (chunked) vs 1 prefilled + 149 decoded (recurrent)."""
    ours, _ = _load(checkpoints, "tiny")
    seq = _tokens(150, ours.config.backbone.vocab_size, 40)
    runner = ReferenceModelRunner(ours, max_slots=2, max_seq_len=151)
    runner.prefill(0, seq)
    runner.prefill(1, seq[:1])
    for t in range(1, 150):
        runner.decode([1], seq[t:t + 1])
    cache = runner.cache

    def same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
        assert b.abs().max() > 0, what
        err, atol = (a - b).abs().max().item(), 1e-4 * max(1.0, b.abs().max().item())
        assert err <= atol, f"{what}: max |diff| {err:.3g} > {atol:.3g}"

    for layer in cache.recurrent:
        same(cache.recurrent[layer][1], cache.recurrent[layer][0], f"recurrent state, layer {layer}")
        same(cache.conv[layer][1], cache.conv[layer][0], f"conv state, layer {layer}")
    for layer in cache.key:
        same(cache.key[layer][1], cache.key[layer][0], f"keys, layer {layer}")
        same(cache.value[layer][1], cache.value[layer][0], f"values, layer {layer}")
    # Both slots now continue identically.
    logits, _ = runner.decode([0, 1], [7, 7])
    _assert_logits_close(logits[1], logits[0], "continuation")


def test_runner_errors_name_the_slot(checkpoints):
    ours, _ = _load(checkpoints, "tiny")
    runner = ReferenceModelRunner(ours, max_slots=3, max_seq_len=8)
    runner.prefill(1, [1, 2, 3])
    with pytest.raises(ValueError, match="slot 1"):
        runner.prefill(1, [4])  # busy
    with pytest.raises(ValueError, match="slot 2"):
        runner.decode([1, 2], [5, 6])  # 2 is free
    with pytest.raises(ValueError, match="slot 0"):
        runner.prefill(0, list(range(9)))  # longer than max_seq_len
    with pytest.raises(ValueError, match="slot 5"):
        runner.prefill(5, [1])  # no such slot
    with pytest.raises(ValueError, match="slot 0"):
        runner.release(0)  # already free
    assert runner.seq_len(1) == 3  # failed calls changed nothing
    for _ in range(5):
        runner.decode([1], [1])
    with pytest.raises(ValueError, match="slot 1"):
        runner.decode([1], [1])  # would be token 9 of 8
    runner.release(1)
    assert runner.free_slots() == [0, 1, 2] and runner.seq_len(1) == 0
    runner.prefill(1, [3])  # reusable after release
    assert runner.seq_len(1) == 1


def test_runner_refuses_positions_past_max_position_embeddings(checkpoints):
    """A runner sized past the model's trained positions would silently decode there."""
    ours, _ = _load(checkpoints, "tiny")
    limit = ours.config.backbone.max_position_embeddings
    with pytest.raises(ValueError, match=f"max_seq_len: {limit + 1} exceeds the model's max_position_embeddings "
                                         f"\\({limit}\\)"):
        ReferenceModelRunner(ours, max_slots=1, max_seq_len=limit + 1)
    assert ReferenceModelRunner(ours, max_slots=1, max_seq_len=limit).max_seq_len == limit


def test_runner_empty_batches_return_empty_rows(checkpoints):
    ours, _ = _load(checkpoints, "tiny")
    runner = ReferenceModelRunner(ours, max_slots=2, max_seq_len=8)
    for logits, hidden in (runner.prefill_batch([], []), runner.decode([], [])):
        assert logits.shape == (0, runner.vocab_size) and hidden.shape == (0, runner.hidden_size)
    assert runner.free_slots() == [0, 1]


# ------------------------------------------------------------------------------------
# Half precision: loose agreement only (DESIGN.md section 3)
# ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_close(checkpoints, dtype):
    _, theirs32 = _load(checkpoints, "tiny")
    ours, theirs = _load(checkpoints, "tiny", dtype)
    assert ours.lm_head.weight.dtype == dtype
    ids = torch.stack([_tokens(100, ours.config.backbone.vocab_size, 50 + i) for i in range(2)])
    with torch.no_grad():
        ref32 = theirs32(input_ids=ids).logits.float()
        ref = theirs(input_ids=ids).logits.float()
        logits = ours(ids)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    # vs fp32: rounding only (measured: bf16 93 % argmax agreement, fp16 99 %).
    agree = (logits.argmax(-1) == ref32.argmax(-1)).float().mean().item()
    assert agree >= 0.8, f"{dtype} argmax agreement with fp32 transformers only {agree:.2%}"
    assert (logits - ref32).abs().max() < 0.25 * ref32.abs().max()
    # vs transformers in the same dtype: the same roundings (measured: bf16 identical, fp16 1e-3 of scale).
    agree = (logits.argmax(-1) == ref.argmax(-1)).float().mean().item()
    assert agree >= 0.98, f"{dtype} argmax agreement with {dtype} transformers only {agree:.2%}"
    assert (logits - ref).abs().max() < 0.02 * ref.abs().max()

    # Cached decode in the same dtype tracks the same dtype's full forward (state in fp32).
    runner = ReferenceModelRunner(ours, max_slots=2, max_seq_len=100)
    assert all(s.dtype == torch.float32 for s in runner.cache.recurrent.values())
    step_logits = [runner.prefill_batch([0, 1], [ids[0, :80], ids[1, :60]])[0]]
    for t in range(8):
        step_logits.append(runner.decode([0, 1], [ids[0, 80 + t], ids[1, 60 + t]])[0])
    got = torch.stack(step_logits, dim=1)  # [2, 9, V]
    want = torch.stack([logits[0, 79:88], logits[1, 59:68]])
    agree = (got.argmax(-1) == want.argmax(-1)).float().mean().item()
    assert agree >= 0.9, f"{dtype} cached decode vs forward argmax agreement {agree:.2%}"
    assert (got - want).abs().max() < 0.1 * want.abs().max()


# ------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# ------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_cuda_matches_cpu(checkpoints):
    """fp32 on CUDA (flash-linear-attention kernels when importable) vs the CPU model; bf16 runs."""
    # Our own CPU model, not _load(): that also loads transformers' model, and the transformers that
    # TensorRT-LLM 1.2's container pins (4.57) has no qwen3_5 -- this test runs in that container.
    cpu = DarwinNegForCausalLM.from_pretrained(checkpoints["tiny"])
    gpu = DarwinNegForCausalLM.from_pretrained(checkpoints["tiny"], device="cuda")
    assert all(t.is_cuda for t in gpu.neg_state_dict.values())
    ids = torch.stack([_tokens(150, cpu.config.backbone.vocab_size, 60 + i) for i in range(2)])
    with torch.no_grad():
        want = cpu(ids)
        got = gpu(ids.cuda()).cpu()
    _assert_logits_close(got, want, "cuda forward")
    runner = ReferenceModelRunner(gpu, max_slots=3, max_seq_len=160)
    steps = [runner.prefill_batch([2, 0], [ids[0, :140], ids[1, :100]])[0].cpu()]
    for t in range(5):
        steps.append(runner.decode([0, 2], [ids[1, 100 + t], ids[0, 140 + t]])[0].cpu().flip(0))
    got = torch.stack(steps, dim=1)
    _assert_logits_close(got, torch.stack([want[0, 139:145], want[1, 99:105]]), "cuda runner")

    half = DarwinNegForCausalLM.from_pretrained(checkpoints["tiny"], dtype=torch.bfloat16, device="cuda")
    with torch.no_grad():
        logits = half(ids.cuda()).cpu()
    assert (logits.argmax(-1) == want.argmax(-1)).float().mean() >= 0.8


# ------------------------------------------------------------------------------------
# Found by mutation testing (mutants of reference/model.py that the suite above let through)
# ------------------------------------------------------------------------------------

def test_lazy_tensors_are_a_mapping_of_the_checkpoints_names(tiny_checkpoint):
    from trt_neg.reference.model import _LazyTensors

    ckpt = HFCheckpoint(tiny_checkpoint)
    lazy = _LazyTensors(ckpt)
    assert list(lazy) == list(ckpt.names()) and len(lazy) == len(list(ckpt.names()))
    assert "neg_gate.threshold" in lazy and "model.visual.patch_embed.weight" not in lazy
    torch.testing.assert_close(lazy["model.norm.weight"], ckpt.get("model.norm.weight"), rtol=0, atol=0)
    with pytest.raises(KeyError, match="model.nope"):
        lazy["model.nope"]


def test_rotary_angles_hold_far_positions():
    """RoPE angles at positions past fp16's exact integers (2048) and range (65504): the 9B reads
    positions up to max_position_embeddings (262144), so the angle maths stays fp32."""
    from trt_neg.config import config_from_dict
    from trt_neg.reference.model import Qwen3_5RotaryEmbedding

    b = config_from_dict(preset_config("tiny")).backbone
    rope = Qwen3_5RotaryEmbedding(b)
    positions = torch.tensor([[0, 1, 2049, 4097, 65537, 262143]])
    cos, sin = rope(positions, torch.float32)
    inv = 1.0 / (b.rope_theta ** (torch.arange(0, b.rotary_dim, 2, dtype=torch.float64) / b.rotary_dim))
    angles = positions[..., None].double() * inv
    angles = torch.cat((angles, angles), dim=-1)
    assert cos.shape == (1, 6, b.rotary_dim) and cos.dtype == torch.float32
    torch.testing.assert_close(cos.double(), angles.cos(), rtol=0, atol=0.05)
    torch.testing.assert_close(sin.double(), angles.sin(), rtol=0, atol=0.05)
    torch.testing.assert_close(cos[0, :2].double(), angles[0, :2].cos(), rtol=0, atol=1e-6)


def test_state_dict_shapes_only_the_neg_vectors_may_take_another_form(checkpoints):
    """DESIGN.md's [d] / scalar forms of fc2.weight, fc2.bias and the threshold load as their canonical
    [1, d] / [1] / []; any other tensor (backbone or fc1) in another shape with the same element count,
    such as its transpose, is refused -- never silently reshaped."""
    from trt_neg.checkpoint.safetensors_io import CheckpointError

    ckpt = HFCheckpoint(checkpoints["tiny"])
    tensors = dict(ckpt.items())
    forms = {"neg_head.fc2.weight": tensors["neg_head.fc2.weight"].reshape(-1),
             "neg_head.fc2.bias": tensors["neg_head.fc2.bias"].reshape(()),
             "neg_gate.threshold": tensors["neg_gate.threshold"].reshape(1)}
    model = DarwinNegForCausalLM.from_state_dict(ckpt.config, {**tensors, **forms})
    for name, tensor in model.neg_state_dict.items():
        assert tuple(tensor.shape) == tuple(tensors[name].shape)
        torch.testing.assert_close(tensor, tensors[name].float(), rtol=0, atol=0)
    for name in ("model.layers.0.mlp.up_proj.weight", "neg_head.fc1.weight"):
        bad = {**tensors, name: tensors[name].t().contiguous()}
        with pytest.raises(CheckpointError, match=f"tensor '{name}': shape"):
            DarwinNegForCausalLM.from_state_dict(ckpt.config, bad)
    bad = {**tensors, "neg_head.fc2.weight": torch.zeros(tensors["neg_head.fc2.weight"].numel() + 1)}
    with pytest.raises(CheckpointError, match="tensor 'neg_head.fc2.weight': shape"):  # any form, but d values
        DarwinNegForCausalLM.from_state_dict(ckpt.config, bad)


def test_constructed_model_ties_the_head_only_when_the_config_says_so(checkpoints):
    for name, tied in (("gqa4", True), ("tiny", False)):
        config = HFCheckpoint(checkpoints[name]).config
        assert config.backbone.tie_word_embeddings == tied
        model = DarwinNegForCausalLM(config)
        assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied


def test_neg_tensors_are_fp32_on_the_models_device_and_nothing_requires_grad(checkpoints):
    """NEG tensors given in another float dtype are held in fp32; after the model moves (here to
    the meta device, as a stand-in for a GPU) neg_state_dict follows it. An inference model."""
    ckpt = HFCheckpoint(checkpoints["tiny"])
    tensors = {name: (t.double() if name.startswith("neg_") else t) for name, t in ckpt.items()}
    model = DarwinNegForCausalLM.from_state_dict(ckpt.config, tensors)
    assert all(t.dtype == torch.float32 for t in model.neg_state_dict.values())
    assert not any(p.requires_grad for p in model.parameters())
    model.to("meta")
    assert all(t.device.type == "meta" for t in model.neg_state_dict.values())


def test_model_cache_and_batch_context_are_made_on_the_requested_device(tiny_checkpoint):
    """from_pretrained(device=...), allocate_cache and BatchContext put every tensor on the model's or
    the inputs' device (the meta device stands in for a GPU here)."""
    from trt_neg.reference.model import BatchContext

    model = DarwinNegForCausalLM.from_pretrained(tiny_checkpoint, device="meta")
    assert model.device.type == "meta"
    assert all(t.device.type == "meta" for t in model.neg_state_dict.values())
    cache = model.allocate_cache(2, 16)
    tensors = [*cache.key.values(), *cache.value.values(), *cache.conv.values(), *cache.recurrent.values()]
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert all(t.dtype == torch.float32 for t in cache.recurrent.values())  # the recurrent state is fp32 always
    ctx = BatchContext.whole_sequences(torch.zeros(2, 3, dtype=torch.long, device="meta"))
    assert {ctx.positions.device.type, ctx.num_tokens.device.type, ctx.valid.device.type} == {"meta"}
