"""cache.py and scan.py: entries that cannot lie, reuse by blob id, workers, concurrent scans."""

from __future__ import annotations

import json
import multiprocessing
import re
import zlib
from pathlib import Path

import pytest

from flowscan.index import build as scan_mod
from flowscan.index.facts_cache import MAGIC, FactsCache, cache_info, facts_dir
from flowscan.extract.facts import EXTRACTOR_VERSION, FileFacts, FunctionDef
from flowscan.index.build import ScanStats, scan
from flowscan.progress import Recorder
from flowscan.sources.trees import DirTree, git_blob_id
from flowscan.sources.refs import Source
from flowscan.sources.clones import open_tree

try:  # tests/ as a package, or as a plain directory on sys.path
    from tests.test_sources import make_repo, write
except ImportError:  # pragma: no cover
    from test_sources import make_repo, write

BLOB_A = "a" * 40
BLOB_B = "b" * 40


def stub_extract(data: bytes, path: str) -> FileFacts:
    """A stand-in extractor: one FunctionDef per `name(` at the start of a line."""
    if b"EXPLODE" in data:
        raise RuntimeError("extractor bug\nsecond line")
    facts = FileFacts(path=path)
    for no, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        m = re.match(r"(?:static\s+)?\w+\s+\**(\w+)\(", line)
        if m:
            facts.functions.append(FunctionDef(name=m.group(1), path=path, line=no, end_line=no,
                                               params="", static=line.startswith("static")))
    return facts


@pytest.fixture(autouse=True)
def stub_extractor(monkeypatch):
    monkeypatch.setattr(scan_mod, "_EXTRACT", stub_extract)


@pytest.fixture
def facts_cache(tmp_path) -> FactsCache:
    return FactsCache(facts_dir(tmp_path / "cache"))


def sample(path="kernel/reboot.c", blob=BLOB_A) -> str:
    facts = stub_extract(b"void kernel_restart(char *cmd) {}\n", path)
    facts.blob = blob
    return facts.dumps()


# ---------------------------------------------------------------------------------------------- cache

def test_put_get_roundtrip(facts_cache):
    assert facts_cache.get(BLOB_A) is None
    facts_cache.put(BLOB_A, sample())
    assert facts_cache.get(BLOB_A) == sample()
    assert FileFacts.loads(facts_cache.get(BLOB_A)).functions[0].name == "kernel_restart"
    path = facts_cache.root / "aa" / ("a" * 38)
    assert path.is_file()
    header = path.read_bytes().split(b"\n", 1)[0].decode()
    assert header.startswith(f"{MAGIC} {EXTRACTOR_VERSION} {BLOB_A} ")
    assert facts_cache.stats == {"hits": 2, "misses": 1, "corrupt": 0, "writes": 1}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_overwrite_is_atomic_replace(facts_cache):
    facts_cache.put(BLOB_A, sample())
    inode = facts_cache.path(BLOB_A).stat().st_ino
    facts_cache.put(BLOB_A, sample(path="other.c"))
    assert facts_cache.path(BLOB_A).stat().st_ino != inode  # a new file moved into place
    assert json.loads(facts_cache.get(BLOB_A))["path"] == "other.c"


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "body-edited", "header-only",
                                    "other-version", "other-blob", "not-utf8"])
def test_bad_entries_are_dropped(facts_cache, damage):
    facts_cache.put(BLOB_A, sample())
    path = facts_cache.path(BLOB_A)
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[:-7])
    elif damage == "garbage":
        path.write_bytes(b"\x8b\x1f garbage \xff" * 20)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "body-edited":
        path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))  # one bit flipped, same length
    elif damage == "header-only":
        path.write_bytes(raw.split(b"\n", 1)[0] + b"\n")
    elif damage == "other-version":
        FactsCache(facts_cache.root, version="fx-0").put(BLOB_A, sample())
    elif damage == "other-blob":  # a valid entry of another blob copied under this name
        facts_cache.put(BLOB_B, sample(blob=BLOB_B))
        path.write_bytes(facts_cache.path(BLOB_B).read_bytes())
    elif damage == "not-utf8":  # a right checksum over bytes that are not compressed UTF-8 JSON
        body = zlib.compress(b"\xff\xfe{}")
        header = facts_cache._header(BLOB_A, body)
        path.write_bytes(header + body)
    assert facts_cache.get(BLOB_A) is None
    assert facts_cache.corrupt == 1
    assert not path.exists()  # dropped, to be rebuilt
    facts_cache.put(BLOB_A, sample())
    assert facts_cache.get(BLOB_A) == sample()


def test_invalid_keys_are_refused(facts_cache):
    for key in ("../../etc/passwd", "A" * 40, "abc", "", "g" * 40):
        with pytest.raises(ValueError):
            facts_cache.get(key)
        with pytest.raises(ValueError):
            facts_cache.put(key, "{}")
    with pytest.raises(ValueError):
        FactsCache(facts_cache.root, version="two words")


def test_cache_info(facts_cache):
    assert cache_info(facts_cache.root) == {"path": str(facts_cache.root), "entries": 0, "bytes": 0}
    facts_cache.put(BLOB_A, sample())
    facts_cache.put(BLOB_B, sample(blob=BLOB_B))
    (facts_cache.root / "aa" / ".stray.tmp").write_text("x")
    info = cache_info(facts_cache.root)
    assert info["entries"] == 2
    assert info["bytes"] == sum(facts_cache.path(b).stat().st_size for b in (BLOB_A, BLOB_B))


# ---------------------------------------------------------------------------------------------- scan

@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "linux")


def tree_at(repo, tmp_path, ref):
    return open_tree(Source("guest", str(repo), ref), tmp_path / "cache")


def as_json(facts: list[FileFacts]) -> list[str]:
    return [f.dumps() for f in facts]


@pytest.mark.parametrize("jobs", [1, 2])
def test_second_scan_parses_nothing_and_second_tag_only_changes(repo, tmp_path, facts_cache, jobs,
                                                                  monkeypatch):
    monkeypatch.setattr(scan_mod, "IN_PROCESS_BELOW", 0)  # use the pool even for a tiny tree
    with tree_at(repo, tmp_path, "v1") as tree:
        facts1, s1 = scan(tree, [], facts_cache, jobs=jobs)
        assert (s1.files, s1.parsed, s1.reused, s1.skipped) == (6, 6, 0, 0)
        again, s2 = scan(tree, [], facts_cache, jobs=jobs)
        assert (s2.files, s2.parsed, s2.reused) == (6, 0, 6)
        assert as_json(again) == as_json(facts1)
    assert [f.path for f in facts1] == sorted(f.path for f in facts1)
    entries = {f.path: f for f in facts1}
    assert entries["kernel/reboot.c"].functions[0].name == "kernel_restart"
    assert entries["kernel/reboot.c"].blob == git_blob_id(
        b"void kernel_restart(char *cmd) { machine_restart(cmd); }\n")
    with tree_at(repo, tmp_path, "v2") as tree:
        facts2, s3 = scan(tree, [], facts_cache, jobs=jobs)
    assert (s3.files, s3.parsed, s3.reused) == (6, 3, 3)  # psci.c, reboot.c changed, reboot_new.c added
    assert {f.path for f in facts2} == {f.path for f in facts1} - {"arch/x86/kernel/reboot.c"} | {
        "kernel/reboot_new.c"}
    assert cache_info(facts_cache.root)["entries"] == 9


def test_scan_scope_and_no_cache(repo, tmp_path):
    with tree_at(repo, tmp_path, "v1") as tree:
        facts, stats = scan(tree, ["kernel", "arch/arm64"], None, jobs=1)
    assert [f.path for f in facts] == ["arch/arm64/kernel/psci.c", "arch/arm64/kernel/setup.c",
                                       "kernel/reboot.c"]
    assert (stats.parsed, stats.reused) == (3, 0)


def test_corrupt_entries_are_rebuilt_by_scan(repo, tmp_path, facts_cache):
    with tree_at(repo, tmp_path, "v1") as tree:
        first, _ = scan(tree, [], facts_cache, jobs=1)
        blob = {f.path: f.blob for f in first}["kernel/reboot.c"]
        path = facts_cache.path(blob)
        path.write_bytes(path.read_bytes()[:-10])  # truncated
        other = {f.path: f.blob for f in first}["include/linux/reboot.h"]
        FactsCache(facts_cache.root, version="fx-old").put(other, first[0].dumps())  # foreign version
        again, stats = scan(tree, [], facts_cache, jobs=1)
    assert (stats.parsed, stats.reused) == (2, 4)
    assert facts_cache.corrupt == 2
    assert as_json(again) == as_json(first)
    assert facts_cache.get(blob) is not None


def test_checksummed_but_unloadable_entry_is_rebuilt(repo, tmp_path, facts_cache):
    with tree_at(repo, tmp_path, "v1") as tree:
        first, _ = scan(tree, [], facts_cache, jobs=1)
        facts_cache.put(first[0].blob, '{"not": "facts"}')
        again, stats = scan(tree, [], facts_cache, jobs=1)
    assert (stats.parsed, stats.reused) == (1, 5)
    assert as_json(again) == as_json(first)


def test_same_bytes_at_two_paths(tmp_path, facts_cache):
    root = tmp_path / "src"
    body = "int shared(void) { return 0; }\n"
    write(root, {"a/one.c": body})
    facts, _ = scan(DirTree(root), [], facts_cache, jobs=1)
    write(root, {"b/two.c": body})  # the same blob at a new path (a copy, or a move between tags)
    facts, stats = scan(DirTree(root), [], facts_cache, jobs=1)
    assert (stats.parsed, stats.reused) == (0, 2)
    two = {f.path: f for f in facts}["b/two.c"]
    assert two.path == "b/two.c" and two.functions[0].path == "b/two.c"
    assert {f.path: f for f in facts}["a/one.c"].functions[0].path == "a/one.c"


def test_skipped_files(tmp_path, facts_cache, monkeypatch):
    root = tmp_path / "src"
    write(root, {"bin.c": b"int x;\0\0\0", "big.c": "int big(void);\n" * 10, "ok.c": "int ok(void);\n",
                 "bad.c": "EXPLODE\n"})
    monkeypatch.setattr(scan_mod, "MAX_FILE_SIZE", 100)
    facts, stats = scan(DirTree(root), [], facts_cache, jobs=1)
    by = {f.path: f for f in facts}
    assert by["bin.c"].skipped == "binary" and by["big.c"].skipped == "too large"
    assert by["bad.c"].skipped == "error: RuntimeError: extractor bug"
    assert by["ok.c"].skipped == "" and by["ok.c"].functions[0].name == "ok"
    assert (stats.files, stats.parsed, stats.skipped) == (4, 1, 3)
    assert cache_info(facts_cache.root)["entries"] == 1  # skipped files are not cached


def test_progress_reports_parsing(tmp_path, facts_cache, capsys):
    root = tmp_path / "src"
    write(root, {f"f{i:03}.c": f"int f{i}(void);\n" for i in range(60)})
    rec = Recorder()
    facts, stats = scan(DirTree(root), [], facts_cache, jobs=2, progress=rec)
    out = capsys.readouterr()
    assert stats.parsed == 60 and out.out == "" and out.err == ""  # the core prints nothing itself
    assert rec.events[0] == ("start", f"parsing {root}", 60) and rec.events[-1] == ("finish",)
    assert sum(e[1] for e in rec.events if e[0] == "advance") == 60
    rec = Recorder()
    scan(DirTree(root), [], facts_cache, jobs=2, progress=rec)  # nothing to parse: no bar
    assert rec.events == []


def _scan_in_child(repo: str, cache_dir: str, out: str, barrier) -> None:
    scan_mod._EXTRACT = stub_extract
    barrier.wait()
    with open_tree(Source("guest", repo, "v2"), Path(cache_dir)) as tree:
        facts, stats = scan(tree, [], FactsCache(facts_dir(Path(cache_dir))), jobs=2)
    Path(out).write_text(json.dumps({"facts": as_json(facts), "files": stats.files}))


def test_two_processes_scan_into_one_empty_cache(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(scan_mod, "IN_PROCESS_BELOW", 0)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    cache_dir = tmp_path / "cache"
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_scan_in_child, args=(str(repo), str(cache_dir), str(o), barrier))
             for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    a, b = (json.loads(o.read_text()) for o in outs)
    assert a == b and a["files"] == 6
    cache = FactsCache(facts_dir(cache_dir))
    with open_tree(Source("guest", str(repo), "v2"), cache_dir) as tree:
        facts, stats = scan(tree, [], cache, jobs=1)
    assert (stats.parsed, stats.reused) == (0, 6) and cache.corrupt == 0
    assert as_json(facts) == a["facts"]


def test_scanstats_fields():
    assert ScanStats(files=1, parsed=1, reused=0, skipped=0, seconds=0.5).parsed == 1


def test_sweep_spares_a_work_directory_being_set_up(tmp_path):
    """Between mkdtemp and its owner's lock a directory is unlocked: a concurrent sweep must not take it
    (seen: a cold question's scratch directory vanished under a parallel run). Old ones still go, and so do
    owned directories whose owner is gone."""
    import os
    import time

    from flowscan import fileio

    fresh = tmp_path / ".setup-question-abc"
    fresh.mkdir()
    (fresh / fileio.OWNER).write_text("")
    old = tmp_path / ".setup-question-def"
    old.mkdir()
    (old / fileio.OWNER).write_text("")
    past = time.time() - fileio.UNOWNED_AGE - 10
    os.utime(old, (past, past))
    gone = tmp_path / ".question-ghi"  # named, unlocked: its owner died
    gone.mkdir()
    (gone / fileio.OWNER).write_text("")
    with fileio.work_dir(tmp_path, ".question-") as live:
        assert fileio.sweep(tmp_path, ".question-") == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, live.name])
