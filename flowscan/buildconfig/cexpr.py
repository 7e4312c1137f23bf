"""`#if` conditions evaluated against a configuration: true, false or unknown.

Three-valued: a name the configuration does not decide makes the part of the expression that depends on
it unknown, and `&&`/`||` still decide when one side does (`0 && X` is false whatever X is). Values are
kept as integers (or None for unknown) so `CONFIG_ARM64_VA_BITS >= 48` and `defined(X) || Y` work.
"""

from __future__ import annotations

import re
from typing import Callable

TRUE, FALSE, UNKNOWN = "true", "false", "unknown"

_TOKEN = re.compile(r"\s*(?:(0[xX][0-9a-fA-F]+|\d+)[uUlL]*|([A-Za-z_]\w*)|(&&|\|\||==|!=|<=|>=|<<|>>|[!()<>+\-*/%?:~&|^,]))")

# Lookup of one name: its integer value, or None when the configuration does not decide it.
Value = Callable[[str], "int | None"]
Defined = Callable[[str], "bool | None"]


class _Bad(Exception):
    pass


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _Bad(text)
        out.append(m.group(1) or m.group(2) or m.group(3))
        pos = m.end()
    return out


# Kconfig's macros from include/linux/kconfig.h: X=y -> built in, X=m -> CONFIG_X_MODULE defined.
_KCONFIG_MACROS = ("IS_ENABLED", "IS_BUILTIN", "IS_MODULE", "IS_REACHABLE")


class _Parser:
    """Precedence climbing over C's preprocessor operators; None stands for unknown."""

    def __init__(self, toks: list[str], value: Value, defined: Defined):
        self.t, self.i, self.value, self.defined = toks, 0, value, defined

    def peek(self) -> str:
        return self.t[self.i] if self.i < len(self.t) else ""

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if not tok or (want is not None and tok != want):
            raise _Bad(want or "end")
        self.i += 1
        return tok

    def parse(self):
        v = self.ternary()
        if self.i != len(self.t):
            raise _Bad("trailing")
        return v

    def ternary(self):
        c = self.binary(0)
        if self.peek() != "?":
            return c
        self.take("?")
        a = self.ternary()
        self.take(":")
        b = self.ternary()
        if c is None:
            return a if a == b else None
        return a if c else b

    _PREC = {"||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6, "<": 7, ">": 7, "<=": 7, ">=": 7,
             "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10}

    def binary(self, min_prec: int):
        left = self.unary()
        while True:
            op = self.peek()
            prec = self._PREC.get(op)
            if prec is None or prec < min_prec:
                return left
            self.take()
            right = self.binary(prec + 1)
            left = self._apply(op, left, right)

    @staticmethod
    def _apply(op: str, a, b):
        if op == "&&":
            if a == 0 or b == 0:
                return 0
            return None if a is None or b is None else 1
        if op == "||":
            if (a is not None and a != 0) or (b is not None and b != 0):
                return 1
            return None if a is None or b is None else 0
        if a is None or b is None:
            return None
        try:
            return {"|": lambda: a | b, "^": lambda: a ^ b, "&": lambda: a & b, "==": lambda: int(a == b),
                    "!=": lambda: int(a != b), "<": lambda: int(a < b), ">": lambda: int(a > b),
                    "<=": lambda: int(a <= b), ">=": lambda: int(a >= b), "<<": lambda: a << b,
                    ">>": lambda: a >> b, "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                    "/": lambda: int(a / b), "%": lambda: a % b}[op]()
        except (ZeroDivisionError, ValueError):
            return None

    def unary(self):
        tok = self.peek()
        if tok == "!":
            self.take()
            v = self.unary()
            return None if v is None else int(not v)
        if tok == "-":
            self.take()
            v = self.unary()
            return None if v is None else -v
        if tok == "~":
            self.take()
            v = self.unary()
            return None if v is None else ~v
        if tok == "+":
            self.take()
            return self.unary()
        return self.primary()

    def primary(self):
        tok = self.take()
        if tok == "(":
            v = self.ternary()
            self.take(")")
            return v
        if tok[0].isdigit():
            return int(tok, 0)
        if not (tok[0].isalpha() or tok[0] == "_"):
            raise _Bad(tok)
        if tok == "defined":
            paren = self.peek() == "("
            if paren:
                self.take("(")
            name = self.take()
            if paren:
                self.take(")")
            d = self.defined(name)
            return None if d is None else int(d)
        if tok in _KCONFIG_MACROS and self.peek() == "(":
            self.take("(")
            name = self.take()
            self.take(")")
            return self._kconfig(tok, name)
        if self.peek() == "(":  # some other function-like macro: its value is unknown
            depth = 0
            while True:
                t = self.take()
                depth += t == "("
                depth -= t == ")"
                if depth == 0:
                    return None
        return self.value(tok)

    def _kconfig(self, macro: str, name: str):
        builtin = self.defined(name)
        module = self.defined(name + "_MODULE")
        if macro == "IS_BUILTIN":
            return None if builtin is None else int(builtin)
        if macro == "IS_MODULE":
            return None if module is None else int(module)
        if builtin or module:  # IS_ENABLED, IS_REACHABLE (reachable from built-in code: counted as enabled)
            return 1
        return None if builtin is None or module is None else 0


def evaluate(text: str, value: Value, defined: Defined) -> str:
    """TRUE, FALSE or UNKNOWN for one condition as ConditionMap writes it (`CONFIG_EFI`, `!X`, `A && !(B)`).

    A bare name is tested for being defined-and-nonzero, which is what both `#ifdef X` and `#if X` mean for
    configuration symbols (`#define CONFIG_X 1`); text that is not an expression is UNKNOWN."""
    try:
        v = _Parser(_tokens(text), value, defined).parse()
    except (_Bad, RecursionError, ValueError):
        return UNKNOWN
    if v is None:
        return UNKNOWN
    return TRUE if v else FALSE


def combine(values: list[str]) -> str:
    """The conjunction of several conditions (all must hold)."""
    if FALSE in values:
        return FALSE
    return UNKNOWN if UNKNOWN in values else TRUE
