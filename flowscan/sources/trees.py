"""Trees: list (path, blob id) within a scope, read blobs, search them (a git commit; a directory on disk
is flowscan.sources.checkout's DirTree, re-exported here).

File names that are not printable UTF-8 (a byte 0xff, a newline, an escape) are left out of every
listing, with one warning per listing: no C file is named so, and such a name could not be stored,
printed or searched faithfully downstream.

Blob reads go through flowscan's own long-lived ``git cat-file --batch`` (started through GitPython, so
fenced like every other command), which pipelines 256 requests per write. GitPython's ``Repo.odb`` asks
for one object at a time: on 21,380 qemu blobs (211 MB) it took 0.41 s of Python CPU against 0.23 s
(wall 2.3-3.0 s against 1.9-2.1 s on this machine), so the pipelined reader stays.
"""

from __future__ import annotations

import os
import re
import subprocess
import weakref
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import git as gitpython

from flowscan.errors import FlowscanError
from flowscan.progress import NULL, Progress
from flowscan.sources.checkout import DirTree  # noqa: F401 (re-exported)
from flowscan.sources.git import (LOCAL_ONLY, ForwardProgress, GitFailed, clone_problem, config_bool, http_limits,
                                  last_error_line, locked, names_damage, run, run_direct, run_network)
from flowscan.sources.refs import C_SUFFIXES, FileEntry, show
from flowscan.sources.scopes import is_c, norm_scope, pathspec_of, select
from flowscan.sources.tree import (GREP_WORDS, Tree, git_blob_id, line_patterns, line_test,  # noqa: F401
                                   printable_name, shown_name, warn_unprintable)

GREP_ARG_BYTES = 512 * 1024  # names per `git grep` run (argument lists stay far below the system's limit)


_PCRE: dict[Path, bool] = {}  # git dir -> False when its git has no Perl regexes (`grep -P`)


class _NoPcre(Exception):
    pass


_ODD_NAME = re.compile("[\x01-\x08\x0a-\x1f\x7f\udc80-\udcff]")
_LISTINGS: dict[tuple[str, str, tuple[str, ...]], tuple[list[tuple[str, str]], list[str]]] = {}
_NAMED: dict[tuple[str, str, tuple[str, ...]], list[FileEntry]] = {}


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
            reading = False
            try:
                for _ in chunk:
                    reading = True
                    item = self._response()
                    reading = False
                    pending -= 1
                    yield item
            finally:
                if reading:  # stopped within a response (a signal): the stream is out of step, and reading
                    self.close()  # on would wait forever for bytes git never sends
                else:
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
        # Only these files are searched (named one by one, or by suffix when they are all the tree's C
        # files): a directory would also hold files whose blobs this partial clone lacks, and git would
        # fetch those one request each.
        self.ensure_blobs(e.blob for e in entries)
        if _PCRE.get(self.gitdir, True):
            try:  # the exact test as Perl regexes: git names the files, no line comes back to test here
                pats = [a for p in line_patterns(words, members, defs, macros)
                        for a in ("-e", p.decode("ascii"))]
                return {p for p, _ in self._grep(["-l", "-P", *pats], entries)}
            except _NoPcre as exc:
                if exc.args[0]:
                    _PCRE[self.gitdir] = False
        # Without Perl regexes: one pass for every name as a whole word, and which kind of match each line
        # is (word, member access, definition line) decided here. One extended pattern per few hundred
        # words: git tests each -e pattern separately on every line, so 140 fixed strings cost 2.5x one
        # alternation of them.
        test = line_test(words, members, defs, macros)
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
