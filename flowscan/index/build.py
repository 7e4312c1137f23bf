"""Scan a tree into its index: list the files in scope, reuse cached facts by blob id, extract the rest.

Everything heavy happens in worker processes: a worker takes a batch of files, gets each file's facts
(from the facts cache when its blob is there, else by extracting the bytes the parent read from git and
storing the result in the cache) and writes them into its own shard database. The parent only lists,
reads missing blobs (one `git cat-file --batch` stream) and at the end merges the shards into the index
(`INSERT ... SELECT`, in C): no facts travel between processes and the parent never holds a tree's facts,
so memory stays flat on a whole Linux tree. Facts are keyed by blob alone; the same bytes at two paths
(a copy, a move between tags) get the path of the file being scanned.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import json
import multiprocessing
import os
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from flowscan.fileio import sweep, work_dir
from flowscan.index import store as ixm
from flowscan.index.facts_cache import FactsCache
from flowscan.index.stats import ScanStats
from flowscan.extract.facts import FileFacts
from flowscan.extract.apis import Registry, default_registry
from flowscan.progress import NULL, Progress
from flowscan.sources.refs import MAX_FILE_SIZE, FileEntry
from flowscan.sources.tree import Tree

BINARY_PROBE = 8192
BATCH_FILES = 16  # files to extract per task sent to a worker
BATCH_BYTES = 1 << 20  # ... or fewer when they are big
BATCH_CACHED = 64  # files per task whose facts are in the cache
IN_PROCESS_BELOW = 8  # so few files are not worth starting a pool for
PROGRESS_ABOVE = 50
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WORK_PREFIX = ".build-"  # work directories beside the index (a shard per worker, the index being written)

# The extractor, resolved on first use (tests may set it to a stub; forked workers inherit it).
_EXTRACT: Callable[[bytes, str], FileFacts] | None = None


def _extractor() -> Callable[[bytes, str], FileFacts]:
    global _EXTRACT
    if _EXTRACT is None:
        from flowscan.extract.parse import extract_file
        _EXTRACT = extract_file
    return _EXTRACT


# ------------------------------------------------------------------------------------------ worker side

_SHARD: tuple[str, int, sqlite3.Connection] | None = None  # this process's shard (per scan directory)
_CACHE: FactsCache | None = None

# A task is (file id, path, blob, bytes or None: None = take the facts from the cache).
Task = tuple[int, str, str, bytes | None]


def _shard(shard_dir: str) -> sqlite3.Connection:
    global _SHARD
    if _SHARD is None or _SHARD[:2] != (shard_dir, os.getpid()):  # forked children open their own
        path = os.path.join(shard_dir, f"shard-{os.getpid()}.sqlite")
        _SHARD = (shard_dir, os.getpid(), ixm.connect_for_writing(path))
    return _SHARD[2]


def _cache(root: str | None, version: str | None) -> FactsCache | None:
    global _CACHE
    if root is None or version is None:
        return None
    if _CACHE is None or str(_CACHE.root) != root or _CACHE.version != version:
        _CACHE = FactsCache(Path(root), version)
    return _CACHE


def _cached_facts(cache: FactsCache | None, blob: str) -> dict | None:
    text = cache.get(blob) if cache is not None else None
    if text is None:
        return None
    try:
        data = json.loads(text)
        if isinstance(data, dict) and data.get("blob") == blob and isinstance(data.get("calls"), list):
            return data
    except ValueError:
        pass
    cache.corrupt += 1  # valid checksum but not FileFacts: rebuild
    cache.drop(blob)
    return None


def _work(batch: list[Task], shard_dir: str, cache_root: str | None,
          cache_version: str | None) -> tuple[str, list[tuple[str, str, str]], int]:
    """Facts of each file into this worker's shard. Returns (shard path, [(path, status, detail)],
    corrupt cache entries seen); status is parsed | reused | skipped | retry (cache entry gone or bad:
    the parent sends the bytes)."""
    db = _shard(shard_dir)
    cache = _cache(cache_root, cache_version)
    corrupt_before = cache.corrupt if cache is not None else 0
    out = []
    for file_id, path, blob, data in batch:
        if data is None:
            facts = _cached_facts(cache, blob)
            if facts is None:
                out.append((path, "retry", ""))
                continue
            ixm.write_file(db, file_id, path, facts, blob)
            out.append((path, "reused", ""))
            continue
        if b"\0" in data[:BINARY_PROBE]:
            ixm.write_file(db, file_id, path, None, blob, "binary")
            out.append((path, "skipped", "binary"))
            continue
        try:
            ff = _extractor()(data, path)
            ff.blob = blob
            facts = ff.to_json()
            text = json.dumps(facts, separators=(",", ":"))
        except Exception as exc:  # one bad file must not sink the scan; it is reported as skipped
            why = "error: " + f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            ixm.write_file(db, file_id, path, None, blob, why)
            out.append((path, "skipped", why))
            continue
        if cache is not None:
            try:
                cache.put(blob, text)
            except OSError:
                pass  # a read-only or full cache only costs speed
        ixm.write_file(db, file_id, path, facts, blob)
        out.append((path, "parsed", ""))
    db.execute("COMMIT")
    db.execute("BEGIN")
    return (os.path.join(shard_dir, f"shard-{os.getpid()}.sqlite"), out,
            (cache.corrupt - corrupt_before) if cache is not None else 0)


# ------------------------------------------------------------------------------------------ parent side

def _pool(jobs: int) -> cf.ProcessPoolExecutor:
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork") if "fork" in methods else None
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_start,
                                  initargs=(os.getpid(),))


def _worker_start(parent: int) -> None:
    """Workers die with the parent: killed (even by SIGKILL) it must not leave them running, holding its
    stdout (a caller reading the output would wait forever) and its work directory's lock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)  # (a forked worker inherits the parent's handlers)
    if not _die_with_parent():
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _die_with_parent() -> bool:
    """Linux: have the kernel send SIGKILL when the parent exits (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    """Elsewhere: notice being orphaned (re-parented) within a second."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _stop(pool: cf.ProcessPoolExecutor) -> None:
    """Stop the workers now (not after the queued batches): cancel what is queued, kill what runs."""
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in multiprocessing.active_children():
        proc.kill()
    for proc in multiprocessing.active_children():
        proc.join(timeout=5)


def _batches(tree: Tree, ids: dict[str, int], cached: list[FileEntry],
             todo: list[FileEntry]) -> Iterator[list[Task]]:
    for i in range(0, len(cached), BATCH_CACHED):
        yield [(ids[e.path], e.path, e.blob, None) for e in cached[i:i + BATCH_CACHED]]
    batch: list[Task] = []
    size = 0
    for entry, data in tree.read(todo):
        batch.append((ids[entry.path], entry.path, entry.blob, data))
        size += len(data)
        if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def build_index(tree: Tree, entries: Sequence[FileEntry], cache: FactsCache | None, dest: Path, *,
                jobs: int = 0, progress: Progress = NULL, registry: Registry | None = None,
                meta: dict[str, str] | None = None, partial: bool = False, updatable: bool = False,
                ids: dict[str, int] | None = None) -> ScanStats:
    """Scan `entries` of `tree` into a new index at `dest` (written under a temporary name, then moved).
    `updatable`: a checkout's index, which flowscan.index.update keeps up to date in place (file ids
    spaced out, pruned rows kept aside). `ids`: each file's id (in path order), else its place in
    `entries` (spaced out when updatable)."""
    started = time.perf_counter()
    registry = registry or default_registry()
    stats = ScanStats(files=len(entries))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep(dest.parent, WORK_PREFIX)  # left by runs that were killed
    with work_dir(dest.parent, WORK_PREFIX) as work:
        step = ixm.ID_STEP if updatable else 1
        db = fill(tree, entries, ids or {e.path: (i + 1) * step for i, e in enumerate(entries)}, cache,
                  work / "index.sqlite", work, jobs, progress, stats)
        ixm.finish(db, registry, {**(meta or {}), "files": str(stats.files),
                                  **({"updatable": "1"} if updatable else {})},
                   prune=not partial, updatable=updatable)
        db.close()
        os.replace(work / "index.sqlite", dest)
    stats.seconds = time.perf_counter() - started
    return stats


def fill(tree: Tree, entries: Sequence[FileEntry], ids: dict[str, int], cache: FactsCache | None, path: Path,
         work: Path, jobs: int, progress: Progress, stats: ScanStats) -> sqlite3.Connection:
    """A new database at `path` holding the facts of `entries` (file ids from `ids`), each file's rows
    one run of ids in every table; nothing derived yet. `work`: where the workers' shards go."""
    try:
        db = ixm.connect_for_writing(path)
        cached: list[FileEntry] = []
        todo: list[FileEntry] = []
        for entry in entries:
            if entry.size > MAX_FILE_SIZE:
                ixm.write_file(db, ids[entry.path], entry.path, None, entry.blob, "too large")
                stats.skipped += 1
            elif cache is not None and cache.path(entry.blob).is_file():
                cached.append(entry)
            else:
                todo.append(entry)
        jobs = jobs or os.cpu_count() or 1
        args = (str(work), str(cache.root) if cache else None, cache.version if cache else None)
        bar = len(todo) > PROGRESS_ABOVE
        if bar:
            progress.start(f"parsing {tree.label}", len(entries))
        shards: set[str] = set()
        by_path = {e.path: e for e in entries}
        retry: list[FileEntry] = []

        def take(result: tuple[str, list[tuple[str, str, str]], int]) -> None:
            shard, done, corrupt = result
            shards.add(shard)
            if cache is not None:
                cache.corrupt += corrupt
            for path, status, _detail in done:
                if status == "retry":
                    retry.append(by_path[path])
                    continue
                if status == "parsed":
                    stats.parsed += 1
                    if cache is not None:
                        cache.writes += 1
                elif status == "reused":
                    stats.reused += 1
                else:
                    stats.skipped += 1
            if bar:
                progress.advance(len(done))

        try:
            rounds = [(cached, todo)]
            while rounds:
                hits, misses = rounds.pop()
                if jobs == 1 or len(hits) + len(misses) < IN_PROCESS_BELOW:
                    for batch in _batches(tree, ids, hits, misses):
                        take(_work(batch, *args))
                else:
                    pool = _pool(jobs)
                    try:
                        pending: set[cf.Future] = set()
                        for batch in _batches(tree, ids, hits, misses):
                            pending.add(pool.submit(_work, batch, *args))
                            while len(pending) >= jobs * 3:
                                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                                for fut in done:
                                    take(fut.result())
                        for fut in cf.as_completed(pending):
                            take(fut.result())
                    except BaseException:  # interrupted, or a worker failed: stop the others now
                        _stop(pool)
                        raise
                    pool.shutdown()
                if retry:  # cache entries that turned out bad: read and extract those files
                    rounds.append(([], sorted(retry, key=lambda e: e.path)))
                    retry.clear()
        finally:
            if bar:
                progress.finish()
        _close_own_shard(str(work))
        for shard in sorted(shards):
            ixm.merge(db, Path(shard))
        return db
    finally:
        _close_own_shard(str(work))


def _close_own_shard(shard_dir: str) -> None:
    """The in-process path wrote through this process's own shard connection: close it before merging."""
    global _SHARD
    if _SHARD is not None and _SHARD[:2] == (shard_dir, os.getpid()):
        _SHARD[2].close()
        _SHARD = None


def scan(tree: Tree, scopes: Sequence[str], cache: FactsCache | None, jobs: int = 0,
         progress: Progress = NULL, strict: bool = True) -> tuple[list[FileFacts], ScanStats]:
    """Every file's facts, in path order (through a throw-away index: the same path as real scans)."""
    entries = tree.files(scopes, strict)
    with tempfile.TemporaryDirectory(prefix="flowscan-scan-") as tmp:
        stats = build_index(tree, entries, cache, Path(tmp) / "index.sqlite", jobs=jobs, progress=progress)
        ix = ixm.Index.open(Path(tmp) / "index.sqlite")
        try:
            facts = ix.all_facts()
        finally:
            ix.db.close()
    return facts, stats
