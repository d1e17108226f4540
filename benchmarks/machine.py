"""What the benchmark scripts share besides timing: the sentence naming the machine a run ran on,
and argparse's checks of their numeric options (a usage error, not a traceback minutes later)."""

from __future__ import annotations

import argparse
import os
import platform


def cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 0


def machine_summary() -> str:
    """e.g. "Linux x86_64, AMD EPYC 7B13 (2 of 2 cores usable by this process), Python 3.11.7"."""
    return (f"{platform.system()} {platform.machine()}, {cpu_name()} ({usable_cores()} of {os.cpu_count()} cores "
            f"usable by this process), Python {platform.python_version()}")


def int_at_least(minimum: int):
    """An argparse ``type``: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    return parse


def thread_count(minimum: int):
    """An argparse ``type`` for ``--threads``: :func:`int_at_least` ``minimum``, within run.py's limit
    (``trt_neg.cli.too_many_threads``)."""
    from trt_neg.cli import too_many_threads

    at_least = int_at_least(minimum)

    def parse(text: str) -> int:
        value = at_least(text)
        if problem := too_many_threads(value):
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written (its lists and usage lines) and every option's default."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or "(default" in (action.help or ""):
            return action.help  # a flag, or the help says it already
        return super()._get_help_string(action)
