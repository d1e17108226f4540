"""What ``run.py`` prints: streamed text in input order (:class:`OrderedStreamer`), one JSON
object per request in input order (:class:`OrderedJsonWriter`), and progress on stderr
(:class:`Progress`).

A write to stdout that fails raises (the caller stops the run). Writes to stderr are diagnostics:
one that fails (``2>/dev/full``) is dropped, so that it costs the run none of its output, except on
a closed pipe (``2>&1 | head``), which raises ``BrokenPipeError`` as a closed stdout does.
"""

from __future__ import annotations

import json
import math
import sys
import time

from .prompts_file import PromptSpec


def write_diagnostic(err, text: str) -> None:
    """Write ``text`` to ``err`` (stderr) as far as it takes it; only a closed pipe raises."""
    try:
        err.write(text)
        err.flush()
    except BrokenPipeError:
        raise
    except OSError:
        pass


class OrderedStreamer:
    """Streams request i's text live once requests 0..i-1 are printed; buffers the rest. ``ids`` (one per
    request, None where it has none) are the ids a prompts file gives, shown beside the positions."""

    def __init__(self, n: int, tokenizer, out=None, err=None, ids=None):
        self.n, self.tokenizer = n, tokenizer
        self.ids = [None] * n if ids is None else list(ids)
        self.out = sys.stdout if out is None else out
        self.err = sys.stderr if err is None else err
        self.current = 0
        self.buffers: dict[int, list[str]] = {}
        self.done: dict[int, object] = {}
        self.started = False

    def _piece(self, item) -> str:
        if self.tokenizer is not None:
            return item.text
        return f"{item.token} " if item.index else str(item.token) + " "

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _name(self, i: int) -> str:
        return f"[{i}]" if self.ids[i] is None else f"[{i}] {self.ids[i]}"

    def _header(self, i: int) -> None:
        if self.n > 1:
            self._write(f"{'' if i == 0 else chr(10)}--- {self._name(i)} ---\n")

    def _start(self, i: int) -> None:
        """Request i is current: its header, then what was buffered for it (in order)."""
        if not self.started:
            self._header(i)
            self.started = True
        buffered = self.buffers.pop(i, None)
        if buffered:
            self._write("".join(buffered))

    def token(self, i: int, item) -> None:
        piece = self._piece(item)
        if i == self.current:
            self._start(i)
            self._write(piece)
        else:
            self.buffers.setdefault(i, []).append(piece)

    def finished(self, i: int, result) -> None:
        self.done[i] = result
        while self.current in self.done:
            i = self.current
            self._start(i)
            self._write("\n")
            self._summary(i, self.done.pop(i))
            self.current += 1
            self.started = False
        if self.current in self.buffers:  # the next request already has text: flush it before it streams live
            self._start(self.current)

    def _summary(self, i: int, r) -> None:
        ttft = f"{r.ttft * 1e3:.1f} ms" if r.ttft is not None else "-"
        tpot = f"{r.mean_token_latency * 1e3:.2f} ms/token" if r.mean_token_latency is not None else "-"
        err = f", error: {r.error}" if r.error else ""
        neg = (f"mode {r.neg_mode} (NEG off)" if r.neg_mode == 0  # no gate ran: no activation rate
               else f"mode {r.neg_mode}, gate activation {100 * r.gate_activation_rate:.2f}%")
        name = self._name(i) if self.ids[i] is None else f"{self._name(i)}:"
        write_diagnostic(self.err, f"{name} {len(r.tokens)} tokens, finish: {r.finish_reason.value}, {neg}, "
                                   f"TTFT {ttft}, {tpot}{err}\n")


def result_json(spec: PromptSpec, res) -> str:
    d = res.to_dict()
    d["entropies"] = [None if isinstance(e, float) and math.isnan(e) else e for e in d["entropies"]]
    d["id"] = spec.label
    if spec.text is not None:
        d["prompt"] = spec.text
    return json.dumps(d)


class OrderedJsonWriter:
    """--json: request i's line is printed once it and requests 0..i-1 have finished (input order).

    ``interrupted()`` prints what finished but waits behind an unfinished request, then the
    trailer ``{"interrupted": true, "finished": N, "unfinished": [ids]}``; later results
    (the cancellations) are ignored.
    """

    def __init__(self, specs: list[PromptSpec], out=None):
        self.specs = specs
        self.out = sys.stdout if out is None else out
        self.current = 0
        self.done: dict[int, object] = {}
        self.closed = False

    def _write(self, i: int, res) -> None:
        self.out.write(result_json(self.specs[i], res) + "\n")
        self.out.flush()

    def finished(self, i: int, result) -> None:
        if self.closed:
            return
        self.done[i] = result
        while self.current in self.done:
            self._write(self.current, self.done.pop(self.current))
            self.current += 1

    def interrupted(self) -> None:
        if self.closed:
            return
        self.closed = True
        finished = self.current + len(self.done)
        for i in sorted(self.done):
            self._write(i, self.done[i])
        unfinished = [s.label for i, s in enumerate(self.specs) if i >= self.current and i not in self.done]
        self.out.write(json.dumps({"interrupted": True, "finished": finished, "unfinished": unfinished}) + "\n")
        self.out.flush()


class Progress:
    """--json's progress on stderr: requests done / total and tokens generated.

    On a terminal one line is rewritten in place (at most 10 times a second); otherwise a
    line is printed when a request finishes, at most every 5 seconds, and at the end.
    """

    def __init__(self, total: int, err=None, clock=time.monotonic):
        self.total, self.done, self.tokens = total, 0, 0
        self.err = sys.stderr if err is None else err
        self.clock = clock
        try:
            self.tty = self.err.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.last = -math.inf
        self.pending = False  # a line on the terminal without its newline yet

    def _line(self) -> str:
        return f"[run] {self.done}/{self.total} requests done, {self.tokens} tokens generated"

    def _show(self, force: bool = False) -> None:
        now = self.clock()
        if self.tty:
            if force or now - self.last >= 0.1:
                write_diagnostic(self.err, "\r" + self._line())
                self.pending, self.last = True, now
        elif force or now - self.last >= 5.0:
            write_diagnostic(self.err, self._line() + "\n")
            self.last = now

    def token(self) -> None:
        self.tokens += 1
        if self.tty:
            self._show()

    def finished(self) -> None:
        self.done += 1
        self._show(force=self.done == self.total)
        if self.done == self.total:
            self.close()

    def summary(self) -> None:
        """The current line now (on Ctrl-C), then its end."""
        self._show(force=True)
        self.close()

    def close(self) -> None:
        """End the terminal line (before other messages, and at the end)."""
        if self.pending:
            write_diagnostic(self.err, "\n")
            self.pending = False
