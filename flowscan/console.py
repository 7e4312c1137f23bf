"""The command line's side of progress: lines and click progress bars on stderr (results stay on stdout).

The core reports through `flowscan.progress.Progress`; this is the implementation `cli` hands it. Quiet
(``-q``) shows warnings only.
"""

from __future__ import annotations

import sys
import threading

import click

from flowscan.progress import Progress


class ClickProgress(Progress):
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._bar = None
        self._lock = threading.Lock()  # git's transfer progress arrives on a reader thread

    def message(self, text: str) -> None:
        if not self.quiet:
            self.finish()
            click.echo(f"flowscan: {text}", err=True)

    def warn(self, text: str) -> None:
        self.finish()
        click.echo(f"flowscan: warning: {text}", err=True)

    def start(self, label: str, total: int | None = None) -> None:
        self.finish()
        if self.quiet:
            return
        if not total:
            click.echo(f"flowscan: {label}", err=True)
            return
        with self._lock:
            self._bar = click.progressbar(length=total, label=f"flowscan: {label}", file=sys.stderr)
            self._bar.__enter__()

    def advance(self, steps: int = 1) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(steps)

    def finish(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.__exit__(None, None, None)
                self._bar = None
