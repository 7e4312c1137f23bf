"""A tree's build configuration: which files are compiled and which `#if` branches hold.

One object per tree and configuration; the graph asks it about files (`status`) and conditions
(`condition`). Every answer is three-valued and unknown means kept: flowscan only leaves out what the
configuration rules out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from flowscan.buildconfig.cexpr import FALSE, TRUE, UNKNOWN, evaluate
from flowscan.buildconfig.values import Values

BUILT, NOT_BUILT, STUB, UNDECIDED = "built", "not built", "stub", "unknown"


@dataclass
class BuildConfig:
    name: str  # profile name or the override file's name
    title: str
    values: Values
    file_status: Callable[[str], tuple[bool | None, bool]] | None = None  # (built?, only as a stub)
    notes: list[str] = field(default_factory=list)
    _memo: dict[str, str] = field(default_factory=dict, repr=False)
    _cond: dict[str, str] = field(default_factory=dict, repr=False)

    def status(self, path: str) -> str:
        """BUILT, NOT_BUILT, STUB (built only as a fallback for names nothing else defines) or UNDECIDED."""
        hit = self._memo.get(path)
        if hit is None:
            if self.file_status is None:
                hit = UNDECIDED
            else:
                built, stub = self.file_status(path)
                hit = UNDECIDED if built is None else NOT_BUILT if not built else STUB if stub else BUILT
            self._memo[path] = hit
        return hit

    def condition(self, text: str) -> str:
        """TRUE, FALSE or UNKNOWN for one `#if` condition."""
        hit = self._cond.get(text)
        if hit is None:
            hit = evaluate(text, self.values.value, self.values.defined)
            self._cond[text] = hit
        return hit

    def truth(self, text: str) -> bool | None:
        """condition() as True / False / None (flowscan.graph.expansion's Truth)."""
        return {TRUE: True, FALSE: False}.get(self.condition(text))

    def conditions(self, texts) -> tuple[str, ...]:
        return tuple(self.condition(t) for t in texts)

    def summary(self) -> str:
        return f"{self.title}" + (f" ({'; '.join(self.notes)})" if self.notes else "")


__all__ = ["BuildConfig", "BUILT", "NOT_BUILT", "STUB", "UNDECIDED", "TRUE", "FALSE", "UNKNOWN"]
