"""Which preprocessor conditions are active on each line of a file.

Computed from the directive lines alone (not from the syntax tree), so it stays right where tree-sitter
produces ERROR nodes around `#if` groups, and costs one regex pass over files that have directives.
Include guards (`#ifndef X` followed by `#define X`) are not conditions.
"""

from __future__ import annotations

import bisect
import re

_DIRECTIVE = re.compile(
    rb"^[ \t]*#[ \t]*(if|ifdef|ifndef|elif|elifdef|elifndef|else|endif)\b((?:[^\n\\]|\\.|\\\n)*)",
    re.M | re.S)
_COMMENT = re.compile(r"/\*.*?\*/|//.*$", re.S)
_WS = re.compile(r"\s+")


def _clean(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").replace("\\\n", " ")
    return _WS.sub(" ", _COMMENT.sub(" ", text)).strip()


class ConditionMap:
    """`at(line)` -> the conditions in force at that 1-based line, outermost first."""

    __slots__ = ("_lines", "_stacks")

    def __init__(self, data: bytes):
        self._lines: list[int] = [0]
        self._stacks: list[tuple[str, ...]] = [()]
        if b"#" not in data:
            return
        # Each frame: [condition shown for the current branch, conditions of earlier branches, is_guard]
        frames: list[list] = []
        matches = list(_DIRECTIVE.finditer(data))
        pos, newlines = 0, 0  # newlines before `pos`, counted once (not from the start for each directive)
        for i, m in enumerate(matches):
            kind = m.group(1).decode()
            arg = _clean(m.group(2))
            if kind in ("if", "ifdef", "ifndef"):
                cond = {"if": arg, "ifdef": arg, "ifndef": f"!{arg}"}[kind]
                guard = kind == "ifndef" and not frames and self._is_guard(data, m, arg)
                frames.append([cond, [cond], guard])
            elif not frames:
                continue  # unbalanced: ignore rather than fail
            elif kind == "endif":
                frames.pop()
            elif kind == "else":
                f = frames[-1]
                f[0] = " && ".join(_negate(c) for c in f[1])
            else:  # elif / elifdef / elifndef
                f = frames[-1]
                new = {"elif": arg, "elifdef": arg, "elifndef": f"!{arg}"}[kind]
                f[0] = " && ".join([_negate(c) for c in f[1]] + [new])
                f[1].append(new)
            newlines += data.count(b"\n", pos, m.end())
            pos = m.end()
            line = newlines + 2  # the directive's effect starts on the next line
            stack = tuple(f[0] for f in frames if not f[2])
            if line == self._lines[-1]:
                self._stacks[-1] = stack
            else:
                self._lines.append(line)
                self._stacks.append(stack)

    @staticmethod
    def _is_guard(data: bytes, m: re.Match, name: str) -> bool:
        rest = data[m.end(): m.end() + 200].lstrip()
        return rest.startswith(b"#") and re.match(rb"#\s*define\s+" + re.escape(name.encode()) + rb"\b",
                                                  rest) is not None

    def at(self, line: int) -> tuple[str, ...]:
        return self._stacks[bisect.bisect_right(self._lines, line) - 1]


def _negate(cond: str) -> str:
    if cond.startswith("!") and " " not in cond:
        return cond[1:]
    return f"!({cond})" if " " in cond else f"!{cond}"
