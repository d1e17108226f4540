"""Batch invariance of the torch backend: how often batched decoding changes a token, and what
the exact (batch-invariant) mode costs.

For K random workloads (random prompts and output lengths, greedy and sampled requests, NEG
modes 0 and 1, all submitted at once to an in-flight engine of B slots) on the tiny
checkpoint, each request's tokens from the busy batch are compared with the same request run
alone (same seed). Both backend modes are run:

* default: decode rows share one batched forward (GEMMs over B rows);
* ``batch_invariant=True``: every row of a step runs by itself.

Prints, per mode: requests whose tokens differ from their solo run, the largest predicted-
entropy deviation before any divergence, and throughput (requested tokens / s) with the ratio
of each mode's throughput to the exact one's (default / batch-invariant > 1: the default mode is
faster). No assertions.

    python benchmarks/bench_batch_invariance.py [--workloads 20] [--requests 56] [--batch 12]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from machine import HelpFormatter, int_at_least, machine_summary, thread_count  # noqa: E402

from trt_neg.runtime import LLMEngine, Request, SamplingParams  # noqa: E402
from trt_neg.runtime.torch_backend import TorchBackend  # noqa: E402


def workload(rng: random.Random, n: int, vocab: int) -> list[Request]:
    reqs = []
    for i in range(n):
        mode = i % 2
        if i % 3 == 0:
            sp = SamplingParams()
        else:
            sp = SamplingParams(temperature=rng.choice([0.7, 1.0, 1.5]), top_k=rng.choice([0, 5, 50]),
                                top_p=rng.choice([1.0, 0.9]), seed=rng.randrange(2**63))
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(1, 48))]
        reqs.append(Request(prompt, max_new_tokens=rng.randint(1, 40), sampling=sp, neg_mode=mode,
                            ignore_eos=True))
    return reqs


def run(backend: TorchBackend, reqs: list[Request], batch: int):
    engine = LLMEngine(backend, max_batch_size=batch)
    start = time.perf_counter()
    results = engine.generate(reqs)
    return results, time.perf_counter() - start


def compare(batched, solo) -> tuple[bool, float]:
    """(tokens differ, largest |entropy difference| up to the first differing token)."""
    n = next((i for i, (a, b) in enumerate(zip(batched.tokens, solo.tokens)) if a != b), len(batched.tokens))
    dev = max((abs(a - b) for a, b in zip(batched.entropies[: n + 1], solo.entropies[: n + 1])), default=0.0)
    return batched.tokens != solo.tokens, dev


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--workloads", type=int_at_least(1), default=20, help="random workloads K")
    ap.add_argument("--requests", type=int_at_least(1), default=56, help="requests per workload")
    ap.add_argument("--batch", type=int_at_least(1), default=12, help="engine slots B")
    ap.add_argument("--threads", type=thread_count(1), default=1, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from trt_neg.checkpoint.synthetic import write_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(Path(tmp) / "tiny", "tiny", seed=0)
        default = TorchBackend.from_pretrained(ckpt, max_slots=args.batch, max_seq_len=128)
        exact = TorchBackend(default.runner, default.neg_weights, default.neg_config, default.eos_token_ids,
                             batch_invariant=True)
        totals = {"default": [0, 0.0, 0.0, 0], "batch_invariant": [0, 0.0, 0.0, 0]}  # differ, dev, seconds, tokens
        for k in range(args.workloads):
            reqs = workload(random.Random(1000 + k), args.requests, default.vocab_size)
            solo = [run(default, [r], 1)[0][0] for r in reqs]
            for name, backend in (("default", default), ("batch_invariant", exact)):
                results, seconds = run(backend, reqs, args.batch)
                t = totals[name]
                for got, alone in zip(results, solo):
                    differ, dev = compare(got, alone)
                    t[0] += differ
                    t[1] = max(t[1], dev)
                t[2] += seconds
                t[3] += sum(r.max_new_tokens for r in reqs)
            print(f"workload {k + 1}/{args.workloads}: differing requests so far "
                  f"default {totals['default'][0]}, batch-invariant {totals['batch_invariant'][0]}", flush=True)

    n = args.workloads * args.requests
    print(f"\nmachine: {machine_summary()}, torch {torch.__version__}, {args.threads} thread(s); tiny checkpoint, "
          f"fp32, {args.workloads} workloads x {args.requests} requests, batch {args.batch}\n")
    print("| mode | requests whose tokens differ from the solo run | max entropy deviation before a difference "
          "| tokens/s | tokens/s ratio this / batch-invariant |")
    print("|:--|--:|--:|--:|--:|")
    exact_rate = totals["batch_invariant"][3] / totals["batch_invariant"][2]
    for name, (differ, dev, seconds, tokens) in totals.items():
        rate = tokens / seconds
        print(f"| {name} | {differ} / {n} | {dev:.2e} | {rate:.0f} | {rate / exact_rate:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
