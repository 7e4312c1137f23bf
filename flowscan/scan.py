"""Scan a tree: list the files in scope, reuse cached facts by blob id, extract the rest in workers.

The parent lists the files, looks every blob up in the facts cache, reads only the misses (one
`git cat-file --batch` stream) and hands them in small batches to worker processes. Workers extract and
write the cache entry themselves (the cache is the hand-off) and send back the JSON text, which the parent
turns into FileFacts. At most a few batches per worker are in flight, so memory stays flat on a whole
Linux tree. Results are sorted by path.

Facts are cached by blob id alone, yet the same bytes can sit at several paths (a copied header, a file
moved between tags): the path stamped into a cached entry is rewritten to the path being scanned.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import click

from flowscan.cache import FactsCache
from flowscan.facts import FileFacts
from flowscan.sources import MAX_FILE_SIZE, FileEntry, Tree

BINARY_PROBE = 8192
BATCH_FILES = 16  # files per task sent to a worker
BATCH_BYTES = 1 << 20  # ... or fewer when they are big
IN_PROCESS_BELOW = 8  # so few misses are not worth starting a pool for
PROGRESS_ABOVE = 50

# The extractor, resolved on first use (tests may set it to a stub; forked workers inherit it).
_EXTRACT: Callable[[bytes, str], FileFacts] | None = None


def _extractor() -> Callable[[bytes, str], FileFacts]:
    global _EXTRACT
    if _EXTRACT is None:
        from flowscan.extract import extract_file
        _EXTRACT = extract_file
    return _EXTRACT


@dataclass
class ScanStats:
    files: int = 0  # files in scope
    parsed: int = 0  # extracted in this run
    reused: int = 0  # taken from the cache
    skipped: int = 0  # binary, too large, or the extractor failed on them
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------ worker side

_WORKER_CACHE: FactsCache | None = None


def _worker_cache(root: str | None, version: str | None) -> FactsCache | None:
    global _WORKER_CACHE
    if root is None:
        return None
    if _WORKER_CACHE is None or str(_WORKER_CACHE.root) != root or _WORKER_CACHE.version != version:
        _WORKER_CACHE = FactsCache(Path(root), version) if version else FactsCache(Path(root))
    return _WORKER_CACHE


def _extract_batch(batch: list[tuple[str, str, bytes]], cache_root: str | None,
                   cache_version: str | None) -> list[tuple[str, str, str | None, str]]:
    """Extract each (path, blob, data); store in the cache; return (path, blob, json or None, error)."""
    extract = _extractor()
    cache = _worker_cache(cache_root, cache_version)
    out = []
    for path, blob, data in batch:
        try:
            facts = extract(data, path)
            facts.blob = blob
            text = facts.dumps()
        except Exception as exc:  # one bad file must not sink the scan; it is reported as skipped
            out.append((path, blob, None, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]))
            continue
        if cache is not None:
            try:
                cache.put(blob, text)
            except OSError:
                pass  # a read-only or full cache only costs speed
        out.append((path, blob, text, ""))
    return out


# ------------------------------------------------------------------------------------------ parent side

def _facts_from_text(text: str, path: str, blob: str) -> FileFacts:
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("blob") != blob or not isinstance(data.get("path"), str):
        raise ValueError(f"cached facts are not those of blob {blob}")
    old = data["path"]
    if old != path:  # same bytes at another path: restamp every row
        data["path"] = path
        for value in data.values():
            if isinstance(value, list):
                for row in value:
                    if isinstance(row, dict) and row.get("path") == old:
                        row["path"] = path
    data["blob"] = blob
    return FileFacts.from_json(data)


def _pool(jobs: int) -> cf.ProcessPoolExecutor:
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork") if "fork" in methods else None
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)


def scan(tree: Tree, scopes: Sequence[str], cache: FactsCache | None, jobs: int = 0,
         progress: bool = True, strict: bool = True) -> tuple[list[FileFacts], ScanStats]:
    started = time.perf_counter()
    entries = tree.files(scopes, strict)
    stats = ScanStats(files=len(entries))
    results: dict[str, FileFacts] = {}
    todo: list[FileEntry] = []
    for entry in entries:
        if entry.size > MAX_FILE_SIZE:
            results[entry.path] = FileFacts(path=entry.path, blob=entry.blob, skipped="too large")
            stats.skipped += 1
            continue
        text = cache.get(entry.blob) if cache is not None else None
        if text is not None:
            try:
                results[entry.path] = _facts_from_text(text, entry.path, entry.blob)
                stats.reused += 1
                continue
            except (ValueError, KeyError, TypeError):  # valid checksum but not FileFacts: rebuild
                cache.corrupt += 1
                cache.drop(entry.blob)
        todo.append(entry)

    jobs = jobs or os.cpu_count() or 1
    cache_root = str(cache.root) if cache is not None else None
    cache_version = cache.version if cache is not None else None
    bar = None
    if progress and len(todo) > PROGRESS_ABOVE:
        bar = click.progressbar(length=len(todo), label=f"parsing {tree.label}", file=sys.stderr)
        bar.__enter__()

    def take(done: list[tuple[str, str, str | None, str]]) -> None:
        for path, blob, text, error in done:
            if text is None:
                results[path] = FileFacts(path=path, blob=blob, skipped=f"error: {error}")
                stats.skipped += 1
            else:
                results[path] = _facts_from_text(text, path, blob)
                stats.parsed += 1
                if cache is not None:
                    cache.writes += 1
        if bar is not None:
            bar.update(len(done))

    def batches():
        batch: list[tuple[str, str, bytes]] = []
        size = 0
        for entry, data in tree.read(todo):
            if b"\0" in data[:BINARY_PROBE]:
                results[entry.path] = FileFacts(path=entry.path, blob=entry.blob, skipped="binary")
                stats.skipped += 1
                if bar is not None:
                    bar.update(1)
                continue
            batch.append((entry.path, entry.blob, data))
            size += len(data)
            if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    try:
        if jobs == 1 or len(todo) < IN_PROCESS_BELOW:
            for batch in batches():
                take(_extract_batch(batch, cache_root, cache_version))
        else:
            with _pool(jobs) as pool:
                pending: set[cf.Future] = set()
                for batch in batches():
                    pending.add(pool.submit(_extract_batch, batch, cache_root, cache_version))
                    while len(pending) >= jobs * 3:
                        done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                        for fut in done:
                            take(fut.result())
                for fut in cf.as_completed(pending):
                    take(fut.result())
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)

    facts = [results[path] for path in sorted(results)]
    stats.seconds = time.perf_counter() - started
    return facts, stats
