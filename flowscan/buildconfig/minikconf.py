"""QEMU's device configuration for a target: configs/devices/<target>/default.mak resolved over the
tree's Kconfig files, the way scripts/minikconf.py does for a default build.

Kconfig as QEMU writes it: `config X`, `bool`, `default y [if E]`, `depends on E`, `select Y [if E]`,
`imply Y [if E]`, `source path`; expressions with `&&`, `||`, `!` and parentheses. The symbols the
build system passes in (the accelerators, the target's architecture, host features) are the profile's
`kconfig_seed`. A symbol is on when the .mak file sets it, something on selects it, or its
dependencies hold and it defaults to y or something on implies it (and the .mak does not say n).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from flowscan.sources.buildfiles import BuildFiles

_TOK = re.compile(r"\s*(&&|\|\||!|\(|\)|[A-Za-z0-9_]+)")


@dataclass
class _Sym:
    name: str
    depends: list[str] = field(default_factory=list)
    defaults: list[tuple[str, str]] = field(default_factory=list)  # (value, condition)
    selects: list[tuple[str, str]] = field(default_factory=list)
    implies: list[tuple[str, str]] = field(default_factory=list)


def _eval(expr: str, on: set[str]) -> bool:
    toks = _TOK.findall(expr)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else ""

    def take():
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def or_():
        v = and_()
        while peek() == "||":
            take()
            v = and_() or v
        return v

    def and_():
        v = not_()
        while peek() == "&&":
            take()
            v = not_() and v
        return v

    def not_():
        if peek() == "!":
            take()
            return not not_()
        if peek() == "(":
            take()
            v = or_()
            if peek() == ")":
                take()
            return v
        t = take() if peek() else "n"
        return t == "y" or t in on
    if not expr.strip():
        return True
    try:
        return or_()
    except IndexError:
        return False


def _parse(files: BuildFiles, path: str, syms: dict[str, _Sym], seen: set[str]) -> None:
    if path in seen:
        return
    seen.add(path)
    text = files.text(path)
    if text is None:
        return
    cur: _Sym | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word == "source":
            _parse(files, posixpath.normpath(posixpath.join(posixpath.dirname(path), rest)), syms, seen)
            cur = None
        elif word == "config":
            cur = syms.setdefault(rest, _Sym(rest))
        elif cur is None:
            continue
        elif word == "depends" and rest.startswith("on "):
            cur.depends.append(rest[3:])
        elif word in ("default", "select", "imply"):
            target, _, cond = rest.partition(" if ")
            {"default": cur.defaults, "select": cur.selects, "imply": cur.implies}[word].append(
                (target.strip(), cond.strip()))


def _mak(files: BuildFiles, path: str, out: dict[str, str], depth: int = 0) -> None:
    text = files.text(path)
    if text is None or depth > 5:
        return
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("include "):
            _mak(files, posixpath.normpath(posixpath.join(posixpath.dirname(path), line[8:].strip())), out,
                 depth + 1)
            continue
        m = re.match(r"^CONFIG_([A-Za-z0-9_]+)\s*=\s*([yn])\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)


def resolve_devices(files: BuildFiles, prof: dict) -> tuple[dict[str, str], str]:
    """(CONFIG_X -> 'y'/'n' for every Kconfig symbol, a note)."""
    syms: dict[str, _Sym] = {}
    _parse(files, "Kconfig", syms, set())
    assigned: dict[str, str] = {}
    _mak(files, prof["devices"], assigned)
    seed = set(prof.get("kconfig_seed", ()))
    on: set[str] = {s for s in seed} | {k for k, v in assigned.items() if v == "y"}
    for _ in range(100):
        selected = {t for s in on if s in syms for t, c in syms[s].selects if _eval(c, on)}
        implied = {t for s in on if s in syms for t, c in syms[s].implies if _eval(c, on)}
        new = set(seed)
        for name, sym in syms.items():
            if assigned.get(name) == "y" or name in selected:
                new.add(name)
            elif assigned.get(name) == "n" or name in seed:
                continue
            elif all(_eval(d, on) for d in sym.depends) and (
                    any(v == "y" and _eval(c, on) for v, c in sym.defaults) or name in implied):
                new.add(name)
        if new == on:
            break
        on = new
    values = {f"CONFIG_{n}": ("y" if n in on else "n") for n in syms}
    values.update({f"CONFIG_{n}": "y" for n in seed})
    note = (f"{prof['devices']} resolved over {len(syms)} Kconfig symbols: "
            f"{sum(1 for n in syms if n in on)} on")
    return values, note
