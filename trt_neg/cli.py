"""What the command-line tools share: Ctrl-C handling."""

from __future__ import annotations

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
