"""A plain checkout (`--src`) gets warm like a repository: its stat cache lists it without reading files,
so it finds its index; a touched, edited, added or deleted file is noticed, and only it is read again."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest

from flowscan.sources import statcache, trees
from flowscan.sources.statcache import StatCache, cache_file, stat_key
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
    monkeypatch.setattr(trees, "git_blob_id", counting)
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
    assert code == 0 and re.search(r": 50 files \(1 parsed, 49 from the facts cache, 0 skipped\) in [\d.]+ s$", out)
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
    sc = StatCache(cache_file(cache, root), str(root), {})
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
    elif damage == "flip":  # a blob id changed, still valid JSON: only the checksum tells
        i = raw.index(b'"', raw.rindex(b",") + 1) + 1
        sc.write_bytes(raw[:i] + (b"1" if raw[i:i + 1] != b"1" else b"2") + raw[i + 1:])
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
