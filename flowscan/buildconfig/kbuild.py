"""Which files Linux's Kbuild compiles for a configuration: `obj-$(CONFIG_X) += f.o`, `obj-y += dir/`,
composite objects (`kvm-y += arm.o`, `psci-objs := ...`), `ifeq`/`ifdef` blocks, read from each
directory's Kbuild and Makefile.

A file is built when its directory is (every ancestor up to the root mentions the next one under a
condition that holds) and its object is listed under a condition that holds. Anything this small reader
does not understand (a variable it cannot expand, a file no Makefile names) is unknown, and unknown is
kept: only a file whose every mention is off, or that lies in a directory that is off, is "not built".
The idioms are data (queries/build/kbuild.toml).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from flowscan.buildconfig.tri import all3, any3, not3
from flowscan.buildconfig.values import Values
from flowscan.sources.buildfiles import BuildFiles

_ASSIGN = re.compile(r"^([A-Za-z0-9_.$()\-,]+?)\s*(\+=|:=|\?=|=)\s*(.*)$")
_VAR = re.compile(r"\$\(([A-Za-z0-9_]+)\)")
_SUBST = re.compile(r"\$\(subst\s+m\s*,\s*y\s*,\s*\$\(([A-Za-z0-9_]+)\)\)")


@dataclass
class Mention:
    word: str  # "f.o" or "dir/" as written (relative to the Makefile's directory)
    var: str  # "obj", "kvm", ...
    on: bool | None  # the variable's condition and the enclosing ifeq blocks


@dataclass
class Makefile:
    objects: dict[str, list[Mention]] = field(default_factory=dict)  # "f.o" -> mentions
    dirs: dict[str, list[Mention]] = field(default_factory=dict)  # "sub/dir" -> mentions


class Kbuild:
    """File and directory status for one tree and configuration."""

    def __init__(self, files: BuildFiles, values: Values, arch: str, patterns: dict):
        self.files, self.values, self.arch = files, values, arch
        self.built_vars = frozenset(patterns.get("built_vars", ("obj",)))
        self.ignored_vars = frozenset(patterns.get("ignored_vars", ()))
        self.always = frozenset(patterns.get("composite_always", ("y", "objs")))
        self.arch_dir = patterns.get("arch_dir", "arch")
        self._mk: dict[str, Makefile] = {}
        self._dir: dict[str, bool | None] = {"": True}
        self.has_files = any(p.rsplit("/", 1)[-1] in ("Makefile", "Kbuild") for p in files.entries)

    # -- expansion -------------------------------------------------------------------------------
    def _expand(self, text: str) -> str | None:
        """Expand the variables this reader knows ($(CONFIG_X), $(subst m,y,$(CONFIG_X)), $(SRCARCH));
        None when something else is left."""
        def sym(name: str) -> str | None:
            if name in ("SRCARCH", "ARCH"):
                return self.arch
            if name.startswith("CONFIG_"):
                v = self.values.get(name)
                return None if v is None else ("" if v == "n" else v)
            return None

        unknown = False

        def value(module_as_y: bool):
            def repl(m):
                nonlocal unknown
                v = sym(m.group(1))
                if v is None:
                    unknown = True
                    return ""
                return "y" if module_as_y and v == "m" else v
            return repl

        text = _SUBST.sub(value(True), text)
        text = _VAR.sub(value(False), text)
        if unknown or "$" in text:
            return None
        return text

    def _test(self, line: str) -> bool | None:
        """The truth of an ifeq/ifneq/ifdef/ifndef line."""
        kw, _, rest = line.partition(" ")
        rest = rest.strip()
        if kw in ("ifdef", "ifndef"):
            v = self.values.get(rest) if rest.startswith("CONFIG_") else None
            if rest in ("SRCARCH", "ARCH"):
                v = self.arch
            on = None if v is None else v not in ("", "n")
            return on if kw == "ifdef" else not3(on)
        m = re.match(r"^\((.*?),(.*)\)$", rest)
        if not m:
            m2 = re.match(r"""^(['"])(.*?)\1\s+(['"])(.*?)\3$""", rest)
            if not m2:
                return None
            a, b = m2.group(2), m2.group(4)
        else:
            a, b = m.group(1), m.group(2)
        a, b = self._expand(a.strip()), self._expand(b.strip())
        if a is None or b is None:
            return None
        return (a == b) if kw == "ifeq" else (a != b)

    # -- one directory's Kbuild + Makefile ---------------------------------------------------------
    def makefile(self, d: str) -> Makefile:
        hit = self._mk.get(d)
        if hit is not None:
            return hit
        mk = Makefile()
        for name in ("Kbuild", "Makefile"):
            text = self.files.text(posixpath.join(d, name) if d else name)
            if text is not None:
                self._read(text, mk)
        self._mk[d] = mk
        return mk

    def _read(self, text: str, mk: Makefile) -> None:
        text = re.sub(r"\\\n", " ", text)
        blocks: list[list] = []  # [value of the current branch, values of the branches so far]
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line or raw.startswith("\t"):
                continue  # recipes
            head = line.split(None, 1)[0]
            if head in ("ifeq", "ifneq", "ifdef", "ifndef"):
                v = self._test(line)
                blocks.append([v, [v]])
                continue
            if head == "else" and blocks:
                rest = line[4:].strip()
                prior = any3(blocks[-1][1])
                if rest:
                    v = self._test(rest)
                    blocks[-1][0] = all3([not3(prior), v])
                    blocks[-1][1].append(v)
                else:
                    blocks[-1][0] = not3(prior)
                continue
            if head == "endif":
                if blocks:
                    blocks.pop()
                continue
            m = _ASSIGN.match(line)
            if not m:
                continue
            lhs, rhs = m.group(1), m.group(3)
            base, dash, suffix = lhs.rpartition("-")
            if not dash or base.split("-", 1)[0] in self.ignored_vars:
                continue
            if base in self.built_vars or "$" in suffix:
                exp = self._expand(suffix)
                on = None if exp is None else exp in ("y", "m")
            elif suffix in self.always:
                on = True  # part of the composite object `base.o`
            else:
                continue  # some other variable (ccflags-y is only flags: no .o words either)
            on = all3([on, *(b[0] for b in blocks)])
            for word in rhs.split():
                if "$" in word:
                    word = self._expand(word)
                    if not word:
                        continue
                word = word.removeprefix("./")
                if word.endswith(".o"):
                    mk.objects.setdefault(word, []).append(Mention(word, base, on))
                elif word.endswith("/") and base in self.built_vars:
                    mk.dirs.setdefault(posixpath.normpath(word), []).append(Mention(word, base, on))

    # -- status ------------------------------------------------------------------------------------
    def dir_status(self, d: str) -> bool | None:
        """Built when the nearest ancestor that names `d/` (`obj-$(CONFIG_X) += d/`, or `a/b/` from the
        root's Kbuild) names it under a condition that holds, and is itself built."""
        if d in self._dir:
            return self._dir[d]
        self._dir[d] = None  # (a cycle cannot form: ancestors only)
        found = self._dir_mention(d)
        parent = posixpath.dirname(d)
        if found is not None:
            on, anc = found
            out = all3([on, self.dir_status(anc)])
        elif self.dir_status(parent) is False:
            out = False
        elif parent == self.arch_dir:  # arch/$(SRCARCH) only
            out = True if d == f"{self.arch_dir}/{self.arch}" else False
        else:
            out = None
        self._dir[d] = out
        return out

    def _dir_mention(self, d: str) -> tuple[bool | None, str] | None:
        """(condition, ancestor) of the nearest ancestor's Kbuild/Makefile that names `d`, or None."""
        anc = d
        while anc:
            anc = posixpath.dirname(anc)
            rel = d[len(anc) + 1:] if anc else d
            mentions = self.makefile(anc).dirs.get(rel)
            if mentions:
                return any3(m.on for m in mentions), anc
        return None

    def file_status(self, path: str) -> bool | None:
        """True built, False not built, None unknown (kept). Only .c files are decided."""
        if not path.endswith(".c"):
            return None
        d, name = posixpath.split(path)
        ds = self.dir_status(d)
        if ds is False:
            return False
        return all3([ds, self._object(d, name[:-2] + ".o", 0)])

    def _object(self, d: str, obj: str, depth: int) -> bool | None:
        mk = self.makefile(d)
        mentions = mk.objects.get(obj)
        if not mentions or depth > 4:
            return None
        outs = []
        for m in mentions:
            if m.var in self.built_vars:
                outs.append(m.on)
            else:  # part of the composite object m.var.o
                outs.append(all3([m.on, self._object(d, m.var + ".o", depth + 1)]))
        return any3(outs)
