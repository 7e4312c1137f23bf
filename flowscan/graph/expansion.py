"""Macros of a tree where they decide a call or a constant: which #define a name means from a file, and
its expansions (one per `#if` alternative, each with its conditions and the #define's file:line).

The expansion itself is text work (flowscan.extract.cpp); this module chooses definitions the way the
compiler would see them from one file: the file's own #define first, then the tree's headers, narrowed
to the preferred architecture, and to the branches a configuration takes when one is known.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

from flowscan.extract.cpp import NEVER_MACROS, UNDEFINED, Expansion, expand, ignorer
from flowscan.extract.facts import MacroDef
from flowscan.index.store import Index
from flowscan.resources import queries_dir

# What a configuration says of one `#if` condition: True, False, or None (cannot tell).
Truth = Callable[[str], "bool | None"]


@lru_cache(maxsize=1)
def _table() -> dict:
    with open(queries_dir() / "c" / "macros.toml", "rb") as fh:
        return tomllib.load(fh).get("expansion") or {}


def ignored_calls() -> Callable[[str], bool]:
    """Call names that expansions write but the compiler never emits (queries/c/macros.toml [expansion])."""
    return _ignorer(tuple(_table().get("ignore_calls") or ()))


def opaque() -> Callable[[str], bool]:
    """Macros never expanded (compile-time checks)."""
    return _ignorer(tuple(_table().get("opaque") or ()))


@lru_cache(maxsize=4)
def _ignorer(globs: tuple[str, ...]) -> Callable[[str], bool]:
    return ignorer(globs)


def assumed(cond: str) -> bool | None:
    """What every compilation of a C file says of a condition (queries/c/macros.toml [expansion.assume]):
    `__ASSEMBLY__` is false, `!__ASSEMBLY__` true; None for anything else (a conjunction is false when one
    of its terms is)."""
    assume = _table().get("assume") or {}
    if "||" in cond:
        return None
    verdicts = []
    for term in cond.split("&&"):
        term = term.strip()
        neg = term.startswith("!")
        term = term.lstrip("!").strip()
        if term.startswith("defined"):
            term = term[len("defined"):].strip().strip("()").strip()
        if term not in assume:
            verdicts.append(None)
            continue
        verdicts.append(bool(assume[term]) != neg)
    if any(v is False for v in verdicts):
        return False
    return True if verdicts and all(verdicts) else None


@dataclass(frozen=True)
class MacroCall:
    """What a call of a macro comes to on one alternative: the functions it calls (may be none)."""

    macro: MacroDef  # the #define of the name called
    calls: tuple[str, ...]
    conditions: tuple[str, ...]  # of every #define the alternative chose
    chain: tuple[str, ...]  # the macros expanded, outermost first


class Macros:
    def __init__(self, ix: Index, prefer: Sequence[str] = (), truth: Truth | None = None):
        self.ix = ix
        self.prefer = tuple(prefer)
        self.truth = truth
        self._memo: dict[tuple, list] = {}

    def definitions(self, name: str, from_path: str) -> list[MacroDef]:
        """The #defines of `name` a file sees: its own (every #if branch of them), else the tree's."""
        if name in NEVER_MACROS:
            return []
        defs = self.ix.macros(name)
        if not defs:
            return []
        own = [d for d in defs if d.path == from_path]
        if own:
            defs = own
        else:
            defs = [d for d in defs if d.path.endswith(".h")] or defs
            if self.prefer and len(defs) > 1:
                arch = [d for d in defs if d.path.startswith(self.prefer)]
                # A header of another architecture is not included from here.
                defs = arch + [d for d in defs if not d.path.startswith("arch/")] if arch else \
                    [d for d in defs if not d.path.startswith("arch/")] or defs
        # A #define under a condition every compilation (or the configuration) settles the other way is
        # not seen; when that rules out every one, the name is no macro here.
        return [d for d in defs if not any(assumed(c) is False or (self.truth is not None and self.truth(c) is False)
                                           for c in d.conditions)]

    def is_macro(self, name: str, from_path: str) -> bool:
        return bool(self.definitions(name, from_path))

    def alternatives(self, name: str, from_path: str) -> list[MacroDef]:
        """The #defines of `name` as the expander chooses among them: when one is conditional and the tree
        also defines a function of that name (`_raw_spin_lock`: a macro with CONFIG_INLINE_SPIN_LOCK, or in
        the header a !CONFIG_SMP build includes), "no macro" is an alternative too, first."""
        key = ("alt", name, from_path)
        hit = self._memo.get(key)
        if hit is None:
            hit = [] if opaque()(name) else self.definitions(name, from_path)
            if hit and any(any(assumed(c) is not True for c in d.conditions) for d in hit) \
                    and self.ix.defs(name, ask=False):
                hit = [MacroDef(name, "", "", 0, UNDEFINED), *hit]
            self._memo[key] = hit
        return hit

    def expansions(self, name: str, args: Sequence[str] | None, from_path: str) -> list[Expansion]:
        key = ("x", name, tuple(args) if args is not None else None, from_path)
        hit = self._memo.get(key)
        if hit is None:
            hit = expand(name, args, lambda n: self.alternatives(n, from_path))
            self._memo[key] = hit
        return hit

    def call(self, name: str, args: Sequence[str], from_path: str) -> list[MacroCall]:
        """A call `name(args)` where `name` is a macro: per alternative, the functions it calls."""
        out: list[MacroCall] = []
        skip = ignored_calls()
        for ex in self.expansions(name, args, from_path):
            if not ex.macros or ex.macros[0].name != name:
                continue  # the alternative where `name` is no macro (its function is an edge of its own)
            calls = tuple(c for c in ex.calls(skip) if not self._unexpanded_macro(c, from_path, ex))
            out.append(MacroCall(ex.macros[0], calls, ex.conditions, tuple(m.name for m in ex.macros)))
        return out

    def _unexpanded_macro(self, name: str, from_path: str, ex: Expansion) -> bool:
        """A name left in an expansion that is itself a macro (its own expansion was blocked): not a
        function, unless the tree also defines a function of that name."""
        return name != ex.macros[0].name and self.is_macro(name, from_path) and not self.ix.defs(name)

    def constant(self, text: str, from_path: str) -> list[tuple[str, Expansion]]:
        """`PSCI_FN_NATIVE(0_2, CPU_ON)` -> [("PSCI_0_2_FN64_CPU_ON", expansion), ...]: the names a
        constant written through a macro comes to, one per alternative ([] when it is no macro)."""
        text = text.strip()
        head, _, rest = text.partition("(")
        head = head.strip()
        if not head.isidentifier() or not self.definitions(head, from_path):
            return []
        if rest:
            if not rest.rstrip().endswith(")"):
                return []
            args = _split_args(rest.rstrip()[:-1])
        else:
            args = None
        # Expand the macro written, not the names it comes to: PSCI_0_2_FN64_CPU_ON is itself a macro
        # (for a number), and the other side tests the name.
        key = ("c", text, from_path)
        hit = self._memo.get(key)
        if hit is None:
            one = expand(head, args, lambda n: self.definitions(n, from_path) if n == head else [])
            hit = [(ex.name(), ex) for ex in one if ex.name() and ex.macros]
            if not hit:
                hit = [(ex.name(), ex) for ex in self.expansions(head, args, from_path)
                       if ex.name() and ex.macros and ex.macros[0].name == head]
            self._memo[key] = hit
        return hit


def _split_args(text: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [a.strip() for a in out] if any(a.strip() for a in out) else []
