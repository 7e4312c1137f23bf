"""What every tree offers (list, read, search), and the helpers both kinds share.

Kept apart from the git-backed tree (flowscan.sources.trees) so that a plain checkout's question never
imports GitPython (a tenth of a second of a warm question).
"""

from __future__ import annotations

import hashlib
import re
from typing import Callable, Iterable, Iterator, Sequence

from flowscan.progress import Progress
from flowscan.sources.refs import FileEntry, has_control

GREP_WORDS = 300  # names per pattern (a regex's compiled size stays bounded)


def _alternation(words: Iterable[str]) -> bytes:
    return b"|".join(re.escape(w.encode()) for w in sorted(set(words)))


def line_patterns(words: Iterable[str], members: Iterable[str], defs: Iterable[str],
                  macros: Iterable[str] = ()) -> list[bytes]:
    """Does a line (or a whole file: the patterns are multi-line) spell a word, access a member, spell a
    defined name in a definition-like line, or #define one of `macros`? One pattern per kind and few
    hundred names (a Perl regex's compiled size is bounded)."""
    def chunks(names: Iterable[str]) -> list[bytes]:
        ordered = sorted(set(names))
        return [_alternation(ordered[i:i + GREP_WORDS]) for i in range(0, len(ordered), GREP_WORDS)]

    alts = []
    alts += [rb"(?<!\w)(?:" + a + rb")(?!\w)" for a in chunks(words)]
    alts += [rb"(?:\.|->)\s*(?:" + a + rb")(?!\w)" for a in chunks(members)]
    for a in chunks(defs):
        alts.append(rb"^(?=[^\s#])(?![^\n]*;[ \t\r]*$)[^\n]*?(?<!\w)(?:" + a + rb")(?!\w)")
        alts.append(rb"^[ \t]*\#[ \t]*define[ \t]+(?:" + a + rb")(?![\w$])")  # a macro
    alts += [rb"^[ \t]*\#[ \t]*define[ \t]+(?:" + a + rb")(?![\w$])" for a in chunks(macros)]
    return alts


def line_test(words: Iterable[str], members: Iterable[str], defs: Iterable[str], macros: Iterable[str] = ()):
    """The test of line_patterns as one compiled Python regex."""
    alts = line_patterns(words, members, defs, macros)
    pattern = re.compile(b"|".join(alts), re.MULTILINE) if alts else None
    return lambda line: pattern is not None and pattern.search(line) is not None


class Tree:
    """An opened source, ready to list and read."""

    label: str = ""
    commit: str = ""

    def files(self, scopes: Sequence[str] = (), strict: bool = True) -> list[FileEntry]:
        raise NotImplementedError

    def snapshot(self, scopes: Sequence[str] = ()) -> str:
        """What fixes the contents of these scopes without listing them ('' when only a listing can tell)."""
        return ""

    def grep(self, entries: Sequence[FileEntry], words: Iterable[str] = (), members: Iterable[str] = (),
             defs: Iterable[str] = (), macros: Iterable[str] = ()) -> set[str]:
        """The paths among `entries` that spell one of `words` as a whole word, #define one of `macros`,
        access one of `members`
        (`.m`, `->m`), or have one of `defs` on a line that could open a definition: it starts in column 0
        with neither blank nor `#` (a definition's return type or name stands there: `int\nfoo(void)`,
        `SYSCALL_DEFINE1(foo, ...)`; calls are indented) and does not end with `;` (a prototype, or
        `EXPORT_SYMBOL(foo);`)."""
        if not (words or members or defs or macros):
            return set()
        test = line_test(words, members, defs, macros)
        return {e.path for e, data in self.read(entries) if test(data)}

    def read(self, entries: Iterable[FileEntry]) -> Iterator[tuple[FileEntry, bytes]]:
        raise NotImplementedError

    def read_one(self, path: str) -> bytes:
        raise NotImplementedError

    def prefetch(self, entries: Iterable[FileEntry]) -> None:
        """Make these files readable without further requests (a partial clone fetches their blobs in one)."""

    def named(self, pattern: re.Pattern[str]) -> list[FileEntry]:
        """Every file of the tree whose path matches `pattern` (build configuration files: Makefile,
        Kbuild, Kconfig, meson.build), sorted; sizes are 0 (not needed to read them)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Tree":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


def printable_name(path: str) -> bool:
    """A path that can be stored, printed and searched as text: UTF-8, no control characters."""
    if path.isascii():  # (most paths: one C-level check)
        return path.isprintable()
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept as surrogates
        return False
    return not has_control(path)


def shown_name(path: str) -> str:
    """A path for a message: undecodable bytes as \\xNN, control characters escaped."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if ord(c) >= 0x20 and ord(c) != 0x7F else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def warn_unprintable(progress: Progress, label: str, paths: list[str], warned: set[str]) -> None:
    """One warning per tree and set of names (listings repeat: an index key, then the files)."""
    key = "\0".join(sorted(paths))
    if paths and key not in warned:
        warned.add(key)
        paths = sorted(paths)
        progress.warn(f"{label}: skipped {len(paths)} C file(s) whose names are not printable UTF-8 "
                      f"(first: '{shown_name(paths[0])}')")


def git_blob_id(data: bytes) -> str:
    """The id `git hash-object` gives these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def listing_digest(entries: Iterable[FileEntry]) -> str:
    """What identifies a listing (an index records the one it holds); a Listing knows its own."""
    known = getattr(entries, "digest", "")
    return known or digest_of((e.path, e.blob) for e in entries)


def digest_of(pairs: Iterable[tuple[str, str]]) -> str:
    """listing_digest of the (path, blob id) pairs, in their order."""
    return hashlib.sha256("".join(f"{p}\0{b}\n" for p, b in pairs).encode("utf-8", "surrogateescape")).hexdigest()


class Listing(Sequence[FileEntry]):
    """A listing whose digest is known and whose entries are made on first use: a warm question on an
    unchanged checkout only compares the digest with its index's, and making 60,000 FileEntry objects
    (whole Linux) would cost 50 ms of it."""

    def __init__(self, size: int, make: Callable[[], list[FileEntry]], digest: str):
        self._size = size
        self._make: Callable[[], list[FileEntry]] | None = make
        self._items: list[FileEntry] = []
        self.digest = digest

    @property
    def items(self) -> list[FileEntry]:
        if self._make is not None:
            self._items, self._make = self._make(), None
        return self._items

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, i):
        return self.items[i]

    def __iter__(self) -> Iterator[FileEntry]:
        return iter(self.items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Listing, list)):
            return self.items == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"Listing({self.items!r})"
