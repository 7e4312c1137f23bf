"""sources.py on small tagged repositories built in tmp_path: cloning, fetching, listing, reading, refusing."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowscan.sources import clones
from flowscan.sources import git as gitmod
from flowscan.errors import FlowscanError
from flowscan.progress import Recorder
from flowscan.config import load_config
from flowscan.sources.trees import DirTree, GitTree, git_blob_id
from flowscan.sources.refs import FileEntry, Source, validate_ref, validate_repo
from flowscan.sources.clones import clone_dir, open_tree

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost", "GIT_CONFIG_NOSYSTEM": "1",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    env = dict(GIT_ENV, HOME=str(repo))
    out = subprocess.run(["git", *args], cwd=repo, env=env, input=input, capture_output=True, check=True)
    return out.stdout.decode()


def write(root: Path, files: dict[str, str | bytes | None]) -> None:
    for rel, content in files.items():
        path = root / rel
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


V1 = {
    "arch/arm64/kernel/psci.c": "int psci_sys_reset(void) { return 0; }\n",
    "arch/arm64/kernel/setup.c": "void setup_arch(void) {}\n",
    "arch/x86/kernel/reboot.c": "void native_machine_restart(void) {}\n",
    "kernel/reboot.c": "void kernel_restart(char *cmd) { machine_restart(cmd); }\n",
    "include/linux/reboot.h": "extern void kernel_restart(char *cmd);\n",
    "drivers/firmware/psci/psci.c": "static int psci_probe(void) { return 0; }\n",
    "Documentation/reboot.rst": "Rebooting\n",
    "README": "a tiny tree\n",
}
V2 = {  # changes two .c files, adds one, removes one, leaves the rest alone
    "arch/arm64/kernel/psci.c": "int psci_sys_reset(void) { return 1; }\n",
    "kernel/reboot.c": "void kernel_restart(char *cmd) { do_kernel_restart(cmd); }\n",
    "kernel/reboot_new.c": "void do_kernel_restart(char *cmd) {}\n",
    "arch/x86/kernel/reboot.c": None,
}


def make_repo(path: Path) -> Path:
    """v1 (lightweight tag) and v2 (annotated tag), then one untagged commit on master."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "master")
    write(path, V1)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "v1")
    git(path, "tag", "v1")
    write(path, V2)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "v2")
    git(path, "tag", "-a", "v2", "-m", "release v2")
    write(path, {"kernel/extra.c": "int extra;\n"})
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "after v2")
    return path


@pytest.fixture
def repo(tmp_path) -> Path:
    return make_repo(tmp_path / "linux")


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def ls_tree_c(repo: Path, ref: str) -> list[FileEntry]:
    """The .c/.h files of ref according to git itself."""
    rows = []
    for line in git(repo, "ls-tree", "-r", "-l", ref).splitlines():
        meta, path = line.split("\t", 1)
        mode, kind, oid, size = meta.split()
        if path.endswith((".c", ".h")):
            rows.append(FileEntry(path, oid, int(size)))
    return sorted(rows, key=lambda e: e.path)


def present_objects(gitdir: Path) -> set[str]:
    out = git(gitdir, "cat-file", "--batch-all-objects", "--batch-check=%(objectname)")
    return set(out.split())


def repos_in(cache: Path) -> list[str]:
    base = cache / "repos"
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


# ---------------------------------------------------------------------------------------------- git

def test_listing_at_a_tag_equals_git_ls_tree(repo, cache):
    with open_tree(Source("guest", str(repo), "v1"), cache) as tree:
        assert tree.files() == ls_tree_c(repo, "v1")
        assert tree.commit == git(repo, "rev-parse", "v1^{commit}").strip()
        assert tree.label == "linux@v1"


def test_read_returns_exact_bytes(repo, cache):
    with open_tree(Source("guest", str(repo), "v2"), cache) as tree:
        entries = tree.files()
        got = list(tree.read(entries))
        assert [e for e, _ in got] == entries
        for entry, data in got:
            assert data == subprocess.run(["git", "show", f"v2:{entry.path}"], cwd=repo,
                                          capture_output=True, check=True).stdout
            assert git_blob_id(data) == entry.blob and len(data) == entry.size
        assert tree.read_one("README") == b"a tiny tree\n"  # not a C file: fetched on demand
        with pytest.raises(FlowscanError, match="no file 'nope.c'"):
            tree.read_one("nope.c")


def test_read_can_stop_early_and_continue(repo, cache):
    with open_tree(Source("guest", str(repo), "v1"), cache) as tree:
        entries = tree.files()
        it = tree.read(entries)
        first = next(it)
        it.close()  # leaves the cat-file stream in step
        assert first[0] == entries[0]
        assert [d for _, d in tree.read(entries[1:2])] == [list(tree.read(entries))[1][1]]


def test_a_read_stopped_within_a_response_does_not_wait_for_git(repo, cache, monkeypatch):
    """A signal that lands while a blob's bytes are read (after its header) leaves the cat-file stream out
    of step: reading on to keep it in step waited forever for bytes git never sends (a SIGTERM'd index
    build hung). The stream is closed instead, the signal's exception goes on, and a later read starts a
    new stream."""
    import threading

    class Stopped(BaseException):
        pass

    with open_tree(Source("guest", str(repo), "v2"), cache) as tree:
        entries = tree.files()
        assert len(entries) >= 3
        list(tree.read(entries[:1]))  # the stream is running
        cat = tree._cat
        real = cat.proc.stdout.read

        def read(size=-1):
            monkeypatch.setattr(cat.proc.stdout, "read", real, raising=False)
            raise Stopped()

        got: list = []

        def consume():
            try:
                list(tree.read(entries))
            except Stopped:
                got.append("stopped")

        monkeypatch.setattr(cat.proc.stdout, "read", read, raising=False)
        worker = threading.Thread(target=consume, daemon=True)
        worker.start()
        worker.join(timeout=20)
        if worker.is_alive():
            cat.proc.kill()  # (let the thread finish, then fail)
            worker.join(timeout=5)
        assert got == ["stopped"]
        assert cat.proc.poll() is not None  # that git is gone
        assert [e for e, _ in tree.read(entries)] == entries  # and reading goes on in a new one


def test_clone_is_shallow_partial_and_fetches_only_the_scope(repo, cache):
    with open_tree(Source("guest", str(repo), "v1"), cache) as tree:
        gitdir = clone_dir(cache, str(repo))
        assert (gitdir / "shallow").is_file()
        files = tree.files(["kernel"])
        have = present_objects(gitdir)
        assert {e.blob for e in files} <= have
        outside = ls_tree_c(repo, "v1")
        assert {e.blob for e in outside if not e.path.startswith("kernel/")}.isdisjoint(have)


def test_second_tag_reuses_the_clone(repo, cache):
    t1 = open_tree(Source("guest", str(repo), "v1"), cache)
    gitdir = clone_dir(cache, str(repo))
    inode = gitdir.stat().st_ino
    (gitdir / "flowscan-test-marker").write_text("first clone")
    t1.close()
    with open_tree(Source("guest", str(repo), "v2"), cache) as t2:
        assert t2.files() == ls_tree_c(repo, "v2")
        assert t2.commit == git(repo, "rev-parse", "v2^{commit}").strip()
    assert gitdir.stat().st_ino == inode
    assert (gitdir / "flowscan-test-marker").read_text() == "first clone"
    assert repos_in(cache) == [gitdir.name]


def test_refs_already_fetched_need_no_remote(repo, cache, tmp_path):
    for ref in ("v1", "v2"):
        with open_tree(Source("guest", str(repo), ref), cache) as tree:
            tree.files()  # the refs and the blobs in scope are now in the cache clone
    away = tmp_path / "moved-away"
    repo.rename(away)  # the "remote" is gone: v1 and v2 must still open, without the network
    repo.mkdir()
    try:
        for ref in ("v1", "v2"):
            with open_tree(Source("guest", str(repo), ref), cache) as tree:
                assert tree.files() == ls_tree_c(away, ref)
        with pytest.raises(FlowscanError, match="not a git repository"):
            open_tree(Source("guest", str(repo), "v3"), cache)
    finally:
        repo.rmdir()
        away.rename(repo)


def test_second_tag_fetches_only_changed_blobs(repo, cache):
    open_tree(Source("guest", str(repo), "v1"), cache).files()
    gitdir = clone_dir(cache, str(repo))
    before = present_objects(gitdir)
    with open_tree(Source("guest", str(repo), "v2"), cache) as tree:
        files = tree.files()
    new_blobs = {e.blob for e in files} - {e.blob for e in ls_tree_c(repo, "v1")}
    assert len(new_blobs) == 3  # psci.c, reboot.c changed; reboot_new.c added
    assert new_blobs <= present_objects(gitdir) - before


def test_branch_head_and_commit_refs(repo, cache):
    head = git(repo, "rev-parse", "master").strip()
    with open_tree(Source("guest", str(repo), "master"), cache) as tree:
        assert tree.commit == head
        assert "kernel/extra.c" in [e.path for e in tree.files()]
    with open_tree(Source("guest", str(repo), ""), cache) as tree:
        assert tree.commit == head and tree.label == "linux@HEAD"
    v1 = git(repo, "rev-parse", "v1^{commit}").strip()
    with open_tree(Source("guest", str(repo), v1), cache) as tree:
        assert tree.commit == v1
        assert tree.files() == ls_tree_c(repo, "v1")
    with pytest.raises(FlowscanError, match="full commit id"):
        open_tree(Source("guest", str(repo), "deadbeef"), cache)


def test_file_url_and_bare_repo(repo, cache, tmp_path):
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True, env=GIT_ENV)
    with open_tree(Source("vmm", f"file://{bare}", "v2"), cache) as tree:
        assert tree.files() == ls_tree_c(repo, "v2")
        assert (clone_dir(cache, f"file://{bare}") / "shallow").is_file()
    with open_tree(Source("vmm", str(bare), "v1"), cache) as tree:
        assert tree.files() == ls_tree_c(repo, "v1")
    assert len(repos_in(cache)) == 2  # one clone per distinct URL


def _open_in_child(repo: str, cache: str, ref: str, q) -> None:
    try:
        with open_tree(Source("guest", repo, ref), Path(cache)) as tree:
            q.put([(e.path, e.blob) for e in tree.files()])
    except Exception as exc:  # pragma: no cover - reported to the parent
        q.put(repr(exc))


def test_two_processes_cloning_at_once(repo, cache):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_open_in_child, args=(str(repo), str(cache), ref, q)) for ref in ("v1", "v2")]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
    assert all(isinstance(r, list) for r in results), results
    expected = [[(e.path, e.blob) for e in ls_tree_c(repo, ref)] for ref in ("v1", "v2")]
    assert sorted(results) == sorted(expected)
    assert len(repos_in(cache)) == 1


# ---------------------------------------------------------------------------------------------- scopes

def test_scopes_dirs_files_and_globs(repo, cache):
    with open_tree(Source("guest", str(repo), "v1"), cache) as tree:
        paths = lambda scopes: [e.path for e in tree.files(scopes)]  # noqa: E731
        assert paths(["arch/arm64", "kernel"]) == ["arch/arm64/kernel/psci.c", "arch/arm64/kernel/setup.c",
                                                    "kernel/reboot.c"]
        assert paths(["./kernel/reboot.c"]) == ["kernel/reboot.c"]
        assert paths(["arch/*/kernel"]) == ["arch/arm64/kernel/psci.c", "arch/arm64/kernel/setup.c",
                                            "arch/x86/kernel/reboot.c"]
        assert paths(["*/psci.c"]) == ["arch/arm64/kernel/psci.c", "drivers/firmware/psci/psci.c"]
        assert paths(["Documentation"]) == []  # exists, but holds no C
        assert paths(["."]) == paths([]) == [e.path for e in ls_tree_c(repo, "v1")]


@pytest.mark.parametrize("scope, message", [
    ("arch/arm", "scope 'arch/arm' matches nothing in linux@v1"),
    ("virt", "scope 'virt' matches nothing"),
    ("../etc", "points outside the tree"),
    ("kernel/../../x", "points outside the tree"),
    ("/etc", "absolute"),
    ("arch/*/nothing", "matches nothing"),
])
def test_bad_scopes(repo, cache, scope, message):
    with open_tree(Source("guest", str(repo), "v1"), cache) as tree:
        with pytest.raises(FlowscanError, match=message.replace("(", r"\(").replace("*", r"\*")):
            tree.files([scope])


# ---------------------------------------------------------------------------------------------- plain dirs

def test_plain_directory(tmp_path):
    root = tmp_path / "src"
    write(root, V1)
    write(root, {"big.c": b"x" * 70000, "bin.c": b"\0\1\2", ".git/HEAD.c": "ignored\n"})
    (root / "link.c").symlink_to(root / "kernel" / "reboot.c")
    outside = tmp_path / "outside"
    write(outside, {"secret.c": "int secret;\n"})
    (root / "out").symlink_to(outside)
    tree = DirTree(root)
    entries = tree.files()
    paths = [e.path for e in entries]
    assert paths == sorted(p for p in [*V1, "big.c", "bin.c"] if p.endswith((".c", ".h")))
    for entry in entries:
        expected = subprocess.run(["git", "hash-object", str(root / entry.path)], capture_output=True,
                                  check=True, text=True).stdout.strip()
        assert entry.blob == expected
        assert entry.size == (root / entry.path).stat().st_size
    assert dict((e.path, d) for e, d in tree.read(entries))["kernel/reboot.c"] == V1["kernel/reboot.c"].encode()
    assert [e.path for e in tree.files(["kernel", str(root / "arch" / "arm64")])] == [
        "arch/arm64/kernel/psci.c", "arch/arm64/kernel/setup.c", "kernel/reboot.c"]
    assert tree.read_one("README") == b"a tiny tree\n"
    with pytest.raises(FlowscanError, match="outside"):
        tree.files([str(outside)])
    with pytest.raises(FlowscanError, match="outside"):
        tree.read_one("../outside/secret.c")
    with pytest.raises(FlowscanError, match="outside"):
        tree.read_one("out/secret.c")
    with pytest.raises(FlowscanError, match="matches nothing"):
        tree.files(["out"])


def test_plain_directory_edited_after_listing(tmp_path):
    root = tmp_path / "src"
    write(root, {"a.c": "int a;\n"})
    tree = DirTree(root)
    [entry] = tree.files()
    write(root, {"a.c": "int a2;\n"})
    [(got, data)] = list(tree.read([entry]))
    assert data == b"int a2;\n" and got.blob == git_blob_id(data) != entry.blob


def test_plain_directory_via_open_tree(tmp_path, cache):
    write(tmp_path / "src", {"a.c": "int a;\n"})
    tree = open_tree(Source("", src=str(tmp_path / "src")), cache)
    assert tree.commit == "" and [e.path for e in tree.files()] == ["a.c"]
    with pytest.raises(FlowscanError, match="no such directory"):
        open_tree(Source("", src=str(tmp_path / "missing")), cache)
    with pytest.raises(FlowscanError, match="excludes"):
        open_tree(Source("guest", repo="x", src=str(tmp_path / "src")), cache)
    assert not (cache / "repos").exists()


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("ref, reason", [
    ("-x", "must not begin with '-'"),
    ("--upload-pack=touch", "must not begin with '-'"),
    ("a..b", r"contains '\.\.'"),
    ("a b", "contains a space"),
    ("v1\n", "control characters"),
    ("v1\x1b[31m", "control characters"),
    ("v1\x00", "control characters"),
    ("", "empty"),
    ("a~1", "contains '~'"),
    ("a^", r"contains '\^'"),
    ("a:b", "contains ':'"),
    ("a*", r"contains '\*'"),
    ("a[", r"contains '\['"),
    ("a\\b", "contains"),
    ("a?", r"contains '\?'"),
    ("a@{1}", "contains '@{'"),
    ("@", "alone"),
    ("a/", "empty path component"),
    ("a//b", "empty path component"),
    ("a.", "end with '.'"),
    ("a/.b", "begins with '.'"),
    ("a.lock", ".lock"),
])
def test_invalid_refs(ref, reason):
    with pytest.raises(FlowscanError, match=f"invalid ref .*{reason}") as info:
        validate_ref(ref)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("ref", ["v6.12.8", "master", "refs/tags/v1", "feature/x-1", "a" * 40, "v1.0-rc1"])
def test_valid_refs(ref):
    assert validate_ref(ref) == ref


@pytest.mark.parametrize("url, reason", [
    ("ext::sh -c touch% /tmp/pwned", "transport 'ext::'"),
    ("fd::17", "transport 'fd::'"),
    ("foo::https://example.com/x", "transport 'foo::'"),
    ("-uploadpack=touch", "must not begin with '-'"),
    ("--upload-pack=touch x", "must not begin with '-'"),
    ("ssh://-oProxyCommand=touch%20x/repo", "must not begin with '-'"),
    ("ssh://-u@host/repo", "must not begin with '-'"),
    ("-oProxyCommand=x:repo", "must not begin with '-'"),
    ("host-@-oProxyCommand=x:repo", "must not begin with '-'"),
    ("javascript://x/y", "scheme 'javascript'"),
    ("https://host/a\nb", "control characters"),
    ("", "empty"),
])
def test_invalid_repos(url, reason):
    with pytest.raises(FlowscanError, match=f"invalid repository .*{reason}") as info:
        validate_repo(url)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("url", [
    "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git", "http://h/x.git", "git://h/x",
    "ssh://git@h:22/x.git", "git@gitlab.com:qemu-project/qemu.git", "file:///srv/git/x.git", "/srv/x",
    "../linux", "./a:b",
])
def test_valid_repos(url):
    assert validate_repo(url) == url


def test_ext_transport_never_runs(tmp_path, cache):
    flag = tmp_path / "pwned"
    with pytest.raises(FlowscanError, match="transport 'ext::'"):
        open_tree(Source("guest", f"ext::sh -c touch% {flag}", "v1"), cache)
    assert not flag.exists()
    # and git itself is fenced too, should a helper URL ever slip past validation
    proc = subprocess.run(["git", "ls-remote", f"ext::sh -c touch% {flag}"], env=gitmod.git_env(),
                          capture_output=True)
    assert proc.returncode != 0 and not flag.exists()


def no_partial_clone(cache: Path) -> bool:
    base = cache / "repos"
    return not base.exists() or not [p for p in base.iterdir() if p.is_dir()]


def test_unknown_tag(repo, cache):
    with pytest.raises(FlowscanError, match=f"^ref 'v9.9' not found in {repo}$"):
        open_tree(Source("guest", str(repo), "v9.9"), cache)
    assert no_partial_clone(cache)
    open_tree(Source("guest", str(repo), "v1"), cache).close()
    with pytest.raises(FlowscanError, match="ref 'v9.9' not found"):  # also on an existing clone
        open_tree(Source("guest", str(repo), "v9.9"), cache)


def test_not_a_repository(tmp_path, cache):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(FlowscanError, match=f"^not a git repository: {plain}$"):
        open_tree(Source("guest", str(plain), "v1"), cache)
    with pytest.raises(FlowscanError, match="no such repository"):
        open_tree(Source("guest", str(tmp_path / "missing"), "v1"), cache)
    with pytest.raises(FlowscanError, match=f"^not a git repository: file://{plain}$"):
        open_tree(Source("guest", f"file://{plain}", "v1"), cache)
    with pytest.raises(FlowscanError, match="no repository or directory"):
        open_tree(Source("guest"), cache)
    assert no_partial_clone(cache)


def test_unreachable_url_fails_fast(cache):
    with pytest.raises(FlowscanError, match="cannot reach repository http://127.0.0.1:9/x.git"):
        open_tree(Source("guest", "http://127.0.0.1:9/x.git", "v1"), cache)
    assert no_partial_clone(cache)


def test_interrupted_clone_leaves_nothing(repo, cache, monkeypatch):
    real = clones._fetch_ref

    def interrupted(gitdir, *args, **kw):
        real(gitdir, *args, **kw)  # the objects arrived, then Ctrl-C before the clone is in place
        raise KeyboardInterrupt

    monkeypatch.setattr(clones, "_fetch_ref", interrupted)
    with pytest.raises(KeyboardInterrupt):
        open_tree(Source("guest", str(repo), "v1"), cache)
    assert no_partial_clone(cache)
    assert not [p for p in (cache / "repos").iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.setattr(clones, "_fetch_ref", real)
    with open_tree(Source("guest", str(repo), "v1"), cache) as tree:
        assert tree.files() == ls_tree_c(repo, "v1")


def test_stale_temporary_clone_is_swept(repo, cache):
    target = clone_dir(cache, str(repo))
    stale = target.parent / f".tmp-{target.name}-killed"
    stale.mkdir(parents=True)
    open_tree(Source("guest", str(repo), "v1"), cache).close()
    assert not stale.exists() and target.is_dir()


def test_clone_dir_naming(cache, repo):
    url = "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"
    d = clone_dir(cache, url)
    assert d.parent == cache / "repos"
    assert d.name == f"linux-{hashlib.sha256(url.encode()).hexdigest()[:12]}.git"
    assert clone_dir(cache, url + "/") == d
    assert clone_dir(cache, str(repo)) == clone_dir(cache, str(repo / "kernel" / ".."))
    assert clone_dir(cache, "git@gitlab.com:qemu-project/qemu.git").name.startswith("qemu-")


def test_progress_goes_to_the_callback(repo, cache, capsys):
    rec = Recorder()
    with open_tree(Source("guest", str(repo), "v1"), cache, progress=rec) as tree:
        tree.files(["kernel"])
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # sources print nothing themselves
    messages = rec.texts("message")
    assert messages[0].startswith("cloning linux@v1 (shallow, blob-less) into ")
    assert messages[1] == "fetching 1 file(s) of linux@v1"
    # git's transfer progress, parsed by GitPython's RemoteProgress: the blob fetch received one object
    assert ("start", "linux@v1: receiving objects", 1) in rec.events
    assert rec.texts("warn") == []
    with open_tree(Source("guest", str(repo), "v2"), cache) as tree:  # the default reports nowhere
        tree.files()
    assert capsys.readouterr().err == ""


def test_cached_repos(repo, cache):
    open_tree(Source("guest", str(repo), "v1"), cache).close()
    open_tree(Source("guest", str(repo), "v2"), cache).close()
    [info] = clones.cached_repos(cache)
    assert info["url"] == str(repo.resolve()) and info["tags"] == ["v1", "v2"]


# ---------------------------------------------------------------------------------------------- servers

def config_of(gitdir: Path, key: str) -> str:
    return subprocess.run(["git", "config", key], cwd=gitdir, capture_output=True, text=True).stdout.strip()


def test_local_server_gives_shallow_blobless_clone(repo, cache):
    open_tree(Source("guest", str(repo), "v1"), cache).close()
    gitdir = clone_dir(cache, str(repo))
    assert config_of(gitdir, "flowscan.partial") == "true" and config_of(gitdir, "flowscan.shallow") == "true"
    assert config_of(gitdir, "remote.origin.promisor") == "true"


def test_server_refusing_the_filter_gets_a_shallow_full_snapshot(repo, cache, monkeypatch):
    monkeypatch.setattr(clones, "LOCAL_UPLOAD_PACK", "git upload-pack")  # a server without allowFilter
    with open_tree(Source("guest", str(repo), "v1"), cache) as tree:
        gitdir = clone_dir(cache, str(repo))
        assert config_of(gitdir, "flowscan.partial") == "false"
        assert config_of(gitdir, "remote.origin.promisor") == ""  # no promisor: git never lazy-fetches
        assert (gitdir / "shallow").is_file()
        assert {e.blob for e in ls_tree_c(repo, "v1")} <= present_objects(gitdir)  # all came at once
        assert tree.files() == ls_tree_c(repo, "v1")
        assert dict((e.path, d) for e, d in tree.read(tree.files()))["kernel/reboot.c"] == V1[
            "kernel/reboot.c"].encode()
    with open_tree(Source("guest", str(repo), "v2"), cache) as tree:
        assert tree.files() == ls_tree_c(repo, "v2")


@pytest.fixture
def dumb_http(tmp_path, repo):
    """A dumb HTTP server (static files): no capabilities at all, neither filter nor depth."""
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    root.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(root / "linux.git")], check=True, env=GIT_ENV)
    subprocess.run(["git", "update-server-info"], cwd=root / "linux.git", check=True, env=GIT_ENV)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/linux.git"
    finally:
        server.shutdown()
        server.server_close()


def test_dumb_http_server_gets_a_full_clone(dumb_http, repo, cache):
    with open_tree(Source("guest", dumb_http, "v2"), cache) as tree:
        assert tree.files() == ls_tree_c(repo, "v2")
        gitdir = clone_dir(cache, dumb_http)
        assert config_of(gitdir, "flowscan.partial") == "false"
        assert config_of(gitdir, "flowscan.shallow") == "false"
        assert [d for _, d in tree.read(tree.files(["kernel/reboot.c"]))] == [V2["kernel/reboot.c"].encode()]
    with open_tree(Source("guest", dumb_http, "v1"), cache) as tree:
        assert tree.files() == ls_tree_c(repo, "v1")
    with pytest.raises(FlowscanError, match="ref 'v9' not found in http://127.0.0.1"):
        open_tree(Source("guest", dumb_http, "v9"), cache)
    with pytest.raises(FlowscanError, match="cannot reach repository .*nope.git"):
        open_tree(Source("guest", dumb_http.replace("linux.git", "nope.git"), "v1"), cache)


# ---------------------------------------------------------------------------------------------- fences

def test_hostile_local_repository_config_and_hooks_never_run(repo, cache, tmp_path):
    """The user's repository is only read: its configuration and hooks run nothing, and the cache clone
    carries no hooks at all."""
    flag = tmp_path / "pwned"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {flag}\n")
    evil.chmod(0o755)
    for key in ("core.fsmonitor", "core.sshCommand", "core.gitProxy", "core.alternateRefsCommand",
                "uploadpack.packObjectsHook", "core.pager", "core.editor", "diff.external",
                "credential.helper", "filter.x.process"):
        git(repo, "config", key, str(evil))
    git(repo, "config", "core.hooksPath", str(tmp_path / "hooks"))
    (tmp_path / "hooks").mkdir()
    for hook in ("pre-upload-pack", "post-update", "reference-transaction", "post-checkout", "pre-receive",
                 "fsmonitor-watchman", "post-index-change", "pre-auto-gc"):
        for where in (tmp_path / "hooks", repo / ".git" / "hooks"):
            (where / hook).write_text(f"#!/bin/sh\ntouch {flag}\n")
            (where / hook).chmod(0o755)
    for ref in ("v1", "v2", "master"):
        with open_tree(Source("guest", str(repo), ref), cache) as tree:
            entries = tree.files(["kernel"])
            assert [e for e, _ in tree.read(entries)] == entries
            assert tree.grep(entries, ["kernel_restart"]) == {"kernel/reboot.c"}
            assert tree.read_one("README") == b"a tiny tree\n"
    assert not flag.exists()
    gitdir = clone_dir(cache, str(repo))
    assert not (gitdir / "hooks").exists() and config_of(gitdir, "core.hooksPath") == os.devnull


def test_config_of_the_current_directory_is_never_read(repo, cache, tmp_path, monkeypatch):
    """A command-running setting (core.gitProxy for git:// URLs) in a repository around the current
    directory was executed by `git ls-remote` before the repository was pinned."""
    flag = tmp_path / "pwned"
    evil = tmp_path / "evil.sh"
    evil.write_text(f"#!/bin/sh\ntouch {flag}\n")
    evil.chmod(0o755)
    around = tmp_path / "downloaded-tree"
    around.mkdir()
    git(around, "init", "-q")
    git(around, "config", "core.gitProxy", str(evil))
    git(around, "config", f"url.{repo}.insteadOf", "git://127.0.0.1:9/")
    monkeypatch.chdir(around)
    with pytest.raises(FlowscanError, match="cannot reach repository git://127.0.0.1:9/x"):
        open_tree(Source("guest", "git://127.0.0.1:9/x", "v1"), cache)
    assert not flag.exists()


def test_inherited_git_dir_and_index_are_ignored(repo, cache, tmp_path, monkeypatch):
    """Run from a git hook (GIT_DIR, GIT_INDEX_FILE, GIT_WORK_TREE set): the cache clone is still the
    repository every command works on, and the hook's repository is left alone."""
    other = make_repo(tmp_path / "other")
    refs_before = git(other, "for-each-ref")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    monkeypatch.setenv("GIT_OBJECT_DIRECTORY", str(other / ".git" / "objects"))
    with open_tree(Source("guest", str(repo), "v2"), cache) as tree:
        assert tree.files() == ls_tree_c(repo, "v2")
        assert tree.grep(tree.files(), ["do_kernel_restart"]) == {"kernel/reboot.c", "kernel/reboot_new.c"}
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    monkeypatch.delenv("GIT_INDEX_FILE")
    monkeypatch.delenv("GIT_OBJECT_DIRECTORY")
    assert git(other, "for-each-ref") == refs_before
    assert "refs/tags/v2" in git(clone_dir(cache, str(repo)), "for-each-ref")


# ---------------------------------------------------------------------------------------------- moved tags

def test_a_tag_moved_upstream_is_fetched_again(repo, cache):
    with open_tree(Source("guest", str(repo), "v1"), cache) as tree:
        old = tree.commit
        assert [e.path for e in tree.files(["kernel"])] == ["kernel/reboot.c"]
    rec = Recorder()
    with open_tree(Source("guest", str(repo), "v1"), cache, progress=rec) as tree:  # unmoved: no word
        assert tree.commit == old
    assert rec.events == []
    git(repo, "tag", "-f", "v1", "master")  # re-pointed upstream
    new = git(repo, "rev-parse", "master").strip()
    rec = Recorder()
    with open_tree(Source("guest", str(repo), "v1"), cache, progress=rec) as tree:
        assert tree.commit == new != old
        assert [e.path for e in tree.files(["kernel"])] == ["kernel/extra.c", "kernel/reboot.c",
                                                             "kernel/reboot_new.c"]
    assert rec.texts("warn") == [f"tag 'v1' moved in {repo} (it was {old[:12]}, fetched 0 seconds ago): "
                                 "fetching it again"]
    # an annotated tag made anew (a new tag object) on another commit
    git(repo, "tag", "-f", "-a", "v2", "-m", "v2 again", "v1")
    with open_tree(Source("guest", str(repo), "v2"), cache) as tree:
        assert tree.commit == new


def test_a_cached_tag_offline_says_which_commit_and_how_old(repo, cache, tmp_path):
    with open_tree(Source("guest", str(repo), "v1"), cache) as tree:
        old = tree.commit
        tree.files()
    fetched = clone_dir(cache, str(repo)) / clones.FETCHED
    data = json.loads(fetched.read_text())
    data["refs/tags/v1"] -= 3 * 86400 + 60
    fetched.write_text(json.dumps(data))
    away = tmp_path / "moved-away"
    repo.rename(away)
    repo.mkdir()
    try:
        rec = Recorder()
        with open_tree(Source("guest", str(repo), "v1"), cache, progress=rec) as tree:
            assert tree.commit == old and tree.files() == ls_tree_c(away, "v1")
        assert rec.texts("warn") == [f"not a git repository: {repo}; using the cached linux@v1 = {old[:12]} "
                                     "(fetched 3 days ago)"]
    finally:
        repo.rmdir()
        away.rename(repo)
    git(repo, "tag", "-d", "v1")  # deleted upstream: the cached one is used, and said so
    rec = Recorder()
    with open_tree(Source("guest", str(repo), "v1"), cache, progress=rec) as tree:
        assert tree.commit == old
    assert rec.texts("warn") == [f"tag 'v1' is no longer in {repo}; using the cached linux@v1 = {old[:12]} "
                                 "(fetched 3 days ago)"]


# ---------------------------------------------------------------------------------------------- odd names

ODD = {"kernel/bad\xff.c": b"int bad_ff(void) { return 0; }\n", "kernel/new\nline.c": b"int nl(void);\n",
       "kernel/esc\x1b[31m.c": b"int esc(void);\n", "doc/odd\xff.txt": b"not C\n"}


def write_odd(root: Path) -> None:
    for name, data in ODD.items():
        path = os.fsencode(root) + b"/" + name.encode("utf-8", "surrogateescape").replace(b"\xc3\xbf", b"\xff")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)


def test_odd_file_names_in_a_repository_are_skipped_with_a_warning(repo, cache):
    write_odd(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "odd names")
    git(repo, "tag", "odd")
    rec = Recorder()
    with open_tree(Source("guest", str(repo), "odd"), cache, progress=rec) as tree:
        entries = tree.files(["kernel"])
        assert [e.path for e in entries] == ["kernel/extra.c", "kernel/reboot.c", "kernel/reboot_new.c"]
        assert [e for e, _ in tree.read(entries)] == entries
        assert tree.grep(entries, ["kernel_restart", "bad_ff", "nl"]) == {"kernel/reboot.c"}
        tree.files(["kernel"])  # listed again: warned once
    assert rec.texts("warn") == [
        "linux@odd: skipped 3 C file(s) whose names are not printable UTF-8 (first: 'kernel/bad\\xff.c')"]


def test_odd_file_names_in_a_directory_are_skipped_with_a_warning(tmp_path):
    root = tmp_path / "src"
    write(root, V1)
    write_odd(root)
    rec = Recorder()
    tree = DirTree(root, rec)
    assert [e.path for e in tree.files(["kernel"])] == ["kernel/reboot.c"]
    assert [e.path for e in tree.files()] == [e for e in sorted(V1) if e.endswith((".c", ".h"))]
    assert rec.texts("warn") == [
        f"{root}: skipped 3 C file(s) whose names are not printable UTF-8 (first: 'kernel/bad\\xff.c')"]


def _cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parent.parent
    full = {**os.environ, "PYTHONPATH": str(root), **(env or {})}
    return subprocess.run([sys.executable, "-m", "flowscan", *args], env=full, cwd=cwd, capture_output=True,
                          timeout=120)


def test_odd_names_on_the_command_line_answer_without_a_traceback(repo, tmp_path):
    write_odd(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "odd names")
    git(repo, "tag", "odd")
    weird_dir = os.fsencode(tmp_path) + b"/dir\xff"
    os.makedirs(weird_dir + b"/kernel")
    with open(weird_dir + b"/kernel/reboot.c", "wb") as fh:
        fh.write(V1["kernel/reboot.c"].encode())
    with open(weird_dir + b"/kernel/bad\xff.c", "wb") as fh:
        fh.write(b"int x;\n")
    for n, where in enumerate((["--repo", str(repo), "--ref", "odd"], ["--src", str(repo)],
                               ["--src", os.fsdecode(weird_dir)])):
        for extra in ([], ["--whole"], ["--whole"]):  # cold from the files that matter, then indexed, then warm
            proc = _cli("--cache-dir", str(tmp_path / f"cache{n}"), "callees", "kernel_restart", *where, *extra)
            err = proc.stderr.decode("utf-8", "replace")
            assert proc.returncode == 0 and "Traceback" not in err, err
            assert proc.stdout.decode().startswith("kernel/reboot.c:1: kernel_restart -> ")
            if extra == [] or where[0] == "--src":  # a warm git index takes no listing, so no word
                assert "skipped" in err and "(first: 'kernel/bad\\xff.c')" in err, err


# ---------------------------------------------------------------------------------------------- stalls

class Staller:
    """A loopback TCP server that accepts and never answers; it stops by itself after `life` seconds."""

    def __init__(self, life: float = 60):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.closed = 0  # connections the client side closed (git and its helpers gone)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(life,), daemon=True)
        self._thread.start()

    def _serve(self, life: float) -> None:
        import select
        import time

        deadline = time.monotonic() + life
        socks = [self.sock]
        while not self._stop.is_set() and time.monotonic() < deadline:
            ready, _, _ = select.select(socks, [], [], 0.1)
            for s in ready:
                if s is self.sock:
                    conn, _ = s.accept()
                    socks.append(conn)
                    self.accepted += 1
                elif not s.recv(65536):  # read the request, answer nothing; b"": the client hung up
                    socks.remove(s)
                    s.close()
                    self.closed += 1
        for s in socks:
            s.close()

    def all_closed(self, wait: float = 10) -> bool:
        import time

        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.accepted and self.closed == self.accepted:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def staller():
    s = Staller()
    yield s
    s.stop()


@pytest.mark.parametrize("scheme", ["git", "http"])
def test_a_server_that_never_answers_gives_up_with_one_line(staller, tmp_path, scheme):
    url = f"{scheme}://127.0.0.1:{staller.port}/linux.git"
    proc = _cli("--cache-dir", str(tmp_path / "cache"), "callees", "x", "--repo", url, "--ref", "v1",
                env={"FLOWSCAN_NETWORK_TIMEOUT": "1"})
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "Traceback" not in err, err
    [line] = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith(f"flowscan: error: cannot reach repository {url}: ")
    if scheme == "git":  # no timeout of git's own: the watchdog's words
        assert line.endswith("no answer for 1 s (network_timeout in flowscan.toml, or FLOWSCAN_NETWORK_TIMEOUT)")
    assert staller.accepted >= 1 and staller.all_closed()  # git and its helpers are gone
    assert not (tmp_path / "cache" / "repos").exists() or not list((tmp_path / "cache" / "repos").glob("*.git"))


def test_a_fetch_that_stalls_is_stopped_and_the_clone_stays_usable(repo, cache, staller):
    with open_tree(Source("guest", str(repo), "v1"), cache) as tree:
        tree.files(["kernel"])  # only kernel/ blobs are here
    gitdir = clone_dir(cache, str(repo))
    git(gitdir, "config", "remote.origin.url", f"git://127.0.0.1:{staller.port}/linux.git")
    git(gitdir, "config", "--unset", "remote.origin.uploadpack")
    tree = GitTree(gitmod.repo_at(gitdir), git(repo, "rev-parse", "v1").strip(), "linux@v1",
                   gitdir.with_suffix(".lock"), timeout=1)
    try:
        with pytest.raises(FlowscanError, match=r"^cannot fetch files of linux@v1: no answer for 1 s "):
            tree.files(["arch"])
        assert staller.all_closed()
        assert [e.path for e in tree.files(["kernel"])] == ["kernel/reboot.c"]  # what is here still reads
    finally:
        tree.close()


def test_network_timeout_settings(tmp_path, monkeypatch):
    monkeypatch.delenv("FLOWSCAN_NETWORK_TIMEOUT", raising=False)
    assert gitmod.network_timeout() == 60 and gitmod.network_timeout(5) == 5
    monkeypatch.setenv("FLOWSCAN_NETWORK_TIMEOUT", "2.5")
    assert gitmod.network_timeout(5) == 2.5  # the environment overrides flowscan.toml
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv("FLOWSCAN_NETWORK_TIMEOUT", bad)
        with pytest.raises(FlowscanError, match="FLOWSCAN_NETWORK_TIMEOUT=.*: must be a number of seconds"):
            gitmod.network_timeout()
    monkeypatch.delenv("FLOWSCAN_NETWORK_TIMEOUT")
    cfg = tmp_path / "flowscan.toml"
    cfg.write_text("network_timeout = 7\n")
    assert load_config(cfg).network_timeout == 7.0
    for bad in ('"7"', "0", "true", "-3"):
        cfg.write_text(f"network_timeout = {bad}\n")
        with pytest.raises(FlowscanError, match="network_timeout: must be a number of seconds above 0"):
            load_config(cfg)


def test_ctrl_c_during_a_stalled_transfer_stops_git_and_its_helpers(staller, tmp_path):
    import signal
    import time

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "flowscan", "--cache-dir", str(tmp_path / "cache"), "callees",
                             "x", "--repo", f"http://127.0.0.1:{staller.port}/linux.git", "--ref", "v1"],
                            env={**os.environ, "PYTHONPATH": str(root), "FLOWSCAN_NETWORK_TIMEOUT": "120"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not staller.accepted and time.monotonic() < deadline:  # git-remote-http is connected
            time.sleep(0.05)
        assert staller.accepted
        proc.send_signal(signal.SIGINT)  # to flowscan alone: git runs in its own process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "Traceback" not in err.decode(), err
    assert staller.all_closed()  # the helper holding the connection is gone too
