"""modeling_utils.py stand-ins: PretrainedConfig, DecoderLayerList, PretrainedModel and
DecoderModelForCausalLM are shared with the recording stub (tests/trtllm_stub_shared/modeling_utils.py);
this stub's PretrainedModel ``from_checkpoint`` reads ``rank{N}.safetensors`` and ``load`` sets every
not-yet-inited parameter, refusing missing, unexpected or mis-shaped tensors, as 1.x
``PretrainedModel.load`` requires (each value keeps its stored dtype, see parameter.py); DecoderModelForCausalLM registers the RoPE tables of this stub's
Attention."""

import os

from trtllm_stub_shared import modeling_utils as _shared
from trtllm_stub_shared.modeling_utils import DecoderLayerList, PretrainedConfig  # noqa: F401

from ..layers import Attention


class PretrainedModel(_shared.PretrainedModel):
    @classmethod
    def from_checkpoint(cls, ckpt_dir, rank=None, config=None, **kwargs):
        from safetensors.torch import load_file

        model = super().from_checkpoint(ckpt_dir, rank=rank, config=config, **kwargs)
        model.load(load_file(os.path.join(ckpt_dir, f"rank{config.mapping.rank}.safetensors")))
        return model

    def load(self, weights):
        required = {n: p for n, p in self.named_parameters() if not p.is_inited()}
        missing = sorted(set(required) - set(weights))
        unexpected = sorted(set(weights) - set(required))
        if missing or unexpected:
            raise RuntimeError(f"load: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, p in required.items():
            p.set_value(weights[name], name=name)


class DecoderModelForCausalLM(_shared.DecoderModelForCausalLM, PretrainedModel):
    _stub_attention_cls = Attention
