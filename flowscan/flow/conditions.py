"""Decide a call site's `case` labels and `if` conditions under a flow's defaults (three-valued).

A flow spec says which value a variable has on the route the machine takes by default
(`default = { reboot_mode = "REBOOT_COLD" }`); a condition is then true, false, or not decided statically
(a value read at run time, a function's result). Distinct constant names compare unequal (enumerators of
one enum); `#if` conditions belong to the build configuration and are not decided here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

_TOKEN = re.compile(r"\s*(==|!=|&&|\|\||<=|>=|->|[A-Za-z_][A-Za-z0-9_]*|0[xX][0-9a-fA-F]+|\d+|.)")
_CONST = re.compile(r"[A-Z][A-Z0-9_]*$")


@dataclass
class Decision:
    value: bool | None  # None: not decided statically
    why: str  # "reboot_mode = REBOOT_COLD", or what is not known ("psci_system_reset2_supported")


class _Unknown:
    def __init__(self, text: str):
        self.text = text


class _Parser:
    """Recursive descent over || && == != ! ( ); anything else is an unknown operand."""

    def __init__(self, text: str, defaults: Mapping[str, str]):
        self.toks = [t for t in _TOKEN.findall(text) if t.strip()]
        self.i = 0
        self.defaults = defaults
        self.used: list[str] = []
        self.unknown: list[str] = []

    def peek(self) -> str:
        return self.toks[self.i] if self.i < len(self.toks) else ""

    def take(self) -> str:
        t = self.peek()
        self.i += 1
        return t

    def parse(self):
        v = self.or_()
        if self.i < len(self.toks):  # something this grammar does not know: the whole is not decided
            return None
        return v

    def or_(self):
        v = self.truth(self.and_())
        while self.peek() == "||":
            self.take()
            w = self.truth(self.and_())
            v = True if (v is True or w is True) else (None if (v is None or w is None) else False)
        return v

    def and_(self):
        v = self.truth(self.cmp())
        while self.peek() == "&&":
            self.take()
            w = self.truth(self.cmp())
            v = False if (v is False or w is False) else (None if (v is None or w is None) else True)
        return v

    def cmp(self):
        v = self.unary()
        while self.peek() in ("==", "!="):
            op = self.take()
            w = self.unary()
            if isinstance(v, str) and isinstance(w, str):
                same = _same(v, w)
                v = same if op == "==" else (None if same is None else not same)
            else:
                v = None
        return v

    def unary(self):
        if self.peek() == "!":
            self.take()
            v = self.truth(self.unary())
            return None if v is None else not v
        return self.primary()

    def primary(self):
        t = self.take()
        if t == "(":
            v = self.or_()
            if self.peek() == ")":
                self.take()
            return v
        if not t:
            return None
        if t in self.defaults:
            self.used.append(f"{t} = {self.defaults[t]}")
            if self.peek() in ("(", "->", ".", "["):
                return self._rest_unknown(t)
            return self.defaults[t]
        if self.peek() in ("(", "->", ".", "["):  # a call or a member: known only at run time
            return self._rest_unknown(t)
        if _CONST.match(t) or t.isdigit() or t in ("true", "false"):
            return t
        if re.match(r"[A-Za-z_]", t):
            self.unknown.append(t)
            return _Unknown(t)
        return None

    def _rest_unknown(self, head: str):
        depth = 0
        text = head
        while self.peek():
            t = self.peek()
            if t in ("(", "["):
                depth += 1
            elif t in (")", "]"):
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and t in ("&&", "||", "==", "!=", "?", ":", ","):
                break
            text += self.take()
        self.unknown.append(text)
        return _Unknown(text)

    def truth(self, v):
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, _Unknown):
            return None
        if v in ("true", "false"):
            return v == "true"
        if v.isdigit():
            return int(v) != 0
        return None  # an enumerator's value is not known here


def _same(a: str, b: str) -> bool | None:
    if a.isdigit() and b.isdigit():
        return int(a) == int(b)
    if a == b:
        return True
    if _CONST.match(a) and _CONST.match(b):
        return False
    return None


def decide_if(text: str, defaults: Mapping[str, str]) -> Decision:
    """An `if` condition as flowscan records it (`!(c)` on the else branch)."""
    p = _Parser(text, defaults)
    value = p.parse()
    if value is not None:
        return Decision(value, ", ".join(dict.fromkeys(p.used)) or "constant")
    missing = ", ".join(dict.fromkeys(p.unknown)) or text
    return Decision(None, f"not decided statically: {missing}")


def decide_case(label: str, subject: str, labels: list[str], defaults: Mapping[str, str]) -> Decision:
    """`case A|B` of `switch (subject)`; `labels` are all the switch's labels (for `default`)."""
    if not subject or subject not in defaults:
        return Decision(None, f"not decided statically: switch ({subject or '?'})")
    value = defaults[subject]
    mine = [p.strip() for p in label.split("|")]
    if "default" in mine and value not in labels:
        return Decision(True, f"{subject} = {value}")
    return Decision(value in mine, f"{subject} = {value}")


def combine(values: list[bool | None]) -> bool | None:
    if any(v is False for v in values):
        return False
    if any(v is None for v in values):
        return None
    return True


SubjectOf = Callable[[str, str], tuple[str, list[str]]]  # (function, case label) -> (subject, all labels)
