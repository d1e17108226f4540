"""The enums of ``tensorrt_llm.functional`` both stubs re-export (their ``Tensor`` and ops differ)."""

from __future__ import annotations

import enum


class PositionEmbeddingType(enum.IntEnum):
    learned_absolute = 0
    rope_gptj = 1
    rope_gpt_neox = 2

    def is_rope(self):
        return self in (PositionEmbeddingType.rope_gptj, PositionEmbeddingType.rope_gpt_neox)

    @staticmethod
    def from_string(s):
        return PositionEmbeddingType[s]

    def __str__(self):
        return self.name


class AttentionMaskType(enum.IntEnum):
    padding = 0
    causal = 1


class LayerNormType(enum.IntEnum):
    LayerNorm = 0
    RmsNorm = 1
    GroupNorm = 2
