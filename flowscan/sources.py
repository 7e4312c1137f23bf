"""Source trees: a role + a git repository at a ref (or a plain directory), listed and read by blob id.

Git sources are always fetched into flowscan's cache (``cache_dir/repos/<slug>-<hash>.git``), whether the
user named a URL or a local repository, so that a local path behaves exactly like its upstream remote
(and the user's repository is only ever read). The clone is bare, shallow (``--depth 1``: one commit per
ref) and partial (``--filter=blob:none``): a ref costs its commit and trees; the blobs of the .c/.h files
in scope are fetched afterwards in ONE request (``git fetch --stdin`` with their ids, the request git's
own lazy fetch makes, but in bulk). What the server can do is read from the packet trace of the
``ls-remote`` that resolves the ref: no filter -> a shallow full snapshot, no depth either (dumb HTTP) ->
a full clone; a promisor clone is never made against a server that cannot serve one. Local servers are
told to allow the filter through ``remote.origin.uploadpack``. A second ref on an existing clone is
fetched into it; a tag or commit already there is used without touching the network.

Listing uses ``git ls-tree -r`` (never ``-l``: in a partial clone that fetches every blob one by one to
learn its size; sizes come from ``cat-file --batch-check`` once the blobs are here). Reading goes through
one long-lived ``git cat-file --batch`` process; no worktree is ever checked out.

Refs and URLs from users are validated before they reach git, and every git call runs with
``GIT_ALLOW_PROTOCOL`` restricted to file/git/http(s)/ssh as a second fence.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import click

from flowscan.errors import FlowscanError

ROLES = ("guest", "host", "vmm")
DEFAULT_REPOS = {
    "guest": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
    "host": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
    "vmm": "https://gitlab.com/qemu-project/qemu.git",
}
C_SUFFIXES = (".c", ".h")
MAX_FILE_SIZE = 4 * 1024 * 1024  # larger files are listed; the scanner skips them

# What a local "server" (git upload-pack run on a repository on this machine) is told to allow: the blob
# filter and fetching blobs by id. A real remote decides this for itself; git strips GIT_CONFIG_* from the
# environment of local transports, so this goes into remote.origin.uploadpack of the cache clone.
_LOCAL_UPLOAD_PACK = ("git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true "
                      "-c pack.window=0 upload-pack")
_ALLOWED_SCHEMES = ("https", "http", "git", "ssh", "git+ssh", "ssh+git", "file")
_HEX = re.compile(r"[0-9a-f]{4,64}")
_FULL_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


# ----------------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Source:
    role: str  # guest | host | vmm | "" (ad-hoc queries)
    repo: str = ""  # git URL or local path (checkout or bare repo)
    ref: str = ""  # tag, branch or commit ('' = the remote's HEAD)
    src: str = ""  # a plain directory on disk (no git needed); exclusive with repo/ref


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the tree root, posix
    blob: str  # git blob id (sha1 hex); for plain dirs computed like `git hash-object`
    size: int


# ------------------------------------------------------------------------------------------ validation

def _show(text: str) -> str:
    """Text safe to print on one line (control characters escaped)."""
    return text.encode("unicode_escape").decode("ascii")


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def validate_ref(ref: str) -> str:
    """Return ``ref`` if it is a safe git ref name (git check-ref-format rules plus no leading '-')."""
    def bad(reason: str) -> FlowscanError:
        return FlowscanError(f"invalid ref '{_show(ref)}': {reason}")

    if not isinstance(ref, str) or not ref:
        raise FlowscanError("invalid ref '': empty")
    if len(ref) > 255:
        raise bad("too long")
    if ref.startswith("-"):
        raise bad("must not begin with '-'")
    if _has_control(ref):
        raise bad("contains control characters")
    if " " in ref:
        raise bad("contains a space")
    for ch in "~^:?*[\\":
        if ch in ref:
            raise bad(f"contains '{ch}'")
    if ".." in ref:
        raise bad("contains '..'")
    if "@{" in ref:
        raise bad("contains '@{'")
    if ref == "@":
        raise bad("'@' alone is not a ref")
    if ref.startswith("/") or ref.endswith("/") or "//" in ref:
        raise bad("empty path component")
    if ref.endswith("."):
        raise bad("must not end with '.'")
    for part in ref.split("/"):
        if part.startswith("."):
            raise bad("a component begins with '.'")
        if part.endswith(".lock"):
            raise bad("a component ends with '.lock'")
    return ref


def _is_url(repo: str) -> bool:
    return "://" in repo


def _is_scp_like(repo: str) -> bool:
    """git's rule: 'host:path' / 'user@host:path' when a ':' comes before any '/'."""
    if _is_url(repo) or ":" not in repo:
        return False
    colon = repo.index(":")
    slash = repo.find("/")
    return slash == -1 or colon < slash


def is_local_path(repo: str) -> bool:
    return not _is_url(repo) and not _is_scp_like(repo)


def _local_transport(repo: str) -> bool:
    """git runs upload-pack on this machine for local paths and file:// URLs."""
    return is_local_path(repo) or repo.lower().startswith("file://")


def validate_repo(url_or_path: str) -> str:
    """Return the URL/path if git may be pointed at it; refuse transports that run commands."""
    repo = url_or_path

    def bad(reason: str) -> FlowscanError:
        return FlowscanError(f"invalid repository '{_show(repo)}': {reason}")

    if not isinstance(repo, str) or not repo.strip():
        raise FlowscanError("invalid repository '': empty")
    if _has_control(repo):
        raise bad("contains control characters")
    if repo.startswith("-"):
        raise bad("must not begin with '-'")
    helper = re.match(r"([A-Za-z0-9][A-Za-z0-9+.-]*)::", repo)
    if helper:
        raise bad(f"transport '{helper.group(1)}::' is not allowed (only https, http, git, ssh, file "
                  "URLs, user@host:path and local paths)")
    if _is_url(repo):
        scheme, rest = repo.split("://", 1)
        if scheme.lower() not in _ALLOWED_SCHEMES:
            raise bad(f"scheme '{scheme}' is not allowed (only {', '.join(_ALLOWED_SCHEMES)})")
        host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
        user = rest.split("/", 1)[0].rsplit("@", 1)[0] if "@" in rest.split("/", 1)[0] else ""
        if host.startswith("-") or user.startswith("-"):
            raise bad("host or user must not begin with '-'")
        if scheme.lower() != "file" and not host:
            raise bad("no host")
    elif _is_scp_like(repo):
        hostpart = repo.split(":", 1)[0]
        user, _, host = hostpart.rpartition("@")
        if not host or host.startswith("-") or user.startswith("-"):
            raise bad("host or user must not begin with '-'")
    return repo


# ------------------------------------------------------------------------------------------ git plumbing

def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "GIT_TERMINAL_PROMPT": "0",  # an unreachable https URL must fail, not ask for a password
        "GIT_ALLOW_PROTOCOL": "file:git:http:https:ssh",  # never ext::, fd:: or other helpers
        "LC_ALL": "C",  # stable messages to classify
        "LANGUAGE": "C",
    })
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE"):
        env.pop(key, None)
    return env


def _last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(("fatal:", "error:")):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else "git failed"


class _GitFailed(Exception):
    def __init__(self, args: Sequence[str], code: int, stderr: str):
        super().__init__(f"git {' '.join(args)}: exit {code}: {_last_error_line(stderr)}")
        self.code = code
        self.stderr = stderr
        self.message = _last_error_line(stderr)


def _git(args: Sequence[str], cwd: Path | None = None, input: bytes | None = None,
         show_progress: bool = False, trace: bool = False):
    """Run git, return stdout. With show_progress, git's stderr is copied to ours as it comes.
    With trace, return (stdout, stderr text) of a run with GIT_TRACE_PACKET on."""
    cmd = ["git", *args]
    try:
        if not show_progress:
            env = _git_env()
            if trace:
                env["GIT_TRACE_PACKET"] = "1"
            proc = subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, env=env)
            if proc.returncode:
                raise _GitFailed(args, proc.returncode, proc.stderr.decode("utf-8", "replace"))
            if trace:
                return proc.stdout, proc.stderr.decode("utf-8", "replace")
            return proc.stdout
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as inp:
            if input is not None:
                inp.write(input)
                inp.seek(0)
            proc = subprocess.Popen(cmd, cwd=cwd, stdin=inp, stdout=out, stderr=subprocess.PIPE,
                                    env=_git_env())
            err = bytearray()
            try:
                while chunk := os.read(proc.stderr.fileno(), 65536):
                    err += chunk
                    sys.stderr.write(chunk.decode("utf-8", "replace"))
                    sys.stderr.flush()
                code = proc.wait()
            finally:
                if proc.poll() is None:  # interrupted: do not leave git running
                    proc.kill()
                    proc.wait()
                proc.stderr.close()
            if code:
                raise _GitFailed(args, code, err.decode("utf-8", "replace"))
            out.seek(0)
            return out.read()
    except FileNotFoundError as exc:
        raise FlowscanError("git is not installed (no 'git' on PATH)") from exc


def _say(progress: bool, message: str) -> None:
    if progress:
        click.echo(f"flowscan: {message}", err=True)


# ------------------------------------------------------------------------------------------ scopes

def _norm_scope(scope: str, root: Path | None = None) -> str:
    """A scope relative to the tree root, posix, without '.' parts; '' is the whole tree."""
    raw = scope
    if not isinstance(scope, str) or not scope.strip() or _has_control(scope) or "\n" in scope:
        raise FlowscanError(f"invalid scope '{_show(str(raw))}'")
    scope = scope.strip()
    if scope.startswith("/"):
        if root is not None:
            rel = os.path.relpath(os.path.normpath(scope), os.path.realpath(root))
            if rel == ".." or rel.startswith("../"):
                raise FlowscanError(f"scope '{_show(raw)}' points outside the tree {root}")
            scope = rel
        else:
            raise FlowscanError(f"scope '{_show(raw)}' is absolute; scopes are relative to the tree root")
    parts = [p for p in scope.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FlowscanError(f"scope '{_show(raw)}' points outside the tree ('..')")
    return "/".join(parts)


def _is_glob(scope: str) -> bool:
    return any(c in scope for c in "*?[")


def _scope_matches(path: str, scope: str) -> bool:
    if scope == "":
        return True
    if not _is_glob(scope):
        return path == scope or path.startswith(scope + "/")
    if fnmatch.fnmatchcase(path, scope):
        return True
    pos = path.find("/")
    while pos != -1:  # a directory that matches the glob takes everything under it
        if fnmatch.fnmatchcase(path[:pos], scope):
            return True
        pos = path.find("/", pos + 1)
    return False


def _select(paths: Iterable[str], scopes: Sequence[str], label: str, strict: bool = True) -> set[str]:
    """Paths in any scope. strict: FlowscanError naming a scope that matches nothing; otherwise such
    scopes are skipped (flow specs name directories of several releases) unless none matches at all."""
    paths = list(paths)
    if not scopes or "" in scopes:
        return set(paths)
    chosen: set[str] = set()
    for scope in scopes:
        if _is_glob(scope):
            hit = [p for p in paths if _scope_matches(p, scope)]
        else:
            prefix = scope + "/"
            hit = [p for p in paths if p == scope or p.startswith(prefix)]
        if not hit and strict:
            raise FlowscanError(f"scope '{scope}' matches nothing in {label}")
        chosen.update(hit)
    if not chosen:
        raise FlowscanError(f"none of the scopes {', '.join(scopes)} matches anything in {label}")
    return chosen


def _pathspec_of(scope: str) -> str:
    """The literal directory part of a scope, so git can limit the listing even for globs."""
    if not _is_glob(scope):
        return scope
    head = []
    for part in scope.split("/"):
        if _is_glob(part):
            break
        head.append(part)
    return "/".join(head)


def _is_c(path: str) -> bool:
    return path.endswith(C_SUFFIXES)


# ------------------------------------------------------------------------------------------ trees

GREP_PATHS = 3000  # paths per `git grep` run (argument lists stay far below the system's limit)
GREP_WORDS = 300  # words per pattern


def _alternation(words: Iterable[str]) -> bytes:
    return b"|".join(re.escape(w.encode()) for w in sorted(set(words)))


def _line_test(words: Iterable[str], members: Iterable[str], defs: Iterable[str]):
    """Does a line (or a whole file: the pattern is multi-line) spell a word, access a member, or spell a
    defined name in a definition-like line?"""
    alts = []
    if words:
        alts.append(rb"(?<!\w)(?:" + _alternation(words) + rb")(?!\w)")
    if members:
        alts.append(rb"(?:\.|->)\s*(?:" + _alternation(members) + rb")(?!\w)")
    if defs:
        alts.append(rb"^(?=[^\s#])(?![^\n]*;[ \t\r]*$)[^\n]*?(?<!\w)(?:" + _alternation(defs) + rb")(?!\w)")
    pattern = re.compile(b"|".join(alts), re.MULTILINE) if alts else None
    return lambda line: pattern is not None and pattern.search(line) is not None


class Tree:
    """An opened source, ready to list and read."""

    label: str = ""
    commit: str = ""

    def files(self, scopes: Sequence[str] = (), strict: bool = True) -> list[FileEntry]:
        raise NotImplementedError

    def snapshot(self, scopes: Sequence[str] = ()) -> str:
        """What fixes the contents of these scopes without listing them ('' when only a listing can tell)."""
        return ""

    def grep(self, entries: Sequence[FileEntry], words: Iterable[str] = (), members: Iterable[str] = (),
             defs: Iterable[str] = ()) -> set[str]:
        """The paths among `entries` that spell one of `words` as a whole word, access one of `members`
        (`.m`, `->m`), or have one of `defs` on a line that could open a definition: it starts in column 0
        with neither blank nor `#` (a definition's return type or name stands there: `int\nfoo(void)`,
        `SYSCALL_DEFINE1(foo, ...)`; calls are indented) and does not end with `;` (a prototype, or
        `EXPORT_SYMBOL(foo);`)."""
        if not (words or members or defs):
            return set()
        test = _line_test(words, members, defs)
        return {e.path for e, data in self.read(entries) if test(data)}

    def read(self, entries: Iterable[FileEntry]) -> Iterator[tuple[FileEntry, bytes]]:
        raise NotImplementedError

    def read_one(self, path: str) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Tree":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


def git_blob_id(data: bytes) -> str:
    """The id `git hash-object` gives these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class DirTree(Tree):
    """A plain directory: walked (no symlinks, no .git), blob ids computed like git does."""

    def __init__(self, root: Path):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FlowscanError(f"no such directory: {root}")
        self.root = root.resolve()
        self.label = str(root)
        self.commit = ""
        self._ids: dict[str, tuple[tuple[int, int, int], str]] = {}  # path -> (stat key, blob id)

    def _walk(self) -> list[str]:
        out: list[str] = []
        stack = [("", str(self.root))]
        while stack:
            rel, path = stack.pop()
            try:
                with os.scandir(path) as it:
                    for ent in it:
                        if ent.is_symlink():  # git stores links, not what they point to
                            continue
                        name = f"{rel}/{ent.name}" if rel else ent.name
                        if ent.is_dir(follow_symlinks=False):
                            if ent.name != ".git":
                                stack.append((name, ent.path))
                        elif ent.is_file(follow_symlinks=False):
                            out.append(name)
            except OSError:
                continue
        return out

    def files(self, scopes: Sequence[str] = (), strict: bool = True) -> list[FileEntry]:
        norm = [_norm_scope(s, self.root) for s in scopes]
        chosen = _select(self._walk(), norm, self.label, strict)
        entries = []
        for path in sorted(p for p in chosen if _is_c(p)):
            full = self.root / path
            st = full.stat()
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            known = self._ids.get(path)
            if known is None or known[0] != key:  # hash once per file version, not per listing
                known = (key, git_blob_id(full.read_bytes()))
                self._ids[path] = known
            entries.append(FileEntry(path, known[1], st.st_size))
        return entries

    def _resolve(self, path: str) -> Path:
        rel = _norm_scope(path, self.root)
        full = (self.root / rel).resolve()
        if full != self.root and self.root not in full.parents:
            raise FlowscanError(f"'{_show(path)}' points outside the tree {self.label}")
        return full

    def read(self, entries: Iterable[FileEntry]) -> Iterator[tuple[FileEntry, bytes]]:
        for entry in entries:
            data = self._resolve(entry.path).read_bytes()
            blob = git_blob_id(data)
            if blob != entry.blob:  # edited since listing: report what was actually read
                entry = replace(entry, blob=blob, size=len(data))
            yield entry, data

    def read_one(self, path: str) -> bytes:
        full = self._resolve(path)
        if not full.is_file():
            raise FlowscanError(f"no file '{_show(path)}' in {self.label}")
        return full.read_bytes()


class _CatFile:
    """One long-lived `git cat-file --batch`, pipelined in chunks small enough never to fill a pipe."""

    CHUNK = 256  # requests of <= 100 bytes: well under the 64 KiB pipe buffer

    def __init__(self, gitdir: Path):
        self._err = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=gitdir,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._err, env=_git_env())
        except FileNotFoundError as exc:
            raise FlowscanError("git is not installed (no 'git' on PATH)") from exc
        self._finalizer = weakref.finalize(self, _CatFile._stop, self.proc, self._err)

    @staticmethod
    def _stop(proc: subprocess.Popen, err) -> None:
        try:
            if proc.stdin and not proc.stdin.closed:
                proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout:
                proc.stdout.close()
            err.close()

    def close(self) -> None:
        self._finalizer()

    def _response(self) -> tuple[str, str, bytes | None]:
        header = self.proc.stdout.readline()
        if not header:
            self._err.seek(0)
            raise FlowscanError(f"git cat-file stopped: "
                                f"{_last_error_line(self._err.read().decode('utf-8', 'replace'))}")
        parts = header.decode("utf-8", "surrogateescape").rstrip("\n").split(" ")
        if len(parts) == 3 and parts[2].isdigit():
            size = int(parts[2])
            data = self.proc.stdout.read(size + 1)
            return parts[0], parts[1], data[:size]
        return parts[0], "missing", None

    def stream(self, requests: list[str]) -> Iterator[tuple[str, str, bytes | None]]:
        """Yield (name, type, data) for each request ('<oid>' or '<commit>:<path>'), in order."""
        for start in range(0, len(requests), self.CHUNK):
            chunk = requests[start:start + self.CHUNK]
            self.proc.stdin.write("".join(r + "\n" for r in chunk).encode("utf-8", "surrogateescape"))
            self.proc.stdin.flush()
            pending = len(chunk)
            try:
                for _ in chunk:
                    item = self._response()
                    pending -= 1
                    yield item
            finally:
                for _ in range(pending):  # consumer stopped early: keep the protocol in step
                    self._response()


class GitTree(Tree):
    """A commit in a cache clone."""

    def __init__(self, gitdir: Path, commit: str, label: str, lock_path: Path, progress: bool):
        self.gitdir = gitdir
        self.commit = commit
        self.label = label
        self._lock_path = lock_path
        self._progress = progress
        self._cat: _CatFile | None = None
        self._known: dict[str, int] = {}  # blob id -> size of blobs known to be in the clone

    def _catfile(self) -> _CatFile:
        if self._cat is None:
            self._cat = _CatFile(self.gitdir)
        return self._cat

    def _ls_tree(self, scopes: Sequence[str]) -> list[tuple[str, str]]:
        args = ["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", self.commit]
        specs = sorted({_pathspec_of(s) for s in scopes})
        if scopes and "" not in specs:
            args += ["--", *specs]
        out = _git(args, cwd=self.gitdir)
        rows = []
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, _, path = rec.partition(b"\t")
            mode, kind, oid = meta.decode("ascii").split(" ")
            if kind == "blob" and mode in ("100644", "100755"):  # no symlinks, no submodules
                rows.append((path.decode("utf-8", "surrogateescape"), oid))
        return rows

    def _present(self) -> dict[str, int]:
        """Blob id -> size of every blob already in the clone (no lazy fetch)."""
        out = _git(["cat-file", "--batch-all-objects", "--unordered",
                    "--batch-check=%(objectname) %(objecttype) %(objectsize)"], cwd=self.gitdir)
        sizes = {}
        for line in out.decode("ascii").splitlines():
            oid, kind, size = line.split(" ")
            if kind == "blob":
                sizes[oid] = int(size)
        return sizes

    def _sizes(self, oids: Sequence[str]) -> dict[str, int]:
        out = _git(["cat-file", "--batch-check=%(objectname) %(objectsize)"], cwd=self.gitdir,
                   input="".join(o + "\n" for o in oids).encode())
        sizes = {}
        for line in out.decode("ascii").splitlines():
            parts = line.split(" ")
            if len(parts) == 2 and parts[1].isdigit():
                sizes[parts[0]] = int(parts[1])
        return sizes

    def ensure_blobs(self, oids: Iterable[str]) -> dict[str, int]:
        """Fetch, in one request, the wanted blobs a partial clone lacks; return their sizes."""
        wanted = sorted(set(oids))
        if all(o in self._known for o in wanted):
            return {o: self._known[o] for o in wanted}
        sizes = self._present()
        missing = [o for o in wanted if o not in sizes]
        if missing and _config_bool(self.gitdir, "flowscan.partial"):
            with _locked(self._lock_path):
                sizes = self._present()  # another process may have fetched them meanwhile
                missing = [o for o in wanted if o not in sizes]
                if missing:
                    _say(self._progress, f"fetching {len(missing)} file(s) of {self.label}")
                    try:
                        _git(["-c", "fetch.negotiationAlgorithm=noop", "fetch", "origin", "--no-tags",
                              "--no-write-fetch-head", "--recurse-submodules=no", "--filter=blob:none",
                              "--stdin", *_progress_flag(self._progress)], cwd=self.gitdir,
                             input="".join(o + "\n" for o in missing).encode(),
                             show_progress=_tty_progress(self._progress))
                    except _GitFailed as exc:
                        raise FlowscanError(f"cannot fetch files of {self.label}: {exc.message}") from None
            sizes.update(self._sizes(missing))
        lost = [o for o in wanted if o not in sizes]
        if lost:
            raise FlowscanError(f"{len(lost)} blobs of {self.label} could not be fetched (first: {lost[0]})")
        got = {o: sizes[o] for o in wanted}
        self._known.update(got)
        return got

    def grep(self, entries: Sequence[FileEntry], words: Iterable[str] = (), members: Iterable[str] = (),
             defs: Iterable[str] = ()) -> set[str]:
        """`git grep` over the commit, no checkout (see Tree.grep)."""
        words, members, defs = sorted(set(words)), sorted(m for m in set(members) if m.isidentifier()), sorted(set(defs))
        if not entries or not (words or members or defs):
            return set()
        # The files are named one by one: a directory would also hold files whose blobs this partial
        # clone lacks, and git would fetch those one request each.
        self.ensure_blobs(e.blob for e in entries)
        # One pass over the blobs for every word as a whole word; which kind of match each line is
        # (word, member access, definition line) is decided here. One extended pattern per few hundred
        # words: git tests each -e pattern separately on every line, so 140 fixed strings cost 2.5x one
        # alternation of them.
        test = _line_test(words, members, defs)
        allw = sorted({*words, *members, *defs})
        pats = [a for i in range(0, len(allw), GREP_WORDS)
                for a in ("-e", "(" + "|".join(re.sub(r"([][.*+?{}()|^$\\])", r"\\\1", w)
                                                for w in allw[i:i + GREP_WORDS]) + ")")]
        return {p for p, text in self._grep(["-w", "-E", *pats], entries) if test(text)}

    def _grep(self, pattern: list[str], entries: Sequence[FileEntry]) -> Iterator[tuple[str, bytes]]:
        """(path, matching line) pairs."""
        args = ["--literal-pathspecs", "grep", "-z", "-I", "--no-color", *pattern]
        prefix = (self.commit + ":").encode()
        paths = [e.path for e in entries]
        for i in range(0, len(paths), GREP_PATHS):
            try:
                out = _git([*args, self.commit, "--", *paths[i:i + GREP_PATHS]], cwd=self.gitdir)
            except _GitFailed as exc:
                if exc.code == 1:  # nothing matched
                    continue
                raise FlowscanError(f"cannot search {self.label}: {exc.message}") from None
            for line in out.split(b"\n"):
                name, _, text = line.partition(b"\0")
                if not name:
                    continue
                if name.startswith(prefix):
                    name = name[len(prefix):]
                yield name.decode("utf-8", "surrogateescape"), text

    def snapshot(self, scopes: Sequence[str] = ()) -> str:
        return "git " + self.commit + "\0" + "\0".join(sorted({_norm_scope(s) for s in scopes}))

    def files(self, scopes: Sequence[str] = (), strict: bool = True) -> list[FileEntry]:
        norm = [_norm_scope(s) for s in scopes]
        rows = self._ls_tree(norm)
        chosen = _select((p for p, _ in rows), norm, self.label, strict)
        picked = sorted((p, o) for p, o in rows if p in chosen and _is_c(p))
        sizes = self.ensure_blobs(o for _, o in picked)
        return [FileEntry(p, o, sizes[o]) for p, o in picked]

    def read(self, entries: Iterable[FileEntry]) -> Iterator[tuple[FileEntry, bytes]]:
        entries = list(entries)
        if not entries:
            return
        self.ensure_blobs(e.blob for e in entries)
        stream = self._catfile().stream([e.blob for e in entries])
        try:
            for entry, (name, kind, data) in zip(entries, stream):
                if data is None or kind != "blob":
                    raise FlowscanError(f"blob {name} of {entry.path} is missing from {self.label}")
                yield entry, data
        finally:
            stream.close()

    def read_one(self, path: str) -> bytes:
        rel = _norm_scope(path)
        if not rel or "\n" in rel:
            raise FlowscanError(f"no file '{_show(path)}' in {self.label}")
        for _name, kind, data in self._catfile().stream([f"{self.commit}:{rel}"]):
            if data is None or kind != "blob":
                raise FlowscanError(f"no file '{_show(path)}' in {self.label}")
            return data
        raise FlowscanError(f"no file '{_show(path)}' in {self.label}")

    def close(self) -> None:
        if self._cat is not None:
            self._cat.close()
            self._cat = None


# ------------------------------------------------------------------------------------------ the cache clones

def repos_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "repos"


def _normalize_repo(repo: str) -> str:
    if is_local_path(repo):
        path = Path(repo).expanduser()
        if not path.exists():
            raise FlowscanError(f"no such repository: {repo}")
        return os.path.realpath(path)
    return repo.rstrip("/")


def clone_dir(cache_dir: Path, repo: str) -> Path:
    """Where the cache clone of ``repo`` lives: repos/<slug-of-url>-<short sha256 of url>.git."""
    key = _normalize_repo(repo)
    tail = re.split(r"[/:]", key.rstrip("/"))[-1] or "repo"
    if tail.endswith(".git"):
        tail = tail[:-4]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip(".-")[:40] or "repo"
    return repos_dir(cache_dir) / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.git"


@contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tty_progress(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


def _progress_flag(progress: bool) -> list[str]:
    return ["--progress"] if _tty_progress(progress) else ["-q"]


@dataclass
class _Remote:
    url: str  # what git is given (local paths made absolute)
    shown: str  # what the user gave, for messages
    local: bool  # git runs upload-pack on this machine (local path, file://)
    refs: dict[str, str]  # refname -> object id, for the ref asked about
    partial: bool  # the server honours --filter=blob:none
    shallow: bool  # the server serves --depth


_TRACE_RECEIVED = re.compile(r"packet:\s+\S+< (.*)$")


def _ls_remote(url: str, shown: str, ref: str, local: bool) -> _Remote:
    """Ask the remote about ``ref``; the packet trace also tells what the server can do.

    Protocol v2 servers list their fetch features ("fetch=shallow wait-for-done filter"), v0 servers
    append capabilities to the first ref; a dumb HTTP server lists nothing and gets neither a filter nor a
    depth (asking a dumb server for a filter leaves a promisor clone that recurses into lazy fetches).
    """
    args = ["ls-remote"]
    if local:
        args.append(f"--upload-pack={_LOCAL_UPLOAD_PACK}")
    args += ["--", url, ref or "HEAD"]
    try:
        out, err = _git(args, trace=True)
    except _GitFailed as exc:
        if local and ("not a git repository" in exc.stderr or "does not appear" in exc.stderr):
            raise FlowscanError(f"not a git repository: {shown}") from None
        raise FlowscanError(f"cannot reach repository {shown}: {exc.message}") from None
    caps: set[str] = set()
    for line in err.splitlines():
        m = _TRACE_RECEIVED.search(line)
        if not m:
            continue
        text = m.group(1)
        if text.startswith("fetch="):
            caps.update(text[len("fetch="):].split())
        elif "\\0" in text:
            caps.update(text.split("\\0", 1)[1].split())
    refs = {}
    for line in out.decode("utf-8", "replace").splitlines():
        oid, _, name = line.partition("\t")
        refs[name] = oid
    return _Remote(url, shown, local, refs, partial="filter" in caps, shallow="shallow" in caps)


def _pick_remote_ref(ref: str, refs: dict[str, str]) -> str | None:
    if not ref:
        return "HEAD" if "HEAD" in refs else None
    for name in (ref, f"refs/tags/{ref}", f"refs/heads/{ref}"):
        if name in refs and (name.startswith("refs/") or name == "HEAD"):
            return name
    return None


def _local_ref(gitdir: Path, ref: str) -> str | None:
    """The commit for an immutable ref (tag or commit id) already in the clone, without any fetch."""
    if not ref:
        return None
    names = []
    if ref.startswith("refs/tags/"):
        names.append(ref)
    elif not ref.startswith("refs/"):
        names.append(f"refs/tags/{ref}")
    try:
        out = _git(["for-each-ref", "--format=%(refname) %(objectname)", "refs/tags/", "refs/flowscan/commits/"],
                   cwd=gitdir).decode()
    except _GitFailed:
        return None
    have = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    for name in names:
        if name in have:
            return _peel(gitdir, name)
    if _HEX.fullmatch(ref):
        hits = [n for n in have if n.startswith("refs/flowscan/commits/" + ref)]
        if len(hits) == 1:
            return hits[0].rsplit("/", 1)[1]
    return None


def _peel(gitdir: Path, name: str) -> str:
    return _git(["rev-parse", "--verify", "-q", f"{name}^{{commit}}"], cwd=gitdir).decode().strip()


def _config_bool(gitdir: Path, key: str) -> bool:
    try:
        return _git(["config", "--bool", key], cwd=gitdir).decode().strip() == "true"
    except _GitFailed:
        return False


def _init_clone(tmp: Path, remote: _Remote) -> None:
    _git(["init", "-q", "--bare", str(tmp)])
    settings = [("remote.origin.url", remote.url),
                ("gc.auto", "0"),  # no background gc racing other flowscan processes
                ("fetch.writeCommitGraph", "false"),
                ("flowscan.partial", str(remote.partial).lower()),
                ("flowscan.shallow", str(remote.shallow).lower())]
    if remote.partial:
        settings += [("remote.origin.promisor", "true"),
                     ("remote.origin.partialclonefilter", "blob:none"),
                     ("core.repositoryformatversion", "1"),
                     ("extensions.partialClone", "origin")]
    if remote.local:
        settings.append(("remote.origin.uploadpack", _LOCAL_UPLOAD_PACK))
    for key, value in settings:
        _git(["config", key, value], cwd=tmp)


def _fetch_ref(gitdir: Path, remote: _Remote, ref: str, progress: bool, label: str) -> str:
    """Fetch one ref (shallow and blob-less where the server allows) into the clone; return its commit."""
    name = _pick_remote_ref(ref, remote.refs)
    if name is not None:
        if name.startswith("refs/tags/"):
            dest = name
        elif name.startswith("refs/heads/"):
            dest = "refs/remotes/origin/" + name[len("refs/heads/"):]
        else:
            dest = "refs/flowscan/" + name.replace("refs/", "", 1)
        refspec = f"+{name}:{dest}"
    elif _FULL_HEX.fullmatch(ref):
        dest = f"refs/flowscan/commits/{ref}"
        refspec = f"+{ref}:{dest}"
    else:
        hint = " (give a full commit id)" if _HEX.fullmatch(ref or "") else ""
        raise FlowscanError(f"ref '{ref or 'HEAD'}' not found in {remote.shown}{hint}")
    partial = _config_bool(gitdir, "flowscan.partial")
    shallow = _config_bool(gitdir, "flowscan.shallow")
    args = ["fetch", "--no-tags", "--no-write-fetch-head", *_progress_flag(progress)]
    if partial:
        args.append("--filter=blob:none")
    if shallow:
        args.append("--depth=1")
    elif progress:
        _say(progress, f"{remote.shown} serves no shallow fetches: fetching the full history")
    try:
        _git([*args, "origin", refspec], cwd=gitdir, show_progress=_tty_progress(progress))
    except _GitFailed as exc:
        if name is None:
            raise FlowscanError(f"ref '{ref}' not found in {remote.shown}") from None
        raise FlowscanError(f"cannot fetch {label}: {exc.message}") from None
    try:
        commit = _peel(gitdir, dest)
    except _GitFailed:
        raise FlowscanError(f"ref '{ref}' in {remote.shown} does not name a commit") from None
    if name is not None and not name.startswith("refs/tags/"):
        # branches and HEAD move: remember the commit so that this exact commit is found offline later
        _git(["update-ref", f"refs/flowscan/commits/{commit}", commit], cwd=gitdir)
    return commit


def _label(repo: str, ref: str) -> str:
    tail = re.split(r"[/:]", repo.rstrip("/"))[-1] or repo
    if tail.endswith(".git"):
        tail = tail[:-4]
    return f"{tail}@{ref or 'HEAD'}"


def _check_ref_known(remote: _Remote, ref: str) -> None:
    if _pick_remote_ref(ref, remote.refs) is None and not _FULL_HEX.fullmatch(ref):
        hint = " (give a full commit id)" if _HEX.fullmatch(ref) else ""
        raise FlowscanError(f"ref '{ref or 'HEAD'}' not found in {remote.shown}{hint}")


def open_tree(source: Source, cache_dir: Path, progress: bool = True) -> Tree:
    """Open a source: a plain directory as is, a git repository at a ref through a cache clone."""
    if source.src:
        if source.repo or source.ref:
            raise FlowscanError(f"{source.role or 'source'}: a directory (src) excludes repo and ref")
        return DirTree(Path(source.src))
    if not source.repo:
        if source.ref:
            raise FlowscanError(f"{source.role or 'source'}: ref '{_show(source.ref)}' given without a repository")
        raise FlowscanError(f"{source.role or 'source'}: no repository or directory given")
    repo = validate_repo(source.repo)
    ref = validate_ref(source.ref) if source.ref else ""
    local = _local_transport(repo)
    url = _normalize_repo(repo)
    if is_local_path(repo) and not Path(url).is_dir():
        raise FlowscanError(f"not a git repository: {repo}")
    label = _label(url, ref)
    target = clone_dir(cache_dir, repo)
    lock = target.with_suffix(".lock")

    with _locked(lock):
        if target.is_dir():
            commit = _local_ref(target, ref)
            if commit is None:
                remote = _ls_remote(url, repo, ref, local)
                _check_ref_known(remote, ref)
                _say(progress, f"fetching {label}")
                commit = _fetch_ref(target, remote, ref, progress, label)
        else:
            remote = _ls_remote(url, repo, ref, local)  # unknown ref, unreachable URL: fail before cloning
            _check_ref_known(remote, ref)
            target.parent.mkdir(parents=True, exist_ok=True)
            for stale in target.parent.glob(f".tmp-{target.name}-*"):  # left by a killed run (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)
            try:
                how = ", ".join(w for w, on in (("shallow", remote.shallow), ("blob-less", remote.partial)) if on)
                _say(progress, f"cloning {label} ({how or 'full: the server offers no filter or depth'}) "
                               f"into {target}")
                _init_clone(tmp, remote)
                commit = _fetch_ref(tmp, remote, ref, progress, label)
                os.rename(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return GitTree(target, commit, label, lock, progress)


def cached_repos(cache_dir: Path) -> list[dict]:
    """The cache clones: directory, remote URL, tags and commits held (for `flowscan sources`)."""
    out = []
    base = repos_dir(cache_dir)
    if not base.is_dir():
        return out
    for gitdir in sorted(base.glob("*.git")):
        try:
            url = _git(["config", "remote.origin.url"], cwd=gitdir).decode().strip()
            refs = _git(["for-each-ref", "--format=%(refname)"], cwd=gitdir).decode().split()
        except _GitFailed:
            continue
        size = sum(f.stat().st_size for f in gitdir.rglob("*") if f.is_file())
        out.append({"path": str(gitdir), "url": url, "bytes": size,
                    "tags": sorted(r[len("refs/tags/"):] for r in refs if r.startswith("refs/tags/")),
                    "commits": sorted(r.rsplit("/", 1)[1] for r in refs
                                      if r.startswith("refs/flowscan/commits/"))})
    return out
