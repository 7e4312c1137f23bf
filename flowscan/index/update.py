"""A checkout's index kept up to date in place: after an edit, only the files that changed are read.

A plain directory has no commit to name its contents, so its index is the checkout's (one per root and
scope) and records the listing it holds. When the listing differs (files edited, added, deleted), the
index is copied, the rows of the removed and changed files are deleted (each file's rows are one run
of ids per table, recorded in `file_rows`), the facts of the added and changed files are inserted (from
the facts cache by blob, or extracted: only those files are read), and what is derived across files
is made again so that the result answers exactly as a fresh build of the new listing does:

- file ids stay in path order (lookups order by file): an updatable index spaces them out
  (store.ID_STEP), a changed file keeps its id, added files take ids between their neighbours' (none
  left there: None, the caller builds afresh);
- registrations (calls of registration APIs, notifier blocks) and their synthetic stores are derived
  again from the whole index (a small part of it), with the ids a fresh build gives them;
- stores and argrefs of names no file defines are kept aside (store.UPDATABLE_SCHEMA), not deleted: a
  name that loses its last definition sends its rows there, one that gains a definition brings them
  back with their ids;
- planner statistics are taken again.

The copy is written in a work directory and moved onto the index with os.replace() after its seal
records both the old and the new file: a reader, or a crash at any point, sees the old index or the new
one, each sealed (tests/test_checkout.py compares every table with a fresh build).
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from flowscan.extract.apis import Registry
from flowscan.fileio import sweep, work_dir
from flowscan.index import integrity
from flowscan.index import store as ixm
from flowscan.index.stats import ScanStats
from flowscan.index.facts_cache import FactsCache
from flowscan.progress import NULL, Progress
from flowscan.sources.refs import FileEntry
from flowscan.sources.tree import Tree, listing_digest  # noqa: F401 (re-exported)

LISTING = "listing"  # meta key: the digest of the listing the index holds


@dataclass
class Delta:
    """How a new listing differs from the index's files."""

    gone: list[int]  # ids of removed and changed files (their rows are deleted)
    read: list[FileEntry]  # added and changed files (their facts are inserted)
    ids: dict[str, int]  # file id of each of `read`
    kept: int  # files left as they are


def updatable(path: Path) -> bool:
    """Is the index at `path` one an update can start from (built with updatable=True)?"""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT value FROM meta WHERE key = 'updatable'").fetchone() == ("1",)
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return False


def delta(old: Sequence[tuple[int, str, str]], entries: Sequence[FileEntry]) -> Delta | None:
    """From the index's (id, path, blob) rows to `entries` (sorted by path); None when added files find no
    free ids between their neighbours'."""
    by_path = {p: (i, b) for i, p, b in old}
    new_paths = {e.path for e in entries}
    gone = [i for i, p, _b in old if p not in new_paths]
    read: list[FileEntry] = []
    ids: dict[str, int] = {}
    run: list[FileEntry] = []  # added files since the last file that stays
    lo = 0

    def place(hi: int | None) -> bool:
        if not run:
            return True
        if hi is not None and hi - lo <= len(run):
            return False
        for j, e in enumerate(run):
            ids[e.path] = lo + (j + 1) * ixm.ID_STEP if hi is None else lo + (hi - lo) * (j + 1) // (len(run) + 1)
        run.clear()
        return True

    kept = 0
    for e in entries:
        known = by_path.get(e.path)
        if known is None:
            run.append(e)
            read.append(e)
            continue
        if not place(known[0]):
            return None
        lo = known[0]
        if known[1] == e.blob:
            kept += 1
        else:
            gone.append(known[0])
            ids[e.path] = known[0]
            read.append(e)
    if not place(None):
        return None
    return Delta(gone=sorted(gone), read=read, ids=ids, kept=kept)


def update_index(tree: Tree, entries: Sequence[FileEntry], cache: FactsCache | None, dest: Path, *,
                 registry: Registry, meta: dict[str, str], jobs: int = 0,
                 progress: Progress = NULL) -> ScanStats | None:
    """Bring the updatable index at `dest` (the caller holds its lock) to `entries`, reading only the
    files that changed; None when it cannot be (the caller builds it afresh)."""
    from flowscan.index.build import WORK_PREFIX, fill  # (workers and pools: not for a warm question)

    started = time.perf_counter()
    dest = Path(dest)
    if not updatable(dest):
        return None
    ro = sqlite3.connect(f"file:{dest}?mode=ro", uri=True)
    try:
        d = delta(ro.execute("SELECT id, path, blob FROM files ORDER BY path").fetchall(), entries)
    finally:
        ro.close()
    if d is None:
        return None
    stats = ScanStats(files=len(entries), kept=d.kept)
    sweep(dest.parent, WORK_PREFIX)
    with work_dir(dest.parent, WORK_PREFIX) as work:
        new = work / "index.sqlite"
        shutil.copyfile(dest, new)
        fill(tree, d.read, d.ids, cache, work / "delta.sqlite", work, jobs, progress, stats).close()
        db = ixm.connect_for_writing(new)
        try:
            _apply(db, work / "delta.sqlite", d.gone, registry, {**meta, "files": str(len(entries))})
            stats.skipped = db.execute("SELECT count(*) FROM files WHERE skipped != ''").fetchone()[0]
        finally:
            db.close()
        integrity.seal(dest, coming=new)  # (either file reads as sealed until settle())
        new.replace(dest)
        integrity.settle(dest)
    stats.seconds = time.perf_counter() - started
    return stats


def extend_index(tree: Tree, entries: Sequence[FileEntry], ids: dict[str, int], cache: FactsCache | None,
                 dest: Path, *, registry: Registry, meta: dict[str, str], jobs: int = 0,
                 progress: Progress = NULL) -> ScanStats:
    """Add the facts of `entries` (ids from `ids`, none in use) to the partial, updatable index at `dest`
    in place: a cold question's next round (flowscan.cold) reads only the files it adds, and its scratch
    index needs no copy nor seal."""
    from flowscan.index.build import WORK_PREFIX, fill

    started = time.perf_counter()
    stats = ScanStats(files=len(entries))
    with work_dir(Path(dest).parent, WORK_PREFIX) as work:
        fill(tree, entries, ids, cache, work / "delta.sqlite", work, jobs, progress, stats).close()
        db = ixm.connect_for_writing(dest)
        try:
            _apply(db, work / "delta.sqlite", [], registry, meta, prune=False)
        finally:
            db.close()
    stats.seconds = time.perf_counter() - started
    return stats


def _apply(db: sqlite3.Connection, delta_path: Path, gone: list[int], registry: Registry,
           meta: dict[str, str], prune: bool = True) -> None:
    """The update itself, on the copy (an open writing connection, in a transaction). `prune`: as
    store.finish's (a partial index keeps every store: the definition may be in a file not read yet)."""
    db.execute("CREATE TEMP TABLE gone(id INTEGER PRIMARY KEY)")
    db.executemany("INSERT INTO gone VALUES (?)", [(i,) for i in gone])
    db.execute("CREATE TEMP TABLE lost(name TEXT PRIMARY KEY)")  # names whose definitions may be gone
    db.execute("CREATE TEMP TABLE gained(name TEXT PRIMARY KEY)")  # names the new files define
    runs = db.execute("SELECT tab, lo, hi FROM file_rows WHERE file IN (SELECT id FROM gone)").fetchall()
    for tab, lo, hi in runs:
        if tab == "functions":
            db.execute("INSERT OR IGNORE INTO lost SELECT name FROM functions WHERE id BETWEEN ? AND ?", (lo, hi))
    for tab, lo, hi in runs:
        db.execute(f"DELETE FROM {tab} WHERE {ixm._ID[tab]} BETWEEN ? AND ?", (lo, hi))
        if tab in ("stores", "argrefs"):
            db.execute(f"DELETE FROM {tab}_pruned WHERE id BETWEEN ? AND ?", (lo, hi))
    for table, col in (("file_rows", "file"), ("file_calls", "file"), ("files", "id")):
        db.execute(f"DELETE FROM {table} WHERE {col} IN (SELECT id FROM gone)")
    db.execute("DELETE FROM stores WHERE kind = 'registration'")  # (derived again below)
    db.execute("DELETE FROM registrations")
    db.execute("DELETE FROM reg_callbacks")

    # the new files' rows, after every id in use (kept aside or not), each file still one run
    offset = {t: db.execute(f"SELECT max({ixm._ID[t]}) FROM {t}").fetchone()[0] or 0 for t in ixm.ROW_TABLES}
    for t in ("stores", "argrefs"):
        offset[t] = max(offset[t], db.execute(f"SELECT max(id) FROM {t}_pruned").fetchone()[0] or 0)
    db.execute("COMMIT")
    db.execute("ATTACH DATABASE ? AS delta", (str(delta_path),))
    db.execute("BEGIN")
    for t in ixm.ROW_TABLES:
        cols = "name, callee, file" if t == "argrefs" else ", ".join(ixm._COLS[t])
        idc = ixm._ID[t]
        db.execute(f"INSERT INTO main.{t}({idc}, {cols}) SELECT {idc} + ?, {cols} FROM delta.{t} ORDER BY {idc}",
                   (offset[t],))
        db.execute(f"INSERT INTO file_rows SELECT file, '{t}', min({idc}) + ?, max({idc}) + ? FROM delta.{t} "
                   f"GROUP BY file", (offset[t], offset[t]))
    db.execute("INSERT INTO main.files SELECT * FROM delta.files")
    db.execute("INSERT INTO file_calls SELECT file, min(id) + ?, max(id) + ? FROM delta.calls GROUP BY file",
               (offset["calls"], offset["calls"]))
    db.execute("INSERT OR IGNORE INTO gained SELECT name FROM delta.functions")
    new_stores = db.execute("SELECT max(id) FROM delta.stores").fetchone()[0] or 0
    new_argrefs = db.execute("SELECT max(rowid) FROM delta.argrefs").fetchone()[0] or 0
    db.execute("COMMIT")
    db.execute("DETACH DATABASE delta")
    db.execute("BEGIN")

    ixm.derive_registrations(db, registry, first_store_id=offset["stores"] + new_stores + 1)
    undefined = "NOT IN (SELECT name FROM functions)"
    if prune:
        db.execute(f"DELETE FROM stores WHERE kind = 'registration' AND function {undefined}")
    # the new files' rows of names nothing defines, and the rows of names that lost their last definition
    db.execute("DELETE FROM lost WHERE name IN (SELECT name FROM functions)")
    s_new = f"id > {offset['stores']} AND id <= {offset['stores'] + new_stores}"
    a_new = f"rowid > {offset['argrefs']} AND rowid <= {offset['argrefs'] + new_argrefs}"
    s_where = f"({s_new} AND function {undefined}) OR function IN (SELECT name FROM lost)" if prune else "0"
    a_where = f"({a_new} AND name {undefined}) OR name IN (SELECT name FROM lost)"
    ixm.keep_aside(db, s_where, a_where)
    db.execute(f"DELETE FROM stores WHERE kind != 'registration' AND ({s_where})")
    db.execute(f"DELETE FROM argrefs WHERE {a_where}")
    # ... and back, with their ids, the rows of names the new files define
    db.execute("INSERT INTO stores SELECT * FROM stores_pruned WHERE function IN (SELECT name FROM gained)")
    db.execute("DELETE FROM stores_pruned WHERE function IN (SELECT name FROM gained)")
    db.execute("INSERT INTO argrefs(rowid, name, callee, file) SELECT * FROM argrefs_pruned "
               "WHERE name IN (SELECT name FROM gained)")
    db.execute("DELETE FROM argrefs_pruned WHERE name IN (SELECT name FROM gained)")
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", sorted(meta.items()))
    db.execute("COMMIT")
    ixm.compact(db)
