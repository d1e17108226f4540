"""CPU benchmark: NEG host library (C++) vs the torch reference, same process.

Whole op (head + gate + gated top-k sampling + guided logits) at V = 248320,
H = 4096, d = 1024 (Darwin-9B-NEG sizes), bf16 hidden, top_k = 8, for N in {1, 8, 64},
in two gate cases:

* ``p95``: tau at the 95th percentile of the batch's own H_hat values, so the gate fires on
  the rows strictly above it: about 5 % of rows only at large N (3 or 4 of 64, 1 of 8), and
  on no row at N = 1 (tau is set above that row's H_hat);
* ``all``: tau = -inf, the gate fires on every row.

The ``fired`` column gives the actual count (fired rows / N, from the reference output).
Prints median times and the ratio torch / host (the reference's time over the host library's;
> 1: host faster).
Usage: python benchmarks/bench_neg_cpu.py [--threads T] [--reps R] [--vocab V]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from machine import HelpFormatter, int_at_least, machine_summary, thread_count  # noqa: E402
from timing import median_seconds  # noqa: E402

from trt_neg import neg  # noqa: E402
from trt_neg.kernels import host  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--threads", type=thread_count(0), default=0, help="threads for both (0: torch default)")
    ap.add_argument("--reps", type=int_at_least(1), default=5, help="timed runs per case (the median is printed)")
    ap.add_argument("--vocab", type=int_at_least(1), default=248320, help="vocabulary size V")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    H, d, V = 4096, 1024, args.vocab
    g = torch.Generator().manual_seed(0)
    w = neg.NegWeights(
        fc1_weight=(torch.randn(d, H, generator=g) / math.sqrt(H)).bfloat16(),
        fc1_bias=torch.randn(d, generator=g) * 0.1,
        fc2_weight=torch.randn(d, generator=g) / math.sqrt(d),
        fc2_bias=torch.tensor(0.5),
        threshold=torch.tensor(0.0),
    )
    host.load()
    print(f"# NEG CPU benchmark: host library vs torch reference; V={V} H={H} d={d} top_k=8; "
          f"{machine_summary()}, {threads} threads, torch {torch.__version__}")
    print(f"{'N':>4} {'case':>5} {'fired':>6} {'torch ms':>10} {'host ms':>10} {'torch/host':>10}")
    rows = []
    for n in (1, 8, 64):
        hid = torch.randn(n, H, generator=g).bfloat16()
        z = torch.randn(n, V, generator=g) * 4
        ent = neg.neg_head(hid, w)
        seeds, offs = torch.full((n,), 7), torch.arange(n) + 100
        p95 = float(torch.quantile(ent, 0.95)) if n > 1 else float(ent[0]) + 1  # N=1: above the only row
        for label, tau in (("p95", p95), ("all", -math.inf)):
            kw = dict(activation="silu", top_k=8, temperature=1.0, seeds=seeds, offsets=offs, threshold=tau)
            fired = f"{int(neg.neg_step(hid, z, w, **kw).fired.sum())}/{n}"
            t_ref = median_seconds(lambda: neg.neg_step(hid, z, w, **kw), args.reps)
            t_host = median_seconds(lambda: host.neg_step(hid, z, w, num_threads=threads, **kw), args.reps)
            rows.append((n, label, fired, t_ref, t_host))
            print(f"{n:>4} {label:>5} {fired:>6} {t_ref * 1e3:>10.2f} {t_host * 1e3:>10.2f} {t_ref / t_host:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
