"""git through GitPython, fenced: restricted protocols, the repository pinned, bounded network waits, one-line errors.

Every git command runs with ``GIT_ALLOW_PROTOCOL`` limited to file/git/http(s)/ssh (never ``ext::`` or
``fd::``), no prompt, C messages, and the repository it works on named explicitly (``GIT_DIR`` and its
kin pinned to the cache clone, or to ``/dev/null`` for commands that need none), so neither a ``GIT_DIR``
inherited from a hook nor the configuration of a repository that happens to contain the current
directory (``core.gitProxy``, ``url.*.insteadOf``, ...) is ever read.

Commands that talk to a remote run under a watchdog: git is started in its own process group with
``--progress`` forced, and when neither it nor its helpers (``git-remote-https``, ``ssh``,
``index-pack``) write anything for ``timeout`` seconds, the whole group is killed and the caller gets
`NetworkTimeout`. Over http(s) git's own low-speed limit fires first, with git's own message.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import git as gitpython

from flowscan.errors import FlowscanError
from flowscan.progress import Progress

ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
# Local commands allow no transport at all: an object missing from a partial clone is an error (the clone
# is damaged: every tree is fetched with the commit and blobs in bulk before any read), never a hidden
# one-object fetch outside the watchdog. (git 2.44's GIT_NO_LAZY_FETCH says the same; this works on older.)
LOCAL_ONLY = {"GIT_ALLOW_PROTOCOL": "none"}
DEFAULT_NETWORK_TIMEOUT = 60.0  # seconds without a byte from the remote before giving up
TIMEOUT_ENV = "FLOWSCAN_NETWORK_TIMEOUT"

# What locates a repository: pinned for every command so that nothing inherited chooses it.
_LOCATING = ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
             "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE")


def _fence(gitdir: Path | None) -> dict[str, str]:
    """The environment every git command gets on top of ours."""
    env = {
        "GIT_TERMINAL_PROMPT": "0",  # an unreachable https URL must fail, not ask for a password
        "GIT_ALLOW_PROTOCOL": ALLOWED_PROTOCOLS,  # never ext::, fd:: or other helpers
        "LC_ALL": "C",  # stable messages to classify
        "LANGUAGE": "C",
        "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND") or "ssh -o BatchMode=yes",
    }
    where = str(gitdir) if gitdir is not None else os.devnull  # /dev/null: "no repository", none is searched
    env.update({"GIT_DIR": where, "GIT_WORK_TREE": where, "GIT_COMMON_DIR": where,
                "GIT_INDEX_FILE": os.path.join(where, "index") if gitdir is not None else os.devnull,
                "GIT_OBJECT_DIRECTORY": os.path.join(where, "objects") if gitdir is not None else os.devnull,
                "GIT_ALTERNATE_OBJECT_DIRECTORIES": "", "GIT_NAMESPACE": ""})
    return env


def git_env(gitdir: Path | None = None) -> dict[str, str]:
    """The whole environment of a fenced git command (for callers that start git themselves)."""
    env = dict(os.environ)
    for key in _LOCATING:
        env.pop(key, None)
    env.update(_fence(gitdir))
    return env


def last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(("fatal:", "error:")):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else "git failed"


class GitFailed(Exception):
    def __init__(self, args: Sequence[str], code: int, stderr: str):
        super().__init__(f"git {' '.join(args)}: exit {code}: {last_error_line(stderr)}")
        self.code = code
        self.stderr = stderr
        self.message = last_error_line(stderr)


class NetworkTimeout(FlowscanError):
    """A remote sent nothing for the configured time."""


def network_timeout(configured: float | None = None) -> float:
    """Seconds a remote may stay silent: $FLOWSCAN_NETWORK_TIMEOUT, else flowscan.toml's, else 60."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not (0 < value < 1e6):
            raise FlowscanError(f"{TIMEOUT_ENV}={raw!r}: must be a number of seconds above 0")
        return value
    return float(configured) if configured else DEFAULT_NETWORK_TIMEOUT


# ------------------------------------------------------------------------------------------ running git

def repo_at(gitdir: Path) -> gitpython.Repo:
    """The cache clone at `gitdir`, every command of it fenced and pinned to it."""
    try:
        repo = gitpython.Repo(str(gitdir))
    except (gitpython.InvalidGitRepositoryError, gitpython.NoSuchPathError):
        raise FlowscanError(f"not a git repository: {gitdir}") from None
    repo.git.update_environment(**_fence(Path(gitdir)))
    return repo


def init_bare(path: Path) -> gitpython.Repo:
    """A new bare repository without template hooks, fenced like `repo_at`.

    Made as `git init` into the pinned GIT_DIR, then marked bare: ``git init --bare`` refuses to run with
    GIT_WORK_TREE set, and the fence must set it (an inherited one would otherwise apply)."""
    g = gitpython.Git(str(path))
    g.update_environment(**_fence(Path(path)))
    try:
        run(g, ["init", "-q", "--template="])
        run(g, ["config", "core.bare", "true"])
        run(g, ["config", "core.logAllRefUpdates", "false"])
        run(g, ["config", "--unset", "core.worktree"])  # written by init from the pinned GIT_WORK_TREE
    except GitFailed as exc:
        raise FlowscanError(f"cannot create {path}: {exc.message}") from None
    return repo_at(path)


def outside() -> gitpython.Git:
    """git for commands that need no repository (ls-remote): none is searched for or read."""
    g = gitpython.Git(os.path.realpath(tempfile.gettempdir()))
    g.update_environment(**_fence(None))
    return g


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value or "")


def _stderr_of(exc: gitpython.GitCommandError) -> str:
    """git's own stderr (GitPython wraps it as "\n  stderr: '...'")."""
    text = _text(exc.stderr)
    m = re.fullmatch(r"\s*stderr: '(.*)'\s*", text, re.S)
    return m.group(1) if m else text


def _stdin(data: bytes | None):
    if data is None:
        return None
    fh = tempfile.TemporaryFile()
    fh.write(data)
    fh.seek(0)
    return fh


def run(g: gitpython.Git, args: Sequence[str], input: bytes | None = None) -> bytes:
    """Run a local git command (no network, not even a partial clone's lazy fetch), return its stdout;
    GitFailed on a non-zero exit."""
    inp = _stdin(input)
    try:
        _code, out, _err = g.execute(["git", *args], istream=inp, with_extended_output=True, env=LOCAL_ONLY,
                                     stdout_as_string=False, strip_newline_in_stdout=False)
    except gitpython.GitCommandNotFound as exc:
        raise FlowscanError("git is not installed (no 'git' on PATH)") from exc
    except gitpython.GitCommandError as exc:
        raise GitFailed(args, exc.status if isinstance(exc.status, int) else 1, _stderr_of(exc)) from None
    finally:
        if inp is not None:
            inp.close()
    return out


def run_direct(gitdir: Path, args: Sequence[str]) -> bytes:
    """`run` without GitPython, for commands with thousands of arguments (a `git grep` naming its files):
    GitPython scans every argument for a password to hide, which cost more than the search."""
    try:
        proc = subprocess.run(["git", *args], env={**git_env(gitdir), **LOCAL_ONLY}, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except FileNotFoundError as exc:
        raise FlowscanError("git is not installed (no 'git' on PATH)") from exc
    if proc.returncode:
        raise GitFailed(args, proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc.stdout


class ForwardProgress(gitpython.RemoteProgress):
    """git's transfer progress (parsed by GitPython) forwarded to a flowscan `Progress`."""

    STAGES = {gitpython.RemoteProgress.RECEIVING: "receiving objects",  # the server's own stages are quick
              gitpython.RemoteProgress.RESOLVING: "resolving deltas"}

    def __init__(self, progress: Progress, label: str):
        super().__init__()
        self.progress = progress
        self.label = label
        self._done = 0.0

    def update(self, op_code, cur_count, max_count=None, message=""):
        stage = self.STAGES.get(op_code & self.OP_MASK)
        if stage is None:
            return
        cur = float(cur_count or 0)
        if op_code & self.BEGIN:
            total = int(max_count) if max_count else None
            self.progress.start(f"{self.label}: {stage}", total)
            self._done = 0.0
        if cur > self._done:
            self.progress.advance(int(cur - self._done))
            self._done = cur
        if op_code & self.END:
            self.progress.finish()


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_network(g: gitpython.Git, args: Sequence[str], *, timeout: float, what: str,
                input: bytes | None = None, on_line: Callable[[str], None] | None = None,
                env: dict[str, str] | None = None) -> tuple[bytes, str]:
    """Run a git command that talks to a remote; return (stdout, stderr text).

    The command runs in its own process group; every line it (or a helper) writes to stderr goes to
    `on_line` and counts as a sign of life. After `timeout` seconds without one, the group is killed and
    NetworkTimeout names `what`. On any exception here (Ctrl-C) the group is stopped too.
    """
    inp = _stdin(input)
    try:
        try:
            handle = g.execute(["git", *args], as_process=True, istream=inp, with_stdout=True, env=env,
                               process_group=0)
        except gitpython.GitCommandNotFound as exc:
            raise FlowscanError("git is not installed (no 'git' on PATH)") from exc
        proc: subprocess.Popen = handle.proc
        out = bytearray()
        err = bytearray()
        last = [time.monotonic()]

        def chunks(stream):
            fd = stream.fileno()
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                last[0] = time.monotonic()
                yield chunk

        def pump_out() -> None:
            for chunk in chunks(proc.stdout):
                out.extend(chunk)

        def tell(line: bytes) -> None:
            if on_line is not None and line.strip():
                try:
                    on_line(line.decode("utf-8", "replace"))
                except Exception:  # a failing display must not stop the draining of git's stderr
                    pass

        def pump_err() -> None:
            pending = b""
            for chunk in chunks(proc.stderr):
                err.extend(chunk)
                pending += chunk
                *lines, pending = re.split(rb"[\r\n]", pending)
                for line in lines:
                    tell(line)
            tell(pending)

        pumps = [threading.Thread(target=f, daemon=True) for f in (pump_out, pump_err)]
        for t in pumps:
            t.start()
        timed_out = False
        try:
            while True:
                try:
                    code = proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() - last[0] > timeout:
                        timed_out = True
                        _kill_group(proc, signal.SIGKILL)
            for t in pumps:
                t.join(5)
            if any(t.is_alive() for t in pumps):  # a helper left behind still holds a pipe
                _kill_group(proc, signal.SIGKILL)
                for t in pumps:
                    t.join(5)
        except BaseException:
            if proc.poll() is None:  # interrupted: do not leave git and its helpers running
                _kill_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
            _kill_group(proc, signal.SIGKILL)  # helpers too, whether or not git itself is gone
            proc.wait()
            for t in pumps:
                t.join(5)
            raise
        finally:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None and not any(t.is_alive() for t in pumps):
                    stream.close()
        if timed_out:
            raise NetworkTimeout(f"{what}: no answer for {timeout:g} s (network_timeout in flowscan.toml, "
                                 f"or {TIMEOUT_ENV})")
        text = err.decode("utf-8", "replace")
        if code:
            raise GitFailed(args, code, text)
        return bytes(out), text
    finally:
        if inp is not None:
            inp.close()


def http_limits(timeout: float) -> list[str]:
    """git options that make a stalled http(s) transfer fail after `timeout` seconds (below 1 byte/s)."""
    return ["-c", "http.lowSpeedLimit=1", "-c", f"http.lowSpeedTime={max(1, int(round(timeout)))}"]


# ------------------------------------------------------------------------------------------ helpers

@contextmanager
def locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def config_bool(repo: gitpython.Repo, section: str, option: str) -> bool:
    """A boolean of the clone's own configuration file, read by GitPython (no process)."""
    reader = repo.config_reader("repository")
    try:
        return bool(reader.get_value(section, option, False))
    except Exception:  # unreadable value: treat as unset
        return False
    finally:
        reader.release()



# ------------------------------------------------------------------------------------------ damage

# What git says when a repository's own files are damaged (a pack that does not inflate or match its
# index, an object or ref that is gone or garbled, a lazy fetch that a local command may not make).
_DAMAGE = re.compile(r"corrupt|does not match index|bad object|unable to read|not a (tree|commit|blob|tag) object|"
                     r"invalid sha1 pointer|bad packed|inflate|unexpected line|not a git repository|"
                     r"missing (blob|tree|commit|tag)|could not read|bad tree|bad file|premature end|"
                     r"transport '[^']*' not allowed|is missing|cannot be accessed|bad ref|broken link|"
                     r"unable to parse|invalid object|truncated|unknown object type|object file .* is empty|"
                     r"improper packfile|bad (signature|index file)|index file .* is too small", re.I)


def names_damage(message: str) -> bool:
    """Does git's message say the repository's files are damaged (rather than a bad argument or the net)?"""
    return bool(_DAMAGE.search(message or ""))


def clone_problem(gitdir: Path) -> str:
    """'' when the clone at `gitdir` holds together (``git fsck --connectivity-only``: refs, commits and
    trees readable and linked; blobs are not inflated, so this is cheap), else git's first complaint."""
    g = gitpython.Git(str(gitdir))
    g.update_environment(**_fence(Path(gitdir)))
    try:
        code, out, err = g.execute(["git", "fsck", "--connectivity-only", "--no-dangling", "--no-progress"],
                                   with_extended_output=True, with_exceptions=False, env=LOCAL_ONLY)
    except gitpython.GitCommandNotFound as exc:
        raise FlowscanError("git is not installed (no 'git' on PATH)") from exc
    if code == 0:
        return ""
    lines = [ln.strip() for ln in f"{_text(err)}\n{_text(out)}".splitlines()]  # (fsck reports on both)
    lines = [ln.removeprefix("error: ").removeprefix("fatal: ") for ln in lines
             if ln and not ln.startswith("notice:") and "transport" not in ln]
    if len(lines) > 1 and lines[0].startswith("broken link from"):  # "broken link from X" / "to Y"
        lines[0] = " ".join(f"{lines[0]} {lines[1]}".split())
    return (lines[0] if lines else f"git fsck: exit {code}")[:200]
