"""Which files QEMU's meson build compiles for a target: source sets read from each meson.build.

Not a meson interpreter: a careful reader of the patterns QEMU uses, and nothing else counts.

- `X = ss.source_set()` makes a source set local to that directory and below (hw/arm's `arm_ss` is not
  target/arm's); a name no directory on the way up creates is one of the top-level sets, whose status
  comes from the profile (queries/build/qemu-*.toml: `system_ss` built, `user_ss` not, `stub_ss` stubs).
- `X.add(files(...))`, `X.add(when: C, if_true: files(...), if_false: files(...))`, with `when:` a string
  or a list of strings (all must hold); dependency objects in `when:` are unknown.
- `Y.add_all(when: C, if_true: X)` / `Y.add_all(X)`, and `D += {'arm': X}` where D is one of the
  profile's per-architecture dictionaries (`target_arch`, `hw_arch`, ...): X is built as far as Y or D is.
- `if / elif / else / endif` around any of these and around `subdir('x')`, with conditions such as
  `'CONFIG_TCG' in config_all_accel`, `config_all_devices.has_key('CONFIG_X')`, `have_system`,
  `host_os == 'linux'`, `not`, `and`, `or`; anything else is unknown.

A file is built when one of its mentions holds (and its directory is reached), not built when every
mention fails, a stub when it is built only through a stub set; unknown otherwise, and unknown is kept.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from flowscan.buildconfig.tri import all3, any3, not3
from flowscan.buildconfig.values import Values
from flowscan.sources.buildfiles import BuildFiles

_TOKEN = re.compile(r"""\s*(?:('''.*?'''|'(?:[^'\\\n]|\\.)*')|([A-Za-z_]\w*)|(==|!=|[()\[\]{},.:+=]))""", re.S)
_UNKNOWN = object()


class _ConfigDict:
    """`config_all_accel`, `config_target`, ...: membership answered from the configuration values."""

    def __init__(self, values: Values):
        self.values = values

    def has(self, key) -> bool | None:
        if not isinstance(key, str):
            return None
        v = self.values.get(key)
        return None if v is None else v not in ("n", "")


@dataclass
class _Add:
    set_name: str
    files: list[str]
    cond: bool | None  # block and `when:` together
    line: int


@dataclass
class _Include:  # Y.add_all(when: C, if_true: X) or D += {'arch': X}
    target: str  # Y, or "dict:D:key"
    member: str
    cond: bool | None


@dataclass
class _File:
    dir: str
    creates: set[str] = field(default_factory=set)
    adds: list[_Add] = field(default_factory=list)
    includes: list[_Include] = field(default_factory=list)
    subdirs: list[tuple[str, bool | None]] = field(default_factory=list)


def _statements(text: str):
    """(first line, text) of each statement: comments dropped, lines joined while brackets (outside
    strings) or a triple-quoted string are open."""
    buf, start, depth, in_long = [], 0, 0, False
    for no, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = no
        line, depth, in_long = _scan(raw, depth, in_long)
        buf.append(line)
        if depth <= 0 and not in_long:
            stmt = " ".join(s.strip() for s in buf).strip()
            if stmt:
                yield start, stmt
            buf, depth = [], 0


_LONG = "'" * 3


def _scan(line: str, depth: int, in_long: bool) -> tuple[str, int, bool]:
    """The line without its comment, the bracket depth after it, and whether a long string is open."""
    out, i, quote = [], 0, False
    while i < len(line):
        if in_long:
            j = line.find(_LONG, i)
            if j < 0:
                return "".join(out), depth, True
            i, in_long = j + 3, False
            out.append("''")  # a long string: its text does not matter here
            continue
        ch = line[i]
        if not quote and line.startswith(_LONG, i):
            in_long = True
            i += 3
            continue
        if ch == "\\" and quote:
            out.append(line[i:i + 2])
            i += 2
            continue
        if ch == "'":
            quote = not quote
        elif not quote:
            if ch == "#":
                break
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
        out.append(ch)
        i += 1
    return "".join(out), depth, in_long


class _Expr:
    """A meson expression of the shapes QEMU's conditions use; values are str, bool, list, dict-like,
    or _UNKNOWN."""

    def __init__(self, text: str, names: dict):
        self.toks = self._lex(text)
        self.i = 0
        self.names = names

    @staticmethod
    def _lex(text: str) -> list[str]:
        out, pos = [], 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ValueError(text)
            out.append(m.group(0).strip())
            pos = m.end()
        return out

    def peek(self, k: int = 0) -> str:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else ""

    def take(self, want: str | None = None) -> str:
        t = self.peek()
        if not t or (want is not None and t != want):
            raise ValueError(want)
        self.i += 1
        return t

    def parse(self):
        v = self.or_()
        if self.i != len(self.toks):
            raise ValueError("trailing")
        return v

    def or_(self):
        v = self.and_()
        while self.peek() == "or":
            self.take()
            v = _tri_value(any3([_truth(v), _truth(self.and_())]))
        return v

    def and_(self):
        v = self.not_()
        while self.peek() == "and":
            self.take()
            v = _tri_value(all3([_truth(v), _truth(self.not_())]))
        return v

    def not_(self):
        if self.peek() == "not":
            self.take()
            return _tri_value(not3(_truth(self.not_())))
        return self.cmp()

    def cmp(self):
        a = self.postfix()
        op = self.peek()
        if op in ("==", "!="):
            self.take()
            b = self.postfix()
            if a is _UNKNOWN or b is _UNKNOWN:
                return _UNKNOWN
            return (a == b) == (op == "==")
        negate = op == "not" and self.peek(1) == "in"
        if op == "in" or negate:
            self.take()
            if negate:
                self.take("in")
            b = self.postfix()
            r = _member(a, b)
            return _tri_value(not3(r) if negate else r)
        return a

    def postfix(self):
        v = self.atom()
        while self.peek() == ".":
            self.take()
            meth = self.take()
            args = []
            self.take("(")
            while self.peek() != ")":
                args.append(self.or_())
                if self.peek() == ",":
                    self.take()
            self.take(")")
            if meth == "has_key" and isinstance(v, _ConfigDict) and args:
                v = _tri_value(v.has(args[0]))
            elif meth == "contains" and isinstance(v, list) and args and args[0] is not _UNKNOWN:
                v = args[0] in v
            else:
                v = _UNKNOWN
        return v

    def atom(self):
        t = self.take()
        if t == "(":
            v = self.or_()
            self.take(")")
            return v
        if t == "[":
            items = []
            while self.peek() != "]":
                items.append(self.or_())
                if self.peek() == ",":
                    self.take()
            self.take("]")
            return _UNKNOWN if any(x is _UNKNOWN for x in items) else items
        if t.startswith("'"):
            return t.strip("'")
        if t in ("true", "false"):
            return t == "true"
        if self.peek() == "(":  # a function call (get_option, ...): unknown
            depth = 0
            while True:
                x = self.take()
                depth += x == "("
                depth -= x == ")"
                if depth == 0:
                    return _UNKNOWN
        return self.names.get(t, _UNKNOWN)


def _truth(v) -> bool | None:
    if v is _UNKNOWN or isinstance(v, _ConfigDict):
        return None
    if isinstance(v, (list, str)):
        return bool(v)
    return bool(v)


def _tri_value(v: bool | None):
    return _UNKNOWN if v is None else v


def _member(a, b) -> bool | None:
    if a is _UNKNOWN or b is _UNKNOWN:
        return None
    if isinstance(b, _ConfigDict):
        return b.has(a)
    if isinstance(b, list):
        return a in b
    return None


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated parts of an argument list."""
    parts, depth, cur, quote = [], 0, [], False
    for ch in text:
        if ch == "'":
            quote = not quote
        if not quote:
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append("".join(cur).strip())
                cur = []
                continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


_FILES = re.compile(r"\bfiles\s*\(([^()]*)\)")
_STR = re.compile(r"'([^'\\\n]*)'")
_CALL = re.compile(r"^([A-Za-z_]\w*)\s*\.\s*(add|add_all)\s*\((.*)\)$", re.S)
_CREATE = re.compile(r"^([A-Za-z_]\w*)\s*=\s*ss\s*\.\s*source_set\s*\(\s*\)$")
_DICT_ADD = re.compile(r"^([A-Za-z_]\w*)\s*\+=\s*\{(.*)\}$", re.S)
_SUBDIR = re.compile(r"^subdir\s*\(\s*'([^']+)'\s*\)$")


class Meson:
    """File status for one QEMU tree and target configuration."""

    def __init__(self, files: BuildFiles, values: Values, profile: dict):
        self.files, self.values = files, values
        sets = profile.get("sets", {})
        self.set_status: dict[str, bool] = {**{n: True for n in sets.get("built", ())},
                                            **{n: False for n in sets.get("not_built", ())}}
        self.stub_sets = frozenset(sets.get("stub", ()))
        dicts = profile.get("dicts", {})
        self.dict_built = frozenset(dicts.get("built", ()))
        self.dict_not_built = frozenset(dicts.get("not_built", ()))
        self.arch = profile.get("arch", "")
        cfg = _ConfigDict(values)
        self.names = {n: cfg for n in profile.get("config_dicts", ())}
        self.names.update(profile.get("variables", {}))
        self._parsed: dict[str, _File] | None = None
        self._mentions: dict[str, list[tuple[str, _Add]]] = {}
        self._members: dict[str, list[tuple[str, _Include]]] = {}
        self._file: dict[str, tuple[bool | None, bool]] = {}
        self._set: dict[tuple[str, str], tuple[bool | None, bool]] = {}
        self._dir: dict[str, bool | None] = {"": True}
        self.has_files = any(p.rsplit("/", 1)[-1] == "meson.build" for p in files.entries)

    # -- reading -----------------------------------------------------------------------------------
    @property
    def parsed(self) -> dict[str, _File]:
        if self._parsed is None:
            self._parsed = {}
            for p in sorted(self.files.entries):
                if p == "meson.build" or p.endswith("/meson.build"):
                    d = posixpath.dirname(p)
                    self._parsed[d] = self._read(d, self.files.text(p) or "")
            for d, f in self._parsed.items():
                for add in f.adds:
                    for path in add.files:
                        self._mentions.setdefault(path, []).append((d, add))
                for inc in f.includes:
                    self._members.setdefault(inc.member, []).append((d, inc))
        return self._parsed

    def cond(self, text: str) -> bool | None:
        try:
            return _truth(_Expr(text, self.names).parse())
        except (ValueError, RecursionError):
            return None

    def _when(self, text: str) -> bool | None:
        """A `when:` value: 'CONFIG_X', or a list whose every item must hold (dependencies: unknown)."""
        text = text.strip()
        items = _split_args(text[1:-1]) if text.startswith("[") else [text]
        out = []
        for it in items:
            m = re.fullmatch(r"'([^']*)'", it.strip())
            if m:
                v = self.values.get(m.group(1))
                out.append(None if v is None else v not in ("n", ""))
            else:
                out.append(None)
        return all3(out)

    def _read(self, d: str, text: str) -> _File:
        f = _File(dir=d)
        blocks: list[list] = []  # [current branch value, values of earlier branches]
        for line, stmt in _statements(text):
            head = stmt.split(None, 1)[0] if stmt.split() else ""
            if head in ("if", "foreach"):
                v = self.cond(stmt[2:]) if head == "if" else None
                blocks.append([v, [v]])
                continue
            if head == "elif" and blocks:
                v = self.cond(stmt[4:])
                blocks[-1][0] = all3([not3(any3(blocks[-1][1])), v])
                blocks[-1][1].append(v)
                continue
            if head == "else" and blocks:
                blocks[-1][0] = not3(any3(blocks[-1][1]))
                continue
            if head in ("endif", "endforeach"):
                if blocks:
                    blocks.pop()
                continue
            here = all3(b[0] for b in blocks)
            m = _CREATE.match(stmt)
            if m:
                f.creates.add(m.group(1))
                continue
            m = _SUBDIR.match(stmt)
            if m:
                f.subdirs.append((posixpath.normpath(posixpath.join(d, m.group(1))), here))
                continue
            m = _DICT_ADD.match(stmt)
            if m:
                for part in _split_args(m.group(2)):
                    k, _, v = part.partition(":")
                    key = k.strip().strip("'")
                    if v.strip().isidentifier():
                        f.includes.append(_Include(f"dict:{m.group(1)}:{key}", v.strip(), here))
                continue
            m = _CALL.match(stmt)
            if not m:
                continue
            name, method, args = m.groups()
            kw: dict[str, str] = {}
            pos: list[str] = []
            for a in _split_args(args):
                km = re.match(r"^(when|if_true|if_false)\s*:\s*(.*)$", a, re.S)
                if km:
                    kw[km.group(1)] = km.group(2)
                else:
                    pos.append(a)
            when = self._when(kw["when"]) if "when" in kw else True
            if method == "add_all":
                for part, c in ((kw.get("if_true", ""), when), (kw.get("if_false", ""), not3(when))):
                    for member in re.findall(r"[A-Za-z_]\w*", part):
                        f.includes.append(_Include(name, member, all3([here, c])))
                for p in pos:
                    for member in re.findall(r"[A-Za-z_]\w*", p):
                        f.includes.append(_Include(name, member, all3([here, when])))
                continue
            true_files = self._files(" ".join(pos) + " " + kw.get("if_true", ""), d)
            false_files = self._files(kw.get("if_false", ""), d)
            if true_files:
                f.adds.append(_Add(name, true_files, all3([here, when]), line))
            if false_files:
                f.adds.append(_Add(name, false_files, all3([here, not3(when)]), line))
        return f

    @staticmethod
    def _files(text: str, d: str) -> list[str]:
        out = []
        for m in _FILES.finditer(text):
            for s in _STR.findall(m.group(1)):
                out.append(posixpath.normpath(posixpath.join(d, s)))
        return out

    # -- status ------------------------------------------------------------------------------------
    def _owner(self, name: str, d: str) -> str:
        """The directory whose meson.build creates source set `name` as seen from `d` ('' = top level)."""
        cur = d
        while True:
            f = self.parsed.get(cur)
            if f is not None and name in f.creates:
                return cur
            if not cur:
                return ""
            cur = posixpath.dirname(cur)

    def set_built(self, name: str, owner: str, depth: int = 0) -> tuple[bool | None, bool]:
        """(built?, only as a stub) for the source set `name` created in `owner`."""
        key = (name, owner)
        if key in self._set:
            return self._set[key]
        self._set[key] = (None, False)
        if name in self.stub_sets:
            out = (True, True)
        elif not owner and name in self.set_status:
            out = (self.set_status[name], False)
        elif depth > 8:
            out = (None, False)
        else:
            self.parsed  # noqa: B018 (parsing fills _members)
            ways = []
            for d, inc in self._members.get(name, ()):
                if owner and not (d == owner or d.startswith(owner + "/")):
                    continue
                if self._owner(name, d) != owner:
                    continue
                if inc.target.startswith("dict:"):
                    _, dname, key2 = inc.target.split(":", 2)
                    on = key2 == self.arch if dname in self.dict_built else False if dname in self.dict_not_built \
                        else None
                    s = False
                else:
                    on, s = self.set_built(inc.target, self._owner(inc.target, d), depth + 1)
                ways.append((all3([inc.cond, on, self.dir_reached(d)]), s))
            out = _either(ways)
        self._set[key] = out
        return out

    def dir_reached(self, d: str) -> bool | None:
        """Is `d/meson.build` read at all (a subdir() that holds, from a directory that is reached)?"""
        if d in self._dir:
            return self._dir[d]
        self._dir[d] = None
        outs = []
        for parent, f in self.parsed.items():
            for sub, c in f.subdirs:
                if sub == d:
                    outs.append(all3([c, self.dir_reached(parent)]))
        out = any3(outs) if outs else None
        self._dir[d] = out
        return out

    def file_status(self, path: str) -> tuple[bool | None, bool]:
        """(built?, only as a stub) for one .c file: None when no meson.build this reader understands
        names it."""
        if path in self._file:
            return self._file[path]
        self.parsed  # noqa: B018 (parsing fills _mentions)
        ways = []
        for d, add in self._mentions.get(path, ()):
            on, s = self.set_built(add.set_name, self._owner(add.set_name, d))
            ways.append((all3([add.cond, on, self.dir_reached(d)]), s))
        out = _either(ways)
        self._file[path] = out
        return out


def _either(ways: list[tuple[bool | None, bool]]) -> tuple[bool | None, bool]:
    """(built?, only as a stub) of something reached several ways, each (built?, as a stub?): built when
    one way is, a stub only when every way that may hold is one."""
    if not ways:
        return None, False
    b = any3([v for v, _ in ways])
    return b, bool(b is not False and all(s for v, s in ways if v is not False))
