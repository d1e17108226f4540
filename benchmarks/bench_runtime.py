"""Runtime benchmark: in-flight batching vs static batches, and NEG's decode-step overhead.

1. Throughput on a mixed-length offline workload (random prompt and output lengths, all
   requests submitted at t = 0, greedy, EOS ignored so every request produces exactly
   its requested tokens), on the same tiny checkpoint:
   * ``inflight``: trt_neg's LLMEngine + TorchBackend (requests join and leave between steps);
   * ``static (ours)``: the same engine and backend fed fixed batches of B requests, the
     next batch only after the whole previous one finished (isolates the scheduling gain);
   * ``HF generate``: ``transformers`` ``generate`` on static, left-padded batches of B
     (no EOS: every row runs to the batch's longest output).
   Throughput counts the *requested* output tokens only.  Ratios > 1: in-flight faster.
2. NEG on vs off: median decode-step time with B rows all in mode 1 vs all in mode 0
   (mode 0 still computes H_hat), on the tiny model; and the sampling layer alone
   (``TorchBackend.sample``) at Darwin-9B sizes (V = 248320, H = 4096, d = 1024).

Prints the figures (markdown; ``--output FILE`` also writes them); the recorded ones are in
``benchmarks/RESULTS.md``.  No assertions.

    python benchmarks/bench_runtime.py [--requests 48] [--batch 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from machine import HelpFormatter, cpu_name, int_at_least, thread_count, usable_cores  # noqa: E402
from timing import median_seconds  # noqa: E402

from trt_neg.atomic_file import atomic_write_text, unwritable_reason  # noqa: E402
from trt_neg.config import NegConfig  # noqa: E402
from trt_neg.neg import NegWeights, neg_head  # noqa: E402
from trt_neg.runtime import BackendRow, LLMEngine, Request, RequestResult, SamplingParams, TokenOutput  # noqa: E402
from trt_neg.runtime.torch_backend import TorchBackend  # noqa: E402


MAX_SEQ_LEN = 256


def sampling_layer_reps(reps: int) -> int:
    """Calls timed for the 9B-size sampling layer: at least 3 (one call is a few ms)."""
    return max(3, reps)


def workload(n: int, vocab: int, prompt_range, new_range, seed: int) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [([rng.randrange(vocab - 8) for _ in range(rng.randint(*prompt_range))], rng.randint(*new_range))
            for _ in range(n)]


def pct(values, q):
    """The q-th percentile, linearly interpolated (numpy's default, as run.py's latency summary)."""
    return float(np.percentile(values, q)) if len(values) else float("nan")


def run_engine(backend, work, batch, mode, static=False):
    engine = LLMEngine(backend, max_batch_size=batch)
    reqs = [Request(p, max_new_tokens=n, neg_mode=mode, ignore_eos=True) for p, n in work]
    groups = [reqs[i:i + batch] for i in range(0, len(reqs), batch)] if static else [reqs]
    results: list[RequestResult] = []
    t0 = time.perf_counter()
    for group in groups:
        for r in group:
            engine.add_request(r)
        while engine.has_unfinished():
            results += [o for o in engine.step() if isinstance(o, RequestResult)]
    wall = time.perf_counter() - t0
    return wall, results, engine.stats["steps"]


@torch.inference_mode()
def run_hf(model, work, batch, pad_id):
    generated = 0
    outputs = []
    t0 = time.perf_counter()
    for i in range(0, len(work), batch):
        chunk = work[i:i + batch]
        longest = max(len(p) for p, _ in chunk)
        new = max(n for _, n in chunk)
        ids = torch.full((len(chunk), longest), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (p, _) in enumerate(chunk):  # left padding
            ids[row, longest - len(p):] = torch.tensor(p)
            mask[row, longest - len(p):] = 1
        # No EOS (not min_new_tokens, which would mask EOS's logit and change greedy choices):
        # every row decodes exactly `new` tokens, like the engine's ignore_eos.
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                             pad_token_id=pad_id, eos_token_id=None)
        generated += out[:, longest:].numel()
        outputs += [out[row, longest:longest + n].tolist() for row, (_, n) in enumerate(chunk)]
    return time.perf_counter() - t0, generated, outputs


def decode_step_times(backend, batch, mode, prompt_len=16, new=48, reps=3):
    """(median wall time of decode-only steps with `batch` rows in `mode`, share of steps where a row fired)."""
    times, fired_steps = [], 0
    for rep in range(reps):
        engine = LLMEngine(backend, max_batch_size=batch)
        for i in range(batch):
            engine.add_request(Request([(7 * i + j) % 500 for j in range(prompt_len)], max_new_tokens=new,
                                       neg_mode=mode, ignore_eos=True))
        engine.step()  # all prefills
        while engine.has_unfinished():
            t0 = time.perf_counter()
            out = engine.step()
            times.append(time.perf_counter() - t0)
            # A step also returns the RequestResults of requests it finished; their `fired` is a list.
            fired_steps += any(o.fired for o in out if isinstance(o, TokenOutput))
    return statistics.median(times), fired_steps / len(times)


def sampling_layer_times(batch, reps, sizes=(4096, 248320, 1024)):
    """TorchBackend.sample at 9B sizes (``sizes``: H, V, d): {0: mode-0 s, 1: mode-1 s, "fired": the share of
    rows the gate fired on in mode 1, "all": mode-1 s with the gate firing on every row, "fired_all": that
    share}."""
    h, v, d = sizes
    g = torch.Generator().manual_seed(0)
    w = NegWeights(torch.randn(d, h, generator=g) / h**0.5, torch.randn(d, generator=g) * 0.1,
                   torch.randn(d, generator=g) / d**0.5, torch.tensor(0.0), torch.tensor(0.0))
    hidden = torch.randn(batch, h, generator=g)
    ent = neg_head(hidden, w).sort(descending=True).values
    # the gate fires on exactly one row
    w.threshold = ((ent[0] + ent[1]) / 2 if batch > 1 else ent[0] - 1).reshape(())
    logits = torch.randn(batch, v, generator=g) * 3
    runner = SimpleNamespace(device=torch.device("cpu"), max_slots=batch, max_seq_len=4096, vocab_size=v)
    be = TorchBackend(runner, w, NegConfig(head_hidden_size=d))

    def rows(mode):
        return [BackendRow(i, (1,), 100 + i, SamplingParams(), None, mode, 0) for i in range(batch)]

    out = {}
    for mode in (0, 1):
        r = rows(mode)
        out[mode] = median_seconds(lambda: be.sample(r, logits, hidden), reps)
        if mode == 1:
            out["fired"] = sum(x.fired for x in be.sample(r, logits, hidden)) / batch
    # the full gate firing (worst case); the backend holds its own copy of the weights
    be.neg_weights.threshold = torch.tensor(-1.0)
    r = rows(1)
    out["all"] = median_seconds(lambda: be.sample(r, logits, hidden), reps, warmup=0)
    out["fired_all"] = sum(x.fired for x in be.sample(r, logits, hidden)) / batch
    return out


def machine_line(device, threads: int, reps: int) -> str:
    """The report's machine sentence: what this run actually ran on."""
    where = f"{cpu_name()} ({usable_cores()} of {os.cpu_count()} cores usable by this process)"
    if torch.device(device).type == "cuda":
        where = f"{torch.cuda.get_device_name(torch.device(device))} ({device}); host {where}"
    return (f"Machine: {platform.system()} {platform.machine()}, {where}, device {device}, {threads} torch "
            f"thread(s), torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. Absolute times depend on the "
            f"machine and its load; ratios are measured in one process. Throughputs are the best of {reps} runs; "
            f"decode-step times the median of every step of {reps} runs; the 9B-size sampling layer's the median "
            f"of {sampling_layer_reps(reps)} calls.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--model", default=None, help="checkpoint dir (default: the built-in tiny model, written to a temp dir)")
    ap.add_argument("--requests", type=int_at_least(1), default=48, help="requests in the workload")
    ap.add_argument("--batch", type=int_at_least(1), default=8, help="batch size B (engine slots, static batches)")
    ap.add_argument("--prompt-len", type=int_at_least(1), nargs=2, default=(4, 96), metavar=("MIN", "MAX"),
                    help="prompt lengths, uniform in [MIN, MAX]")
    ap.add_argument("--new-tokens", type=int_at_least(1), nargs=2, default=(4, 96), metavar=("MIN", "MAX"),
                    help="output lengths, uniform in [MIN, MAX]")
    ap.add_argument("--threads", type=thread_count(0), default=1, help="torch threads (0: torch default)")
    ap.add_argument("--reps", type=int_at_least(1), default=3, help="runs of each measurement (the best is kept)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random workload")
    ap.add_argument("--skip-9b-sampling", action="store_true", help="skip the sampling layer at 9B sizes")
    ap.add_argument("--output", default=None,
                    help="also write the markdown report to this file (default: print it only)")
    args = ap.parse_args(argv)
    for flag, (low, high) in (("--prompt-len", args.prompt_len), ("--new-tokens", args.new_tokens)):
        if low > high:
            ap.error(f"{flag} {low} {high}: MIN is above MAX")
    if args.prompt_len[1] + args.new_tokens[1] > MAX_SEQ_LEN:
        ap.error(f"--prompt-len MAX + --new-tokens MAX is {args.prompt_len[1] + args.new_tokens[1]}; the engine "
                 f"holds {MAX_SEQ_LEN} tokens per sequence")
    if args.output is not None and (reason := unwritable_reason(args.output)):  # before minutes of measuring
        ap.error(f"--output {args.output}: {reason}")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)

    tmp = None
    if args.model is None:
        from trt_neg.checkpoint.synthetic import write_checkpoint

        tmp = tempfile.TemporaryDirectory()
        model_dir = write_checkpoint(Path(tmp.name) / "tiny", "tiny", seed=0)
    else:
        model_dir = Path(args.model)

    try:
        backend = TorchBackend.from_pretrained(model_dir, max_slots=args.batch, max_seq_len=MAX_SEQ_LEN)
    except ValueError as exc:  # ConfigError, CheckpointError: a directory that is not a usable checkpoint
        ap.error(f"--model {args.model}: {exc}")
    work = workload(args.requests, backend.vocab_size, args.prompt_len, args.new_tokens, args.seed)
    useful = sum(n for _, n in work)
    print(f"workload: {len(work)} requests, prompts {args.prompt_len[0]}-{args.prompt_len[1]} tokens, outputs "
          f"{args.new_tokens[0]}-{args.new_tokens[1]} tokens ({useful} in all), batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}")

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()

    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    pad = backend.runner.model.config.backbone.pad_token_id or 0
    run_engine(backend, work[:args.batch], args.batch, 0)  # warm-up
    run_hf(hf, work[:2], args.batch, pad)

    best = {}
    hf_tokens = None
    for rep in range(args.reps):
        wall, res, steps = run_engine(backend, work, args.batch, 0)
        if wall < best.get("inflight", (1e9,))[0]:
            best["inflight"] = (wall, res, steps)
        wall, res, steps = run_engine(backend, work, args.batch, 0, static=True)
        if wall < best.get("static", (1e9,))[0]:
            best["static"] = (wall, res, steps)
        wall, generated, hf_tokens = run_hf(hf, work, args.batch, pad)
        if wall < best.get("hf", (1e9,))[0]:
            best["hf"] = (wall, generated)
        print(f"  rep {rep + 1}: inflight {best['inflight'][0]:.2f} s, static {best['static'][0]:.2f} s, "
              f"HF {best['hf'][0]:.2f} s (best so far)")
    inflight_res = best["inflight"][1]
    ours = [r.tokens for r in sorted(inflight_res, key=lambda r: int(r.request_id.split("-")[1]))]
    agree = sum(a == b for o, h in zip(ours, hf_tokens) for a, b in zip(o, h))
    first_div = sum(o == h for o, h in zip(ours, hf_tokens))

    tput = {k: useful / best[k][0] for k in ("inflight", "static", "hf")}
    ttft = [r.ttft for r in inflight_res]
    tpot = [x for r in inflight_res for x in r.token_latencies]
    print(f"throughput (requested tokens/s): inflight {tput['inflight']:.0f}, static (ours) {tput['static']:.0f}, "
          f"HF generate {tput['hf']:.0f}")
    print(f"ratio inflight / HF generate: {tput['inflight'] / tput['hf']:.2f}; "
          f"inflight / static (ours): {tput['inflight'] / tput['static']:.2f}")
    print(f"HF generated {best['hf'][1]} tokens for {useful} requested (padding waste "
          f"{100 * (1 - useful / best['hf'][1]):.0f} %); steps inflight {best['inflight'][2]}, static {best['static'][2]}")
    print(f"greedy agreement with HF: {100 * agree / useful:.1f} % of tokens, {first_div}/{len(work)} requests identical")

    step, fired_share = {}, {}
    for m in (0, 1):
        step[m], fired_share[m] = decode_step_times(backend, args.batch, m, reps=args.reps)
    print(f"tiny decode step, {args.batch} rows: mode 0 {step[0] * 1e3:.2f} ms, mode 1 {step[1] * 1e3:.2f} ms, "
          f"ratio mode1/mode0 {step[1] / step[0]:.3f} (a row fired in {100 * fired_share[1]:.0f} % of mode-1 steps)")
    layer = None
    if not args.skip_9b_sampling:
        layer = sampling_layer_times(args.batch, sampling_layer_reps(args.reps))
        print(f"9B-size sampling layer, {args.batch} rows: mode 0 {layer[0] * 1e3:.1f} ms, mode 1 "
              f"{layer[1] * 1e3:.1f} ms (gate fired on {100 * layer['fired']:.0f} % of rows), gate on "
              f"{100 * layer['fired_all']:.0f} % of rows {layer['all'] * 1e3:.1f} ms; ratio mode1/mode0 "
              f"{layer[1] / layer[0]:.2f}")

    lines = [
        "# Runtime benchmark (`benchmarks/bench_runtime.py`)",
        "",
        machine_line(backend.device, torch.get_num_threads(), args.reps),
        "",
        f"## In-flight batching vs static batches ({'tiny checkpoint' if args.model is None else model_dir}, fp32, "
        f"{backend.device})",
        "",
        f"Workload: {len(work)} requests submitted at once, prompt lengths uniform in "
        f"[{args.prompt_len[0]}, {args.prompt_len[1]}], output lengths uniform in "
        f"[{args.new_tokens[0]}, {args.new_tokens[1]}] ({useful} tokens requested), greedy, EOS ignored, "
        f"NEG mode 0, batch size {args.batch}. Throughput = requested output tokens / wall time.",
        "",
        "| runner | wall s | tokens/s | steps | ratio in-flight / this |",
        "|:--|--:|--:|--:|--:|",
        f"| in-flight (LLMEngine + TorchBackend) | {best['inflight'][0]:.2f} | {tput['inflight']:.0f} | "
        f"{best['inflight'][2]} | 1.00 |",
        f"| static batches, same engine/backend | {best['static'][0]:.2f} | {tput['static']:.0f} | "
        f"{best['static'][2]} | {tput['inflight'] / tput['static']:.2f} |",
        f"| transformers `generate`, static left-padded batches | {best['hf'][0]:.2f} | {tput['hf']:.0f} | - | "
        f"{tput['inflight'] / tput['hf']:.2f} |",
        "",
        f"HF `generate` decodes every row of a batch to the batch's longest output: {best['hf'][1]} tokens "
        f"generated for {useful} requested ({100 * (1 - useful / best['hf'][1]):.0f} % waste). "
        f"Greedy tokens agree with HF on {100 * agree / useful:.1f} % of positions "
        f"({first_div}/{len(work)} requests identical; fp32 on both sides). "
        f"In-flight latency: TTFT p50 {pct(ttft, 50) * 1e3:.0f} ms / p90 {pct(ttft, 90) * 1e3:.0f} ms "
        f"(all requests queued at t = 0), per-token p50 {pct(tpot, 50) * 1e3:.2f} ms / p90 {pct(tpot, 90) * 1e3:.2f} ms.",
        "",
        "The in-flight vs HF ratio mixes two effects: scheduling (no padding, finished rows leave, queued",
        "requests take the free slot at once) and the runners' implementations (trt_neg's reference model",
        "vs transformers' Qwen3.5 with its torch fallbacks). The 'static batches, same engine' row isolates",
        "the scheduling effect.",
        "",
        "## NEG on vs off",
        "",
        "| measurement | mode 0 (NEG off, H_hat computed) | mode 1 (NEG on) | ratio 1/0 |",
        "|:--|--:|--:|--:|",
        f"| tiny model decode step, {args.batch} rows (median; a row fired in {100 * fired_share[1]:.0f} % of "
        f"mode-1 steps) | {step[0] * 1e3:.2f} ms | {step[1] * 1e3:.2f} ms | {step[1] / step[0]:.3f} |",
    ]
    if layer is not None:
        lines.append(
            f"| sampling layer only at 9B sizes (V 248320, H 4096, d 1024), {args.batch} rows, gate fires on "
            f"{100 * layer['fired']:.0f} % of rows | {layer[0] * 1e3:.1f} ms | {layer[1] * 1e3:.1f} ms | "
            f"{layer[1] / layer[0]:.2f} |")
        lines.append(
            f"| same, gate fires on {100 * layer['fired_all']:.0f} % of rows | {layer[0] * 1e3:.1f} ms | "
            f"{layer['all'] * 1e3:.1f} ms | "
            f"{layer['all'] / layer[0]:.2f} |")
    lines += [
        "",
        "Mode 0 still runs the NEG-Head (H_hat is reported), so the ratio is the cost of the gate and the",
        "gated top-k sampling on top of head + greedy argmax. `TorchBackend` runs the gated top-k sampling",
        "only for rows that fired (and the request's own sampling only for the others); a step with a",
        "fired row pays a few tenths of a millisecond of small torch ops for `neg.gated_topk_sample`",
        "(top-k, softmax, one Philox draw per row on Python ints). The sampling layer at 9B sizes runs in",
        "torch on the CPU; on a GPU the fused NEG kernel replaces it.",
        "",
    ]
    print("\n".join(lines))
    if args.output:
        try:
            atomic_write_text(args.output, "\n".join(lines))
        except OSError as exc:
            print(f"bench_runtime.py: could not write --output {args.output}: {exc.strerror or exc} (the report "
                  "is printed above)", file=sys.stderr)
            return 1
        print(f"wrote {args.output}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
