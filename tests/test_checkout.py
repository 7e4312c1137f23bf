"""A plain checkout (`--src`) gets warm like a repository: its stat cache lists it without reading files,
so it finds its index; a touched, edited, added or deleted file is noticed, and only it is read again."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time

import pytest

from flowscan import workspace
from flowscan.index import integrity
from flowscan.index import store as ixm
from flowscan.sources import checkout, statcache
from flowscan.sources.refs import Source
from flowscan.sources.statcache import StatCache, cache_file, stat_key
from flowscan.progress import Recorder
from flowscan.sources.tree import Listing, digest_of, listing_digest
from flowscan.sources.trees import DirTree, git_blob_id
from tests.helpers import run

RESET = "system/runstate.c:115: main_loop_should_exit -> qemu_system_reset  [direct]  [if (request)]"


@pytest.fixture
def co(tmp_path, qemu_new, monkeypatch):
    """A copy of the QEMU fixture, with the racy window shrunk to the clock's tick (tests run fast)."""
    monkeypatch.setattr(statcache, "RACY_NS", 0)
    dest = tmp_path / "co"
    shutil.copytree(qemu_new, dest)
    time.sleep(0.05)  # past the coarse clock's tick: the copy is older than the stat cache written next
    return dest


@pytest.fixture
def hashes(monkeypatch):
    """How many times file bytes are hashed (every read of a checkout file hashes it)."""
    seen: list[int] = []

    def counting(data: bytes) -> str:
        seen.append(len(data))
        return git_blob_id(data)
    monkeypatch.setattr(checkout, "git_blob_id", counting)
    return seen


def q(capsys, cache, *args):
    return run(capsys, "-q", "--cache-dir", str(cache), *args)


def test_unchanged_checkout_answers_from_its_index_reading_nothing(capsys, tmp_path, co, hashes):
    cache = tmp_path / "cache"
    code, cold, _ = q(capsys, cache, "callers", "qemu_system_reset", "--src", str(co))
    assert code == 0 and RESET in cold.splitlines()
    assert len(hashes) > 50  # the first listing hashes every file (50 C files), the cold search reads some
    assert q(capsys, cache, "index", "--src", str(co))[0] == 0
    assert list((cache / "index").glob("*.sqlite"))
    hashes.clear()
    facts = sorted(p.name for p in (cache / "facts").rglob("*") if p.is_file())
    code, warm, _ = q(capsys, cache, "callers", "qemu_system_reset", "--src", str(co))
    assert (code, warm) == (0, cold)
    assert hashes == []  # listed by stat alone, answered by the index: no file read at all
    assert sorted(p.name for p in (cache / "facts").rglob("*") if p.is_file()) == facts


def test_edited_touched_added_and_deleted_files_are_noticed(capsys, tmp_path, co, hashes):
    cache = tmp_path / "cache"
    assert q(capsys, cache, "index", "--src", str(co))[0] == 0
    code, before, _ = q(capsys, cache, "callers", "qemu_system_reset", "--src", str(co))
    assert code == 0 and before.splitlines() == [RESET]
    runstate = co / "system" / "runstate.c"
    text = runstate.read_text()
    edited = text.replace("static bool main_loop_should_exit(int *status)",
                          "void probe(void)\n{\n    qemu_system_reset(0);\n}\n\n"
                          "static bool main_loop_should_exit(int *status)", 1)
    assert edited != text
    runstate.write_text(edited)
    os.utime(co / "hw" / "core" / "qdev.c")  # touched: re-hashed, same blob, facts reused
    hashes.clear()
    code, out, _ = q(capsys, cache, "index", "--src", str(co))
    assert code == 0 and re.search(r": 50 files \(1 parsed, 0 from the facts cache, 49 as they were, 0 skipped\) in [\d.]+ s$",
                                   out)
    assert sorted(hashes) == sorted([len(runstate.read_bytes())] * 2 + [(co / "hw/core/qdev.c").stat().st_size])
    # (the listing hashes the two changed files; the build reads only the edited one: its facts are new)
    code, after, _ = q(capsys, cache, "callers", "qemu_system_reset", "--src", str(co))
    assert code == 0
    assert after.splitlines() == ["system/runstate.c:101: probe -> qemu_system_reset  [direct]",
                                  "system/runstate.c:120: main_loop_should_exit -> qemu_system_reset  [direct]  "
                                  "[if (request)]"]
    (co / "hw" / "new.c").write_text("void qemu_system_reset(int);\nvoid newer(void)\n{\n    qemu_system_reset(1);\n}\n")
    runstate.write_text(text)
    code, out, _ = q(capsys, cache, "callers", "qemu_system_reset", "--src", str(co))
    assert code == 0 and out.splitlines() == ["hw/new.c:4: newer -> qemu_system_reset  [direct]", RESET]
    (co / "hw" / "new.c").unlink()
    code, out, _ = q(capsys, cache, "callers", "qemu_system_reset", "--src", str(co))
    assert (code, out) == (0, before)


def _record(root, cache, path: str, blob: str, started: int) -> None:
    """Write a stat cache saying `path` (with its stat now) has `blob`, recorded by a walk at `started`."""
    sc = StatCache(cache_file(cache, root), str(root))
    sc.save({path: (stat_key((root / path).stat()), blob)}, started)


def test_racily_clean_file_is_hashed_again(tmp_path, co, monkeypatch):
    """A file changed in the same tick as the walk that recorded it keeps its stat: the entry is written
    without its blob, so the next listing reads the file (git's 'racily clean' rule)."""
    monkeypatch.setattr(statcache, "RACY_NS", 2_000_000_000)
    cache = tmp_path / "cache"
    path = "system/runstate.c"
    real = git_blob_id((co / path).read_bytes())
    stale = "0" * 40  # what the file held when it was recorded, in the same tick as the walk
    _record(co, cache, path, stale, started=time.time_ns())
    tree = DirTree(co)
    tree.keep_stat_cache(cache)
    assert {e.path: e.blob for e in tree.files()}[path] == real
    # the same record from a walk safely later than the file's stat is trusted (the rule is what decides)
    _record(co, cache, path, stale, started=time.time_ns() + 10 * statcache.RACY_NS)
    tree = DirTree(co)
    tree.keep_stat_cache(cache)
    assert {e.path: e.blob for e in tree.files()}[path] == stale
    # ... unless the cache file itself is not newer than the file (git's rule on the index file)
    st = (co / path).stat()
    os.utime(cache_file(cache, co.resolve()), ns=(st.st_mtime_ns, st.st_mtime_ns))
    tree = DirTree(co)
    tree.keep_stat_cache(cache)
    assert {e.path: e.blob for e in tree.files()}[path] == real


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_stat_cache_is_discarded_and_rebuilt(capsys, tmp_path, co, hashes, damage):
    cache = tmp_path / "cache"
    code, first, _ = q(capsys, cache, "callers", "qemu_system_reset", "--src", str(co))
    sc = cache_file(cache, co.resolve())
    raw = sc.read_bytes()
    assert json.loads(raw.partition(b"\n")[0])["version"] == statcache.VERSION
    if damage == "truncate":
        sc.write_bytes(raw[:len(raw) // 2])
    elif damage == "flip":  # a digit of the last blob id changed, still well-formed: only the checksum tells
        sc.write_bytes(raw[:-1] + (b"1" if raw[-1:] != b"1" else b"2"))
    else:
        sc.write_bytes(b"\x00\xff not a cache\n")
    hashes.clear()
    code, out, err = run(capsys, "--cache-dir", str(cache), "callers", "qemu_system_reset", "--src", str(co))
    assert (code, out) == (0, first)
    assert "the stat cache was damaged" in err
    assert len([n for n in hashes]) >= 50  # every file hashed again
    hashes.clear()
    tree = DirTree(co)
    tree.keep_stat_cache(cache)  # rebuilt: the next listing reads nothing
    tree.files()
    assert (tree.hashed, hashes) == (0, [])


def _listing(tree, scopes=()) -> list[tuple[str, str, int]]:
    return [(e.path, e.blob, e.size) for e in tree.files(scopes)]


def _fresh(root, scopes=()) -> list[tuple[str, str, int]]:
    """The listing a tree without any stat cache gives (every file hashed)."""
    return _listing(DirTree(root), scopes)


def test_unchanged_walk_lists_from_the_snapshot(tmp_path, co, hashes):
    """The second walk of an unchanged checkout finds the snapshot's files and stats: the listing and
    its digest are the recorded ones, nothing is read (a directory named like a C file is walked)."""
    from tests.test_sources import write_odd

    (co / "odd.c").mkdir()
    (co / "odd.c" / "inner.c").write_text("int inner;\n")
    write_odd(co)
    time.sleep(0.05)
    cache = tmp_path / "cache"
    first = DirTree(co)
    first.keep_stat_cache(cache)
    listed = _listing(first)
    assert ("odd.c/inner.c", git_blob_id(b"int inner;\n"), 11) in listed
    assert listed == _fresh(co)
    hashes.clear()
    again = DirTree(co, rec := Recorder())
    again.keep_stat_cache(cache)
    entries = again.files()
    assert isinstance(entries, Listing) and hashes == []
    assert listing_digest(entries) == digest_of((e.path, e.blob) for e in entries)
    assert [(e.path, e.blob, e.size) for e in entries] == listed
    assert [w for w in rec.texts("warn") if "not printable" in w]  # the odd names: still left out, still said
    assert _listing(again, ["system"]) == [e for e in listed if e[0].startswith("system/")] and hashes == []


def test_scoped_listing_reads_no_file_outside_its_scope(tmp_path, co, hashes):
    cache = tmp_path / "cache"
    tree = DirTree(co)
    tree.keep_stat_cache(cache)
    tree.files()
    qdev = co / "hw" / "core" / "qdev.c"
    qdev.write_text(qdev.read_text() + "/* edited */\n")
    runstate = co / "system" / "runstate.c"
    runstate.write_text(runstate.read_text() + "/* edited */\n")
    scoped, whole = _fresh(co, ["system"]), _fresh(co)
    hashes.clear()
    tree = DirTree(co)
    tree.keep_stat_cache(cache)
    assert _listing(tree, ["system"]) == scoped and hashes == [runstate.stat().st_size]
    hashes.clear()
    tree = DirTree(co)
    tree.keep_stat_cache(cache)  # the file outside the scope is not known yet: read by the whole listing
    assert _listing(tree) == whole and hashes == [qdev.stat().st_size]


def test_stat_keys_past_int64_are_kept_as_text(tmp_path):
    """An inode number past 2**63 (some filesystems) cannot go in the int64 array: the keys are written
    as text and read back equal, so such a checkout still lists from its snapshot."""
    path = tmp_path / "c.stat"
    big = (5, 10**9, 10**9, 2**64 - 3)
    StatCache(path, "/co").save({"a.c": (big, "1" * 40), "b/c.h": ((7, -2, 3, 4), "2" * 40)}, 10**12, "d")
    os.utime(path, ns=(10**12, 10**12))
    snap = StatCache.load(path, "/co").snapshot
    assert snap is not None and snap.digest == "d" and snap.blob(1) == "2" * 40
    assert snap.same_walk(["a.c", "b/c.h"], [*big, 7, -2, 3, 4])
    assert not snap.same_walk(["a.c", "b/c.h"], [*big, 7, -2, 3, 5])
    assert snap.entries() == {"a.c": (big, "1" * 40), "b/c.h": ((7, -2, 3, 4), "2" * 40)}


def test_an_older_stat_cache_is_replaced_without_a_warning(tmp_path, co, hashes):
    cache = tmp_path / "cache"
    path = cache_file(cache, co.resolve())
    path.parent.mkdir(parents=True)
    path.write_bytes(json.dumps({"version": 1, "root": str(co.resolve()), "blake2b": "0"}).encode() + b"\n{}")
    tree = DirTree(co, rec := Recorder())
    tree.keep_stat_cache(cache)
    assert _listing(tree) == _fresh(co) and rec.texts("warn") == []
    assert json.loads(path.read_bytes().partition(b"\n")[0])["version"] == statcache.VERSION


# ------------------------------------------------------------------------------------------ updated in place

def _dump(path) -> dict:
    """Every table of an index as a fresh build would write it: file ids as paths, rows in (path, id)
    order without their ids (ids differ, order is what lookups see), derived tables in their own order."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ids = db.execute("SELECT id, path FROM files ORDER BY id").fetchall()
        assert [p for _, p in ids] == sorted(p for _, p in ids)  # file ids in path order
        path_of = dict(ids)
        out: dict = {"files": db.execute("SELECT path, blob, parse_errors, skipped FROM files ORDER BY id").fetchall()}
        for table in [*ixm.ROW_TABLES, "stores_pruned", "argrefs_pruned"]:
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            idc = "id" if "id" in cols else "rowid"
            rows = db.execute(f"SELECT {idc}, * FROM {table}").fetchall()
            at = cols.index("file") + 1
            rows = sorted(rows, key=lambda r: (path_of[r[at]], r[0]))
            # (the synthetic stores of registrations come after every scanned row of their file)
            out[table] = [tuple(path_of[v] if i == at else v for i, v in enumerate(r) if i and cols[i - 1] != "id")
                          for r in rows]
        out["registrations"] = [(path_of[f], row) for f, row in
                                db.execute("SELECT file, row FROM registrations ORDER BY id")]
        out["reg_callbacks"] = db.execute("SELECT * FROM reg_callbacks ORDER BY rowid").fetchall()
        out["meta"] = dict(db.execute("SELECT key, value FROM meta"))
        out["schema"] = sorted(db.execute("SELECT type, name FROM sqlite_master"))
        # each file's rows are one run of ids, the one file_rows and file_calls record
        for file_id, tab, lo, hi in db.execute("SELECT * FROM file_rows").fetchall():
            rows = f"SELECT {ixm._ID[tab]} AS i, file FROM {tab}" + (" WHERE kind != 'registration'" if tab == "stores" else "")
            if tab in ("stores", "argrefs"):
                rows += f" UNION ALL SELECT id, file FROM {tab}_pruned"
            assert db.execute(f"SELECT count(*) FROM ({rows}) WHERE (i BETWEEN ? AND ?) != (file = ?)",
                              (lo, hi, file_id)).fetchone() == (0,), (tab, path_of[file_id])
        out["file_rows"] = sorted((path_of[f], tab) for f, tab, _lo, _hi in db.execute("SELECT * FROM file_rows"))
        for file_id, lo, hi in db.execute("SELECT * FROM file_calls"):
            assert db.execute("SELECT count(*) FROM calls WHERE id BETWEEN ? AND ? AND file != ?",
                              (lo, hi, file_id)).fetchone() == (0,)
            assert db.execute("SELECT count(*) FROM calls WHERE file = ? AND id NOT BETWEEN ? AND ?",
                              (file_id, lo, hi)).fetchone() == (0,)
        out["file_calls"] = sorted(path_of[f] for (f,) in db.execute("SELECT file FROM file_calls"))
        return out
    finally:
        db.close()


def _load(root, cache):
    from flowscan.workspace import load

    loaded = load(Source(role="", src=str(root)), cache_dir=cache, jobs=1)
    path = workspace.OPENED[-1]
    loaded.graph.ix.db.close()
    return loaded.stats, path


def _edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


EDITS = {
    "body": lambda co: _edit(co / "system/runstate.c", "static bool main_loop_should_exit(int *status)",
                             "void probe(void)\n{\n    qemu_system_reset(0);\n}\n\n"
                             "static bool main_loop_should_exit(int *status)"),
    # kvm_cpu_synchronize_post_init is stored (accel/kvm/kvm-accel-ops.c) and defined nowhere: pruned
    "defines-a-pruned-store": lambda co: (co / "system/cpus.c").write_text(
        (co / "system/cpus.c").read_text() + "\nvoid kvm_cpu_synchronize_post_init(CPUState *cpu)\n{\n}\n"),
    "deleted-file-with-a-registration": lambda co: (co / "hw/misc/fake_led.c").unlink(),
    "added-files": lambda co: [
        (co / "aaa.c").write_text("void first_file(void) { kvm_cpu_synchronize_post_init(0); }\n"),
        (co / "hw/core/new-reset.c").write_text(
            "static void new_handler(void *opaque)\n{\n    qemu_system_reset(2);\n}\n\n"
            "void new_init(void)\n{\n    qemu_register_reset(new_handler, NULL);\n}\n"),
        (co / "zzz").mkdir(), (co / "zzz/last.c").write_text("int last_file(void) { return 0; }\n")],
    "registration-removed": lambda co: _edit(
        co / "hw/misc/fake_timer.c", "    resettable_class_set_parent_phases(rc, NULL, fake_timer_reset_hold, NULL,\n"
                                     "                                       &ftc->parent_phases);\n", ""),
    "definition-removed": lambda co: _edit(co / "system/cpus.c",
                                           "\nvoid kvm_cpu_synchronize_post_init(CPUState *cpu)\n{\n}\n", ""),
    "moved-file": lambda co: (co / "system/runstate.c").rename(co / "system/zrunstate.c"),
}


def test_updated_index_is_a_fresh_build_table_for_table(tmp_path, co):
    cache = tmp_path / "cache"
    stats, path = _load(co, cache)
    assert (stats.parsed, stats.kept) == (50, 0)
    first = _dump(path)
    assert any(r[0] == "kvm_cpu_synchronize_post_init" for r in first["stores_pruned"])
    for n, (name, edit) in enumerate(EDITS.items()):
        before = {p: p.stat().st_mtime_ns for p in co.rglob("*.[ch]")}
        edit(co)
        time.sleep(0.01)
        changed = sum(1 for p in co.rglob("*.[ch]") if before.get(p) != p.stat().st_mtime_ns)
        stats, upd = _load(co, cache)
        assert upd == path  # the checkout's one index, updated in place
        assert stats.kept > 40 and stats.parsed + stats.reused == changed, name  # only those files read
        _fresh_stats, fresh = _load(co, tmp_path / f"fresh{n}")
        got, want = _dump(upd), _dump(fresh)
        for table in want:
            assert got[table] == want[table], (name, table)
        if name == "defines-a-pruned-store":  # the store came back, with the rows around it
            assert any(r[0] == "kvm_cpu_synchronize_post_init" for r in got["stores"])
            assert not any(r[0] == "kvm_cpu_synchronize_post_init" for r in got["stores_pruned"])
        if name == "definition-removed":
            assert any(r[0] == "kvm_cpu_synchronize_post_init" for r in got["stores_pruned"])
        assert integrity.unchanged(upd)


def test_question_after_an_edit_reads_only_the_edited_file(capsys, tmp_path, co, hashes):
    cache = tmp_path / "cache"
    assert q(capsys, cache, "index", "--src", str(co))[0] == 0
    EDITS["body"](co)
    hashes.clear()
    code, out, _ = q(capsys, cache, "callers", "qemu_system_reset", "--src", str(co))
    assert code == 0 and out.splitlines() == [
        "system/runstate.c:101: probe -> qemu_system_reset  [direct]",
        "system/runstate.c:120: main_loop_should_exit -> qemu_system_reset  [direct]  [if (request)]"]
    size = (co / "system/runstate.c").stat().st_size
    assert hashes and set(hashes) == {size}  # the listing hashed it, the update read it: nothing else
    hashes.clear()
    code, again, _ = q(capsys, cache, "callers", "qemu_system_reset", "--src", str(co))
    assert (code, again, hashes) == (0, out, [])  # warm again: nothing read
    assert len(list((cache / "index").glob("*.sqlite"))) == 1


def test_no_room_between_file_ids_builds_afresh(capsys, tmp_path, co, monkeypatch):
    """Added files take ids between their neighbours'; when there are none left the index is built again
    (same answers)."""
    monkeypatch.setattr(ixm, "ID_STEP", 2)
    cache = tmp_path / "cache"
    _load(co, cache)
    for name in ("a1.c", "a2.c"):  # both between aaa... and accel/: one id free there
        (co / "hw" / "core" / name).write_text(f"void {name[:2]}(void) {{ qemu_system_reset(0); }}\n")
    stats, path = _load(co, cache)
    assert stats.kept == 0 and stats.files == 52
    got, want = _dump(path), _dump(_load(co, tmp_path / "fresh")[1])
    assert got == want


def test_interrupted_update_leaves_the_old_index(capsys, tmp_path, co, monkeypatch):
    from flowscan.index import update

    cache = tmp_path / "cache"
    code, before, _ = q(capsys, cache, "callers", "qemu_system_reset", "--src", str(co), "--whole")
    index = next((cache / "index").glob("*.sqlite"))
    old = index.read_bytes()
    EDITS["body"](co)

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(update.ixm, "compact", killed)
    with pytest.raises(KeyboardInterrupt):
        _load(co, cache)
    assert index.read_bytes() == old and integrity.unchanged(index)
    assert [p.name for p in (cache / "index").iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    monkeypatch.setattr(statcache, "RACY_NS", 0)
    code, after, _ = q(capsys, cache, "callers", "qemu_system_reset", "--src", str(co))
    assert code == 0 and "system/runstate.c:101: probe -> qemu_system_reset  [direct]" in after


def test_seal_covers_both_indexes_while_one_replaces_the_other(tmp_path):
    """Between the seal and the move, and after it, whichever file is there reads as sealed."""
    old, new = tmp_path / "ix.sqlite", tmp_path / "work.sqlite"
    old.write_bytes(b"old index")
    integrity.seal(old)
    new.write_bytes(b"the new index")
    integrity.seal(old, coming=new)
    assert integrity.unchanged(old)  # killed before the move: the old one
    new.replace(old)
    assert integrity.unchanged(old)  # killed after it: the new one
    integrity.settle(old)
    assert integrity.unchanged(old)
    assert json.loads(integrity.seal_path(old).read_text()).get("also") is None
    old.write_bytes(b"the old index, changed")
    assert not integrity.unchanged(old)
