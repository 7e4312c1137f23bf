"""The real trees and the file sets measured on them.

A file set is the regular (non-symlink) .c and .h files of one tag under some paths, as
``git ls-tree -r`` lists them; it is written as a list of relative paths and extracted once into a
plain directory (``git archive TAG -- PATHS | tar -x``) where raw parsing, ctags and cscope read it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GET_REAL_TREES = REPO_ROOT.parent / "shared" / "realtrees" / "get-real-trees"
DEFAULT_TREES = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "flowscan-realtrees" / "git"
C_SUFFIXES = (".c", ".h")
MAX_FILE_SIZE = 4 * 1024 * 1024  # flowscan.sources.MAX_FILE_SIZE: larger files are listed but skipped


@dataclass(frozen=True)
class Project:
    name: str  # linux | qemu
    title: str
    tag: str  # the main tag
    second: str  # the "second tag", scanned after `tag` with the same cache
    reboot_scope: tuple[str, ...]  # candidates; those present in a tag are used
    function: str  # the NAME given to defs/callers/callees
    path: tuple[str, str]  # the FROM and TO given to `path`


PROJECTS = {
    "linux": Project("linux", "Linux", "v6.12.8", "v6.1.176", ("arch/arm64", "kernel", "virt", "drivers/firmware"),
                     "kernel_restart", ("handle_trap_exceptions", "handle_hvc")),
    "qemu": Project("qemu", "QEMU", "v10.0.13", "v7.2.0",
                    ("accel", "system", "softmmu", "hw/core", "hw/intc", "target/arm", "util", "include/hw"),
                    "qemu_system_reset_request", ("qemu_system_reset", "resettable_reset")),
}


@dataclass
class FileSet:
    repo: Path
    tag: str
    scope: tuple[str, ...]  # () = whole tree
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (path, blob, size), sorted

    @property
    def bytes(self) -> int:
        return sum(s for _, _, s in self.files)

    def small(self) -> list[tuple[str, str, int]]:
        return [f for f in self.files if f[2] <= MAX_FILE_SIZE]

    def large(self) -> list[tuple[str, str, int]]:
        return [f for f in self.files if f[2] > MAX_FILE_SIZE]


def git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], input=input, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, check=True).stdout


def has_tag(repo: Path, tag: str) -> bool:
    if not (repo / ".git").exists() and not (repo / "HEAD").exists():
        return False
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "-q", "--verify", f"refs/tags/{tag}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def ensure_trees(dest: Path, wanted: list[tuple[str, str]], log) -> None:
    """Build the missing releases with ../shared/realtrees/get-real-trees DEST project:tag ..."""
    missing = [f"{p}:{t}" for p, t in wanted if not has_tag(dest / p, t)]
    if not missing:
        return
    if not GET_REAL_TREES.is_file():
        raise SystemExit(f"missing real trees ({', '.join(missing)}) and no {GET_REAL_TREES} to build them")
    log(f"building real trees: {' '.join(missing)} (downloads on first use)")
    subprocess.run([str(GET_REAL_TREES), str(dest), *missing], check=True)


def present_scope(repo: Path, tag: str, candidates: tuple[str, ...]) -> tuple[str, ...]:
    """The candidate paths that exist in tag (softmmu/ became system/)."""
    out = git(repo, "ls-tree", "--name-only", "-z", tag, "--", *candidates)
    have = {p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p}
    return tuple(c for c in candidates if c in have)


def file_set(repo: Path, tag: str, scope: tuple[str, ...]) -> FileSet:
    args = ["ls-tree", "-r", "-l", "-z", "--full-tree", tag]
    if scope:
        args += ["--", *scope]
    fs = FileSet(repo, tag, scope)
    for rec in git(repo, *args).split(b"\0"):
        if not rec:
            continue
        meta, _, path = rec.partition(b"\t")
        mode, kind, oid, size = meta.decode("ascii").split()
        name = path.decode("utf-8", "surrogateescape")
        if kind == "blob" and mode in ("100644", "100755") and name.endswith(C_SUFFIXES):
            fs.files.append((name, oid, int(size)))
    fs.files.sort()
    return fs


def extract(fs: FileSet, dest: Path) -> Path:
    """git archive TAG -- SCOPE | tar -x -C dest (the whole tree when the scope is empty)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(fs.repo), "archive", "--format=tar", fs.tag, "--", *fs.scope],
                               stdout=subprocess.PIPE)
    tar = subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout)
    archive.stdout.close()
    if archive.wait() != 0 or tar.returncode != 0:
        raise SystemExit(f"cannot extract {fs.tag} of {fs.repo}")
    return dest


def write_blobs(repo: Path, files: list[tuple[str, str, int]], dest: Path) -> Path:
    """Write the given blobs at their paths under dest (git cat-file --batch)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if not files:
        return dest
    proc = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    import threading

    def feed() -> None:
        for _, oid, _ in files:
            proc.stdin.write(oid.encode() + b"\n")
        proc.stdin.close()

    threading.Thread(target=feed, daemon=True).start()
    for path, oid, _ in files:
        header = proc.stdout.readline().split()
        size = int(header[2])
        data = proc.stdout.read(size)
        proc.stdout.read(1)
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    proc.wait()
    return dest


def write_list(paths: list[str], dest: Path) -> Path:
    dest.write_text("".join(p + "\n" for p in paths), encoding="utf-8", errors="surrogateescape")
    return dest


def warm_page_cache(root: Path, paths: list[str]) -> None:
    """Read every file once so that every tool meets a warm page cache."""
    for p in paths:
        try:
            with open(root / p, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        except OSError:
            pass
