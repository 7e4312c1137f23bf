"""Trees: list (path, blob id) within a scope, read blobs, search them (a directory on disk or a git commit).

File names that are not printable UTF-8 (a byte 0xff, a newline, an escape) are left out of every
listing, with one warning per listing: no C file is named so, and such a name could not be stored,
printed or searched faithfully downstream.

Blob reads go through flowscan's own long-lived ``git cat-file --batch`` (started through GitPython, so
fenced like every other command), which pipelines 256 requests per write. GitPython's ``Repo.odb`` asks
for one object at a time: on 21,380 qemu blobs (211 MB) it took 0.41 s of Python CPU against 0.23 s
(wall 2.3-3.0 s against 1.9-2.1 s on this machine), so the pipelined reader stays.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence


import git as gitpython

from flowscan.errors import FlowscanError
from flowscan.progress import NULL, Progress
from flowscan.sources.git import (LOCAL_ONLY, ForwardProgress, GitFailed, clone_problem, config_bool, http_limits,
                                  last_error_line, locked, names_damage, run, run_direct, run_network)
from flowscan.sources.refs import C_SUFFIXES, FileEntry, has_control, show
from flowscan.sources.scopes import is_c, norm_scope, pathspec_of, select
from flowscan.sources.statcache import Stat, StatCache, cache_file, is_racy, now_ns, stat_key



GREP_ARG_BYTES = 512 * 1024  # names per `git grep` run (argument lists stay far below the system's limit)
GREP_WORDS = 300  # words per pattern


def _alternation(words: Iterable[str]) -> bytes:
    return b"|".join(re.escape(w.encode()) for w in sorted(set(words)))


def _line_patterns(words: Iterable[str], members: Iterable[str], defs: Iterable[str],
                   macros: Iterable[str] = ()) -> list[bytes]:
    """Does a line (or a whole file: the patterns are multi-line) spell a word, access a member, spell a
    defined name in a definition-like line, or #define one of `macros`? One pattern per kind and few
    hundred names (a Perl regex's compiled size is bounded)."""
    def chunks(names: Iterable[str]) -> list[bytes]:
        ordered = sorted(set(names))
        return [_alternation(ordered[i:i + GREP_WORDS]) for i in range(0, len(ordered), GREP_WORDS)]

    alts = []
    alts += [rb"(?<!\w)(?:" + a + rb")(?!\w)" for a in chunks(words)]
    alts += [rb"(?:\.|->)\s*(?:" + a + rb")(?!\w)" for a in chunks(members)]
    for a in chunks(defs):
        alts.append(rb"^(?=[^\s#])(?![^\n]*;[ \t\r]*$)[^\n]*?(?<!\w)(?:" + a + rb")(?!\w)")
        alts.append(rb"^[ \t]*\#[ \t]*define[ \t]+(?:" + a + rb")(?![\w$])")  # a macro
    alts += [rb"^[ \t]*\#[ \t]*define[ \t]+(?:" + a + rb")(?![\w$])" for a in chunks(macros)]
    return alts


def _line_test(words: Iterable[str], members: Iterable[str], defs: Iterable[str], macros: Iterable[str] = ()):
    """The test of _line_patterns as one compiled Python regex."""
    alts = _line_patterns(words, members, defs, macros)
    pattern = re.compile(b"|".join(alts), re.MULTILINE) if alts else None
    return lambda line: pattern is not None and pattern.search(line) is not None


_PCRE: dict[Path, bool] = {}  # git dir -> False when its git has no Perl regexes (`grep -P`)


class _NoPcre(Exception):
    pass


_ODD_NAME = re.compile("[\x01-\x08\x0a-\x1f\x7f\udc80-\udcff]")
_LISTINGS: dict[tuple[str, str, tuple[str, ...]], tuple[list[tuple[str, str]], list[str]]] = {}
_NAMED: dict[tuple[str, str, tuple[str, ...]], list[FileEntry]] = {}


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
             defs: Iterable[str] = (), macros: Iterable[str] = ()) -> set[str]:
        """The paths among `entries` that spell one of `words` as a whole word, #define one of `macros`,
        access one of `members`
        (`.m`, `->m`), or have one of `defs` on a line that could open a definition: it starts in column 0
        with neither blank nor `#` (a definition's return type or name stands there: `int\nfoo(void)`,
        `SYSCALL_DEFINE1(foo, ...)`; calls are indented) and does not end with `;` (a prototype, or
        `EXPORT_SYMBOL(foo);`)."""
        if not (words or members or defs or macros):
            return set()
        test = _line_test(words, members, defs, macros)
        return {e.path for e, data in self.read(entries) if test(data)}

    def read(self, entries: Iterable[FileEntry]) -> Iterator[tuple[FileEntry, bytes]]:
        raise NotImplementedError

    def read_one(self, path: str) -> bytes:
        raise NotImplementedError

    def prefetch(self, entries: Iterable[FileEntry]) -> None:
        """Make these files readable without further requests (a partial clone fetches their blobs in one)."""

    def named(self, pattern: re.Pattern[str]) -> list[FileEntry]:
        """Every file of the tree whose path matches `pattern` (build configuration files: Makefile,
        Kbuild, Kconfig, meson.build), sorted; sizes are 0 (not needed to read them)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Tree":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


def printable_name(path: str) -> bool:
    """A path that can be stored, printed and searched as text: UTF-8, no control characters."""
    if path.isascii():  # (most paths: one C-level check)
        return path.isprintable()
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept as surrogates
        return False
    return not has_control(path)


def shown_name(path: str) -> str:
    """A path for a message: undecodable bytes as \\xNN, control characters escaped."""
    text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if ord(c) >= 0x20 and ord(c) != 0x7F else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def warn_unprintable(progress: Progress, label: str, paths: list[str], warned: set[str]) -> None:
    """One warning per tree and set of names (listings repeat: an index key, then the files)."""
    key = "\0".join(sorted(paths))
    if paths and key not in warned:
        warned.add(key)
        paths = sorted(paths)
        progress.warn(f"{label}: skipped {len(paths)} C file(s) whose names are not printable UTF-8 "
                      f"(first: '{shown_name(paths[0])}')")


def git_blob_id(data: bytes) -> str:
    """The id `git hash-object` gives these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class DirTree(Tree):
    """A plain directory: walked (no symlinks, no .git), blob ids computed like git does; with a stat
    cache (keep_stat_cache), a file whose size, mtime, ctime and inode are unchanged is not read again."""

    def __init__(self, root: Path, progress: Progress = NULL):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FlowscanError(f"no such directory: {shown_name(str(root))}")
        self.root = root.resolve()
        self.label = shown_name(str(root))
        self.commit = ""
        self._progress = progress
        self._warned: set[str] = set()
        self._ids: dict[str, tuple[Stat, str]] = {}  # path -> (stat key, blob id)
        self._stat_cache: StatCache | None = None
        self.hashed = 0  # files read to learn their blob id (the stat cache did not know them)

    def keep_stat_cache(self, cache_dir: Path) -> None:
        """Remember blob ids by stat across runs, in `cache_dir` (see flowscan.sources.statcache)."""
        sc = StatCache.load(cache_file(cache_dir, self.root), self.root)
        if sc.discarded:
            self._progress.warn(f"{self.label}: the stat cache was {sc.discarded}: hashing the files again")
        self._stat_cache = sc
        for path, known in sc.entries.items():
            self._ids.setdefault(path, known)

    def _walk(self, stats: dict[str, os.stat_result] | None = None) -> list[str]:
        """Every regular file's path; with `stats`, the C files' stats go there (taken in the walk)."""
        out: list[str] = []
        odd: list[str] = []
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
                            if printable_name(name):
                                out.append(name)
                                if stats is not None and name.endswith(C_SUFFIXES):
                                    stats[name] = ent.stat(follow_symlinks=False)
                            elif is_c(name):
                                odd.append(name)
            except OSError:
                continue
        warn_unprintable(self._progress, self.label, odd, self._warned)
        return out

    def files(self, scopes: Sequence[str] = (), strict: bool = True) -> list[FileEntry]:
        norm = [norm_scope(s, self.root) for s in scopes]
        started = now_ns()
        stats: dict[str, os.stat_result] = {}
        chosen = select(self._walk(stats), norm, self.label, strict)
        entries = []
        changed = False
        for path in sorted(stats.keys() & chosen if norm and "" not in norm else stats):
            key = stat_key(stats[path])
            known = self._ids.get(path)
            if known is None or known[0] != key:  # hash once per file version, not per listing
                known = (key, git_blob_id((self.root / path).read_bytes()))
                self.hashed += 1
                self._ids[path] = known
                changed = True
            entries.append(FileEntry(path, known[1], key[0]))
        sc = self._stat_cache
        if sc is not None:
            gone = [p for p in self._ids if p not in stats]
            for p in gone:
                del self._ids[p]
            if changed or gone or self._ids.keys() != sc.entries.keys() or any(
                    is_racy(k, started) for k, _ in self._ids.values()):
                try:
                    sc.save(self._ids, started)
                except OSError as exc:  # a read-only cache only costs speed
                    self._progress.warn(f"{self.label}: cannot write the stat cache ({exc.strerror})")
        return entries

    def _resolve(self, path: str) -> Path:
        rel = norm_scope(path, self.root)
        full = (self.root / rel).resolve()
        if full != self.root and self.root not in full.parents:
            raise FlowscanError(f"'{show(path)}' points outside the tree {self.label}")
        return full

    def read(self, entries: Iterable[FileEntry]) -> Iterator[tuple[FileEntry, bytes]]:
        root = str(self.root)
        for entry in entries:
            # a path this tree listed was walked without following links: no need to resolve it again
            full = os.path.join(root, entry.path) if entry.path in self._ids else self._resolve(entry.path)
            with open(full, "rb") as fh:
                data = fh.read()
            blob = git_blob_id(data)
            if blob != entry.blob:  # edited since listing: report what was actually read
                entry = replace(entry, blob=blob, size=len(data))
            yield entry, data

    def named(self, pattern: re.Pattern[str]) -> list[FileEntry]:
        return [FileEntry(p, "", 0) for p in sorted(self._walk()) if pattern.search(p)]

    def read_one(self, path: str) -> bytes:
        full = self._resolve(path)
        if not full.is_file():
            raise FlowscanError(f"no file '{show(path)}' in {self.label}")
        return full.read_bytes()


class _CatFile:
    """One long-lived `git cat-file --batch`, pipelined in chunks small enough never to fill a pipe."""

    CHUNK = 256  # requests of <= 100 bytes: well under the 64 KiB pipe buffer

    def __init__(self, repo: gitpython.Repo):
        try:
            handle = repo.git.execute(["git", "cat-file", "--batch"], as_process=True, istream=subprocess.PIPE,
                                      env=LOCAL_ONLY)
        except gitpython.GitCommandNotFound as exc:
            raise FlowscanError("git is not installed (no 'git' on PATH)") from exc
        self._handle = handle  # GitPython's wrapper: it also stops the process when dropped
        self.proc: subprocess.Popen = handle.proc
        self._finalizer = weakref.finalize(self, _CatFile._stop, self.proc)

    @staticmethod
    def _stop(proc: subprocess.Popen) -> None:
        try:
            if proc.stdin and not proc.stdin.closed:
                proc.stdin.close()
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()

    def close(self) -> None:
        self._finalizer()

    def _stopped(self) -> FlowscanError:
        self.proc.wait()
        return FlowscanError(f"git cat-file stopped: "
                             f"{last_error_line(self.proc.stderr.read().decode('utf-8', 'replace'))}")

    def _response(self) -> tuple[str, str, bytes | None]:
        header = self.proc.stdout.readline()
        if not header:
            raise self._stopped()
        parts = header.decode("utf-8", "surrogateescape").rstrip("\n").split(" ")
        if len(parts) == 3 and parts[2].isdigit():
            size = int(parts[2])
            data = self.proc.stdout.read(size + 1)
            if len(data) != size + 1:  # git died within the object (it could not inflate the rest)
                raise self._stopped()
            return parts[0], parts[1], data[:size]
        return parts[0], "missing", None

    def stream(self, requests: list[str]) -> Iterator[tuple[str, str, bytes | None]]:
        """Yield (name, type, data) for each request ('<oid>' or '<commit>:<path>'), in order."""
        for start in range(0, len(requests), self.CHUNK):
            chunk = requests[start:start + self.CHUNK]
            try:
                self.proc.stdin.write("".join(r + "\n" for r in chunk).encode("utf-8", "surrogateescape"))
                self.proc.stdin.flush()
            except OSError:  # git is gone (it stopped at a damaged object): say why
                raise self._stopped() from None
            pending = len(chunk)
            try:
                for _ in chunk:
                    item = self._response()
                    pending -= 1
                    yield item
            finally:
                try:
                    for _ in range(pending):  # consumer stopped early: keep the protocol in step
                        self._response()
                except (FlowscanError, OSError, ValueError):
                    # git died with us (Ctrl-C reaches the whole process group): nothing left to keep in
                    # step, and an error raised while the generator is closed would only print a traceback
                    self.close()


class _FetchFailed(Exception):
    """Fetching missing blobs failed: the network, or a damaged clone (only git's check can tell)."""


class GitTree(Tree):
    """A commit in a cache clone (a GitPython `Repo`, fenced by `flowscan.sources.git.repo_at`)."""

    def __init__(self, repo: gitpython.Repo, commit: str, label: str, lock_path: Path,
                 progress: Progress = NULL, timeout: float = 60.0,
                 reclone: Callable[[str, int], gitpython.Repo] | None = None):
        """`reclone(reason, inode)`: the clone made again when reads find this one (its directory had that
        inode) damaged."""
        self.repo = repo
        self._reclone = reclone
        self._ino = os.stat(repo.git_dir).st_ino
        self._recloned = False
        self.gitdir = Path(repo.git_dir)
        self.commit = commit
        self.label = label
        self._lock_path = lock_path
        self._progress = progress
        self._timeout = timeout
        self._warned: set[str] = set()
        self._cat: _CatFile | None = None
        self._known: dict[str, int] = {}  # blob id -> size of blobs known to be in the clone

    def _git(self, args: Sequence[str], input: bytes | None = None, expected: tuple[int, ...] = (),
             before: Callable[[], object] | None = None, direct: bool = False) -> bytes:
        """A local git command; when it fails on a damaged clone, the clone is made again and it is run
        once more, `before()` first (exit codes in `expected` are answers, not failures: GitFailed)."""
        def once() -> bytes:
            return run_direct(Path(self.gitdir), args) if direct else run(self.repo.git, args, input=input)

        try:
            return once()
        except GitFailed as exc:
            if exc.code in expected:
                raise
            message = exc.message
        self._recover(message, again=once)
        if before is not None:
            before()
        try:
            return once()
        except GitFailed as exc:
            if exc.code in expected:
                raise
            raise FlowscanError(f"cannot read {self.label}: {exc.message}") from None

    def _recover(self, message: str, again: Callable[[], object] | None = None, fetching: bool = False) -> None:
        """A read of the clone failed with `message`. When the clone is damaged (git's check fails, or git
        says so and a second read fails the same way), it is discarded and made again, and this tree reads
        from the new one; otherwise the failure is reported as it is (one line). `fetching`: the failure
        was a fetch, whose messages speak of the network: only the check decides."""
        problem = clone_problem(self.gitdir)
        if not problem and (fetching or not names_damage(message)):
            raise FlowscanError(f"cannot read {self.label}: {message}")
        if not problem and again is not None:
            try:
                again()
            except (GitFailed, FlowscanError):
                pass
            else:  # it reads now: not damage (the caller reads again)
                return
        if self._reclone is None or self._recloned:
            raise FlowscanError(f"the cache clone of {self.label} is damaged: {problem or message}")
        self.close_readers()
        self.repo = self._reclone(problem or message, self._ino)
        self._recloned = True
        self.gitdir = Path(self.repo.git_dir)
        self._ino = os.stat(self.gitdir).st_ino
        self._known.clear()

    def close_readers(self) -> None:
        if self._cat is not None:
            self._cat.close()
            self._cat = None
        self.repo.close()

    def _catfile(self) -> _CatFile:
        if self._cat is None or self._cat.proc.poll() is not None:  # none yet, or it stopped: a new one
            self._cat = _CatFile(self.repo)
        return self._cat

    def _ls_tree(self, scopes: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
        """(path, blob id) of the regular files under the scopes, and the C files left out for their names
        (kept: a commit's listing never changes, and build configuration asks for the whole tree's often)."""
        specs = sorted({pathspec_of(s) for s in scopes})
        specs = tuple(specs) if scopes and "" not in specs else ()
        key = (self.repo.git_dir, self.commit, specs)
        if key not in _LISTINGS:  # (guest and host are two trees of one commit: listed once a process)
            _LISTINGS[key] = self._list(specs)
        return _LISTINGS[key]

    def _list(self, specs: tuple[str, ...]) -> tuple[list[tuple[str, str]], list[str]]:
        args = ["--literal-pathspecs", "ls-tree", "-r", "-z", "--full-tree", self.commit]
        if specs:
            args += ["--", *specs]
        # One decode of the whole listing; names are checked one by one only when the listing holds an
        # undecodable byte or a control character somewhere (the records' own NULs and tabs aside).
        out = self._git(args).decode("utf-8", "surrogateescape")
        suspect = _ODD_NAME.search(out) is not None
        rows = []
        odd = []
        for rec in out.split("\0"):
            meta, _, path = rec.partition("\t")
            mode, kind, oid = meta.split(" ") if meta else ("", "", "")
            if kind == "blob" and mode in ("100644", "100755"):  # no symlinks, no submodules
                if not (suspect or "\t" in path) or printable_name(path):
                    rows.append((path, oid))
                elif is_c(path):
                    odd.append(path)
        return rows, odd

    def _present(self) -> dict[str, int]:
        """Blob id -> size of every blob already in the clone (no lazy fetch). GitFailed: unreadable."""
        args = ["cat-file", "--batch-all-objects", "--unordered",
                "--batch-check=%(objectname) %(objecttype) %(objectsize)"]
        out = run(self.repo.git, args)
        sizes = {}
        for line in out.decode("ascii", "replace").splitlines():
            if line.count(" ") != 2:  # an object whose header does not even read
                raise GitFailed(args, 128, f"fatal: bad object in the clone's listing: {line[:80]}")
            oid, kind, size = line.split(" ")
            if kind == "blob":
                sizes[oid] = int(size)
        return sizes

    def _sizes(self, oids: Sequence[str]) -> dict[str, int]:
        out = run(self.repo.git, ["cat-file", "--batch-check=%(objectname) %(objectsize)"],
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
        try:
            return self._ensure(wanted)
        except GitFailed as exc:  # (out of the clone's lock, which a new clone needs)
            self._recover(exc.message, again=self._present)
        except _FetchFailed as exc:
            self._recover(str(exc), fetching=True)
        try:
            return self._ensure(wanted)
        except GitFailed as exc:
            raise FlowscanError(f"cannot read {self.label}: {exc.message}") from None
        except _FetchFailed as exc:
            raise FlowscanError(str(exc)) from None

    def _ensure(self, wanted: list[str]) -> dict[str, int]:
        sizes = self._present()
        self._known.update(sizes)  # blobs in the clone stay there: one listing serves every later check
        missing = [o for o in wanted if o not in sizes]
        if missing and config_bool(self.repo, "flowscan", "partial"):
            with locked(self._lock_path):
                sizes = self._present()  # another process may have fetched them meanwhile
                missing = [o for o in wanted if o not in sizes]
                if missing:
                    self._progress.message(f"fetching {len(missing)} file(s) of {self.label}")
                    try:
                        run_network(self.repo.git, [
                            "-c", "fetch.negotiationAlgorithm=noop", *http_limits(self._timeout), "fetch",
                            "--no-tags", "--no-write-fetch-head", "--recurse-submodules=no", "--filter=blob:none",
                            "--progress", "--stdin", "--", "origin"],
                            input="".join(o + "\n" for o in missing).encode(), timeout=self._timeout,
                            what=f"cannot fetch files of {self.label}",
                            on_line=ForwardProgress(self._progress, self.label).new_message_handler())
                    except GitFailed as exc:
                        raise _FetchFailed(f"cannot fetch files of {self.label}: {exc.message}") from None
                    finally:
                        self._progress.finish()
            sizes.update(self._sizes(missing))
        lost = [o for o in wanted if o not in sizes]
        if lost:
            raise FlowscanError(f"{len(lost)} blobs of {self.label} could not be fetched (first: {lost[0]})")
        got = {o: sizes[o] for o in wanted}
        self._known.update(got)
        return got

    def prefetch(self, entries: Iterable[FileEntry]) -> None:
        self.ensure_blobs(e.blob for e in entries)

    def grep(self, entries: Sequence[FileEntry], words: Iterable[str] = (), members: Iterable[str] = (),
             defs: Iterable[str] = (), macros: Iterable[str] = ()) -> set[str]:
        """`git grep` over the commit, no checkout (see Tree.grep)."""
        words, members, defs = sorted(set(words)), sorted(m for m in set(members) if m.isidentifier()), sorted(set(defs))
        macros = sorted(set(macros))
        if not entries or not (words or members or defs or macros):
            return set()
        # The files are named one by one: a directory would also hold files whose blobs this partial
        # clone lacks, and git would fetch those one request each.
        self.ensure_blobs(e.blob for e in entries)
        # One pass over the blobs for every word as a whole word; which kind of match each line is
        # (word, member access, definition line) is decided here. One extended pattern per few hundred
        # words: git tests each -e pattern separately on every line, so 140 fixed strings cost 2.5x one
        # alternation of them.
        if _PCRE.get(self.gitdir, True):
            try:  # the exact test as Perl regexes: git names the files, no line comes back to test here
                pats = [a for p in _line_patterns(words, members, defs, macros)
                        for a in ("-e", p.decode("ascii"))]
                return {p for p, _ in self._grep(["-l", "-P", *pats], entries)}
            except _NoPcre as exc:
                if exc.args[0]:
                    _PCRE[self.gitdir] = False
        test = _line_test(words, members, defs, macros)
        allw = sorted({*words, *members, *defs, *macros})
        pats = [a for i in range(0, len(allw), GREP_WORDS)
                for a in ("-e", "(" + "|".join(re.sub(r"([][.*+?{}()|^$\\])", r"\\\1", w)
                                                for w in allw[i:i + GREP_WORDS]) + ")")]
        return {p for p, text in self._grep(["-w", "-E", *pats], entries) if test(text)}

    def _grep(self, pattern: list[str], entries: Sequence[FileEntry]) -> Iterator[tuple[str, bytes]]:
        """(path, matching line) pairs; with `-l`, (path, b"")."""
        args = ["grep", "-z", "-I", "--no-color", *pattern]
        prefix = (self.commit + ":").encode()
        paths = [e.path for e in entries]
        listed = "-l" in pattern
        chunks: list[list[str]] = []
        if self._all_c(paths):  # the whole tree: by suffix (git matches 20,000 names given one by one slowly)
            chunks.append([f"*{suffix}" for suffix in C_SUFFIXES])
        else:
            args.insert(0, "--literal-pathspecs")
            i = 0
            while i < len(paths):
                chunk, size = [], 0
                while i < len(paths) and size < GREP_ARG_BYTES:
                    chunk.append(paths[i])
                    size += len(paths[i]) + 1
                    i += 1
                chunks.append(chunk)
        wanted = set(paths)
        perl = "-P" in pattern
        for chunk in chunks:
            try:
                out = self._git([*args, self.commit, "--", *chunk], expected=(1, 128) if perl else (1,),
                                before=lambda: self.ensure_blobs(e.blob for e in entries), direct=True)
            except GitFailed as exc:
                if exc.code == 1:  # nothing matched
                    continue
                if perl:  # no Perl regexes in this git, or a failure the plain search recovers from
                    raise _NoPcre("Perl" in exc.message) from None
                raise FlowscanError(f"cannot search {self.label}: {exc.message}") from None
            for line in out.split(b"\0" if listed else b"\n"):
                name, _, text = (line, b"", b"") if listed else line.partition(b"\0")
                if not name:
                    continue
                if name.startswith(prefix):
                    name = name[len(prefix):]
                path = name.decode("utf-8", "surrogateescape")
                if path in wanted:
                    yield path, text

    def _all_c(self, paths: Sequence[str]) -> bool:
        """Are these all the C files of the commit (and its other C files none whose name was refused)?
        Then a search by suffix reads exactly them, all of whose blobs are present."""
        if (self.repo.git_dir, self.commit, ()) not in _LISTINGS:  # (a scope's question: not listed whole)
            return False
        rows, odd = self._ls_tree(())
        if odd:
            return False
        return len(paths) == sum(1 for p, _ in rows if is_c(p)) and set(paths) <= {p for p, _ in rows}

    def snapshot(self, scopes: Sequence[str] = ()) -> str:
        return "git " + self.commit + "\0" + "\0".join(sorted({norm_scope(s) for s in scopes}))

    def files(self, scopes: Sequence[str] = (), strict: bool = True) -> list[FileEntry]:
        norm = [norm_scope(s) for s in scopes]
        rows, odd = self._ls_tree(norm)
        chosen = select((p for p, _ in rows), norm, self.label, strict)
        picked = sorted((p, o) for p, o in rows if p in chosen and is_c(p))
        warn_unprintable(self._progress, self.label, odd, self._warned)
        sizes = self.ensure_blobs(o for _, o in picked)
        return [FileEntry(p, o, sizes[o]) for p, o in picked]

    def read(self, entries: Iterable[FileEntry]) -> Iterator[tuple[FileEntry, bytes]]:
        """Each entry's bytes, in order; a clone found damaged on the way is made again and the reading
        goes on from the entry that failed."""
        entries = list(entries)
        done = 0
        while done < len(entries):
            failure = self._read_from(entries, done)
            try:
                while True:
                    entry, data = next(failure)
                    yield entry, data
                    done += 1
            except StopIteration as stop:
                if stop.value is None:
                    return
                message, oid = stop.value
            finally:
                failure.close()
            if self._recloned:
                raise FlowscanError(f"cannot read {self.label}: {message}")
            self._recover(message, again=lambda: run(self.repo.git, ["cat-file", "blob", oid]))

    def _read_from(self, entries: list[FileEntry], start: int):
        """Yield (entry, bytes) from entries[start:]; return None at the end, or (message, blob id) of the
        read that failed."""
        self.ensure_blobs(e.blob for e in entries[start:])  # (recovers on its own; a fetch failure is no damage)
        stream = self._catfile().stream([e.blob for e in entries[start:]])
        try:
            for entry in entries[start:]:
                try:
                    name, kind, data = next(stream)
                except FlowscanError as exc:
                    return f"{exc} (reading {entry.path})", entry.blob
                except StopIteration:
                    return f"git cat-file stopped before {entry.path}", entry.blob
                if data is None or kind != "blob":
                    return f"blob {name} of {entry.path} is missing from {self.label}", entry.blob
                yield entry, data
        finally:
            stream.close()
        return None

    def named(self, pattern: re.Pattern[str]) -> list[FileEntry]:
        key = (self.repo.git_dir, self.commit, (pattern.pattern,))
        if key not in _NAMED:
            _NAMED[key] = [FileEntry(p, o, 0) for p, o in sorted(self._ls_tree(())[0]) if pattern.search(p)]
        return list(_NAMED[key])

    def read_one(self, path: str) -> bytes:
        """One file by path, any kind (Kconfig, meson.build); its blob fetched under the watchdog first."""
        rel = norm_scope(path)
        if not rel:
            raise FlowscanError(f"no file '{show(path)}' in {self.label}")
        out = self._git(["--literal-pathspecs", "ls-tree", "-z", self.commit, "--", rel])
        meta, _, name = out.rstrip(b"\0").partition(b"\t")
        parts = meta.decode("ascii", "replace").split(" ")
        if name.decode("utf-8", "surrogateescape") != rel or len(parts) != 3 or parts[1] != "blob":
            raise FlowscanError(f"no file '{show(path)}' in {self.label}")
        for _entry, data in self.read([FileEntry(rel, parts[2], 0)]):
            return data
        raise FlowscanError(f"no file '{show(path)}' in {self.label}")

    def close(self) -> None:
        if self._cat is not None:
            self._cat.close()
            self._cat = None
        self.repo.close()


# ------------------------------------------------------------------------------------------ the cache clones
