"""run.py: inputs (text, chat template, JSONL, token ids), streaming, --json, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import run  # noqa: E402

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
    (["--token-ids", "1", "--top-p", "0"], "top_p"),
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
    for device, words in (("cuda", "no CUDA GPU"), ("tpu:0", "not a torch device")):
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
    s = run.OrderedStreamer(3, tokenizer=object(), out=out, err=err)
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
