"""CPU benchmark: the request sampler's compact top-k candidates vs the full-vocabulary sort.

Same process, same logits and parameters: ``sample(..., compact_width=0)`` (every sampling
row sorts all V logits, the baseline) against the default (rows whose top-k fits in
``COMPACT_WIDTH`` candidates are drawn from those only). Both give the same tokens (checked
here and in tests/test_runtime_sampling.py). V = 248320 (Darwin-9B-NEG), temperature 0.8,
top-p 0.95, N in {1, 8, 64}, top_k in {50, 1024, 0 (off: full sort either way)}. The ratio
column is sort / compact: the full sort's time over the compact path's (> 1: compact faster).
Usage: python benchmarks/bench_sampler.py [--threads T] [--reps R] [--vocab V]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from machine import HelpFormatter, int_at_least, machine_summary, thread_count  # noqa: E402
from timing import median_seconds  # noqa: E402

from trt_neg.runtime.sampler import COMPACT_WIDTH, sample  # noqa: E402
from trt_neg.runtime.sampling_params import SamplingParams  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--threads", type=thread_count(0), default=0, help="torch threads (0: torch default)")
    ap.add_argument("--reps", type=int_at_least(1), default=5, help="timed runs per case (the median is printed)")
    ap.add_argument("--vocab", type=int_at_least(1), default=248320, help="vocabulary size V")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    v = args.vocab
    g = torch.Generator().manual_seed(0)
    print(f"# request sampler: compact candidates (width {COMPACT_WIDTH}) vs full sort; V={v}; "
          f"{machine_summary()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'N':>4} {'top_k':>6} {'sort ms':>9} {'compact ms':>11} {'sort/compact':>12}")
    for n in (1, 8, 64):
        logits = torch.randn(n, v, generator=g) * 3
        seeds, positions = list(range(1, n + 1)), [100 + i for i in range(n)]
        for top_k in (50, 1024, 0):
            params = [SamplingParams(temperature=0.8, top_k=top_k, top_p=0.95, seed=s) for s in seeds]
            full = lambda: sample(logits, params, seeds, positions, compact_width=0)  # noqa: E731
            compact = lambda: sample(logits, params, seeds, positions)  # noqa: E731
            if not torch.equal(full(), compact()):
                print(f"N={n} top_k={top_k}: the two paths disagree", file=sys.stderr)
                return 1
            t_full, t_compact = median_seconds(full, args.reps), median_seconds(compact, args.reps)
            print(f"{n:>4} {top_k:>6} {t_full * 1e3:>9.1f} {t_compact * 1e3:>11.1f} {t_full / t_compact:>11.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
