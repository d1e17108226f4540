#!/usr/bin/env python
"""Generate with Darwin-NEG: in-flight batched decoding with NEG, tokens streamed as decoded.

Examples:

    python run.py "What is entropy?"                      # built-in tiny model, NEG mode 1
    python run.py --model /path/to/Darwin-9B-NEG --device cuda --dtype bfloat16 "Hi"
    python run.py --prompts-file prompts.jsonl --json     # one JSON line per request
    python run.py --token-ids 1,2,3 --token-ids 4,5 --mode 0 --temperature 0.8 --seed 1
    python run.py --backend trtllm --engine-dir engines/darwin "Hi"   # TensorRT-LLM 1.2.x container
    mpirun -n 2 python run.py --backend trtllm --engine-dir engines/darwin-tp2 "Hi"  # tp/pp engine

A prompts file (UTF-8 JSONL) holds one request per line: a JSON string (the prompt), or an
object with one of "prompt" (text), "messages" (chat messages: a list of objects with string
"role" and "content") or "token_ids", and optionally "id", "max_new_tokens", "temperature",
"top_k", "top_p", "seed", "mode", "stop".

``--json`` prints one JSON object per request, in input order, each as soon as it and every
request before it have finished, and shows progress on stderr. On Ctrl-C the requests that had
finished are still printed, then one last object ``{"interrupted": true, "finished": N,
"unfinished": [ids]}``, and the exit code is 130.

When stdout's (or stderr's) reader goes away (``run.py | head``), decoding stops and the exit code
is 141 (128 + SIGPIPE), quietly; when stdout cannot be written (a full disk), decoding stops with
one line and exit code 1. A stderr that cannot take the progress lines (``2>/dev/full``) costs the
run nothing.

Decisions (seeds, mode 0, limits, finish reasons) are in docs/runtime.md; the TensorRT-LLM
backend (engine directory, executor mapping, what differs from torch) in docs/trtllm_runtime.md.
Only ``--backend trtllm`` imports tensorrt_llm (and fails with a one-line message without it).
"""

from __future__ import annotations

import os
import re
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import NamedTuple

import click

from trt_neg.cache import cache_dir, cache_dir_origin
from trt_neg.cli import InterruptibleCommand, too_many_threads
from trt_neg.runtime.console import OrderedJsonWriter, OrderedStreamer, Progress, write_diagnostic
from trt_neg.runtime.prompts_file import (LINE_KEYS, PROMPTS_FILE_HELP, PromptSpec, check_unique_ids,
                                          parse_token_ids, read_prompts_file, request_error)

TINY_PRESET, TINY_SEED = "tiny", 0
BACKENDS = ("torch", "trtllm")
TORCH_ONLY_OPTIONS = {"dtype": "the engine's dtype is fixed when it is built",
                      "device": "the engine runs on the GPU it is loaded on",
                      "threads": "there is no torch CPU compute",
                      "batch_invariant": "the TensorRT-LLM executor batches its own way"}
DEVICE_PATTERN = re.compile(r"cpu|cuda|cuda:\d+|auto")
# The runtimes' names for the limits (scheduler, engines) and the flags that set them.
LIMIT_FLAGS = {"max_slots": "--max-batch-size", "max_batch_size": "--max-batch-size",
               "max_tokens_per_step": "--max-tokens-per-step", "max_num_tokens": "--max-tokens-per-step",
               "max_seq_len": "--max-seq-len"}
# The request's fields (Request, SamplingParams) and the flags that set them for every prompt.
REQUEST_FLAGS = {"max_new_tokens": "--max-new-tokens", "temperature": "--temperature", "top_k": "--top-k",
                 "top_p": "--top-p", "seed": "--seed", "stop": "--stop", "neg_mode": "--mode"}


def builtin_tiny_model(echo=lambda msg: None) -> Path:
    """The built-in tiny checkpoint, written once (atomically) into the cache directory."""
    from trt_neg.checkpoint.synthetic import write_checkpoint

    path = cache_dir() / f"{TINY_PRESET}-seed{TINY_SEED}"
    if (path / "config.json").exists():
        return path

    def refuse(reason: str) -> click.ClickException:
        return click.ClickException(
            f"cache directory {path.parent} (from {cache_dir_origin()}): {reason}; set $TRT_NEG_CACHE (or "
            "$XDG_CACHE_HOME) to a writable directory, or pass --model")

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise refuse(f"cannot create it ({exc.strerror or one_line(exc)})") from None
    problem = unwritable(path.parent)
    if problem:
        raise refuse(f"cannot write to it ({problem})")
    echo(f"writing the built-in tiny model to {path}")
    try:
        write_checkpoint(path, TINY_PRESET, seed=TINY_SEED)
    except OSError as exc:
        if not (path / "config.json").exists():  # not a concurrent writer that won the race
            raise refuse(f"cannot write the built-in tiny model there ({exc.strerror or one_line(exc)})") from None
    return path


# ------------------------------------------------------------------------------ inputs
# -------------------------------------------------------------------------------- CLI
class RunCommand(InterruptibleCommand):
    """Ctrl-C anywhere (loading the model, tokenizing, decoding) exits 130 with one line; a closed
    stderr pipe after the decoding (`run.py 2>&1 | head`) exits as a closed stdout does."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            exit_for_closed_stdout()


@click.command(cls=RunCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("prompts", nargs=-1)
@click.option("-p", "--prompt", "prompt_opts", multiple=True, metavar="TEXT",
              help="A text prompt (repeatable; same as giving PROMPTS).")
@click.option("--prompts-file", type=click.Path(exists=True, dir_okay=False), help=PROMPTS_FILE_HELP)
@click.option("--token-ids", "token_ids", multiple=True, metavar="IDS",
              help="A prompt as comma-separated token ids, e.g. 1,2,3 (repeatable).")
@click.option("--model", type=click.Path(file_okay=False), default=None,
              help="HF Darwin-NEG checkpoint directory. Default: the built-in tiny model, written on first use "
                   "to $TRT_NEG_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/trt_neg)/tiny-seed0.")
@click.option("--backend", type=click.Choice(BACKENDS), default="torch", show_default=True,
              help="Runtime backend: 'torch' runs the reference model (CPU or GPU); 'trtllm' runs a TensorRT-LLM "
                   "engine (--engine-dir) through TensorRT-LLM 1.2.x's executor (NVIDIA's container).")
@click.option("--engine-dir", type=click.Path(file_okay=False), default=None,
              help="TensorRT-LLM engine directory (config.json, rank0.engine, build_info.json); required with "
                   "--backend trtllm. The tokenizer comes from the HF checkpoint named in build_info.json "
                   "unless --model is given. A tp/pp engine (world_size N) runs under MPI, one process per "
                   "GPU: mpirun -n N python run.py ...; only rank 0 prints.")
@click.option("--mode", type=click.Choice(["0", "1"]), default=None,
              help="NEG decoding mode: 0 = off, 1 = on. Default: 1 if the checkpoint enables NEG, else 0.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--temperature", type=float, default=0.0, show_default=True,
              help="The request's own sampling where NEG does not fire; 0 = greedy.")
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True, help="0 = off.")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--seed", type=click.IntRange(min=0, max=2**64 - 1), default=None,
              help="Seed for sampling and NEG draws (default: NEG config seed for greedy, random for sampling).")
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--ignore-eos", is_flag=True, help="Do not stop at the model's EOS token(s).")
@click.option("--no-chat-template", is_flag=True, help="Encode text prompts as they are, without the chat template.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Sequences decoded together (state slots). trtllm: default and limit are the engine's.")
@click.option("--max-seq-len", type=click.IntRange(min=2), default=None,
              help="Prompt + generated tokens per sequence. Default: min(max_position_embeddings, 4096); "
                   "trtllm: the engine's.")
@click.option("--max-tokens-per-step", type=click.IntRange(min=1), default=None,
              help="Token budget of one step (prefill tokens + decode rows). Default: max(max-seq-len, "
                   "max-batch-size); "
                   "trtllm: the executor's max_num_tokens (default and limit: the engine's).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="torch backend only.")
@click.option("--device", default="auto", show_default=True,
              help="cpu, cuda, cuda:N, or auto (cuda if available). torch backend only.")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads (0 = torch's default). On a busy shared machine 1 is often fastest. "
                   "torch backend only.")
@click.option("--batch-invariant", is_flag=True,
              help="Run every sequence of a step by itself so each request's tokens are bitwise those of a solo "
                   "run (batched GEMMs round differently; see docs/runtime.md). Slower. torch backend only.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per request, in input order (tokens, text, finish reason, gate activation "
                   "rate, TTFT, per-token latencies) instead of streaming text; progress goes to stderr. On Ctrl-C "
                   "the finished requests are printed, then {\"interrupted\": true, \"finished\": N, "
                   "\"unfinished\": [ids]}.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.png",
              help="Also write a PNG: predicted entropy per token against the gate threshold with the fired "
                   "tokens marked, gate activation per request, and the latency distribution (TTFT, "
                   "inter-token p50/p90/p99). Drawn when the run completes: an interrupted run writes none.")
def main(prompts, prompt_opts, prompts_file, token_ids, model, backend, engine_dir, mode, max_new_tokens, temperature,
         top_k, top_p, seed, stop, ignore_eos, no_chat_template, max_batch_size, max_seq_len, max_tokens_per_step,
         dtype, device, threads, batch_invariant, as_json, plot_path):
    """Generate from PROMPTS (text), --prompts-file or --token-ids with in-flight batching and NEG."""
    ctx = click.get_current_context()

    def note(msg: str) -> None:
        write_diagnostic(sys.stderr, msg + "\n")

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    if plot_path is not None:  # checked before any work: a run is not wasted on an unwritable plot
        plot_path = Path(plot_path)
        if plot_path.suffix.lower() != ".png":
            raise click.BadParameter(f"{plot_path}: the plot is a PNG file; name it *.png", param_hint="--plot")
        if not plot_path.parent.resolve().is_dir():
            raise click.BadParameter(f"{plot_path}: directory {plot_path.parent} does not exist", param_hint="--plot")
        problem = unwritable(plot_path.parent)
        if problem:
            raise click.BadParameter(f"{plot_path}: cannot write to directory {plot_path.parent} ({problem})",
                                     param_hint="--plot")
        if plot_path.is_dir():
            raise click.BadParameter(f"{plot_path}: is a directory", param_hint="--plot")
        problem = matplotlib_problem()
        if problem:
            raise click.BadParameter(f"{plot_path}: the plot needs matplotlib, which {problem}", param_hint="--plot")

    if problem := too_many_threads(threads):
        raise click.BadParameter(problem, param_hint="--threads")

    engine_info = None
    if backend == "trtllm":
        engine_info = check_trtllm_options(engine_dir, given)
    elif engine_dir is not None:
        raise click.UsageError("--engine-dir applies only to --backend trtllm")

    specs = [PromptSpec(f"arg{i}", text=p) for i, p in enumerate(prompt_opts + prompts)]
    if prompts_file:
        from_file = read_prompts_file(prompts_file)
        if not from_file:  # an empty file is a mistake even beside other prompts (the wrong file, a failed export)
            raise click.BadParameter(f"{prompts_file}: no requests in the file", param_hint="--prompts-file")
        specs += from_file
    specs += [PromptSpec(f"ids{i}", token_ids=parse_token_ids(v)) for i, v in enumerate(token_ids)]
    check_unique_ids(specs)
    if not specs:
        raise click.UsageError("nothing to generate: give text PROMPTS, --prompt, --prompts-file or --token-ids")

    from trt_neg.runtime import LLMEngine, Request, SamplingParams
    from trt_neg.runtime.tokenizer import encode_prompt

    check_request_flags(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                        seed=seed, stop=list(stop), neg_mode=None if mode is None else int(mode))
    if backend == "torch" and not DEVICE_PATTERN.fullmatch(device):
        raise click.BadParameter(f"{device!r} is not a device this runs on (cpu, cuda, cuda:N, auto)",
                                 param_hint="--device")
    if temperature == 0 and (given("top_k") or given("top_p")):
        flags = " and ".join(f for f, name in (("--top-k", "top_k"), ("--top-p", "top_p")) if given(name))
        note(f"warning: {flags} {'have' if ' and ' in flags else 'has'} no effect with --temperature 0 "
             "(greedy decoding)")

    if backend == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise click.BadParameter(f"{device!r} is not a torch device (cpu, cuda, cuda:N, auto)",
                                     param_hint="--device") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise click.BadParameter(f"{device!r}: this torch build or machine has no CUDA GPU "
                                     f"(torch {torch.__version__}); use --device cpu", param_hint="--device")
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise click.BadParameter(f"{device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                                     f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})", param_hint="--device")
        model_dir = Path(model) if model else builtin_tiny_model(note)
        if not (model_dir / "config.json").exists():
            raise click.BadParameter(f"{model_dir}: no config.json (expected an HF checkpoint directory)",
                                     param_hint="--model")
        check_model_description(model_dir)
    else:  # the tokenizer of the engine's HF checkpoint (build_info.json), or --model
        model_dir = Path(model) if model else engine_info.hf_model_dir
        if model and not model_dir.is_dir():
            raise click.BadParameter(f"{model_dir}: not a directory (the HF checkpoint for the tokenizer)",
                                     param_hint="--model")
        if not model and model_dir is not None and not model_dir.is_dir():  # the user gave no --model to blame
            raise click.UsageError(f"{Path(engine_dir) / 'build_info.json'}: hf_model_dir {model_dir} is not a "
                                   "directory (the HF checkpoint for the tokenizer); pass --model DIR")
    where = model_dir if model_dir is not None else f"{engine_dir} (build_info.json names no HF checkpoint)"
    tokenizer = checkpoint_tokenizer(model_dir) if model_dir is not None else None
    if tokenizer is None and any(s.token_ids is None for s in specs):
        raise click.UsageError(f"{where} has no tokenizer: give prompts as --token-ids")
    if tokenizer is None and stop:
        raise click.UsageError(f"{where} has no tokenizer: --stop strings need one")

    requests = []
    for spec in specs:
        o = spec.overrides
        try:
            if spec.token_ids is not None:
                ids = spec.token_ids
            elif spec.messages is not None:
                ids = encode_prompt(tokenizer, spec.messages)
            else:
                ids = encode_prompt(tokenizer, spec.text, chat_template=not no_chat_template)
        except ValueError as exc:
            raise click.BadParameter(f"{spec.where}: {one_line(exc)}", param_hint="prompt") from None
        except Exception as exc:  # noqa: BLE001 - the chat template (jinja2) or the tokenizer failed on this prompt
            what = "the chat template" if spec.messages is not None or not no_chat_template else "the tokenizer"
            raise click.BadParameter(f"{spec.where}: {what} failed on it ({type(exc).__name__}: {one_line(exc)})",
                                     param_hint="prompt") from None
        try:
            m = o.get("mode", None if mode is None else int(mode))
            sp = SamplingParams(temperature=o.get("temperature", temperature), top_k=o.get("top_k", top_k),
                                top_p=o.get("top_p", top_p), seed=o.get("seed", seed))
            stop_o = o.get("stop", list(stop))
            requests.append(Request(ids, max_new_tokens=o.get("max_new_tokens", max_new_tokens),
                                    stop=[stop_o] if isinstance(stop_o, str) else stop_o, sampling=sp,
                                    neg_mode=m, ignore_eos=ignore_eos))
        except ValueError as exc:  # the flags' values are checked: this request's own
            raise request_error(spec, exc) from None

    if backend == "torch":
        from trt_neg.runtime.torch_backend import TorchBackend

        try:
            be = TorchBackend.from_pretrained(model_dir, max_slots=max_batch_size, max_seq_len=max_seq_len,
                                              dtype=dtype, device=device, batch_invariant=batch_invariant)
            engine = LLMEngine(be, tokenizer=tokenizer, max_tokens_per_step=max_tokens_per_step)
        except ValueError as exc:
            raise limit_error(exc) from None
        except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            raise click.ClickException(backend_setup_error(exc, model_dir, device, dtype, max_batch_size,
                                                           max_seq_len)) from None
    else:
        engine = open_trtllm_engine(engine_dir, tokenizer, max_batch_size if given("max_batch_size") else None,
                                    max_seq_len, max_tokens_per_step)
        if not engine.is_leader:  # tp/pp under mpirun: this rank only runs its part of the model
            engine.shutdown()  # returns once the leader (rank 0) has shut down; nothing to print here
            return

    printer = None if as_json else OrderedStreamer(len(requests), tokenizer, ids=[s.given_id for s in specs])
    writer = OrderedJsonWriter(specs) if as_json else None
    progress = Progress(len(requests)) if as_json else None
    index: dict[str, int] = {}
    results = [None] * len(requests)
    # The output failed: a reader went away (`run.py | head`: BrokenPipeError) or stdout cannot take
    # it (a full disk: OSError). Decoding stops.
    output_failed = threading.Event()
    output_failure: list[OSError] = []
    from trt_neg.runtime import RequestResult

    def on_output(item) -> None:
        if output_failed.is_set():
            return
        try:
            record_output(item)
        except OSError as exc:
            output_failure.append(exc)
            output_failed.set()

    def record_output(item) -> None:
        i = index[item.request_id]
        if isinstance(item, RequestResult):
            if writer is not None and writer.closed:  # interrupted: a cancellation, not a result
                return
            results[i] = item
            if printer is not None:
                printer.finished(i, item)
            else:
                writer.finished(i, item)
                progress.finished()
        elif printer is not None:
            printer.token(i, item)
        else:
            progress.token()

    def interrupted() -> None:
        """What had finished, the --json trailer and "interrupted", as far as stdout and stderr take them: the
        exit code is 130 either way."""
        try:
            if writer is not None:
                progress.summary()
                writer.interrupted()
        except OSError as exc:  # a reader went away too (BrokenPipeError), or stdout is full
            if not isinstance(exc, BrokenPipeError):
                note(stdout_failure_message(exc))
            detach_stdout()
        try:
            note("interrupted")
        except BrokenPipeError:
            pass

    # Every request is checked before any is submitted, so a bad one leaves nothing running.
    for i, req in enumerate(requests):
        try:
            engine.validate(req)
        except ValueError as exc:
            if backend == "trtllm":
                engine.shutdown()
            raise validation_error(specs[i], exc) from None

    if backend == "torch":
        for i, req in enumerate(requests):
            index[engine.add_request(req, listener=on_output)] = i
        try:
            while engine.has_unfinished() and not output_failed.is_set():
                engine.step()
            if output_failed.is_set():
                for rid in list(index):
                    engine.abort_request(rid)
                engine.step()
                exit_for_failed_output(output_failure[0])
        except KeyboardInterrupt:
            interrupted()  # first: what had finished is printed even if the clean-up below is interrupted
            try:
                for rid in list(index):
                    engine.abort_request(rid)
                engine.step()
            except KeyboardInterrupt:  # a second Ctrl-C: stop now, quietly
                pass
            sys.exit(130)
    else:  # the engine's dispatcher thread calls on_output; wait for every result
        all_done = threading.Event()
        lock = threading.Lock()
        pending = [len(requests)]

        def on_trtllm_output(item) -> None:
            with lock:  # waits until every request is submitted (index complete)
                try:
                    on_output(item)
                finally:  # the executor swallows a listener's exception: the wait below must still end
                    if isinstance(item, RequestResult):
                        pending[0] -= 1
                    if pending[0] == 0 or output_failed.is_set():
                        all_done.set()

        try:
            with lock:
                for i, req in enumerate(requests):
                    index[engine.add_request(req, listener=on_trtllm_output)] = i
            while not all_done.wait(0.1):
                pass
            if output_failed.is_set():
                engine.shutdown()  # cancels what is unfinished
                exit_for_failed_output(output_failure[0])
        except KeyboardInterrupt:
            with lock:  # no result is being recorded while the finished ones are printed
                interrupted()
            engine.shutdown()  # cancels what is unfinished
            sys.exit(130)
        finally:
            engine.shutdown()

    if progress is not None:
        progress.close()
    if plot_path is not None:
        from trt_neg.runtime.plot import plot_results

        threshold = float(be.neg_weights.threshold) if backend == "torch" and be.neg_enabled else None
        try:
            plot_results(results, [s.label for s in specs], plot_path, threshold=threshold,
                         title=f"run.py --backend {backend}: {model_dir if backend == 'torch' else engine_dir}")
        except OSError as exc:
            raise click.ClickException(f"--plot {plot_path}: could not write the plot "
                                       f"({exc.strerror or one_line(exc)})") from None
        except ImportError as exc:
            raise click.ClickException(f"--plot {plot_path}: could not draw the plot: matplotlib failed to import "
                                       f"({one_line(exc)})") from None
        note(f"wrote {plot_path}")
    if any(r.error for r in results):
        sys.exit(1)


def exit_for_failed_output(exc: OSError) -> None:
    if isinstance(exc, BrokenPipeError):
        exit_for_closed_stdout()
    write_diagnostic(sys.stderr, stdout_failure_message(exc) + "\n")
    detach_stdout()
    sys.exit(1)


def stdout_failure_message(exc: OSError) -> str:
    return f"Error: could not write to stdout ({exc.strerror or one_line(exc)}); the output is incomplete"


def validation_error(spec: PromptSpec, exc: ValueError) -> click.BadParameter:
    """A request the engine refuses ("field: problem"): blamed on the flag when the refused value came
    from it (e.g. --mode 0 on an engine without NEG mode 0), else on the request's own line or prompt."""
    refused = refused_flag(exc, REQUEST_FLAGS)
    if refused and LINE_KEYS.get(refused.field, refused.field) not in spec.overrides:
        return refused.error
    return request_error(spec, exc)


def exit_for_closed_stdout() -> None:
    """Exit as a Unix tool does when the reader of its output has gone: 128 + SIGPIPE, quietly."""
    detach_stdout()
    detach_stream(sys.stderr)  # when it was stderr's reader that went away
    sys.exit(128 + signal.SIGPIPE)


def detach_stdout() -> None:
    """Point stdout at /dev/null after it failed, or the interpreter's final flush raises again (a traceback
    and exit code 120)."""
    detach_stream(sys.stdout)


def detach_stream(stream) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a file descriptor (click's test runner)
        pass


def check_model_description(model_dir: Path) -> None:
    """The checkpoint's config as trt_neg.config reads it, before the tokenizer (whose loader reads
    config.json too, and fails on a broken one with a transformers traceback)."""
    from trt_neg.config import load_config

    try:
        load_config(model_dir)
    except ValueError as exc:  # ConfigError names the file; a decoding error may not
        message = one_line(exc)
        raise click.BadParameter(message if str(model_dir) in message else f"{model_dir}: {message}",
                                 param_hint="--model") from None
    except OSError as exc:
        raise click.BadParameter(f"{exc.filename or model_dir}: cannot read it ({exc.strerror or one_line(exc)})",
                                 param_hint="--model") from None


def checkpoint_tokenizer(model_dir: Path):
    from trt_neg.runtime.tokenizer import load_tokenizer

    try:
        return load_tokenizer(model_dir)
    except Exception as exc:  # noqa: BLE001 - transformers and tokenizers fail in many ways on broken files
        raise click.ClickException(f"{model_dir}: could not load the tokenizer ({type(exc).__name__}: "
                                   f"{one_line(exc)})") from None


def check_request_flags(max_new_tokens, temperature, top_k, top_p, seed, stop, neg_mode) -> None:
    """The values the flags give every request, checked once before any request is built, so that a bad one is
    reported as that flag's (not as the first prompt's)."""
    from trt_neg.runtime import Request, SamplingParams

    try:
        sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        Request([0], max_new_tokens=max_new_tokens, stop=stop, sampling=sampling, neg_mode=neg_mode)
    except ValueError as exc:
        refused = refused_flag(exc, REQUEST_FLAGS)
        raise (refused.error if refused else click.UsageError(str(exc))) from None


def limit_error(exc: ValueError) -> click.ClickException:
    """A runtime's refusal of a limit ("max_seq_len: ...") as a usage error on the flag that set it."""
    refused = refused_flag(exc, LIMIT_FLAGS)
    if refused is None:
        return click.ClickException(str(exc))
    problem = re.sub(r"\bmax_slots\b", LIMIT_FLAGS["max_slots"], refused.problem)
    return click.BadParameter(problem, param_hint=refused.flag)


class RefusedFlag(NamedTuple):
    field: str  # the runtime's name
    flag: str
    problem: str

    @property
    def error(self) -> click.BadParameter:
        return click.BadParameter(self.problem, param_hint=self.flag)


def refused_flag(exc: ValueError, flags: dict[str, str]) -> RefusedFlag | None:
    """A runtime's refusal "field: problem" when one of ``flags`` (runtime name -> flag) set that field."""
    field, sep, problem = str(exc).partition(": ")
    return RefusedFlag(field, flags[field], problem) if sep and field in flags else None


def matplotlib_problem() -> str | None:
    """Why matplotlib cannot draw (None if it can): imported, not looked up, as a broken install fails only
    then."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == "matplotlib":
            return "is not installed (pip install matplotlib)"
        return f"fails to import ({one_line(exc)})"
    return None


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def unwritable(directory: Path) -> str | None:
    """Why a file cannot be created in ``directory`` (None if it can): tried, not guessed (root passes
    os.access everywhere, yet cannot write to /proc)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".run-write-check.", dir=directory)
    except OSError as exc:
        return exc.strerror or one_line(exc)
    os.close(fd)
    os.unlink(tmp)
    return None


def slot_cache_bytes(model_dir: Path, dtype: str, max_batch_size: int, max_seq_len: int | None) -> tuple[int, int]:
    """(bytes, max_seq_len) of the torch backend's state cache: KV for the full-attention layers,
    conv + fp32 recurrent state for the Gated DeltaNet layers (trt_neg.reference.model.SlotCache)."""
    import torch

    from trt_neg.config import load_config

    c = load_config(model_dir).backbone
    seq = max_seq_len if max_seq_len is not None else min(c.max_position_embeddings, 4096)
    elt = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    total = 0
    for kind in c.layer_types:
        if kind == "full_attention":
            total += 2 * max_batch_size * c.num_key_value_heads * seq * c.head_dim * elt
        else:
            total += max_batch_size * c.linear_conv_dim * (c.linear_conv_kernel_dim - 1) * elt
            total += max_batch_size * c.linear_num_value_heads * c.linear_key_head_dim * c.linear_value_head_dim * 4
    return total, seq


def backend_setup_error(exc: BaseException, model_dir: Path, device: str, dtype: str, max_batch_size: int,
                        max_seq_len: int | None) -> str:
    """One line for a failure to load the model or allocate its state cache (out of memory, mostly)."""
    reason = one_line(exc)
    memory = isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or any(
        word in reason.lower() for word in ("out of memory", "allocate"))
    if not memory:
        return f"could not load {model_dir} on {device}: {reason}"
    try:
        size, seq = slot_cache_bytes(model_dir, dtype, max_batch_size, max_seq_len)
        cache = (f"its state cache for --max-batch-size {max_batch_size} x --max-seq-len {seq} needs "
                 f"{size / 2**30:.2f} GiB")
    except Exception:  # noqa: BLE001 - the figure is a courtesy
        cache = f"its state cache grows with --max-batch-size ({max_batch_size}) x --max-seq-len"
    return (f"out of memory setting up the model on {device}: {cache} ({dtype}); lower --max-batch-size or "
            f"--max-seq-len ({reason[:200]})")


# ------------------------------------------------------------------- trtllm backend
def check_trtllm_options(engine_dir, given):
    """Options for --backend trtllm, then tensorrt_llm itself (one-line error), then the engine directory."""
    if engine_dir is None:
        raise click.UsageError("--engine-dir is required with --backend trtllm")
    for name, why in TORCH_ONLY_OPTIONS.items():
        if given(name):
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(f"{flag} does not apply to --backend trtllm ({why}); it is a torch backend "
                                   "option")
    from trt_neg.trtllm import TensorRTLLMUnavailable
    from trt_neg.trtllm.engine_dir import EngineDirError, read_engine_dir
    from trt_neg.trtllm.executor import MpiLaunchError, check_mpi_launch, executor_bindings

    try:
        executor_bindings()
    except TensorRTLLMUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    try:
        info = read_engine_dir(engine_dir)
    except EngineDirError as exc:
        raise click.BadParameter(str(exc), param_hint="--engine-dir") from None
    try:  # a tp/pp engine runs as `mpirun -n <world_size> python run.py ...` (one process per GPU)
        check_mpi_launch(info)
    except MpiLaunchError as exc:
        raise click.ClickException(str(exc)) from None
    return info


def open_trtllm_engine(engine_dir, tokenizer, max_batch_size, max_seq_len, max_num_tokens):
    from trt_neg.trtllm import TensorRTLLMUnavailable
    from trt_neg.trtllm.engine_dir import EngineDirError
    from trt_neg.trtllm.executor import TrtllmExecutorEngine
    from trt_neg.trtllm.plugins import PluginLibraryError

    try:
        return TrtllmExecutorEngine(engine_dir, tokenizer=tokenizer, max_batch_size=max_batch_size,
                                    max_seq_len=max_seq_len, max_num_tokens=max_num_tokens)
    except EngineDirError as exc:
        raise click.BadParameter(str(exc), param_hint="--engine-dir") from None
    except ValueError as exc:
        raise limit_error(exc) from None
    except (TensorRTLLMUnavailable, PluginLibraryError) as exc:
        raise click.ClickException(str(exc)) from None
    except RuntimeError as exc:  # the executor failed to load the engine
        raise click.ClickException(f"TensorRT-LLM could not load {engine_dir}: {' '.join(str(exc).split())}") from None


if __name__ == "__main__":
    main()
