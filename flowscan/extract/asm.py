"""Bytes of one assembly file (.S) -> FileFacts: its functions and the trapping instructions in them.

No C parse: line patterns from queries/asm/*.toml find where functions start and end
(`SYM_FUNC_START(__arm_smccc_hvc)`) and the instructions a handoff names (`hvc #0`), including those
written inside a `.macro` and used by invoking it (`SMCCC hvc`). A function becomes a FunctionDef (so
calls from C resolve to it), an instruction a ConstantUse of kind "insn" named by its mnemonic.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache

from flowscan.extract.conditionals import ConditionMap
from flowscan.extract.facts import ConstantUse, FileFacts, FunctionDef
from flowscan.extract.lexer import digest
from flowscan.resources import queries_dir

ASM_SUFFIXES = (".S",)
_COMMENT = re.compile(rb"/\*.*?\*/", re.S)
_LINE_COMMENT = re.compile(r"//.*$")
_MACRO = re.compile(r"^\s*\.macro\s+(\w+)[\s,]*(.*)$")
_ENDM = re.compile(r"^\s*\.endm\b")
_WORD = re.compile(r"^\s*(?:\w+:\s*)?([A-Za-z_.][\w.]*)\s*(.*)$")


@dataclass(frozen=True)
class AsmPatterns:
    starts: tuple[re.Pattern, ...]
    ends: tuple[re.Pattern, ...]
    instructions: frozenset[str]


@cache
def patterns() -> AsmPatterns:
    starts: list[re.Pattern] = []
    ends: list[re.Pattern] = []
    insns: set[str] = set()
    for path in sorted((queries_dir() / "asm").glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        starts += [re.compile(p) for p in data.get("function_start", ())]
        ends += [re.compile(p) for p in data.get("function_end", ())]
        insns.update(data.get("instructions", ()))
    return AsmPatterns(tuple(starts), tuple(ends), frozenset(insns))


def _blank_comments(data: bytes) -> str:
    """Comments out, newlines kept (so line numbers stay)."""
    text = _COMMENT.sub(lambda m: b"\n" * m.group().count(b"\n"), data).decode("utf-8", "replace")
    return "\n".join(_LINE_COMMENT.sub("", line) for line in text.split("\n"))


def _params(spec: str) -> list[str]:
    """`.macro SMCCC instr` / `.macro m a, b=1, c:req` -> parameter names."""
    return [p.split("=")[0].split(":")[0].strip() for p in re.split(r"[\s,]+", spec.strip()) if p.strip()]


def _args(text: str) -> list[str]:
    return [a for a in re.split(r"\s*,\s*|\s+", text.strip()) if a]


def _match(pats, line: str) -> str:
    for p in pats:
        m = p.search(line)
        if m:
            return m.group("name")
    return ""


def extract_asm(data: bytes, path: str) -> FileFacts:
    pats = patterns()
    facts = FileFacts(path=path)
    conds = ConditionMap(data)
    lines = _blank_comments(data).split("\n")
    macros: dict[str, tuple[list[str], list[str]]] = {}
    current: tuple[str, list[str], list[str]] | None = None
    fn: tuple[str, int, list[str]] | None = None  # name, first line, text

    def insns_in(line: str, depth: int = 0) -> list[str]:
        """Instructions a line issues: itself, or the body of the macro it invokes (parameters put in)."""
        m = _WORD.match(line)
        if not m:
            return []
        word, rest = m.group(1), m.group(2)
        if word in pats.instructions:
            return [f"{word} {rest.strip()}".strip()]
        if word in macros and depth < 4:
            params, body = macros[word]
            args = _args(rest)
            out = []
            for b in body:
                for i, p in enumerate(params):
                    b = b.replace("\\" + p, args[i] if i < len(args) else "")
                out += insns_in(b.replace("\\()", ""), depth + 1)
            return [f"{i} ({word})" for i in out]
        return []

    def close(end: int) -> None:
        name, start, text = fn
        facts.functions.append(FunctionDef(name=name, path=path, line=start, end_line=end, params="",
                                           static=False, return_type="", conditions=conds.at(start),
                                           digest=digest("\n".join(text).encode())))

    for no, line in enumerate(lines, 1):
        if current is not None:
            if _ENDM.match(line):
                macros[current[0]] = (current[1], current[2])
                current = None
            else:
                current[2].append(line)
            continue
        m = _MACRO.match(line)
        if m:
            current = (m.group(1), _params(m.group(2)), [])
            continue
        start = _match(pats.starts, line)
        if start:
            if fn is not None:
                close(no - 1)
            fn = (start, no, [line])
            continue
        if fn is not None:
            fn[2].append(line)
            if _match(pats.ends, line) == fn[0]:
                close(no)
                fn = None
                continue
        for insn in insns_in(line):
            facts.constants.append(ConstantUse(name=insn.split(" ", 1)[0], kind="insn", target=insn,
                                               function=fn[0] if fn else "", path=path, line=no))
    if fn is not None:
        close(len(lines))
    return facts
