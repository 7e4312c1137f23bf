"""The facts extracted from one C file, and their JSON round-trip.

Facts are a pure function of a file's bytes (plus EXTRACTOR_VERSION), so they are cached by git blob id
and can be computed in worker processes. Everything here is plain data: tuples, strings and ints.
Positions are 1-based line numbers relative to the tree root given to the extractor.
"""

from __future__ import annotations

import json
import operator
import sys
from dataclasses import dataclass, field, fields

# Bump whenever extraction output changes: it is part of every cache key.
EXTRACTOR_VERSION = "fx-11"


@dataclass(slots=True)
class FunctionDef:
    name: str
    path: str
    line: int  # line of the function's name
    end_line: int
    params: str  # parameter list text, whitespace-normalised, e.g. "(Object *obj, ResetType type)"
    static: bool
    return_type: str = ""
    conditions: tuple[str, ...] = ()  # enclosing preprocessor conditions, outermost first
    inline: str = ""  # "always" for __always_inline (the compiler sees through it), "inline", or ''
    # hash of the definition's text with comments and whitespace runs dropped: equal digests mean the
    # function only moved (drift ignores line shifts), a new digest means its text changed
    digest: str = ""


@dataclass(slots=True)
class CallSite:
    caller: str  # enclosing function ('' at file scope)
    callee: str  # direct: function name; field: field path ("phases.hold"); variable: the name; other: text
    kind: str  # direct | field | variable | other
    path: str
    line: int
    args: tuple[str, ...] = ()
    constants: tuple[str, ...] = ()  # UPPER_CASE identifiers among the arguments
    base: str = ""  # field calls: the object expression ("rc", "kgc", "vcpu->arch")
    base_type: str = ""  # field calls: declared type of the base when known ("ResettableClass")
    var_type: str = ""  # variable calls: declared type of the variable when known ("exit_handle_fn")
    cases: tuple[str, ...] = ()  # enclosing switch case labels, outermost first
    ifs: tuple[str, ...] = ()  # enclosing if conditions, outermost first; "!(c)" on the else branch
    conditions: tuple[str, ...] = ()  # enclosing preprocessor conditions, outermost first
    local: bool = False  # variable calls: through a local variable or parameter (not a file-scope one)


@dataclass(slots=True)
class PointerStore:
    """A function name stored as data (a candidate target of an indirect call)."""

    function: str  # the stored name (may turn out not to be a function: the graph checks)
    kind: str  # initializer | assignment | return
    path: str
    line: int
    field: str = ""  # designator / field path: "notifier_call", "phases.hold"; '' for plain variables
    index: str = ""  # array designator: "ESR_ELx_EC_HVC64"
    variable: str = ""  # initialised variable, or the assigned base ("dc", "invoke_psci_fn")
    var_type: str = ""  # declared type of that variable / base when known ("TypeInfo", "exit_handle_fn")
    in_function: str = ""  # enclosing function ('' at file scope)
    conditions: tuple[str, ...] = ()


@dataclass(slots=True)
class QomType:
    """A TypeInfo initializer: the QOM type graph is built from these."""

    variable: str
    name: str  # expression as written: TYPE_KVM_ARM_GICV3 or "kvm-arm-gicv3"
    parent: str
    class_init: str
    instance_init: str
    path: str
    line: int


@dataclass(slots=True)
class ConstantUse:
    """A constant written to a field, passed to a call, or tested in a case label."""

    name: str
    kind: str  # assign | call-arg | case
    target: str  # assign: field path ("exit_reason"); call-arg: callee; case: the switch expression
    function: str
    path: str
    line: int


@dataclass(slots=True)
class GlobalRef:
    """A file-scope variable read or written inside a function (request flags polled across threads)."""

    name: str
    function: str
    write: bool
    path: str
    line: int


@dataclass(slots=True)
class FieldDecl:
    """A struct member and its type (`pmu` in `struct perf_event` is a `pmu`)."""

    struct: str
    field: str
    type: str
    path: str
    line: int


@dataclass(slots=True)
class TypedefDecl:
    """A function-pointer typedef (`typedef void (*ResettableHoldPhase)(Object *obj, ResetType type);`):
    the contract of every callback stored in a field of that type, so drift watches its signature."""

    name: str
    params: str
    return_type: str
    path: str
    line: int


@dataclass(slots=True)
class MacroDef:
    """A #define: its body (continuation lines joined) and, for a function-like macro, its parameters.

    Object-like macros are kept when their value names something (an identifier or a string literal:
    QOM type names, aliases of functions) or is empty (`#define __kernel`: expands to nothing); pure
    numbers are left out (register layouts are most of a tree's #defines and never decide a call or a
    constant's name)."""

    name: str
    value: str
    path: str
    line: int
    params: str = ""  # "(version, name)", "()", "(fmt, ...)"; '' for an object-like macro
    conditions: tuple[str, ...] = ()  # enclosing preprocessor conditions, outermost first


@dataclass(slots=True)
class FileFacts:
    path: str
    blob: str = ""
    functions: list[FunctionDef] = field(default_factory=list)
    calls: list[CallSite] = field(default_factory=list)
    stores: list[PointerStore] = field(default_factory=list)
    types: list[QomType] = field(default_factory=list)
    constants: list[ConstantUse] = field(default_factory=list)
    globals: list[GlobalRef] = field(default_factory=list)
    macros: list[MacroDef] = field(default_factory=list)
    members: list[FieldDecl] = field(default_factory=list)
    typedefs: list[TypedefDecl] = field(default_factory=list)
    parse_errors: int = 0  # ERROR/MISSING nodes left after the pre-pass
    skipped: str = ""  # why the file was not parsed (binary, too large), '' when parsed

    def to_json(self) -> dict:
        """Compact positional rows (field order of each dataclass): this is the cache format, and
        dataclasses.asdict() was half of the cold-scan time."""
        out: dict = {"path": self.path, "blob": self.blob, "parse_errors": self.parse_errors,
                     "skipped": self.skipped}
        for name, getter in _GETTERS.items():
            at = _PATH_AT[_LISTS[name]]
            rows = []
            for r in getattr(self, name):
                row = list(getter(r))
                if row[at] == self.path:
                    row[at] = None  # the file's own path: restored on load, so one blob serves any path
                rows.append(row)
            out[name] = rows
        return out

    @classmethod
    def from_json(cls, data: dict) -> "FileFacts":
        out = cls(path=data["path"], blob=data.get("blob", ""),
                  parse_errors=data.get("parse_errors", 0), skipped=data.get("skipped", ""))
        for name, klass in _LISTS.items():
            tuple_at = _TUPLE_AT[klass]
            rows = getattr(out, name)
            at = _PATH_AT[klass]
            names_at = _INTERN_AT[klass]
            for row in data.get(name, ()):
                for i in tuple_at:
                    row[i] = tuple(row[i])
                for i in names_at:  # the same few names recur in millions of rows on a whole tree
                    row[i] = _intern(row[i])
                if row[at] is None:
                    row[at] = out.path
                rows.append(klass(*row))
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def loads(cls, text: str) -> "FileFacts":
        return cls.from_json(json.loads(text))


_LISTS = {
    "functions": FunctionDef,
    "calls": CallSite,
    "stores": PointerStore,
    "types": QomType,
    "constants": ConstantUse,
    "globals": GlobalRef,
    "macros": MacroDef,
    "members": FieldDecl,
    "typedefs": TypedefDecl,
}

_GETTERS = {name: operator.attrgetter(*(f.name for f in fields(klass))) for name, klass in _LISTS.items()}
_intern = sys.intern
_INTERNED = {"name", "caller", "callee", "kind", "base_type", "var_type", "function", "field", "variable",
             "in_function", "target", "struct", "type", "return_type"}
_INTERN_AT = {klass: tuple(i for i, f in enumerate(fields(klass)) if f.name in _INTERNED)
              for klass in _LISTS.values()}
_PATH_AT = {klass: [f.name for f in fields(klass)].index("path") for klass in _LISTS.values()}
_TUPLE_AT = {klass: tuple(i for i, f in enumerate(fields(klass)) if str(f.type).startswith("tuple"))
             for klass in _LISTS.values()}
