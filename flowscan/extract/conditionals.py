"""Which preprocessor conditions are active on each line of a file.

Computed from the directive lines alone (not from the syntax tree), so it stays right where tree-sitter
produces ERROR nodes around `#if` groups, and costs one regex pass over files that have directives.
Include guards (`#ifndef X` followed by `#define X`) are not conditions. `flatten_conditionals` keeps one
branch of every group, for a second parse of files whose first parse broke around `#if`.
"""

from __future__ import annotations

import bisect
import re
from flowscan.extract.lexer import BLANK, COMMENT_IN_DIR, LEX, at_line_start

DIRECTIVE = re.compile(
    rb"^[ \t]*#[ \t]*(if|ifdef|ifndef|elif|elifdef|elifndef|else|endif)\b((?:[^\n\\]|\\.|\\\n)*)",
    re.M | re.S)
_COMMENT = re.compile(r"/\*.*?\*/|//.*$", re.S)
WS = re.compile(r"\s+")


def _clean(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").replace("\\\n", " ")
    return WS.sub(" ", _COMMENT.sub(" ", text)).strip()


# What a line's conditions show at most: real code nests a handful of levels, a hostile file 20,000. The
# innermost MAX_DEPTH levels are kept and the outer ones summarised in one entry, and an #elif chain shows
# its first MAX_TERMS earlier branches, so the map (and every fact's conditions) stays linear in the file.
MAX_DEPTH = 32
MAX_TERMS = 16


def _shown(visible: list[str]) -> tuple[str, ...]:
    if len(visible) <= MAX_DEPTH:
        return tuple(visible)
    return (f"... ({len(visible) - MAX_DEPTH} outer levels)", *visible[-MAX_DEPTH:])


def _branch(earlier: list[str], new: str | None) -> str:
    """The condition of an #else (new None) or #elif branch after the `earlier` branches."""
    terms = [_negate(c) for c in earlier[:MAX_TERMS]]
    if len(earlier) > MAX_TERMS:
        terms.append(f"... {len(earlier) - MAX_TERMS} more branches not taken")
    return " && ".join(terms if new is None else [*terms, new])


class ConditionMap:
    """`at(line)` -> the conditions in force at that 1-based line, outermost first.

    One (line, conditions) entry per directive, each at most MAX_DEPTH + 1 long, kept incrementally
    (never rebuilt from the whole stack): memory and time linear in the file however deep it nests."""

    __slots__ = ("_lines", "_stacks")

    def __init__(self, data: bytes):
        self._lines: list[int] = [0]
        self._stacks: list[tuple[str, ...]] = [()]
        if b"#" not in data:
            return
        # Each frame: [earlier branches' conditions, is_guard]; `visible` holds the condition shown for
        # the current branch of every frame that is not an include guard.
        frames: list[list] = []
        visible: list[str] = []
        pos, newlines = 0, 0  # newlines before `pos`, counted once (not from the start for each directive)
        for m in DIRECTIVE.finditer(data):
            kind = m.group(1).decode()
            arg = _clean(m.group(2))
            if kind in ("if", "ifdef", "ifndef"):
                cond = f"!{arg}" if kind == "ifndef" else arg
                guard = kind == "ifndef" and not frames and self._is_guard(data, m, arg)
                frames.append([[cond], guard])
                if not guard:
                    visible.append(cond)
            elif not frames:
                continue  # unbalanced: ignore rather than fail
            elif kind == "endif":
                if not frames.pop()[1]:
                    visible.pop()
            elif kind == "else":
                f = frames[-1]
                if not f[1]:
                    visible[-1] = _branch(f[0], None)
            else:  # elif / elifdef / elifndef
                f = frames[-1]
                new = f"!{arg}" if kind == "elifndef" else arg
                if not f[1]:
                    visible[-1] = _branch(f[0], new)
                f[0].append(new)
            newlines += data.count(b"\n", pos, m.end())
            pos = m.end()
            line = newlines + 2  # the directive's effect starts on the next line
            stack = _shown(visible)
            if line == self._lines[-1]:
                self._stacks[-1] = stack
            elif stack == self._stacks[-1]:
                continue
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


_COND_KW = re.compile(rb"\#[ \t\f\v]*([A-Za-z_]\w*)")
_OPENERS = frozenset((b"if", b"ifdef", b"ifndef"))
_MIDDLES = frozenset((b"elif", b"else", b"elifdef", b"elifndef"))


def flatten_conditionals(data: bytes) -> bytes:
    """Keep one branch of each #if group, blank the rest and the conditional directives.

    The kept branch is the first one, except that a branch opened by a literal `#if 0` (or
    `#elif 0`) is skipped in favour of the next one.  Length and newline offsets unchanged.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("flatten_conditionals() takes bytes")
    data = bytes(data)
    if b"#" not in data:
        return data
    out = bytearray(data)
    stack: list[list[bool]] = []  # [parent_active, a branch was taken, current branch kept]
    active = True
    cur = 0
    translate = bytes.translate
    for lm in LEX.finditer(data):
        s, e = lm.span()
        if data[s] != 35 or not at_line_start(data, s):
            continue
        ds = s
        m = _COND_KW.match(data, ds, e)
        kw = m.group(1) if m else b""
        if kw in _OPENERS:
            if not active:
                out[cur:s] = translate(data[cur:s], BLANK)
            cur = e
            out[s:e] = translate(data[s:e], BLANK)
            take = not (kw == b"if" and _is_zero(data[ds:e], b"if"))
            stack.append([active, take, take])
            active = active and take
        elif kw in _MIDDLES or kw == b"endif":
            if not active:
                out[cur:s] = translate(data[cur:s], BLANK)
            cur = e
            out[s:e] = translate(data[s:e], BLANK)
            if not stack:
                continue
            top = stack[-1]
            if kw == b"endif":
                stack.pop()
                active = top[0]
            else:
                take = not top[1] and not (kw == b"elif" and _is_zero(data[ds:e], b"elif"))
                if take:
                    top[1] = True
                top[2] = take
                active = top[0] and take
    if not active and cur < len(data):
        out[cur:] = translate(data[cur:], BLANK)
    return bytes(out)


def _is_zero(directive: bytes, kw: bytes) -> bool:
    """Is this directive `#if 0` / `#elif 0` (comments ignored)?"""
    body = COMMENT_IN_DIR.sub(lambda m: b" " if m.group()[:1] == b"/" else m.group(), directive)
    parts = body.replace(b"#", b" ", 1).split()
    return len(parts) == 2 and parts[0] == kw and parts[1].strip(b"0") == b""
