"""Run the reference model over per-sequence state slots (nano-vllm style).

A slot holds one sequence's state in every layer (KV cache for full attention; conv and
fp32 recurrent state for Gated DeltaNet). ``prefill`` starts a sequence in a free slot,
``decode`` appends one token to each of any set of busy slots in one batched forward
(each row at its own position, attending over its own cached length), ``release`` frees a
slot. Every call returns the fp32 logits and the final-norm hidden state (the NEG head's
input) of the last position of each sequence.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..neg import integer_arg
from .model import BatchContext, DarwinNegForCausalLM

TokenIds = Sequence[int] | torch.Tensor


class ReferenceModelRunner:
    def __init__(self, model: DarwinNegForCausalLM, max_slots: int, max_seq_len: int):
        max_slots, max_seq_len = integer_arg(max_slots, "max_slots"), integer_arg(max_seq_len, "max_seq_len")
        for name, value in (("max_slots", max_slots), ("max_seq_len", max_seq_len)):
            if value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value}")
        backbone = model.config.backbone
        if max_seq_len > backbone.max_position_embeddings:  # positions past it were never trained
            raise ValueError(f"max_seq_len: {max_seq_len} exceeds the model's max_position_embeddings "
                             f"({backbone.max_position_embeddings})")
        self.model = model
        self.max_slots, self.max_seq_len = max_slots, max_seq_len
        self.vocab_size, self.hidden_size = backbone.vocab_size, backbone.hidden_size
        self.device = model.device
        self.cache = model.allocate_cache(max_slots, max_seq_len)
        self._lengths: list[int | None] = [None] * max_slots  # None = free

    # --- bookkeeping --------------------------------------------------------------------
    def seq_len(self, slot: int) -> int:
        """Tokens held by ``slot`` (0 when free)."""
        self._check_slot(slot)
        return self._lengths[slot] or 0

    def free_slots(self) -> list[int]:
        return [s for s, n in enumerate(self._lengths) if n is None]

    def release(self, slot: int) -> None:
        self._check_slot(slot)
        if self._lengths[slot] is None:
            raise ValueError(f"slot {slot} is already free")
        self._lengths[slot] = None

    # --- running ------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, slot: int, token_ids: TokenIds) -> tuple[torch.Tensor, torch.Tensor]:
        """Start a sequence in free ``slot``: (logits [V] fp32, hidden [H] fp32) at its last token."""
        logits, hidden = self.prefill_batch([slot], [token_ids])
        return logits[0], hidden[0]

    @torch.no_grad()
    def prefill_batch(self, slots: Sequence[int], prompts: Sequence[TokenIds]) -> tuple[torch.Tensor, torch.Tensor]:
        """Start several sequences at once (right-padded to the longest prompt).

        Returns (logits [N, V] fp32, hidden [N, H] fp32) at each prompt's last token.
        """
        slots = self._check_distinct(slots)
        if len(prompts) != len(slots):
            raise ValueError(f"{len(slots)} slots but {len(prompts)} prompts")
        ids = []
        for slot, prompt in zip(slots, prompts):
            self._check_slot(slot)
            if self._lengths[slot] is not None:
                raise ValueError(f"slot {slot} is busy (holds {self._lengths[slot]} tokens); release it first")
            tokens = self._tokens(prompt, slot)
            if tokens.numel() == 0:
                raise ValueError(f"slot {slot}: empty prompt")
            if tokens.numel() > self.max_seq_len:
                raise ValueError(f"slot {slot}: prompt of {tokens.numel()} tokens exceeds max_seq_len "
                                 f"{self.max_seq_len}")
            ids.append(tokens)
        if not ids:
            return self._no_rows()
        lengths = torch.tensor([t.numel() for t in ids], device=self.device)
        longest = int(lengths.max())
        input_ids = torch.zeros(len(ids), longest, dtype=torch.long, device=self.device)
        for row, tokens in enumerate(ids):
            input_ids[row, : tokens.numel()] = tokens
        slot_index = torch.tensor(slots, device=self.device)
        self.cache.reset(slot_index)
        positions = torch.arange(longest, device=self.device).expand(len(ids), longest)
        ctx = BatchContext(positions, lengths, self.cache, slot_index)
        hidden = self.model.model(input_ids, ctx)
        last = hidden[torch.arange(len(ids), device=self.device), lengths - 1]
        for slot, tokens in zip(slots, ids):
            self._lengths[slot] = tokens.numel()
        return self.model.compute_logits(last), last.float()

    def _no_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.empty(0, self.vocab_size, device=self.device),
                torch.empty(0, self.hidden_size, device=self.device))

    @torch.no_grad()
    def decode(self, slots: Sequence[int], token_ids: TokenIds) -> tuple[torch.Tensor, torch.Tensor]:
        """Append one token to each busy slot: (logits [N, V] fp32, hidden [N, H] fp32)."""
        slots = self._check_distinct(slots)
        tokens = self._tokens(token_ids, None)
        if tokens.numel() != len(slots):
            raise ValueError(f"{len(slots)} slots but {tokens.numel()} token ids")
        for slot, token in zip(slots, tokens.tolist()):
            self._check_slot(slot)
            length = self._lengths[slot]
            if length is None:
                raise ValueError(f"slot {slot} is free; prefill it before decoding")
            if length + 1 > self.max_seq_len:
                raise ValueError(f"slot {slot}: sequence would exceed max_seq_len {self.max_seq_len}")
            if not 0 <= token < self.vocab_size:
                raise ValueError(f"slot {slot}: token id {token} outside the vocabulary ({self.vocab_size})")
        if not slots:
            return self._no_rows()
        positions = torch.tensor([[self._lengths[s]] for s in slots], device=self.device)
        ctx = BatchContext(positions, torch.ones(len(slots), dtype=torch.long, device=self.device), self.cache,
                           torch.tensor(slots, device=self.device))
        hidden = self.model.model(tokens.view(-1, 1), ctx)[:, 0]
        for slot in slots:
            self._lengths[slot] += 1
        return self.model.compute_logits(hidden), hidden.float()

    # --- checks -------------------------------------------------------------------------
    def _check_slot(self, slot: int) -> None:
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.max_slots:
            raise ValueError(f"slot {slot!r} is not a slot index in [0, {self.max_slots})")

    def _check_distinct(self, slots: Sequence[int]) -> list[int]:
        slots = [int(s) if isinstance(s, torch.Tensor) else s for s in slots]
        if len(set(slots)) != len(slots):
            raise ValueError(f"slots {slots} name a slot more than once")
        return slots

    def _tokens(self, token_ids: TokenIds, slot: int | None) -> torch.Tensor:
        tokens = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
        if slot is not None and tokens.numel() and not (0 <= int(tokens.min()) and int(tokens.max()) < self.vocab_size):
            raise ValueError(f"slot {slot}: token ids outside the vocabulary ({self.vocab_size})")
        return tokens.to(self.device)
