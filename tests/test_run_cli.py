"""run.py: inputs (text, chat template, JSONL, token ids), streaming, --json, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import run  # noqa: E402
from trt_neg.runtime import Request, SamplingParams, console  # noqa: E402
from trt_neg.runtime.prompts_file import PromptSpec, parse_token_ids, read_prompts_file, request_error  # noqa: E402

BASE = ["--threads", "1", "--device", "cpu"]


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def invoke(*args, ok=True):
    result = CliRunner().invoke(run.main, [*BASE, *args])
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def json_lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_request_defaults_are_the_documented_ones():
    doc = (ROOT / "docs" / "runtime.md").read_text()
    found = re.search(r"`Request` defaults: `max_new_tokens=(\d+)` \(`run.py`'s `--max-new-tokens` defaults to (\d+)\)",
                      doc)
    assert found, "docs/runtime.md no longer states Request's defaults"
    request = Request([1])
    assert request.max_new_tokens == int(found[1])
    assert (request.stop_token_ids, request.stop, request.neg_mode, request.request_id) == ((), (), None, None)
    assert request.sampling == SamplingParams() and request.sampling.temperature == 0.0 and not request.ignore_eos
    flag = next(p for p in run.main.params if p.name == "max_new_tokens")
    assert flag.default == int(found[2])


def test_help_works_without_tensorrt():
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "--help"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    for opt in ("--model", "--backend", "--mode", "--prompts-file", "--token-ids", "--no-chat-template", "--json",
                "--max-batch-size", "--dtype", "--device", "--top-p", "--seed"):
        assert opt in proc.stdout
    assert "tensorrt" not in sys.modules and "tensorrt_llm" not in sys.modules


def test_json_output_fields(tiny_checkpoint):
    r = invoke("--model", str(tiny_checkpoint), "--json", "--max-new-tokens", "6", "--ignore-eos", "Hello")
    (d,) = json_lines(r)
    assert len(d["tokens"]) == 6 and d["finish_reason"] == "length" and d["neg_mode"] == 1
    assert d["gate_activation_rate"] == sum(d["fired"]) / 6 and len(d["entropies"]) == 6
    assert d["ttft_s"] > 0 and len(d["per_token_latency_s"]) == 5 and d["prompt"] == "Hello"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_checkpoint))
    chat = tok.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True, tokenize=False)
    assert d["prompt_token_ids"] == tok.encode(chat, add_special_tokens=False)
    assert d["text"] == tok.decode(d["tokens"], skip_special_tokens=True)

    r = invoke("--model", str(tiny_checkpoint), "--json", "--max-new-tokens", "2", "--no-chat-template", "Hello")
    assert json_lines(r)[0]["prompt_token_ids"] == tok.encode("Hello", add_special_tokens=False)


def test_streamed_text_equals_the_result(tiny_checkpoint):
    args = ["--model", str(tiny_checkpoint), "--max-new-tokens", "12", "--mode", "1", "Tell me"]
    streamed = invoke(*args)
    (d,) = json_lines(invoke(*args, "--json"))
    assert streamed.stdout == d["text"] + "\n"
    assert "gate activation" in streamed.stderr and f"finish: {d['finish_reason']}" in streamed.stderr


def test_token_ids_prompts_file_and_ordering(tiny_checkpoint, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join([
        json.dumps("plain string prompt"),
        json.dumps({"id": "chat", "messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 3}),
        "",
        json.dumps({"id": "ids", "token_ids": [5, 6, 7], "mode": 0, "temperature": 0.9, "seed": 11}),
    ]) + "\n")
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(prompts), "--token-ids", "1,2,3",
               "--max-new-tokens", "5", "--json", "--max-batch-size", "2")
    rows = json_lines(r)
    assert [row["id"] for row in rows] == [f"{prompts}:1", "chat", "ids", "ids0"]
    assert len(rows[1]["tokens"]) <= 3 and rows[2]["neg_mode"] == 0 and rows[2]["seed"] == 11
    assert rows[2]["prompt_token_ids"] == [5, 6, 7] and rows[3]["prompt_token_ids"] == [1, 2, 3]
    assert not any(rows[2]["fired"])
    # The same seeded request alone gives the same tokens (batch invariance end to end).
    alone = invoke("--model", str(tiny_checkpoint), "--token-ids", "5,6,7", "--mode", "0", "--temperature", "0.9",
                   "--seed", "11", "--max-new-tokens", "5", "--json")
    assert json_lines(alone)[0]["tokens"] == rows[2]["tokens"]
    # Streaming several requests prints them in order, each under its header.
    r = invoke("--model", str(tiny_checkpoint), "--token-ids", "1,2", "--token-ids", "3", "--max-new-tokens", "3")
    assert r.stdout.index("--- [0] ---") < r.stdout.index("--- [1] ---")


@pytest.mark.parametrize("args, message", [
    (["--token-ids", "1,x"], "--token-ids"),
    (["--token-ids", "1,99999"], "prompt_token_ids"),
    (["--token-ids", "1", "--temperature", "-1"], "temperature"),
    (["--token-ids", "1", "--top-p", "0"], "--top-p"),
    (["--token-ids", "1", "--max-new-tokens", "0"], "max-new-tokens"),
    (["--token-ids", "1", "--backend", "trtllm"], "--backend"),
    ([], "nothing to generate"),
])
def test_errors_name_the_problem(tiny_checkpoint, args, message):
    r = invoke("--model", str(tiny_checkpoint), *args, ok=False)
    assert r.exit_code == 2 and message in r.output


def test_bad_prompts_file_names_the_line(tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{"prompt": "x", "token_ids": [1]}\n')
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(bad), ok=False)
    assert r.exit_code == 2 and "bad.jsonl:2" in r.output


def test_default_model_is_generated_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRT_NEG_CACHE", str(tmp_path / "cache"))
    r = invoke("--token-ids", "1,2", "--max-new-tokens", "2", "--json")
    assert "writing the built-in tiny model" in r.stderr
    assert (tmp_path / "cache" / "tiny-seed0" / "config.json").exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # nothing half written
    r2 = invoke("--token-ids", "1,2", "--max-new-tokens", "2", "--json")
    assert "writing" not in r2.stderr and json_lines(r2)[0]["tokens"] == json_lines(r)[0]["tokens"]


def test_prompts_file_with_a_non_list_stop_is_a_usage_error(tiny_checkpoint, tmp_path):
    """A JSONL "stop" that is neither a string nor a list is refused with the line named (no traceback)."""
    bad = tmp_path / "stop.jsonl"
    bad.write_text('{"token_ids": [1, 2], "stop": 5}\n')
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(bad), ok=False)
    assert r.exit_code == 2 and "stop.jsonl:1" in r.output and "stop:" in r.output


def test_batch_invariant_flag_gives_each_prompt_its_solo_tokens(tiny_checkpoint, tmp_path):
    """--batch-invariant: every prompt of a batched run gets exactly the tokens it gets alone."""
    prompts = ["What is two plus two?", "Hello", "Solve for x", "The quick brown fox", "Explain entropy"]
    common = ["--model", str(tiny_checkpoint), "--json", "--max-new-tokens", "10", "--ignore-eos",
              "--temperature", "1.0", "--seed", "5"]
    batched = json_lines(invoke(*common, "--batch-invariant", *prompts))
    for prompt, got in zip(prompts, batched):
        (alone,) = json_lines(invoke(*common, "--max-batch-size", "1", prompt))
        assert got["tokens"] == alone["tokens"] and got["fired"] == alone["fired"]
        assert got["entropies"] == alone["entropies"]


def test_device_without_cuda_is_a_usage_error(tiny_checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for device, words in (("cuda", "no CUDA GPU"), ("tpu:0", "not a device this runs on"), ("meta", "cpu, cuda, cuda:N, auto")):
        r = invoke("--model", str(tiny_checkpoint), "--device", device, "--token-ids", "1,2", ok=False)
        assert r.exit_code == 2 and "--device" in r.output and words in r.output
        assert not isinstance(r.exception, RuntimeError)


def test_cache_dir_follows_trt_neg_cache_then_xdg(monkeypatch, tmp_path):
    from trt_neg.cache import cache_dir
    from trt_neg.kernels import build

    monkeypatch.delenv("TRT_NEG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "trt_neg"
    assert build.cache_dir is cache_dir  # host libraries and the tiny model share one place
    monkeypatch.setenv("TRT_NEG_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("TRT_NEG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert cache_dir() == Path.home() / ".cache" / "trt_neg"


def test_plot_is_written_with_the_json(tiny_checkpoint, tmp_path):
    out = tmp_path / "run.png"
    r = invoke("--model", str(tiny_checkpoint), "--json", "--max-new-tokens", "12", "--ignore-eos", "--plot", str(out),
               "Hello", "Name a colour")
    assert len(json_lines(r)) == 2 and f"wrote {out}" in r.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.png"]  # no temporary left behind


@pytest.mark.parametrize("name, message", [("run.jpg", "name it *.png"), ("missing/run.png", "does not exist")])
def test_bad_plot_path_is_refused_before_any_work(tiny_checkpoint, tmp_path, monkeypatch, name, message):
    monkeypatch.setattr(run, "builtin_tiny_model", lambda *a, **k: pytest.fail("the run started"))
    r = invoke("--plot", str(tmp_path / name), "Hello", ok=False)
    assert r.exit_code == 2 and message in r.output and "--plot" in r.output


def test_plot_latency_summary_matches_numpy_percentiles(tmp_path):
    import numpy as np

    from trt_neg.runtime.plot import latency_summary, plot_results
    from trt_neg.runtime.request import FinishReason, RequestResult

    def result(times, arrival):
        n = len(times)
        return RequestResult("r", (1,), [5] * n, None, FinishReason.LENGTH, [0.5] * n, [False] * n, 1, None,
                             arrival, times[0] if times else None, times[-1] if times else arrival, list(times))

    g = np.random.default_rng(0)
    results = [result(np.cumsum(g.exponential(0.01, 20)).tolist(), 0.0), result([0.5, 0.7, 0.71], 0.1),
               result([], 0.2)]
    s = latency_summary(results)
    token_ms = [x * 1e3 for r in results for x in r.token_latencies]
    ttft_ms = [r.ttft * 1e3 for r in results if r.ttft is not None]
    for q in (50, 90, 99):
        assert s[f"token_p{q}_ms"] == pytest.approx(np.percentile(token_ms, q), rel=1e-12)
        assert s[f"ttft_p{q}_ms"] == pytest.approx(np.percentile(ttft_ms, q), rel=1e-12)
    assert latency_summary([result([], 0.0)]) == {f"{k}_p{q}_ms": None for k in ("token", "ttft") for q in (50, 90, 99)}
    with pytest.raises(ValueError, match="3 results but 1 labels"):
        plot_results(results, ["a"], "x.png")
    # a request without tokens and a NaN entropy (engine without NEG) still plot
    results[1].entropies[1] = float("nan")
    assert plot_results(results, ["a", "b", "c"], tmp_path / "p.png", threshold=0.6).stat().st_size > 10_000


def test_ordered_streamer_flushes_buffered_text_before_streaming_live():
    """Pieces of request 1 buffered while request 0 streams are written as soon as request 1
    becomes current, before its later (live) pieces."""
    import io
    from types import SimpleNamespace

    out, err = io.StringIO(), io.StringIO()
    s = console.OrderedStreamer(3, tokenizer=object(), out=out, err=err)
    t = lambda text: SimpleNamespace(text=text)  # noqa: E731
    res = SimpleNamespace(ttft=None, mean_token_latency=None, error=None, tokens=[1],
                          finish_reason=SimpleNamespace(value="length"), neg_mode=0, gate_activation_rate=0.0)
    s.token(0, t("A"))
    s.token(1, t("one "))   # buffered: request 0 is still streaming
    s.token(2, t("x "))     # buffered
    s.finished(0, res)      # request 1 becomes current: its header and buffer come out now
    assert out.getvalue() == "--- [0] ---\nA\n\n--- [1] ---\none "
    s.token(1, t("two "))   # live
    s.token(2, t("y "))     # still buffered
    s.finished(2, res)
    s.finished(1, res)
    assert out.getvalue() == "--- [0] ---\nA\n\n--- [1] ---\none two \n\n--- [2] ---\nx y \n"
    assert err.getvalue().count("finish: length") == 3


def test_streamed_text_of_every_request_equals_its_result(tiny_checkpoint, tmp_path):
    """Several streamed requests of different lengths: each one's printed text is its result's text."""
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"token_ids": [10, 20, 30], "max_new_tokens": 3}) + "\n"
                       + json.dumps({"token_ids": [40, 50, 60], "max_new_tokens": 12}) + "\n")
    args = ["--model", str(tiny_checkpoint), "--prompts-file", str(prompts), "--mode", "0", "--ignore-eos"]
    streamed = invoke(*args).stdout
    rows = json_lines(invoke(*args, "--json"))
    assert streamed == "".join(f"{'' if i == 0 else chr(10)}--- [{i}] ---\n{row['text']}\n"
                               for i, row in enumerate(rows))


# ------------------------------------------------------------------ review 6: errors, interrupt, progress
def test_json_interrupt_prints_the_finished_results_and_names_the_rest(tiny_checkpoint, tmp_path, monkeypatch):
    """Ctrl-C during --json: the requests that had finished are printed (input order, usual shape), then
    one trailer object marks the run interrupted and lists the unfinished ids; exit code 130."""
    from trt_neg.runtime import LLMEngine

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(row) for row in [
        {"id": "short0", "token_ids": [1, 2], "max_new_tokens": 2},
        {"id": "long", "token_ids": [3, 4], "max_new_tokens": 60},
        {"id": "short2", "token_ids": [5, 6], "max_new_tokens": 2},
        {"id": "queued", "token_ids": [7, 8], "max_new_tokens": 30},
    ]) + "\n")
    real_step, calls = LLMEngine.step, [0]

    def step(self):
        calls[0] += 1
        if calls[0] == 8:  # short0 and short2 are done; long and queued (in the freed slot) are decoding
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(LLMEngine, "step", step)
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(prompts), "--json", "--ignore-eos",
               "--max-batch-size", "3", ok=False)
    assert r.exit_code == 130 and "interrupted" in r.stderr
    rows = json_lines(r)
    assert [row["id"] for row in rows[:-1]] == ["short0", "short2"]
    assert all(len(row["tokens"]) == 2 and row["finish_reason"] == "length" for row in rows[:-1])
    assert rows[-1] == {"interrupted": True, "finished": 2, "unfinished": ["long", "queued"]}
    assert all(line.startswith("{") for line in r.stdout.splitlines())  # nothing but JSON on stdout


def test_json_shows_progress_on_stderr_only(tiny_checkpoint):
    r = invoke("--model", str(tiny_checkpoint), "--json", "--max-new-tokens", "3", "--ignore-eos", "a", "b", "c")
    assert len(json_lines(r)) == 3 and len(r.stdout.splitlines()) == 3
    assert "[run] 3/3 requests done, 9 tokens generated" in r.stderr


def test_progress_rewrites_one_line_on_a_terminal():
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    err, now = Tty(), [0.0]
    p = console.Progress(2, err=err, clock=lambda: now[0])
    p.token()
    now[0] = 1.0
    p.token()
    p.finished()
    now[0] = 2.0
    p.finished()
    assert err.getvalue() == ("\r[run] 0/2 requests done, 1 tokens generated\r[run] 0/2 requests done, 2 tokens "
                              "generated\r[run] 2/2 requests done, 2 tokens generated\n")


@pytest.mark.parametrize("line, message", [
    ('{"messages": [{"role": "user"}]}', "messages[0]: 'content' is missing"),
    ('{"messages": ["hi"]}', "messages[0] must be an object with string 'role' and 'content'"),
    ('{"messages": [{"role": 1, "content": "x"}]}', "messages[0]: 'role' must be a string"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": null}]}',
     "messages[1]: 'content' must be a string"),
    ('{"messages": []}', "'messages' must be a non-empty list"),
    ('{"messages": "hi"}', "'messages' must be a non-empty list"),
])
def test_malformed_messages_are_refused_with_the_line(tiny_checkpoint, tmp_path, line, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n' + line + "\n")
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(bad), ok=False)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit)
    assert f"bad.jsonl:2: {message}" in r.output


def test_chat_template_failure_is_one_line_naming_the_line(tiny_checkpoint, tmp_path, monkeypatch):
    import jinja2

    from trt_neg.runtime import tokenizer

    def broken(tok, prompt, chat_template=True):
        raise jinja2.exceptions.UndefinedError("'dict object' has no attribute 'content'")

    monkeypatch.setattr(tokenizer, "encode_prompt", broken)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "q1", "messages": [{"role": "user", "content": "hi"}]}\n')
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(prompts), ok=False)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit)
    assert f"{prompts}:1 (id 'q1'): the chat template failed on it (UndefinedError: 'dict object' has no " \
           "attribute 'content')" in r.output


def test_prompts_file_that_is_not_utf8_is_one_line(tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes('"ok"\n'.encode() + b'"caf\xe9"\n')
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(bad), ok=False)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit)
    assert "bad.jsonl:2: not UTF-8 (invalid continuation byte: byte 0xe9 at column 5)" in r.output
    bom = tmp_path / "bom.jsonl"  # a UTF-8 byte-order mark is not an error
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"token_ids": [1, 2]}).encode() + b"\n")
    assert len(json_lines(invoke("--model", str(tiny_checkpoint), "--prompts-file", str(bom), "--json",
                                 "--max-new-tokens", "1"))) == 1


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 50.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 26214400000 bytes"),
    MemoryError(),
])
def test_out_of_memory_names_the_batch_and_sequence_options(tiny_checkpoint, monkeypatch, exc):
    from trt_neg.runtime.torch_backend import TorchBackend

    def fail(*a, **k):
        raise exc

    monkeypatch.setattr(TorchBackend, "from_pretrained", fail)
    r = invoke("--model", str(tiny_checkpoint), "--max-batch-size", "100000", "--max-seq-len", "1024", "x", ok=False)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    size, seq = run.slot_cache_bytes(tiny_checkpoint, "float32", 100000, 1024)
    assert seq == 1024
    (line,) = [s for s in r.stderr.splitlines() if s.startswith("Error:")]
    assert "--max-batch-size 100000 x --max-seq-len 1024" in line and f"{size / 2**30:.2f} GiB" in line


def test_slot_cache_bytes_is_what_the_runner_allocates(tiny_checkpoint):
    from trt_neg.runtime.torch_backend import TorchBackend

    be = TorchBackend.from_pretrained(tiny_checkpoint, max_slots=3, max_seq_len=40)
    cache = be.runner.cache
    allocated = sum(t.numel() * t.element_size() for d in (cache.key, cache.value, cache.conv, cache.recurrent)
                    for t in d.values())
    assert run.slot_cache_bytes(tiny_checkpoint, "float32", 3, 40) == (allocated, 40)
    assert run.slot_cache_bytes(tiny_checkpoint, "float32", 1, None)[1] == 2048  # min(max_position_embeddings, 4096)


def test_unwritable_cache_dir_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("TRT_NEG_CACHE", str(blocker / "cache"))
    r = invoke("--token-ids", "1,2", ok=False)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    (line,) = [s for s in r.stderr.splitlines() if s.startswith("Error:")]
    assert f"cache directory {blocker / 'cache'} (from $TRT_NEG_CACHE): cannot create it" in line
    assert "$XDG_CACHE_HOME" in line and "--model" in line


def test_a_broken_symlink_in_the_model_is_one_line(tiny_checkpoint, tmp_path):
    """A copied HF-hub snapshot whose blobs stayed behind: its files are dangling symlinks."""
    import shutil

    model = shutil.copytree(tiny_checkpoint, tmp_path / "snapshot")
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").symlink_to(tmp_path / "blobs" / "gone")
    r = invoke("--model", str(model), "--token-ids", "1,2", ok=False)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    (line,) = [s for s in r.stderr.splitlines() if s.startswith("Error:")]
    assert line == (f"Error: {model / 'model.safetensors'}: is a broken symlink to {tmp_path / 'blobs' / 'gone'} "
                    "(No such file or directory)")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_plot_in_an_unwritable_directory_is_refused_before_any_work(monkeypatch):
    monkeypatch.setattr(run, "builtin_tiny_model", lambda *a, **k: pytest.fail("the run started"))
    r = invoke("--plot", "/proc/run.png", "Hello", ok=False)
    assert r.exit_code == 2 and "--plot" in r.output and "cannot write to directory /proc" in r.output


def test_a_failed_plot_write_is_one_line(tiny_checkpoint, tmp_path, monkeypatch):
    from trt_neg.runtime import plot

    def fail(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(plot, "plot_results", fail)
    r = invoke("--model", str(tiny_checkpoint), "--json", "--max-new-tokens", "2", "--plot", str(tmp_path / "r.png"),
               "x", ok=False)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit) and len(json_lines(r)) == 1
    assert f"--plot {tmp_path / 'r.png'}: could not write the plot (Permission denied)" in r.stderr


def test_plot_file_gets_the_usual_permissions(tmp_path):
    import os

    from trt_neg.runtime.plot import plot_results
    from trt_neg.runtime.request import FinishReason, RequestResult

    res = RequestResult("r", (1,), [5, 6], None, FinishReason.LENGTH, [0.5, 0.7], [False, True], 1, None, 0.0, 0.1,
                        0.2, [0.1, 0.2])
    old = os.umask(0o027)
    try:
        path = plot_results([res], ["r"], tmp_path / "p.png")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


def test_device_other_than_cpu_cuda_auto_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(run, "builtin_tiny_model", lambda *a, **k: pytest.fail("the run started"))
    for device in ("meta", "mps", "cuda:x", "CPU", "cuda:-1"):
        r = CliRunner().invoke(run.main, ["--device", device, "--token-ids", "1"])
        assert r.exit_code == 2 and "--device" in r.output and "(cpu, cuda, cuda:N, auto)" in r.output, device


def test_top_k_and_top_p_with_greedy_warn(tiny_checkpoint):
    r = invoke("--model", str(tiny_checkpoint), "--top-k", "5", "--max-new-tokens", "1", "--token-ids", "1")
    assert "warning: --top-k has no effect with --temperature 0" in r.stderr
    r = invoke("--model", str(tiny_checkpoint), "--top-k", "5", "--top-p", "0.5", "--max-new-tokens", "1",
               "--token-ids", "1")
    assert "warning: --top-k and --top-p have no effect" in r.stderr
    r = invoke("--model", str(tiny_checkpoint), "--top-k", "5", "--temperature", "0.7", "--max-new-tokens", "1",
               "--token-ids", "1")
    assert "warning" not in r.stderr


def test_prompts_file_help_describes_the_format():
    r = CliRunner().invoke(run.main, ["--help"])
    help_text = " ".join(r.output.split())
    assert "(see above)" not in help_text
    for word in ('"prompt"', '"messages"', '"token_ids"', '"max_new_tokens"', "UTF-8 JSONL"):
        assert word in help_text


# ------------------------------------------------------------ review r5: pipes, threads, Ctrl-C, configs, ids, limits
def many_requests_file(tmp_path, n=40, max_new_tokens=3):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"token_ids": [1, 2], "max_new_tokens": max_new_tokens}) + "\n"
                            for _ in range(n)))
    return path


def threaded_engine_as_trtllm(monkeypatch, model_dir):
    """--backend trtllm's wait loop without TensorRT-LLM: the torch engine on its own thread stands in for the
    executor (outputs arrive on another thread, as from the executor's dispatcher)."""
    from types import SimpleNamespace

    from trt_neg.runtime import LLMEngine
    from trt_neg.runtime.torch_backend import TorchBackend

    def open_engine(engine_dir, tokenizer, max_batch_size, max_seq_len, max_num_tokens):
        engine = LLMEngine(TorchBackend.from_pretrained(model_dir, max_slots=2), tokenizer=tokenizer).start()
        engine.is_leader = True
        return engine

    monkeypatch.setattr(run, "check_trtllm_options", lambda engine_dir, given: SimpleNamespace(hf_model_dir=None))
    monkeypatch.setattr(run, "open_trtllm_engine", open_engine)
    return ["--backend", "trtllm", "--engine-dir", str(model_dir), "--model", str(model_dir)]


@pytest.mark.parametrize("backend", ["torch", "trtllm"])
@pytest.mark.parametrize("as_json", [False, True])
def test_closed_stdout_stops_decoding_and_exits_141(tiny_checkpoint, tmp_path, monkeypatch, backend, as_json):
    """stdout's reader gone (`run.py | head`): no traceback, no more decoding, exit 128 + SIGPIPE."""
    from trt_neg.runtime import LLMEngine

    writer = console.OrderedJsonWriter if as_json else console.OrderedStreamer
    writes = [0]

    def broken_pipe(self, *args):
        writes[0] += 1
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(writer, "_write", broken_pipe)
    real_step, steps = LLMEngine.step, [0]

    def step(self):
        steps[0] += 1
        return real_step(self)

    monkeypatch.setattr(LLMEngine, "step", step)
    args = (threaded_engine_as_trtllm(monkeypatch, tiny_checkpoint) if backend == "trtllm"
            else [*BASE, "--model", str(tiny_checkpoint), "--max-batch-size", "2"])
    r = CliRunner().invoke(run.main, [*args, "--prompts-file", str(many_requests_file(tmp_path)), "--ignore-eos",
                                      *(["--json"] if as_json else [])])
    assert r.exit_code == 141 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert writes[0] == 1 and "Traceback" not in r.stderr and "listener" not in r.stderr
    # 40 requests x 3 tokens in 2 slots take 60 steps. The torch loop stops at the failed write; the
    # threaded stand-in of the executor may take a few more steps before the shutdown reaches it.
    assert steps[0] < (10 if backend == "torch" else 40)


def test_run_piped_into_head_exits_quietly(tiny_checkpoint, tmp_path):
    """A real closed pipe: the interpreter's final flush does not raise either."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *BASE, "--model", str(tiny_checkpoint),
                             "--prompts-file", str(many_requests_file(tmp_path, n=200)), "--ignore-eos"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.read(5)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert err.count(" tokens, finish: ") < 20, err  # stopped: not all 200 requests were decoded


def test_threads_above_the_cpu_count_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(run.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(run, "builtin_tiny_model", lambda *a, **k: pytest.fail("the run started"))
    r = CliRunner().invoke(run.main, ["--threads", "5", "--token-ids", "1,2"])
    assert r.exit_code == 2 and "--threads" in r.output and "5 is more than the 4 CPUs of this machine" in r.output


def test_ctrl_c_before_decoding_exits_130_with_one_line(tiny_checkpoint, tmp_path):
    """SIGINT while the model loads: exit 130 and "interrupted", not click's "Aborted!" and exit 1."""
    import signal

    driver = ("import sys, time\n"
              f"sys.path.insert(0, {str(ROOT)!r})\n"
              "import run\n"
              "from trt_neg.runtime import tokenizer\n"
              "def slow_tokenizer(path):\n"
              "    print('loading the tokenizer', file=sys.stderr, flush=True)\n"
              "    time.sleep(60)\n"
              "tokenizer.load_tokenizer = slow_tokenizer\n"
              f"run.main([*{BASE!r}, '--model', {str(tiny_checkpoint)!r}, 'Hello'])\n")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr.readline() == b"loading the tokenizer\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.decode() == "interrupted\n" and out == b""


def test_keyboard_interrupt_before_decoding_exits_130(monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "builtin_tiny_model", interrupt)
    r = CliRunner().invoke(run.main, ["--token-ids", "1,2", "--json"])
    assert r.exit_code == 130 and r.stderr == "interrupted\n" and r.stdout == ""


def checkpoint_copy(tiny_checkpoint, tmp_path):
    import shutil

    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))


@pytest.mark.parametrize("content, message", [
    (b'{"architectures": [\n', "field '<file>': is not valid JSON"),
    (b"", "field '<file>': is not valid JSON"),
    (b"[]\n", "field '<root>': expected a JSON object"),
    (b'{"neg_config": {}}\n', "is required but missing"),
    (b"\xff\xfe{}", ""),  # not UTF-8 (the loader's wording is its own)
    (None, "config.json"),  # a directory
])
def test_broken_config_is_a_usage_error_on_model(tiny_checkpoint, tmp_path, monkeypatch, content, message):
    from trt_neg.runtime import tokenizer

    model = checkpoint_copy(tiny_checkpoint, tmp_path)
    (model / "config.json").unlink()
    if content is None:
        (model / "config.json").mkdir()
    else:
        (model / "config.json").write_bytes(content)
    monkeypatch.setattr(tokenizer, "load_tokenizer", lambda path: pytest.fail("the tokenizer was loaded first"))
    r = invoke("--model", str(model), "--token-ids", "1,2", ok=False)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    (line,) = [s for s in r.stderr.splitlines() if s.startswith("Error:")]
    assert "--model" in line and str(model) in line and message in line
    assert "Traceback" not in r.stderr


def test_broken_tokenizer_is_one_line_naming_the_folder(tiny_checkpoint, tmp_path):
    model = checkpoint_copy(tiny_checkpoint, tmp_path)
    (model / "tokenizer.json").write_text("{")
    r = invoke("--model", str(model), "--token-ids", "1,2", ok=False)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    (line,) = [s for s in r.stderr.splitlines() if s.startswith("Error:")]
    assert line.startswith(f"Error: {model}: could not load the tokenizer (")


def test_a_tokenizer_config_without_a_vocabulary_is_refused(tiny_checkpoint, tmp_path):
    # transformers would make a tokenizer of the config's special tokens and encode "hi" as 3 wrong ids.
    model = checkpoint_copy(tiny_checkpoint, tmp_path)
    (model / "tokenizer.json").unlink()
    r = invoke("--model", str(model), "--prompt", "hi", "--json", ok=False)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    (line,) = [s for s in r.stderr.splitlines() if s.startswith("Error:")]
    assert line.startswith(f"Error: {model}: could not load the tokenizer (ValueError: tokenizer_config.json "
                           "without a vocabulary file (tokenizer.json, tokenizer.model, vocab.json, vocab.txt)")
    assert r.stdout == ""


@pytest.mark.parametrize("ident, shown", [("null", "null"), ('{"a": 1}', '{"a": 1}'), ("true", "true"),
                                          ("1.5", "1.5"), ('["x"]', '["x"]')])
def test_prompts_file_id_must_be_a_string_or_an_integer(tiny_checkpoint, tmp_path, ident, shown):
    bad = tmp_path / "ids.jsonl"
    bad.write_text('{"id": "fine", "token_ids": [1]}\n{"id": ' + ident + ', "token_ids": [1]}\n')
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(bad), ok=False)
    assert r.exit_code == 2 and f"ids.jsonl:2: 'id' must be a string or an integer, got {shown}" in r.output


def test_prompts_file_integer_id_is_its_label(tiny_checkpoint, tmp_path):
    good = tmp_path / "ids.jsonl"
    good.write_text('{"id": 7, "token_ids": [1]}\n')
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(good), "--json", "--max-new-tokens", "1")
    assert [row["id"] for row in json_lines(r)] == ["7"]


@pytest.mark.parametrize("lines, extra, message", [
    (['{"id": "same", "token_ids": [1]}', '{"id": "x", "token_ids": [2]}', '{"id": "same", "token_ids": [3]}'], [],
     "ids.jsonl:3: id 'same' is already used by {path}:1"),
    (['{"id": 5, "token_ids": [1]}', '{"id": "5", "token_ids": [2]}'], [], "ids.jsonl:2: id '5' is already used by "
                                                                          "{path}:1"),
    (['"no id"', '{"id": "{path}:1", "token_ids": [2]}'], [], "ids.jsonl:2: id '{path}:1' is already used by {path}:1"),
    (['{"id": "arg0", "token_ids": [1]}'], ["Hello"], "ids.jsonl:1: id 'arg0' is already used by a command-line "
                                                      "prompt"),
    (['{"id": "ids0", "token_ids": [1]}'], ["--token-ids", "1,2"], "ids.jsonl:1: id 'ids0' is already used by a "
                                                                   "command-line prompt"),
])
def test_prompts_file_ids_are_unique(tiny_checkpoint, tmp_path, lines, extra, message):
    path = tmp_path / "ids.jsonl"
    path.write_text("\n".join(line.replace("{path}", str(path)) for line in lines) + "\n")
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(path), *extra, ok=False)
    assert r.exit_code == 2 and "--prompts-file" in r.output and message.format(path=path) in " ".join(r.output.split())


@pytest.mark.parametrize("args, message", [
    (["--max-tokens-per-step", "2"], "Invalid value for --max-tokens-per-step: must be >= --max-batch-size (8)"),
    (["--max-batch-size", "4", "--max-tokens-per-step", "3"], "must be >= --max-batch-size (4)"),
    (["--max-seq-len", "100000000"], "Invalid value for --max-seq-len: 100000000 exceeds the model's "
                                     "max_position_embeddings (2048)"),
])
def test_runtime_limits_are_usage_errors_naming_the_flags(tiny_checkpoint, args, message):
    r = invoke("--model", str(tiny_checkpoint), "--token-ids", "1,2", *args, ok=False)
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output
    assert "max_slots" not in r.output and "max_tokens_per_step" not in r.output


def test_trtllm_limit_errors_name_the_flags(monkeypatch):
    from trt_neg.trtllm import executor

    def refuse(*args, **kwargs):
        raise ValueError("max_num_tokens: must be an integer in [1, 8192] (the engine's max_num_tokens), got 9000")

    monkeypatch.setattr(executor, "TrtllmExecutorEngine", refuse)
    with pytest.raises(click.BadParameter) as info:
        run.open_trtllm_engine("engines/x", None, None, None, 9000)
    assert info.value.format_message() == ("Invalid value for --max-tokens-per-step: must be an integer in "
                                           "[1, 8192] (the engine's max_num_tokens), got 9000")


@pytest.mark.parametrize("given_model", [False, True])
def test_a_missing_tokenizer_checkpoint_blames_what_named_it(tmp_path, monkeypatch, given_model):
    """The HF checkpoint for the tokenizer is gone: blame --model only when the user gave it; else the
    build_info.json that recorded it, and say how to get past it."""
    from types import SimpleNamespace

    gone = tmp_path / "moved-away"
    monkeypatch.setattr(run, "check_trtllm_options", lambda engine_dir, given: SimpleNamespace(hf_model_dir=gone))
    args = ["--backend", "trtllm", "--engine-dir", str(tmp_path / "e"), "--token-ids", "1,2"]
    r = CliRunner().invoke(run.main, [*args, *(["--model", str(gone)] if given_model else [])])
    message = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    if given_model:
        assert f"Invalid value for --model: {gone}: not a directory" in message
    else:
        assert "--model:" not in message and "Invalid value" not in message
        assert (f"{tmp_path / 'e' / 'build_info.json'}: hf_model_dir {gone} is not a directory (the HF checkpoint "
                "for the tokenizer); pass --model DIR") in message

# ------------------------------------------------ review r9: stderr and stdout that fail, Ctrl-C trailers, --plot
class FullStream:
    """A stream on a full disk (`2>/dev/full`): every write fails with ENOSPC."""

    def write(self, text):
        raise OSError(28, "No space left on device")

    def flush(self):
        pass

    def isatty(self):
        return False


@pytest.mark.parametrize("as_json", [False, True])
def test_a_stderr_that_cannot_be_written_loses_no_output(tiny_checkpoint, tmp_path, monkeypatch, as_json):
    """`run.py 2>/dev/full`: the diagnostics are lost, the results on stdout are not."""
    if as_json:
        monkeypatch.setattr(run, "Progress", lambda n: console.Progress(n, err=FullStream()))
    else:
        monkeypatch.setattr(run, "OrderedStreamer",
                            lambda n, tok, **kw: console.OrderedStreamer(n, tok, err=FullStream(), **kw))
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(many_requests_file(tmp_path, n=5)),
               "--ignore-eos", *(["--json"] if as_json else []))
    if as_json:
        assert [len(row["tokens"]) for row in json_lines(r)] == [3] * 5
    else:
        assert [line for line in r.stdout.splitlines() if line.startswith("--- [")] == [
            f"--- [{i}] ---" for i in range(5)]
    assert r.stderr == ""


@pytest.mark.parametrize("as_json", [False, True])
def test_a_stdout_that_cannot_be_written_is_one_line_and_stops_decoding(tiny_checkpoint, tmp_path, monkeypatch,
                                                                        as_json):
    """`run.py >/dev/full`: one line naming stdout and the reason, exit 1, no more decoding."""
    from trt_neg.runtime import LLMEngine

    writer = console.OrderedJsonWriter if as_json else console.OrderedStreamer
    monkeypatch.setattr(writer, "_write", lambda self, *args: FullStream().write(""))
    real_step, steps = LLMEngine.step, [0]

    def step(self):
        steps[0] += 1
        return real_step(self)

    monkeypatch.setattr(LLMEngine, "step", step)
    r = invoke("--model", str(tiny_checkpoint), "--max-batch-size", "2", "--ignore-eos", "--prompts-file",
               str(many_requests_file(tmp_path)), *(["--json"] if as_json else []), ok=False)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert r.stderr.splitlines()[-1] == ("Error: could not write to stdout (No space left on device); the output "
                                         "is incomplete")
    assert "Traceback" not in r.stderr and "listener" not in r.stderr
    assert steps[0] < 10  # 40 requests x 3 tokens in 2 slots would take 60 steps


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux /dev/full")
def test_stdout_to_dev_full_exits_1_without_a_traceback(tiny_checkpoint, tmp_path):
    """The real thing: the interpreter's final flush of the unwritten output does not fail again (exit 120)."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *BASE, "--model", str(tiny_checkpoint),
                               "--max-new-tokens", "2", "--json", "Hello"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("Error: could not write to stdout (No space left on device)")
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def interrupt_with_nothing_printed_yet(monkeypatch, tmp_path):
    """A prompts file and a Ctrl-C after its second (short) request finished while the first (long) one still
    decodes: --json has printed nothing yet, and Ctrl-C prints the short result and the trailer."""
    from trt_neg.runtime import LLMEngine

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps(row) for row in [
        {"id": "long", "token_ids": [3, 4], "max_new_tokens": 60},
        {"id": "short", "token_ids": [1, 2], "max_new_tokens": 2},
    ]) + "\n")
    real_step, calls = LLMEngine.step, [0]

    def step(self):
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(LLMEngine, "step", step)
    return prompts


@pytest.mark.parametrize("error, message", [
    (BrokenPipeError(32, "Broken pipe"), None),
    (OSError(28, "No space left on device"),
     "Error: could not write to stdout (No space left on device); the output is incomplete")])
def test_ctrl_c_trailer_into_a_failed_stdout_still_exits_130(tiny_checkpoint, tmp_path, monkeypatch, error, message):
    """Ctrl-C with --json when stdout's reader has gone (`run.py --json | head`, Ctrl-C kills both) or stdout
    is full: the interrupt is what the exit code reports, with one line each, no traceback."""
    def fail(self, *args):
        raise error

    prompts = interrupt_with_nothing_printed_yet(monkeypatch, tmp_path)
    monkeypatch.setattr(console.OrderedJsonWriter, "_write", fail)
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(prompts), "--json", "--ignore-eos", ok=False)
    assert r.exit_code == 130 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    lines = [line for line in r.stderr.splitlines() if not line.startswith("[run] ")]
    assert lines == ([message] if message else []) + ["interrupted"] and r.stdout == ""


def test_ctrl_c_with_plot_writes_no_plot(tiny_checkpoint, tmp_path, monkeypatch):
    """--plot draws a finished run: an interrupted one leaves no file (and no temporary) behind."""
    prompts = interrupt_with_nothing_printed_yet(monkeypatch, tmp_path)
    out = tmp_path / "plots"
    out.mkdir()
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(prompts), "--json", "--ignore-eos", "--plot",
               str(out / "run.png"), ok=False)
    assert r.exit_code == 130 and [row["id"] for row in json_lines(r)[:1]] == ["short"]
    assert list(out.iterdir()) == []


def test_plot_without_matplotlib_is_refused_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ModuleNotFoundError
    monkeypatch.setattr(run, "builtin_tiny_model", lambda *a, **k: pytest.fail("the run started"))
    r = invoke("--plot", str(tmp_path / "run.png"), "Hello", ok=False)
    assert r.exit_code == 2 and "--plot" in r.output
    assert "the plot needs matplotlib, which is not installed (pip install matplotlib)" in r.output


def test_a_matplotlib_that_fails_while_plotting_is_one_line_after_the_output(tiny_checkpoint, tmp_path,
                                                                             monkeypatch):
    from trt_neg.runtime import plot

    def fail(*args, **kwargs):
        raise ImportError("libfreetype.so.6: cannot open shared object file")

    monkeypatch.setattr(plot, "plot_results", fail)
    r = invoke("--model", str(tiny_checkpoint), "--json", "--max-new-tokens", "2", "--plot", str(tmp_path / "r.png"),
               "x", ok=False)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit) and len(json_lines(r)) == 1
    assert r.stderr.splitlines()[-1] == (f"Error: --plot {tmp_path / 'r.png'}: could not draw the plot: matplotlib "
                                         "failed to import (libfreetype.so.6: cannot open shared object file)")


def one_token_result(fired=False):
    from trt_neg.runtime.request import FinishReason, RequestResult

    return RequestResult("r", (1,), [5], None, FinishReason.LENGTH, [0.5], [fired], 1, None, 0.0, 0.1, 0.1, [])


def test_plot_of_a_one_token_run_shows_its_entropy():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trt_neg.runtime import plot

    fig, ax = plt.subplots()
    try:
        plot._gate_panel(ax, [one_token_result()], ["r"], threshold=0.9)
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "r"]
        assert list(line.get_ydata()) == [0.5] and line.get_marker() not in (None, "None", "", " ")
        assert line.get_marker() != "o"  # a dot is what marks a fired token
    finally:
        plt.close(fig)


def test_plot_gate_activation_axis_starts_at_zero_when_nothing_fired():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trt_neg.runtime import plot

    fig, ax = plt.subplots()
    try:
        plot._rate_panel(ax, [one_token_result(), one_token_result()], ["a", "b"])
        assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] > 0
    finally:
        plt.close(fig)


# ------------------------------------------------------------------ review 13: a new user's walkthrough
@pytest.mark.parametrize("args, line", [
    (["--token-ids", "1,2,3", "--top-p", "0"], "Error: Invalid value for --top-p: must be a number in (0, 1], got 0.0"),
    (["hi", "--temperature", "-1"],
     "Error: Invalid value for --temperature: must be a finite number >= 0 (0 = greedy), got -1.0"),
    (["hi", "--stop", ""], "Error: Invalid value for --stop: every stop string must be a non-empty str, got ''"),
])
def test_a_bad_sampling_flag_is_that_flags_error_not_a_prompts(monkeypatch, args, line):
    monkeypatch.setattr(run, "builtin_tiny_model", lambda *a, **k: pytest.fail("the run started"))
    r = invoke(*args, ok=False)
    assert r.exit_code == 2 and r.output.splitlines()[-1] == line


def test_a_bad_value_of_a_prompts_file_line_names_the_line_and_the_key_it_wrote(tiny_checkpoint, tmp_path):
    cases = [('{"prompt": "x", "top_p": 0}', "top_p: must be a number in (0, 1], got 0"),
             ('{"prompt": "x", "mode": 2}', "mode: must be 0 (NEG off) or 1 (NEG on) for a single request, got 2"),
             ('{"token_ids": []}', "token_ids: the prompt is empty")]
    for line, message in cases:
        prompts = tmp_path / "p.jsonl"
        prompts.write_text(line + "\n")
        r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(prompts), ok=False)
        assert r.exit_code == 2
        assert r.output.splitlines()[-1].startswith(f"Error: Invalid value for --prompts-file: {prompts}:1: {message}")


@pytest.mark.parametrize("content", ["", "\n  \n"])
@pytest.mark.parametrize("others", [[], ["--prompt", "hi"], ["--token-ids", "1,2"]])
def test_an_empty_prompts_file_says_so(tmp_path, content, others):
    prompts = tmp_path / "empty.jsonl"
    prompts.write_text(content)
    r = invoke("--prompts-file", str(prompts), *others, ok=False)
    assert r.exit_code == 2
    assert r.output.splitlines()[-1] == f"Error: Invalid value for --prompts-file: {prompts}: no requests in the file"


def test_streamed_requests_show_the_ids_a_prompts_file_gives(tiny_checkpoint, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "a", "token_ids": [1, 2]}\n{"token_ids": [3]}\n{"id": 7, "token_ids": [4]}\n')
    r = invoke("--model", str(tiny_checkpoint), "--prompts-file", str(prompts), "--max-new-tokens", "1",
               "--ignore-eos")
    assert [line for line in r.stdout.splitlines() if line.startswith("---")] == [
        "--- [0] a ---", "--- [1] ---", "--- [2] 7 ---"]
    assert [line.split(" tokens")[0] for line in r.stderr.splitlines()] == ["[0] a: 1", "[1] 1", "[2] 7: 1"]


def result_of(fired, neg_mode):
    from trt_neg.runtime.request import FinishReason, RequestResult

    n = len(fired)
    return RequestResult("r", (1,), [5] * n, None, FinishReason.LENGTH, [0.5] * n, fired, neg_mode, None, 0.0, 0.1,
                         0.1, [])


def test_plot_gate_activation_leaves_neg_off_requests_out():
    """DESIGN.md section 4: the gate activation rate is fired / decoded steps where NEG runs; a mode 0 request's
    bar reads "off", not 0 %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trt_neg.runtime import plot

    on, off = result_of([True, False, False, False], 1), result_of([False] * 6, 0)
    fig, ax = plt.subplots()
    try:
        plot._rate_panel(ax, [on, off], ["on", "off"])
        assert ax.get_title() == "Gate activation per request (NEG-on tokens: 25.0 %)"
        assert [(p.get_x() + p.get_width() / 2, p.get_height()) for p in ax.patches] == [(0, 25.0)]
        assert [(t.get_position()[0], t.get_text()) for t in ax.texts] == [(1, "off")]
        ax.clear()
        plot._rate_panel(ax, [off], ["off"])
        assert ax.get_title() == "Gate activation per request (NEG off in every request)"
    finally:
        plt.close(fig)
    assert plot.overall_gate_activation([on, off, result_of([False] * 4, 1)]) == 1 / 8
    assert plot.overall_gate_activation([off]) is None


def test_text_summary_of_a_neg_off_request_has_no_gate_activation():
    import io

    err = io.StringIO()
    s = console.OrderedStreamer(2, tokenizer=None, out=io.StringIO(), err=err)
    s.finished(0, result_of([False, False], 0))
    s.finished(1, result_of([True, False], 1))
    first, second = err.getvalue().splitlines()
    assert "mode 0 (NEG off)," in first and "gate activation" not in first
    assert "mode 1, gate activation 50.00%," in second


# ------------------------------------------------- prompts_file.py on its own (no model, no CLI run)
@pytest.mark.parametrize("line, message", [
    ("[1, 2]", "expected a JSON string or object"),
    ('{"prompt": "x", "zz": 2, "temp": 1}', "unknown field 'temp'"),  # the first in sorted order
    ('{"prompt": "x", "token_ids": [1]}', "needs exactly one of 'prompt', 'messages', 'token_ids'"),
    ('{"max_new_tokens": 3}', "needs exactly one of 'prompt', 'messages', 'token_ids'"),
    ('{"prompt": 5}', "'prompt' must be a string"),
    ('{"messages": []}', """'messages' must be a non-empty list of {"role": ..., "content": ...} objects"""),
    ('{"messages": ["hi"]}', """messages[0] must be an object with string 'role' and 'content', got "hi\""""),
    ('{"messages": [{"role": "user"}]}', "messages[0]: 'content' is missing"),
    ('{"id": true, "token_ids": [1]}', "'id' must be a string or an integer, got true"),
    ("[1, 2", "is not valid JSON (Expecting ',' delimiter: line 2 column 1 (char 6))"),
    (b'"caf\xe9"', "not UTF-8 (invalid continuation byte: byte 0xe9 at column 5); save the file as UTF-8"),
])
def test_every_prompts_file_error_names_the_option_and_the_line(tmp_path, line, message):
    # Each refusal is a usage error of --prompts-file naming file:line (the CLI prints it as is).
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'"fine"\n' + (line if isinstance(line, bytes) else line.encode()) + b"\n")
    with pytest.raises(click.BadParameter) as e:
        read_prompts_file(str(path))
    assert e.value.format_message() == f"Invalid value for --prompts-file: {path}:2: {message}"


def test_an_unreadable_prompts_file_is_a_usage_error_naming_it(tmp_path):
    path = tmp_path / "missing.jsonl"
    with pytest.raises(click.BadParameter) as e:
        read_prompts_file(str(path))
    assert e.value.format_message() == (f"Invalid value for --prompts-file: {path}: cannot read "
                                         "(No such file or directory)")


def test_prompts_file_lines_become_specs_with_their_ids_and_overrides(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('"plain"\n\n{"id": "q", "prompt": "x", "top_k": 3, "stop": "."}\n'
                    '{"messages": [{"role": "user", "content": "hi"}]}\n{"id": 7, "token_ids": [4, 5]}\n')
    a, b, c, d = read_prompts_file(str(path))
    assert (a.label, a.text, a.where, a.line, a.given_id, a.overrides) == (f"{path}:1", "plain", f"{path}:1",
                                                                          f"{path}:1", None, {})
    assert (b.label, b.text, b.where, b.given_id, b.overrides) == ("q", "x", f"{path}:3 (id 'q')", "q",
                                                                   {"top_k": 3, "stop": "."})
    assert (c.label, c.messages, c.given_id) == (f"{path}:4", [{"role": "user", "content": "hi"}], None)
    assert (d.label, d.token_ids, d.where, d.given_id) == ("7", [4, 5], f"{path}:5 (id '7')", "7")


@pytest.mark.parametrize("value, ids", [("1,2,3", [1, 2, 3]), (" 4 , 5 ", [4, 5]), ("6,", [6])])
def test_token_ids_option_parses_comma_separated_integers(value, ids):
    assert parse_token_ids(value) == ids


@pytest.mark.parametrize("value, message", [("", "empty list of token ids"), (" , ", "empty list of token ids"),
                                            ("1,x", "expected comma-separated integers, got '1,x'")])
def test_bad_token_ids_option_names_the_option(value, message):
    with pytest.raises(click.BadParameter) as e:
        parse_token_ids(value)
    assert e.value.format_message() == f"Invalid value for --token-ids: {message}"


def test_a_refused_request_value_names_the_key_its_line_wrote_or_its_prompt():
    too_long = ValueError("prompt_token_ids: the prompt has 99 tokens")
    # a command-line prompt is named by its label, as a "prompt" (not a prompts-file line)
    e = request_error(PromptSpec("arg0", text="hi"), too_long)
    assert e.format_message() == "Invalid value for prompt: arg0: prompt_token_ids: the prompt has 99 tokens"
    # a "token_ids" line wrote the ids under that key; a "prompt" or "messages" line did not
    ids_line = PromptSpec("f:1", token_ids=[1] * 99, where="f:1")
    text_line = PromptSpec("q", text="long", where="f:2")
    assert request_error(ids_line, too_long).format_message() == (
        "Invalid value for --prompts-file: f:1: token_ids: the prompt has 99 tokens")
    assert request_error(text_line, too_long).format_message() == (
        "Invalid value for --prompts-file: f:2 (id 'q'): prompt_token_ids: the prompt has 99 tokens")
    mode = ValueError("neg_mode: must be 0 (NEG off) or 1 (NEG on)")
    assert request_error(text_line, mode).format_message().endswith(
        "f:2 (id 'q'): mode: must be 0 (NEG off) or 1 (NEG on)")


def test_threads_up_to_the_cpu_count_are_allowed(monkeypatch):
    """--threads N is refused only beyond the machine's CPUs (equal is fine); an unknown count is one CPU."""
    from trt_neg.cli import too_many_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert too_many_threads(4) is None
    assert too_many_threads(5) == "5 is more than the 4 CPUs of this machine"
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert too_many_threads(1) is None and too_many_threads(2) == "2 is more than the 1 CPUs of this machine"
