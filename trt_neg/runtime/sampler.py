"""The request's own sampling (greedy / temperature / top-k / top-p), batch-invariant.

Every row is computed from its own logits and its own parameters only; its random number
is ``neg.philox_uniform(seed, position)`` — Philox4x32-10 keyed by the request's seed with
the absolute position of the token being generated as the counter — so a row's token does
not depend on which other rows share the step (no global RNG, no per-batch generator).

Conventions (the same as NEG's gated top-k sampling, DESIGN.md section 4):

* NaN logits count as -inf; greedy is ``argmax`` with ties to the lowest id.
* Sampling: candidates ordered by (logit desc, id asc); top-k keeps the first ``k``
  (``top_k == 0``: all); ``p = softmax(z / T)`` in fp32 over the kept ones; top-p keeps the
  shortest prefix whose cumulative probability reaches ``top_p`` (at least one candidate);
  the token is the first candidate whose cumulative probability exceeds ``u * sum(p)``
  (the last kept candidate if rounding leaves none).
* +inf logits: the +inf candidates share the mass equally and finite ones get none (the
  limit of the softmax, as NEG's docs/neg.md decision 6).
* The weights are computed as ``exp((z - z_max) / T)``, so a tiny temperature cannot overflow
  ``z / T`` to +inf: it tends to greedy, with tied largest logits sharing the mass.  A
  temperature beyond fp32's range (``T = inf`` in fp32) gives every finite candidate the same
  weight.
* A row whose logits are all -inf (or NaN) yields its argmax, token 0.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..neg import as_int64, philox_uniform
from .sampling_params import SamplingParams


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """argmax per row, NaN as -inf, ties to the lowest id. [N, V] -> [N] int64."""
    z = logits.float()
    z = torch.where(torch.isnan(z), torch.full_like(z, -math.inf), z)
    return torch.argmax(z, dim=1)


# Rows whose top-k fits in this many candidates are sampled from a compact [rows, W] table of
# their candidates instead of a sort of the whole vocabulary (a 248k-entry sort costs ~30 ms
# per row on a CPU core). The width is a constant, not the batch's largest top-k, so a row's
# arithmetic (softmax, prefix sums) has the same shape whatever shares the step.
COMPACT_WIDTH = 1024


def sample(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    seeds: Sequence[int],
    positions: Sequence[int],
    *,
    compact_width: int = COMPACT_WIDTH,
) -> torch.Tensor:
    """Tokens [N] int64 for logits [N, V] under each row's parameters.

    ``seeds[i]`` (a 64-bit int; ignored for greedy rows) and ``positions[i]`` (absolute
    position of the token being generated) key row i's random draw. ``compact_width`` only
    changes the speed (0 forces the full sort): the tokens are the same either way.
    """
    n, v = logits.shape
    if not (len(params) == len(seeds) == len(positions) == n):
        raise ValueError("sample: params, seeds and positions need one entry per logits row")
    z = logits.float()
    z = torch.where(torch.isnan(z), torch.full_like(z, -math.inf), z)
    tokens = torch.argmax(z, dim=1)
    rows = [i for i, p in enumerate(params) if not p.is_greedy]
    if not rows:
        return tokens
    dev = z.device
    width = min(compact_width, v)
    top_ks = [min(params[i].top_k or v, v) for i in rows]
    candidates = _candidate_masks(z, rows, top_ks, width)
    for group, compact in (([r for r in range(len(rows)) if candidates[r] is None], False),
                           ([r for r in range(len(rows)) if candidates[r] is not None], True)):
        if not group:
            continue
        idx = torch.tensor([rows[r] for r in group], dtype=torch.int64, device=dev)
        zs = z.index_select(0, idx)
        if compact:
            vals, ids = _sorted_candidates(zs, torch.stack([candidates[r] for r in group]), width)
        else:
            # (logit desc, id asc): a stable descending sort keeps equal logits in id order.
            vals, ids = torch.sort(zs, dim=1, descending=True, stable=True)
        chosen = _draw(vals, ids, [params[rows[r]] for r in group], [seeds[rows[r]] for r in group],
                       [positions[rows[r]] for r in group])
        # Rows whose logits are all -inf (or NaN) keep their argmax.
        any_candidate = (zs > -math.inf).any(dim=1)
        tokens[idx] = torch.where(any_candidate, chosen, tokens[idx])
    return tokens


def _candidate_masks(z: torch.Tensor, rows: list[int], top_ks: list[int], width: int) -> list:
    """Per sampling row, the mask of its logits >= its k-th largest (ties included) when they
    fit in ``width`` candidates, else None (that row sorts the whole vocabulary)."""
    out: list = [None] * len(rows)
    fits = [r for r, k in enumerate(top_ks) if k <= width and k < z.shape[1]]
    if not fits:
        return out
    zs = z.index_select(0, torch.tensor([rows[r] for r in fits], dtype=torch.int64, device=z.device))
    largest = torch.topk(zs, max(top_ks[r] for r in fits), dim=1, sorted=True).values
    kth = largest.gather(1, torch.tensor([[top_ks[r] - 1] for r in fits], device=z.device))
    masks = zs >= kth
    for j, (r, count) in enumerate(zip(fits, masks.sum(dim=1).tolist())):
        if count <= width:
            out[r] = masks[j]
    return out


def _sorted_candidates(zs: torch.Tensor, is_candidate: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``width`` entries of the full (logit desc, id asc) order, for rows whose
    candidates (``is_candidate``: the logits >= the k-th largest, at most ``width``) include
    their top-k.

    The candidates are gathered in id order, padded with -inf, then stably sorted: the full
    sort's order restricted to them, since every other logit is smaller. Padding ranks after
    the k-th candidate, so top-k never keeps it.
    """
    m = zs.shape[0]
    row, col = torch.nonzero(is_candidate, as_tuple=True)  # row-major: ids ascending per row
    counts = torch.bincount(row, minlength=m)
    row_start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(row.numel(), device=zs.device) - row_start[row]
    ids = torch.zeros(m, width, dtype=torch.int64, device=zs.device)
    vals = torch.full((m, width), -math.inf, device=zs.device)
    ids[row, slot] = col
    vals[row, slot] = zs[row, col]
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, torch.gather(ids, 1, order)


def _softmax_weights(vals: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
    """Unnormalised ``softmax(z / T)`` weights of rows sorted descending.

    Computed as ``exp((z - z_max) / T)``: shifting before dividing keeps a tiny temperature from
    overflowing ``z / T`` to +inf (the weights then depend on the logits' differences only, as
    the softmax does). Rows whose largest logit is +inf give each +inf logit weight 1 and every
    other 0 (the limit of the softmax, as NEG's docs/neg.md decision 6).
    """
    top = vals[:, :1]
    shift = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    # A temperature below fp32's range would divide by zero (0/0 = NaN at the largest logit).
    temp = torch.clamp(temp, min=torch.finfo(torch.float32).tiny)
    e = torch.exp((vals - shift) / temp)
    # T = inf in fp32 makes -inf / T NaN: those candidates get no weight, the finite ones 1 each.
    e = torch.where(torch.isnan(e), torch.zeros_like(e), e)
    return torch.where(top == math.inf, (vals == math.inf).to(e.dtype), e)


def _draw(vals: torch.Tensor, ids: torch.Tensor, params: Sequence[SamplingParams], seeds: Sequence[int],
          positions: Sequence[int]) -> torch.Tensor:
    """One token per row from candidates sorted by (logit desc, id asc): top-k, top-p, Philox draw."""
    m, width = vals.shape
    dev = vals.device
    temp = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=dev).reshape(m, 1)
    top_k = torch.tensor([p.top_k or width for p in params], dtype=torch.int64, device=dev).reshape(m, 1)
    top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=dev).reshape(m, 1)
    rank = torch.arange(width, device=dev).reshape(1, width)
    keep = rank < top_k
    e = _softmax_weights(vals, temp)
    e = torch.where(keep, e, torch.zeros_like(e))
    # Unnormalised weights and sequential prefix sums only (no tree reductions whose order
    # could depend on the number of rows): total mass = last prefix sum.
    ce = torch.cumsum(e, dim=1)
    total = ce[:, -1:]
    # top-p: keep candidate r when the mass before it is still below top_p (the first always).
    keep = keep & ((ce - e < top_p * total) | (rank == 0))
    p = torch.where(keep, e, torch.zeros_like(e))
    c = torch.cumsum(p, dim=1)
    u = philox_uniform(
        torch.tensor([as_int64(s) for s in seeds], dtype=torch.int64),
        torch.tensor([int(pos) for pos in positions], dtype=torch.int64),
    ).to(dev).reshape(m, 1)
    target = u * c[:, -1:]
    hit = (c > target) & keep
    first = torch.where(hit.any(dim=1), hit.to(torch.int8).argmax(dim=1), -1)
    last_kept = ((p > 0).to(torch.int64) * (rank + 1)).max(dim=1).values - 1
    choice = torch.where(first >= 0, first, torch.clamp(last_kept, min=0))
    return torch.gather(ids, 1, choice.reshape(m, 1)).reshape(m)
