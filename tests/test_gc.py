"""`flowscan gc`: what was not used lately goes (dry run first), what another process holds stays, and the
questions asked afterwards answer exactly as before (what they need is rebuilt)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowscan.index.gc import human

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400
LINUX_Q = ("callers", "psci_sys_reset")
QEMU_Q = ("callers", "qemu_system_reset")


def flowscan(cache: Path, *args: str) -> str:
    """The CLI in its own process (a reader holds what it uses until it exits: not this test's process)."""
    proc = subprocess.run([sys.executable, "-m", "flowscan", "-q", "--cache-dir", str(cache), *args],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=120)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr.decode()
    return proc.stdout.decode()


def _tree_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _index_of(cache: Path, tree: str) -> Path:
    (path,) = [p for p in (cache / "index").glob("*.sqlite")
               if dict(sqlite3.connect(p).execute("SELECT key, value FROM meta"))["tree"] == tree]
    return path


def _blobs(repo: Path, tag: str) -> set[str]:
    """Every blob the tag's tree reaches (a facts entry is kept while some kept clone reaches its blob)."""
    out = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", tag], check=True, capture_output=True,
                         text=True).stdout
    return {ln.split()[2] for ln in out.splitlines()}


def _facts(cache: Path) -> dict[str, Path]:
    return {p.parent.name + p.name: p for p in (cache / "facts").glob("??/*")}


def _age(path: Path, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when))


@pytest.fixture
def aged_cache(fixture_repos, tmp_path):
    """linux v6.1 indexed and v6.12 asked cold (its clone used now); qemu indexed; then the linux v6.1 index,
    the qemu index and the qemu clone last used 40 days ago, and every facts entry written then."""
    cache = tmp_path / "cache"
    linux, qemu = fixture_repos["linux"], fixture_repos["qemu"]
    answers = {
        "linux@v6.1": flowscan(cache, *LINUX_Q, "--repo", str(linux), "--ref", "v6.1", "--whole"),
        "qemu@v10.0.0": flowscan(cache, *QEMU_Q, "--repo", str(qemu), "--ref", "v10.0.0", "--whole"),
        "linux@v6.12": flowscan(cache, *LINUX_Q, "--repo", str(linux), "--ref", "v6.12"),
    }
    for tree in ("linux@v6.1", "qemu@v10.0.0"):
        _age(cache / "locks" / f"index-{_index_of(cache, tree).stem}.use", 40)
    (qclone,) = (cache / "repos").glob("qemu-*.git")
    _age(qclone.with_suffix(".use"), 40)
    for entry in _facts(cache).values():
        _age(entry, 40)
    return cache, answers


def _expected(cache: Path, fixture_repos, verb: str, keep_clones: bool = False) -> str:
    (qclone,) = (cache / "repos").glob("qemu-*.git")
    rows = []
    if not keep_clones:
        rows.append((f"clone  repos/{qclone.name}  {human(_tree_bytes(qclone))}  last used 40 days ago",
                     _tree_bytes(qclone)))
    for path in sorted([_index_of(cache, "linux@v6.1"), _index_of(cache, "qemu@v10.0.0")]):
        tree = dict(sqlite3.connect(path).execute("SELECT key, value FROM meta"))["tree"]
        size = path.stat().st_size + Path(str(path) + ".seal").stat().st_size
        rows.append((f"index  index/{path.name}  {tree}  {human(size)}  last used 40 days ago", size))
    if not keep_clones:  # the qemu files' facts: no clone or index reaches them any more
        linux = _blobs(fixture_repos["linux"], "v6.1") | _blobs(fixture_repos["linux"], "v6.12")
        gone = [p for b, p in _facts(cache).items() if b in _blobs(fixture_repos["qemu"], "v10.0.0") and b not in linux]
        assert gone
        size = sum(p.stat().st_size for p in gone)
        rows.append((f"facts  {len(gone)} entries no index or clone refers to  {human(size)}", size))
    head = "unused for 30 days or more" + (" (dry run: nothing removed)" if verb == "would remove" else "") + ":"
    return "\n".join([head, *(f"{verb} {r}" for r, _ in rows),
                      f"total {verb}: {human(sum(s for _, s in rows))} in {len(rows)} items"]) + "\n"


def _listing(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*"))


def test_gc_lists_then_removes_what_was_not_used_and_answers_stay_the_same(aged_cache, fixture_repos):
    cache, answers = aged_cache
    before = _listing(cache)
    facts = set(_facts(cache))
    expected = _expected(cache, fixture_repos, "would remove")
    assert flowscan(cache, "gc", "--dry-run") == expected
    assert _listing(cache) == before  # a dry run removes nothing
    assert flowscan(cache, "gc") == expected.replace("would remove", "removed").replace(" (dry run: nothing removed)", "")
    assert [p.name for p in (cache / "repos").glob("*.git")] == [next((cache / "repos").glob("linux-*.git")).name]
    assert list((cache / "index").glob("*.sqlite")) == []
    linux = _blobs(fixture_repos["linux"], "v6.1") | _blobs(fixture_repos["linux"], "v6.12")
    assert set(_facts(cache)) == facts & linux  # what the kept clone reaches stays, the rest is gone
    assert flowscan(cache, "gc") == "unused for 30 days or more: nothing\n"
    # the next questions rebuild what they need and answer as before
    assert flowscan(cache, *LINUX_Q, "--repo", str(fixture_repos["linux"]), "--ref", "v6.1", "--whole") == answers["linux@v6.1"]
    assert flowscan(cache, *QEMU_Q, "--repo", str(fixture_repos["qemu"]), "--ref", "v10.0.0", "--whole") == answers["qemu@v10.0.0"]
    assert flowscan(cache, *LINUX_Q, "--repo", str(fixture_repos["linux"]), "--ref", "v6.12") == answers["linux@v6.12"]


def test_keep_clones_keeps_the_clones_and_the_facts_they_reach(aged_cache, fixture_repos):
    cache, _answers = aged_cache
    facts = set(_facts(cache))
    expected = _expected(cache, fixture_repos, "removed", keep_clones=True)
    assert flowscan(cache, "gc", "--keep-clones") == expected
    assert len(list((cache / "repos").glob("*.git"))) == 2 and set(_facts(cache)) == facts


def test_an_index_or_clone_another_process_holds_is_kept(aged_cache, fixture_repos):
    """A process reading the qemu index and clone (it opened them the way a question does and is still
    running) keeps both; once it is gone, the next gc removes them."""
    cache, answers = aged_cache
    index = _index_of(cache, "qemu@v10.0.0")
    code = ("import sys; from pathlib import Path; from flowscan.index.store import hold; "
            "from flowscan.sources.clones import open_tree; from flowscan.sources.refs import Source; "
            f"hold(Path({str(index)!r})); "
            f"t = open_tree(Source(role='vmm', repo={str(fixture_repos['qemu'])!r}, ref='v10.0.0'), Path({str(cache)!r})); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline() == b"held\n"
        # the holder touched them: make them look unused again (a long-running reader)
        (qclone,) = (cache / "repos").glob("qemu-*.git")
        _age(qclone.with_suffix(".use"), 40)
        _age(cache / "locks" / f"index-{index.stem}.use", 40)
        out = flowscan(cache, "gc").splitlines()
        assert [ln.split("  ")[:2] for ln in out if ln.startswith("in use, kept")] == [
            ["in use, kept clone", f"repos/{qclone.name}"], ["in use, kept index", f"index/{index.name}"]]
        assert index.is_file() and qclone.is_dir()
        linux_index = _index_of(cache, "linux@v6.1") if any(
            "linux@v6.1" in ln for ln in out if ln.startswith("in use")) else None
        assert linux_index is None and len(list((cache / "index").glob("*.sqlite"))) == 1
    finally:
        holder.communicate(b"", timeout=30)
    out = flowscan(cache, "gc")
    assert f"removed clone  repos/{qclone.name}  " in out and f"removed index  index/{index.name}  " in out
    assert not index.exists() and not qclone.exists()
    assert flowscan(cache, *QEMU_Q, "--repo", str(fixture_repos["qemu"]), "--ref", "v10.0.0", "--whole") == answers["qemu@v10.0.0"]


def test_an_index_keeps_no_free_pages_and_no_repeated_callee(fixture_repos, tmp_path):
    """Size: the pages the build's deletes free are given back, and a call's last member is kept only
    for calls through a member (the only ones looked up by it)."""
    cache = tmp_path / "cache"
    flowscan(cache, "index", "--repo", str(fixture_repos["linux"]), "--ref", "v6.12")
    (path,) = (cache / "index").glob("*.sqlite")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA freelist_count").fetchone() == (0,)
    kinds = dict(db.execute("SELECT kind, count(*) FROM calls WHERE last != '' GROUP BY kind"))
    assert list(kinds) == ["field"] and kinds["field"] == db.execute(
        "SELECT count(*) FROM calls WHERE kind = 'field'").fetchone()[0]
    assert db.execute("SELECT count(*) FROM calls WHERE kind = 'field' AND last != "
                      "replace(callee, rtrim(callee, replace(callee, '.', '')), '')").fetchone() == (0,)


def test_build_configurations_not_used_for_the_period_are_removed(tmp_path):
    """Evaluated configurations (Kconfig values, memos) go when unused; a read marks its use."""
    from flowscan.buildconfig.memo import Memo
    from flowscan.index.gc import collect

    root = tmp_path / "buildconfig"
    root.mkdir()
    old, used, new = root / "0123.json", root / "memo-a.json", root / "memo-b.json"
    for path in (old, used, new):
        path.write_text('{"version": "bm-1", "outcome": {"none": "n"}}')
    for path in (old, used):
        _age(path, 40)
    assert Memo.load(used) is not None  # read now: used
    report = collect(tmp_path, dry_run=True)
    assert report.text(tmp_path, time.time()).splitlines()[1] == \
        f"would remove build configuration  buildconfig  1 evaluated configuration  {human(old.stat().st_size)}"
    assert old.is_file()
    collect(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["memo-a.json", "memo-b.json"]


def test_stat_caches_of_gone_or_unused_checkouts_are_removed(tmp_path):
    """A checkout's stat cache goes when the checkout is gone or the cache was not read for the period
    (a read marks it); the dry run lists the same and removes nothing."""
    from flowscan.index.gc import collect
    from flowscan.sources.trees import DirTree
    from flowscan.sources.statcache import cache_file

    cache = tmp_path / "cache"
    caches = {}
    for name in ("used", "unused", "read", "gone"):
        root = tmp_path / name
        root.mkdir()
        (root / "a.c").write_text(f"int {name};\n")
        tree = DirTree(root)
        tree.keep_stat_cache(cache)
        tree.files()
        caches[name] = cache_file(cache, root.resolve())
        assert caches[name].is_file()
    for name in ("unused", "read"):
        _age(caches[name], 40)
    DirTree(tmp_path / "read").keep_stat_cache(cache)  # read now: used
    (tmp_path / "gone" / "a.c").unlink()
    (tmp_path / "gone").rmdir()
    report = collect(cache, dry_run=True)
    rows = report.text(cache, time.time()).splitlines()[1:-1]
    assert rows == [f"would remove stat cache  checkouts/{caches['gone'].name}  of {tmp_path.resolve() / 'gone'} (gone)  "
                    f"{human(caches['gone'].stat().st_size)}  last used 0 days ago",
                    f"would remove stat cache  checkouts/{caches['unused'].name}  of {tmp_path.resolve() / 'unused'}  "
                    f"{human(caches['unused'].stat().st_size)}  last used 40 days ago"][::1 if
                   caches["gone"].name < caches["unused"].name else -1]
    assert all(p.is_file() for p in caches.values())
    collect(cache)
    assert sorted(p.name for p in (cache / "checkouts").iterdir()) == sorted(
        caches[n].name for n in ("used", "read"))
