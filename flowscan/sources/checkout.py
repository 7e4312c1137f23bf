"""A plain directory as a tree: walked (no symlinks, no .git), blob ids computed as git computes them.

Its own module, apart from the git-backed tree (flowscan.sources.trees): a question on a checkout never
needs GitPython, whose import is a tenth of a second of a warm question.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from flowscan.errors import FlowscanError
from flowscan.progress import NULL, Progress
from flowscan.sources.refs import C_SUFFIXES, FileEntry, show
from flowscan.sources.scopes import is_c, norm_scope, select
from flowscan.sources.statcache import Stat, StatCache, cache_file, is_racy, now_ns, stat_key
from flowscan.sources.tree import Tree, git_blob_id, printable_name, shown_name, warn_unprintable


class DirTree(Tree):
    """A plain directory: walked (no symlinks, no .git), blob ids computed like git does; with a stat
    cache (keep_stat_cache), a file whose size, mtime, ctime and inode are unchanged is not read again."""

    def __init__(self, root: Path, progress: Progress = NULL):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FlowscanError(f"no such directory: {shown_name(str(root))}")
        self.root = root.resolve()
        self.label = shown_name(str(root))
        self.commit = ""
        self._progress = progress
        self._warned: set[str] = set()
        self._ids: dict[str, tuple[Stat, str]] = {}  # path -> (stat key, blob id)
        self._stat_cache: StatCache | None = None
        self.hashed = 0  # files read to learn their blob id (the stat cache did not know them)

    def keep_stat_cache(self, cache_dir: Path) -> None:
        """Remember blob ids by stat across runs, in `cache_dir` (see flowscan.sources.statcache)."""
        sc = StatCache.load(cache_file(cache_dir, self.root), self.root)
        if sc.discarded:
            self._progress.warn(f"{self.label}: the stat cache was {sc.discarded}: hashing the files again")
        self._stat_cache = sc
        for path, known in sc.entries.items():
            self._ids.setdefault(path, known)

    def _walk(self, stats: dict[str, os.stat_result] | None = None) -> list[str]:
        """Every regular file's path; with `stats`, the C files' stats go there (taken in the walk)."""
        out: list[str] = []
        odd: list[str] = []
        stack = [("", str(self.root))]
        while stack:
            rel, path = stack.pop()
            try:
                with os.scandir(path) as it:
                    for ent in it:
                        if ent.is_symlink():  # git stores links, not what they point to
                            continue
                        name = f"{rel}/{ent.name}" if rel else ent.name
                        if ent.is_dir(follow_symlinks=False):
                            if ent.name != ".git":
                                stack.append((name, ent.path))
                        elif ent.is_file(follow_symlinks=False):
                            if printable_name(name):
                                out.append(name)
                                if stats is not None and name.endswith(C_SUFFIXES):
                                    stats[name] = ent.stat(follow_symlinks=False)
                            elif is_c(name):
                                odd.append(name)
            except OSError:
                continue
        warn_unprintable(self._progress, self.label, odd, self._warned)
        return out

    def files(self, scopes: Sequence[str] = (), strict: bool = True) -> list[FileEntry]:
        norm = [norm_scope(s, self.root) for s in scopes]
        started = now_ns()
        stats: dict[str, os.stat_result] = {}
        chosen = select(self._walk(stats), norm, self.label, strict)
        entries = []
        changed = False
        for path in sorted(stats.keys() & chosen if norm and "" not in norm else stats):
            key = stat_key(stats[path])
            known = self._ids.get(path)
            if known is None or known[0] != key:  # hash once per file version, not per listing
                known = (key, git_blob_id((self.root / path).read_bytes()))
                self.hashed += 1
                self._ids[path] = known
                changed = True
            entries.append(FileEntry(path, known[1], key[0]))
        sc = self._stat_cache
        if sc is not None:
            gone = [p for p in self._ids if p not in stats]
            for p in gone:
                del self._ids[p]
            if changed or gone or self._ids.keys() != sc.entries.keys() or any(
                    is_racy(k, started) for k, _ in self._ids.values()):
                try:
                    sc.save(self._ids, started)
                except OSError as exc:  # a read-only cache only costs speed
                    self._progress.warn(f"{self.label}: cannot write the stat cache ({exc.strerror})")
        return entries

    def _resolve(self, path: str) -> Path:
        rel = norm_scope(path, self.root)
        full = (self.root / rel).resolve()
        if full != self.root and self.root not in full.parents:
            raise FlowscanError(f"'{show(path)}' points outside the tree {self.label}")
        return full

    def read(self, entries: Iterable[FileEntry]) -> Iterator[tuple[FileEntry, bytes]]:
        root = str(self.root)
        for entry in entries:
            # a path this tree listed was walked without following links: no need to resolve it again
            full = os.path.join(root, entry.path) if entry.path in self._ids else self._resolve(entry.path)
            with open(full, "rb") as fh:
                data = fh.read()
            blob = git_blob_id(data)
            if blob != entry.blob:  # edited since listing: report what was actually read
                entry = replace(entry, blob=blob, size=len(data))
            yield entry, data

    def named(self, pattern: re.Pattern[str]) -> list[FileEntry]:
        return [FileEntry(p, "", 0) for p in sorted(self._walk()) if pattern.search(p)]

    def read_one(self, path: str) -> bytes:
        full = self._resolve(path)
        if not full.is_file():
            raise FlowscanError(f"no file '{show(path)}' in {self.label}")
        return full.read_bytes()
