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
from flowscan.sources import statcache
from flowscan.sources.refs import C_SUFFIXES, FileEntry, show
from flowscan.sources.scopes import norm_scope, select
from flowscan.sources.statcache import SMUDGED, Snapshot, StatCache, cache_file, now_ns
from flowscan.sources.tree import Listing, Tree, digest_of, git_blob_id, printable_name, shown_name, warn_unprintable


class DirTree(Tree):
    """A plain directory: walked (no symlinks, no .git), blob ids computed like git does; with a stat
    cache (keep_stat_cache), a file whose size, mtime, ctime and inode are unchanged is not read again.

    What is known is one snapshot of the last walk (flowscan.sources.statcache.Snapshot): when the next
    walk finds the same files with the same stats, the listing is the snapshot's, with no work per file;
    otherwise each file is looked up by path and only the changed ones are read."""

    def __init__(self, root: Path, progress: Progress = NULL):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FlowscanError(f"no such directory: {shown_name(str(root))}")
        self.root = root.resolve()
        self.label = shown_name(str(root))
        self.commit = ""
        self._progress = progress
        self._warned: set[str] = set()
        self._snap: Snapshot | None = None  # the last walk's C files (a blob of '-' x 40: not known)
        self._listed: set[str] | None = None  # the snapshot's paths (made when a read needs them)
        self._stat_cache: StatCache | None = None
        self.hashed = 0  # files read to learn their blob id (the stat cache did not know them)

    def keep_stat_cache(self, cache_dir: Path) -> None:
        """Remember blob ids by stat across runs, in `cache_dir` (see flowscan.sources.statcache)."""
        sc = StatCache.load(cache_file(cache_dir, self.root), self.root)
        if sc.discarded:
            self._progress.warn(f"{self.label}: the stat cache was {sc.discarded}: hashing the files again")
        self._stat_cache = sc
        if self._snap is None:  # (what this process saw itself stays)
            self._set(sc.snapshot)

    def _set(self, snap: Snapshot | None) -> None:
        self._snap = snap
        self._listed = None

    def _walk(self) -> list[str]:
        """Every regular file's path (named() looks for build files among them)."""
        paths, _keys, odd = self._walk_c(others := [], stat=False)
        warn_unprintable(self._progress, self.label, odd, self._warned)
        return paths + others

    def _walk_c(self, others: list[str] | None, stat: bool = True) -> tuple[list[str], list[int], list[str]]:
        """The C files (regular files named *.c, *.h, *.S) in walk order with their stat keys (4 ints each:
        Stat), and the C files left out for their names; `others`: the other regular files go there.
        No work per file beyond its stat: a whole-Linux walk is 60,000 of them on every question."""
        paths: list[str] = []
        keys: list[int] = []
        suffixes = C_SUFFIXES
        stack = [("", str(self.root))]
        while stack:
            prefix, path = stack.pop()
            try:
                it = os.scandir(path)
            except OSError:
                continue
            with it:
                for ent in it:
                    name = ent.name
                    if ent.is_dir(follow_symlinks=False):  # (links are neither dirs nor files here)
                        if name != ".git":
                            stack.append((prefix + name + "/", ent.path))
                    elif name.endswith(suffixes):
                        if ent.is_file(follow_symlinks=False):
                            if stat:
                                try:
                                    st = ent.stat(follow_symlinks=False)
                                except OSError:  # gone meanwhile
                                    continue
                                keys += (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                            paths.append(prefix + name)
                    elif others is not None and ent.is_file(follow_symlinks=False):
                        others.append(prefix + name)
        odd: list[str] = []
        if not _printable_all(paths):
            keep = [printable_name(p) for p in paths]
            odd = [p for p, ok in zip(paths, keep) if not ok]
            if stat:
                keys = [v for i, ok in enumerate(keep) if ok for v in keys[4 * i:4 * i + 4]]
            paths = [p for p, ok in zip(paths, keep) if ok]
        if others and not _printable_all(others):
            others[:] = [p for p in others if printable_name(p)]
        return paths, keys, odd

    def files(self, scopes: Sequence[str] = (), strict: bool = True) -> Sequence[FileEntry]:
        norm = [norm_scope(s, self.root) for s in scopes]
        whole = not norm or "" in norm
        started = now_ns()
        others: list[str] | None = None if whole else []
        paths, keys, odd = self._walk_c(others)
        warn_unprintable(self._progress, self.label, odd, self._warned)
        chosen = None if whole else select([*paths, *(others or ())], norm, self.label, strict)
        snap = self._snap
        if snap is not None and snap.same_walk(paths, keys):  # nothing changed since the last walk
            if whole and SMUDGED not in snap.blobs:
                return Listing(len(paths), lambda: _entries(snap, range(len(paths))),
                               snap.digest or _whole_digest(snap))
            if not whole:
                picked = [i for i, p in enumerate(paths) if p in chosen]
                if all(snap.blobs[40 * i] != "-" for i in picked):
                    return _entries(snap, picked)
        return self._relist(paths, keys, chosen, started)

    def _relist(self, paths: list[str], keys: list[int], chosen: set[str] | None,
                started: int) -> Sequence[FileEntry]:
        """The listing of a walk that differs from the snapshot: each file looked up by path, the ones
        whose stat changed (and that the listing needs: in `chosen`, or all) read; a new snapshot kept."""
        known = self._snap.entries() if self._snap is not None else {}
        blobs: list[str] = []
        changed = False
        for i, path in enumerate(paths):
            key = (keys[4 * i], keys[4 * i + 1], keys[4 * i + 2], keys[4 * i + 3])
            got = known.get(path)
            blob = got[1] if got is not None and got[0] == key else ""
            if not blob and (chosen is None or path in chosen):  # hash once per file version, not per listing
                blob = git_blob_id((self.root / path).read_bytes())
                self.hashed += 1
                changed = True
            blobs.append(blob or SMUDGED)
        snap = Snapshot(paths, keys, "".join(blobs))
        complete = SMUDGED not in snap.blobs
        if complete:
            snap.digest = _whole_digest(snap)
        old = self._snap
        self._set(snap)
        sc = self._stat_cache
        if sc is not None and (changed or old is None or not old.same_walk(paths, keys)
                               or old.blobs != snap.blobs or _any_racy(keys, started)):
            try:
                sc.write(snap, started)
            except OSError as exc:  # a read-only cache only costs speed
                self._progress.warn(f"{self.label}: cannot write the stat cache ({exc.strerror})")
        if chosen is None:
            return Listing(len(paths), lambda: _entries(snap, range(len(paths))), snap.digest)
        return _entries(snap, [i for i, p in enumerate(paths) if p in chosen])

    def _is_listed(self, path: str) -> bool:
        if self._listed is None:
            self._listed = set(self._snap.paths) if self._snap is not None else set()
        return path in self._listed

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
            full = os.path.join(root, entry.path) if self._is_listed(entry.path) else self._resolve(entry.path)
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


def _printable_all(paths: list[str]) -> bool:
    """Are all these names printable ASCII (one C-level test of them all: the usual case)?"""
    joined = "".join(paths)
    return joined.isascii() and joined.isprintable()


def _entries(snap: Snapshot, picked: Iterable[int]) -> list[FileEntry]:
    """The snapshot's files at the `picked` positions, sorted by path (blobs all known)."""
    paths, keys, blobs = snap.paths, snap.keys, snap.blobs
    return [FileEntry(paths[i], blobs[40 * i:40 * i + 40], keys[4 * i]) for i in sorted(picked, key=paths.__getitem__)]


def _whole_digest(snap: Snapshot) -> str:
    paths, blobs = snap.paths, snap.blobs
    return digest_of((paths[i], blobs[40 * i:40 * i + 40]) for i in sorted(range(len(paths)), key=paths.__getitem__))


def _any_racy(keys: list[int], started: int) -> bool:
    return bool(keys) and max(max(keys[1::4]), max(keys[2::4])) >= started - statcache.RACY_NS
