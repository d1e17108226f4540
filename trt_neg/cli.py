"""What the command-line tools share: Ctrl-C handling, the --threads limit."""

from __future__ import annotations

import os
import sys

import click


class InterruptibleCommand(click.Command):
    """Ctrl-C anywhere exits 130 with one line, "interrupted", instead of click's "Aborted!" and
    exit 1. The tools write their outputs to temporary places and move them into place when
    complete, so an interrupted run leaves nothing half written."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            try:
                click.echo("interrupted", err=True)
            except OSError:  # stderr gone too: the exit code still says it
                pass
            sys.exit(130)


def too_many_threads(threads: int) -> str | None:
    """Why ``--threads`` cannot be ``threads`` (None when it can): more than this machine's CPUs.
    libgomp crashes, or segfaults, when it cannot create the threads torch asks it for."""
    cpus = os.cpu_count() or 1
    return f"{threads} is more than the {cpus} CPUs of this machine" if threads > cpus else None
