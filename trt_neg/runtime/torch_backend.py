"""The torch backend: ``ReferenceModelRunner`` for the forward, ``neg.neg_step`` for NEG,
``sampler.sample`` for the request's own sampling.

On CUDA tensors NEG runs as one fused kernel launch for all rows (``neg.neg_step_fast``,
the torch extension of ``plugins/neg``). On CPU ``neg.neg_step``'s parts ``neg_head`` +
``gate`` + ``gated_topk_sample`` are called separately so that every row pays for the head
(H_hat is reported in both modes) and only the rows where the gate fired (in mode 1) pay for the gated top-k sampling; the
result is the same as ``neg_step`` row by row (tested).

Per row:

* ``H_hat`` is computed in both modes and reported;
* mode 1: NEG decides — a fired row takes NEG's gated top-k token (NEG config
  ``top_k``/``temperature``, Philox key = the row's NEG seed, counter = position); a row
  that does not fire takes the request's own sampling;
* mode 0: the gate never fires; every row takes the request's own sampling.

Batch invariance: prefills run one sequence at a time (exactly the computation of the
request alone); decode rows share one batched forward; sampling is row-wise with
counter-based randomness. Batched GEMMs round differently from single-row ones, so a sampled
draw within ~1e-5 of a probability boundary can differ from the solo run;
``batch_invariant=True`` runs every row by itself and is exact (docs/runtime.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..config import NegConfig
from ..neg import NegWeights, as_int64, gate, gated_topk_sample, neg_head, neg_step_fast
from .backend import BackendRow, BackendSample
from .sampler import sample

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TorchBackend:
    """See the module docstring. ``batch_invariant``: run every row of a step by itself (docs/runtime.md).

    Batched decode shares GEMMs between rows, and a GEMM's rounding depends on how many rows
    it has, so a row's logits can differ from its solo run in the last bits; a sampled draw
    within that distance of a cumulative-probability boundary then picks another token
    (measured in benchmarks/RESULTS.md). With ``batch_invariant=True`` every forward and every
    sampling call has exactly one row, the computation of the request alone, so tokens are
    bitwise those of the solo run, at the price of batching.
    """

    def __init__(self, runner, neg_weights: NegWeights, neg_config: NegConfig, eos_token_ids: Sequence[int] = (),
                 batch_invariant: bool = False):
        self.runner = runner
        self.neg_weights = neg_weights.to(device=runner.device, dtype=torch.float32)
        self.neg_config = neg_config
        self.max_slots = runner.max_slots
        self.max_seq_len = runner.max_seq_len
        self.vocab_size = runner.vocab_size
        self.eos_token_ids = tuple(eos_token_ids)
        self.neg_enabled = bool(neg_config.enabled)
        self.neg_seed = int(neg_config.seed)
        self.device = runner.device
        # None: fused NEG (one kernel launch for all rows) exactly when the logits are on CUDA.
        self.fused_neg: bool | None = None
        self.batch_invariant = bool(batch_invariant)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, max_slots: int = 8, max_seq_len: int | None = None,
                        dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu",
                        batch_invariant: bool = False) -> "TorchBackend":
        from ..reference import DarwinNegForCausalLM, ReferenceModelRunner

        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(f"dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
            dtype = DTYPES[dtype]
        model = DarwinNegForCausalLM.from_pretrained(path, dtype=dtype, device=device)
        cfg = model.config
        limit = cfg.backbone.max_position_embeddings
        if max_seq_len is None:
            max_seq_len = min(limit, 4096)
        # The runner checks max_slots and max_seq_len (integers, >= 1, within max_position_embeddings).
        runner = ReferenceModelRunner(model, max_slots=max_slots, max_seq_len=max_seq_len)
        return cls(runner, NegWeights.from_state_dict(model.neg_state_dict), cfg.neg, cfg.backbone.eos_token_id,
                   batch_invariant=batch_invariant)

    # ---------------------------------------------------------------------------------
    def release(self, slot: int) -> None:
        self.runner.release(slot)

    @torch.inference_mode()
    def step(self, prefill: Sequence[BackendRow], decode: Sequence[BackendRow]) -> list[BackendSample]:
        if self.batch_invariant:
            out = []
            for row in prefill:
                l, h = self.runner.prefill(row.slot, list(row.token_ids))
                out += self.sample([row], l.reshape(1, -1).float(), h.reshape(1, -1).float())
            for row in decode:
                l, h = self.runner.decode([row.slot], [row.token_ids[0]])
                out += self.sample([row], l.float(), h.float())
            return out
        logits, hidden = [], []
        for row in prefill:  # one at a time: the same computation as the request alone
            l, h = self.runner.prefill(row.slot, list(row.token_ids))
            logits.append(l.reshape(1, -1))
            hidden.append(h.reshape(1, -1))
        if decode:
            l, h = self.runner.decode([r.slot for r in decode], [r.token_ids[0] for r in decode])
            logits.append(l)
            hidden.append(h)
        if not logits:
            return []
        rows = list(prefill) + list(decode)
        return self.sample(rows, torch.cat(logits).float(), torch.cat(hidden).float())

    def sample(self, rows: Sequence[BackendRow], logits: torch.Tensor, hidden: torch.Tensor) -> list[BackendSample]:
        """NEG, then the request's own sampling for the rows NEG did not decide, for rows of
        (logits [N, V], hidden [N, H]). Rows are independent, so sampling only some is exact."""
        cfg = self.neg_config
        dev = logits.device
        tokens = torch.zeros(len(rows), dtype=torch.int64, device=dev)
        mode1 = torch.tensor([r.neg_mode == 1 for r in rows], dtype=torch.bool, device=dev)
        if logits.is_cuda if self.fused_neg is None else self.fused_neg:
            # One fused launch (plugins/neg kernel) for head, gate and gated sampling of all rows.
            out = neg_step_fast(
                hidden, logits, self.neg_weights, activation=cfg.activation, top_k=cfg.top_k,
                temperature=cfg.temperature,
                seeds=torch.tensor([as_int64(r.neg_seed) for r in rows], dtype=torch.int64),
                offsets=torch.tensor([r.position for r in rows], dtype=torch.int64))
            entropy, fired = out.entropy, (out.fired.to(dev) & mode1)
            tokens = torch.where(fired, out.token.to(dev), tokens)
        else:
            entropy = neg_head(hidden, self.neg_weights, cfg.activation)  # reported in both modes
            fired = gate(entropy, self.neg_weights.threshold) & mode1  # NaN H_hat never fires
            if bool(fired.any()):  # gated top-k sampling for the fired rows only
                on = fired.nonzero().reshape(-1).tolist()
                idx = torch.tensor(on, dtype=torch.int64, device=dev)
                neg = gated_topk_sample(
                    logits.index_select(0, idx), entropy.index_select(0, idx), self.neg_weights.threshold,
                    cfg.top_k, cfg.temperature,
                    torch.tensor([as_int64(rows[i].neg_seed) for i in on], dtype=torch.int64),
                    torch.tensor([rows[i].position for i in on], dtype=torch.int64),
                )
                tokens[idx] = neg.token.to(dev)
        own = (~fired).nonzero().reshape(-1).tolist()
        if own:
            idx = torch.tensor(own, dtype=torch.int64, device=dev)
            tokens[idx] = sample(logits.index_select(0, idx), [rows[i].sampling for i in own],
                                 [rows[i].sample_seed or 0 for i in own], [rows[i].position for i in own])
        return [BackendSample(t, e, f) for t, e, f in zip(tokens.tolist(), entropy.tolist(), fired.tolist())]
