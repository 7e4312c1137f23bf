"""Progress reporting as a callback: the core says what it is doing, the caller decides how (or whether) to
show it. Only the command line knows a terminal; every library default is `NULL`, which shows nothing.

One task at a time: ``start(label, total)``, ``advance(n)`` as work is done, ``finish()``; ``message`` for a
line of news ("cloning linux@v6.12.8 ..."), ``warn`` for something the user should know even when quiet
(a file skipped, a cached commit used because the remote could not be asked).
"""

from __future__ import annotations


class Progress:
    """The protocol, and its silent implementation: every method may be called in any state."""

    def message(self, text: str) -> None:
        """A line of news about long work."""

    def warn(self, text: str) -> None:
        """Something that changes what the answer is based on."""

    def start(self, label: str, total: int | None = None) -> None:
        """A task of `total` steps (None: unknown) begins; a running task is finished first."""

    def advance(self, steps: int = 1) -> None:
        """`steps` more steps of the running task are done."""

    def finish(self) -> None:
        """The running task is done (nothing when none runs)."""


NULL = Progress()


class Recorder(Progress):
    """Keeps every call as a tuple, in order (tests, and callers that report elsewhere)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def message(self, text: str) -> None:
        self.events.append(("message", text))

    def warn(self, text: str) -> None:
        self.events.append(("warn", text))

    def start(self, label: str, total: int | None = None) -> None:
        self.events.append(("start", label, total))

    def advance(self, steps: int = 1) -> None:
        self.events.append(("advance", steps))

    def finish(self) -> None:
        self.events.append(("finish",))

    def texts(self, kind: str) -> list[str]:
        return [e[1] for e in self.events if e[0] == kind]
