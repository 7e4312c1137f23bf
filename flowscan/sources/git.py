"""The git command line, fenced: restricted protocols, no repository-controlled configuration, one-line errors."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import click

from flowscan.errors import FlowscanError


def git_env() -> dict[str, str]:
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


def git(args: Sequence[str], cwd: Path | None = None, input: bytes | None = None,
         show_progress: bool = False, trace: bool = False):
    """Run git, return stdout. With show_progress, git's stderr is copied to ours as it comes.
    With trace, return (stdout, stderr text) of a run with GIT_TRACE_PACKET on."""
    cmd = ["git", *args]
    try:
        if not show_progress:
            env = git_env()
            if trace:
                env["GIT_TRACE_PACKET"] = "1"
            proc = subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, env=env)
            if proc.returncode:
                raise GitFailed(args, proc.returncode, proc.stderr.decode("utf-8", "replace"))
            if trace:
                return proc.stdout, proc.stderr.decode("utf-8", "replace")
            return proc.stdout
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as inp:
            if input is not None:
                inp.write(input)
                inp.seek(0)
            proc = subprocess.Popen(cmd, cwd=cwd, stdin=inp, stdout=out, stderr=subprocess.PIPE,
                                    env=git_env())
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
                raise GitFailed(args, code, err.decode("utf-8", "replace"))
            out.seek(0)
            return out.read()
    except FileNotFoundError as exc:
        raise FlowscanError("git is not installed (no 'git' on PATH)") from exc


def say(progress: bool, message: str) -> None:
    if progress:
        click.echo(f"flowscan: {message}", err=True)


# ------------------------------------------------------------------------------------------ scopes


@contextmanager
def locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def tty_progress(progress: bool) -> bool:
    return progress and sys.stderr.isatty()


def progress_flag(progress: bool) -> list[str]:
    return ["--progress"] if tty_progress(progress) else ["-q"]


def config_bool(gitdir: Path, key: str) -> bool:
    try:
        return git(["config", "--bool", key], cwd=gitdir).decode().strip() == "true"
    except GitFailed:
        return False
