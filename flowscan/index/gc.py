"""`flowscan gc`: remove the clones, indexes and facts entries the cache no longer uses.

Last use is what the readers record: every process that reads an index or a clone holds a shared lock on
its use stamp (``locks/index-<key>.use``, ``repos/<name>.use``) and touches it, so the stamp's mtime is
the last use (an index or clone without a stamp - made before stamps - counts from when it was written).
Anything whose last use is older than the cutoff is removed, under the locks a builder or a fetch takes
and an exclusive lock on its use stamp, taken without waiting: an index or clone another process holds
is kept and listed as such. A clone is renamed aside before it is removed (no process sees half of one).
Facts entries are removed when no remaining index lists their blob and no remaining clone's refs reach it,
and they were written before the cutoff (a plain directory's facts, reached by no clone, get the window).
A checkout's stat cache (CACHE/checkouts/) goes when its checkout is gone or it was not read for the
period (a read marks it, at most daily: flowscan.sources.statcache); removing one in use only costs the
next question a hash of its files.
Lock files are kept (a few bytes each): removing a lock file others may be waiting on would let two
processes hold "the" lock at once. What is removed is rebuilt by the next question that needs it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from flowscan.fileio import sweep
from flowscan.index import integrity
from flowscan.index.build import WORK_PREFIX
from flowscan.index.facts_cache import facts_dir, sweep_temporary
from flowscan.index.store import Index, indexes_dir, lock_of, use_stamp
from flowscan.sources import clones, statcache
from flowscan.sources.git import GitFailed, repo_at, run

DAY = 86400.0


@dataclass
class Item:
    kind: str  # clone | index | facts | build configuration | stat cache
    path: Path  # the clone directory, the index file, the facts directory, the stat cache
    what: str  # for the listing: the tree and scopes of an index, the entry count of facts, a stat cache's checkout
    bytes: int
    last_used: float = 0.0  # unix time (0: not applicable)
    held: bool = False  # another process holds it: kept


@dataclass
class Report:
    cutoff_days: float
    dry_run: bool
    removed: list[Item]
    kept: list[Item]  # unused, but held by another process

    def text(self, cache_dir: Path, now: float) -> str:
        verb = "would remove" if self.dry_run else "removed"
        days = f"{self.cutoff_days:g} day{'s' if self.cutoff_days != 1 else ''}"
        head = f"unused for {days} or more" + (" (dry run: nothing removed)" if self.dry_run else "")
        if not self.removed and not self.kept:
            return f"{head}: nothing\n"
        lines = [head + ":"]
        for item in self.removed:
            lines.append(f"{verb} {_row(item, cache_dir, now)}")
        for item in self.kept:
            lines.append(f"in use, kept {_row(item, cache_dir, now)}")
        total = sum(i.bytes for i in self.removed)
        lines.append(f"total {verb}: {human(total)} in {len(self.removed)} item{'s' if len(self.removed) != 1 else ''}")
        return "\n".join(lines) + "\n"


def _row(item: Item, cache_dir: Path, now: float) -> str:
    try:
        rel = item.path.relative_to(cache_dir)
    except ValueError:
        rel = item.path
    parts = [item.kind] if item.kind == "facts" else [item.kind, str(rel)]
    if item.what:
        parts.append(item.what)
    parts.append(human(item.bytes))
    if item.last_used:
        parts.append(f"last used {int(max(0.0, now - item.last_used) // DAY)} days ago")
    return "  ".join(parts)


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _mtime(*paths: Path) -> float:
    """The newest mtime among the paths that exist (0 when none does)."""
    best = 0.0
    for p in paths:
        try:
            best = max(best, os.stat(p).st_mtime)
        except OSError:
            pass
    return best


@contextmanager
def _alone(*locks: Path) -> Iterator[bool]:
    """Exclusive locks on all of `locks`, without waiting: yields False (holding none) when any is held."""
    with ExitStack() as stack:
        for lock in locks:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o666)
            stack.callback(os.close, fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
        yield True


# ------------------------------------------------------------------------------------------ what there is

def _indexes(cache_dir: Path) -> list[Item]:
    out = []
    root = indexes_dir(cache_dir)
    for path in sorted(root.glob("*.sqlite")) if root.is_dir() else ():
        if not path.is_file():
            continue
        what = ""
        try:
            ix = Index.open(path)
            try:
                meta = ix.meta()
            finally:
                ix.db.close()
            what = meta.get("tree", "?") + (f" ({meta['scopes']})" if meta.get("scopes") else "")
        except sqlite3.DatabaseError:
            what = "(unreadable)"
        seal = integrity.seal_path(path)
        size = path.stat().st_size + (seal.stat().st_size if seal.is_file() else 0)
        stamp = use_stamp(path)
        last = _mtime(stamp) if stamp.exists() else _mtime(path)
        out.append(Item("index", path, what, size, last))
    return out


def _clones(cache_dir: Path) -> list[Item]:
    out = []
    base = clones.repos_dir(cache_dir)
    for gitdir in sorted(base.glob("*.git")) if base.is_dir() else ():
        if not gitdir.is_dir() or gitdir.is_symlink():
            continue
        stamp = clones.use_stamp(gitdir)
        last = _mtime(stamp) if stamp.exists() else _mtime(gitdir, gitdir / clones.FETCHED)
        out.append(Item("clone", gitdir, "", _tree_bytes(gitdir), last))
    return out


def _stat_caches(cache_dir: Path, cutoff: float) -> list[Item]:
    """The stat caches of checkouts that are gone or were not read since the cutoff."""
    root = statcache.checkouts_dir(cache_dir)
    out = []
    for path in sorted(root.glob(f"*{statcache.SUFFIX}")) if root.is_dir() else ():
        try:
            st = path.stat()
        except OSError:
            continue
        checkout = statcache.recorded_root(path)
        gone = not checkout or not os.path.isdir(checkout)
        if gone or st.st_mtime < cutoff:
            what = f"of {checkout or '(unreadable)'}" + (" (gone)" if checkout and gone else "")
            out.append(Item("stat cache", path, what, st.st_size, st.st_mtime))
    return out


def _sweep_stat_temporaries(cache_dir: Path, now: float) -> None:
    """What a writer killed while writing a stat cache left (an hour old: no writer takes that long)."""
    root = statcache.checkouts_dir(cache_dir)
    for path in root.glob(f".*{statcache.SUFFIX}.*.tmp") if root.is_dir() else ():
        try:
            if path.stat().st_mtime < now - 3600:
                path.unlink()
        except OSError:
            pass


def _index_blobs(path: Path) -> set[str] | None:
    try:
        ix = Index.open(path)
        try:
            return {b for (b,) in ix.db.execute("SELECT blob FROM files")}
        finally:
            ix.db.close()
    except sqlite3.DatabaseError:
        return None


def _clone_blobs(gitdir: Path) -> set[str] | None:
    """Every blob the clone's refs reach (its trees list them, blobs fetched or not); None: unreadable."""
    try:
        repo = repo_at(gitdir)
    except Exception:
        return None
    try:
        refs = run(repo.git, ["for-each-ref", "--format=%(objectname)"]).decode().split()
        out: set[str] = set()
        for ref in sorted(set(refs)):
            listing = run(repo.git, ["ls-tree", "-r", "-z", "--full-tree", ref])
            for rec in listing.split(b"\0"):
                meta = rec.partition(b"\t")[0].split(b" ")
                if len(meta) == 3 and meta[1] == b"blob":
                    out.add(meta[2].decode("ascii"))
        return out
    except GitFailed:
        return None
    finally:
        repo.close()


def _facts(cache_dir: Path, keep: set[str], cutoff: float) -> tuple[list[Path], int]:
    """The facts entries of no kept blob written before the cutoff, and their bytes."""
    root = facts_dir(cache_dir)
    out, size = [], 0
    try:
        shards = sorted(e.path for e in os.scandir(root) if len(e.name) == 2 and e.is_dir(follow_symlinks=False))
    except OSError:
        return out, 0
    for shard in shards:
        prefix = os.path.basename(shard)
        with os.scandir(shard) as it:
            for ent in it:
                if ent.name.startswith(".") or not ent.is_file(follow_symlinks=False):
                    continue
                if prefix + ent.name in keep:
                    continue
                st = ent.stat(follow_symlinks=False)
                if st.st_mtime < cutoff:
                    out.append(Path(ent.path))
                    size += st.st_size
    return sorted(out), size


# ------------------------------------------------------------------------------------------ removing

def _remove_clone(gitdir: Path) -> None:
    aside = Path(tempfile.mkdtemp(prefix=f"{clones.ASIDE}{gitdir.name}-", dir=gitdir.parent))
    os.rename(gitdir, aside / "clone")
    shutil.rmtree(aside, ignore_errors=True)


def _stamped(stamp: Path, last: float) -> Path:
    """The use stamp, made (with the item's last use as its time) when the item had none: locking it must
    not make the item look used now."""
    if not stamp.exists():
        stamp.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(stamp, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o666)
        try:
            os.utime(fd, (last, last))
        finally:
            os.close(fd)
    return stamp


def collect(cache_dir: Path, older_than_days: float = 30.0, dry_run: bool = False, keep_clones: bool = False,
            now: float | None = None) -> Report:
    """Find (and unless `dry_run`, remove) what was last used more than `older_than_days` ago."""
    cache_dir = Path(cache_dir)
    now = time.time() if now is None else now
    cutoff = now - older_than_days * DAY
    removed: list[Item] = []
    kept: list[Item] = []
    if not dry_run:  # what killed runs left: nothing anyone uses
        sweep(indexes_dir(cache_dir), WORK_PREFIX)
        sweep_temporary(facts_dir(cache_dir), force=True, now=now)
        _sweep_stat_temporaries(cache_dir, now)

    staying_clones: list[Path] = []
    for item in _clones(cache_dir):
        if keep_clones or item.last_used >= cutoff:
            staying_clones.append(item.path)
            continue
        with _alone(item.path.with_suffix(".lock"), _stamped(clones.use_stamp(item.path), item.last_used)) as free:
            if not free:
                item.held = True
            elif not dry_run:
                _remove_clone(item.path)
        (kept if item.held else removed).append(item)
        if item.held:
            staying_clones.append(item.path)

    staying_indexes: list[Path] = []
    for item in _indexes(cache_dir):
        if item.last_used >= cutoff:
            staying_indexes.append(item.path)
            continue
        with _alone(lock_of(item.path), _stamped(use_stamp(item.path), item.last_used)) as free:
            if not free:
                item.held = True
            elif not dry_run:
                integrity.discard(item.path)
        (kept if item.held else removed).append(item)
        if item.held:
            staying_indexes.append(item.path)

    keep: set[str] = set()
    readable = True
    for path in staying_indexes:
        blobs = _index_blobs(path)
        readable &= blobs is not None
        keep |= blobs or set()
    for gitdir in staying_clones:
        blobs = _clone_blobs(gitdir)
        readable &= blobs is not None
        keep |= blobs or set()
    if readable:  # (an unreadable index or clone could refer to anything: then no facts entry goes)
        entries, size = _facts(cache_dir, keep, cutoff)
        if entries:
            removed.append(Item("facts", facts_dir(cache_dir),
                                f"{len(entries)} entr{'ies' if len(entries) != 1 else 'y'} no index or clone refers to",
                                size))
            if not dry_run:
                for entry in entries:
                    try:
                        os.unlink(entry)
                    except OSError:
                        pass
    configs = _configs(cache_dir, cutoff)
    if configs:
        removed.append(Item("build configuration", configs[0].parent,
                            f"{len(configs)} evaluated configuration{'s' if len(configs) != 1 else ''}",
                            sum(p.stat().st_size for p in configs)))
        if not dry_run:
            for path in configs:
                path.unlink(missing_ok=True)
    for item in _stat_caches(cache_dir, cutoff):
        removed.append(item)
        if not dry_run:
            item.path.unlink(missing_ok=True)
    return Report(older_than_days, dry_run, removed, kept)


def _configs(cache_dir: Path, cutoff: float) -> list[Path]:
    """Resolved Kconfig values and build-configuration memos last used before the cutoff (a reader marks
    its use: flowscan.fileio.mark_used)."""
    root = cache_dir / "buildconfig"
    return sorted(p for p in root.glob("*.json") if p.is_file() and _mtime(p) < cutoff) if root.is_dir() else []
