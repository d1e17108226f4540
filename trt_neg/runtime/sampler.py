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
* A row with no finite logit yields its argmax (= token 0 when all are -inf).
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


def sample(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    seeds: Sequence[int],
    positions: Sequence[int],
) -> torch.Tensor:
    """Tokens [N] int64 for logits [N, V] under each row's parameters.

    ``seeds[i]`` (a 64-bit int; ignored for greedy rows) and ``positions[i]`` (absolute
    position of the token being generated) key row i's random draw.
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
    idx = torch.tensor(rows, dtype=torch.int64, device=dev)
    zs = z.index_select(0, idx)
    m = len(rows)
    temp = torch.tensor([params[i].temperature for i in rows], dtype=torch.float32, device=dev).reshape(m, 1)
    top_k = torch.tensor([params[i].top_k or v for i in rows], dtype=torch.int64, device=dev).reshape(m, 1)
    top_p = torch.tensor([params[i].top_p for i in rows], dtype=torch.float32, device=dev).reshape(m, 1)

    # (logit desc, id asc): a stable descending sort keeps equal logits in id order.
    vals, ids = torch.sort(zs, dim=1, descending=True, stable=True)
    rank = torch.arange(v, device=dev).reshape(1, v)
    keep = rank < top_k
    x = vals / temp
    finite_max = x[:, :1]
    x = torch.where(keep, x, torch.full_like(x, -math.inf))
    e = torch.exp(x - torch.where(torch.isfinite(finite_max), finite_max, torch.zeros_like(finite_max)))
    e = torch.where(torch.isnan(e), torch.zeros_like(e), e)
    # Unnormalised weights and sequential prefix sums only (no tree reductions whose order
    # could depend on the number of rows): total mass = last prefix sum.
    ce = torch.cumsum(e, dim=1)
    total = ce[:, -1:]
    # top-p: keep candidate r when the mass before it is still below top_p (the first always).
    keep = keep & ((ce - e < top_p * total) | (rank == 0))
    p = torch.where(keep, e, torch.zeros_like(e))
    c = torch.cumsum(p, dim=1)
    u = philox_uniform(
        torch.tensor([as_int64(seeds[i]) for i in rows], dtype=torch.int64),
        torch.tensor([int(positions[i]) for i in rows], dtype=torch.int64),
    ).to(dev).reshape(m, 1)
    target = u * c[:, -1:]
    hit = (c > target) & keep
    first = torch.where(hit.any(dim=1), hit.to(torch.int8).argmax(dim=1), -1)
    last_kept = ((p > 0).to(torch.int64) * (rank + 1)).max(dim=1).values - 1
    choice = torch.where(first >= 0, first, torch.clamp(last_kept, min=0))
    chosen = torch.gather(ids, 1, choice.reshape(m, 1)).reshape(m)
    # Rows without any finite logit keep their argmax.
    any_finite = torch.isfinite(zs).any(dim=1)
    tokens[idx] = torch.where(any_finite, chosen, tokens[idx])
    return tokens

