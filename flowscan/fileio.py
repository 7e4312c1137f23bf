"""Files that are whole or absent: atomic output, and temporary work directories a later run can tell
are abandoned.

A process killed with SIGKILL cleans up nothing. So every temporary directory flowscan works in carries a
lock held by its owner for as long as it (or any worker it forked) lives; a later run sweeps the ones
whose lock it can take. The directory only gets its sweepable name once the lock is held, so a sweep never
takes a directory that is being set up.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from flowscan.errors import FlowscanError

OWNER = ".owner"
UNOWNED_AGE = 3600  # a work directory without an owner file (an older flowscan's) is abandoned after this


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _target(path: Path) -> tuple[Path, int | None]:
    """Where writing `path` lands and the mode to give it. As a shell's `>` does: through a symlink (the
    link stays), keeping an existing file's mode (a 0600 file stays private), refusing a file we may not
    write or that no one may (a 0444 file says "do not overwrite", to root too)."""
    path = Path(path)
    real = Path(os.path.realpath(path)) if path.is_symlink() else path
    parent = real.parent if str(real.parent) else Path(".")
    if not parent.is_dir():
        raise FlowscanError(f"cannot write {path}: directory {parent} does not exist")
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return real, None
    except OSError as exc:
        raise FlowscanError(f"cannot write {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FlowscanError(f"cannot write {path}: not a regular file")
    if not os.access(real, os.W_OK) or not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise FlowscanError(f"cannot write {path}: it is read-only (mode {stat.S_IMODE(st.st_mode):04o})")
    return real, stat.S_IMODE(st.st_mode)


def write_all(files: list[tuple[Path, bytes]]) -> None:
    """Write several outputs all or none: every target is checked and written under a temporary name
    first, and only then are they moved into place."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in files:
            real, mode = _target(path)
            fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
            staged.append((tmp, real))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())  # mkstemp makes 0600
        for tmp, real in staged:
            os.replace(tmp, real)
    except BaseException:
        for tmp, _real in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    write_all([(Path(path), data)])


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def mark_used(path: Path, every: float = 86400.0) -> None:
    """Make a cache file's mtime its last use (what `flowscan gc` reads), at most once per `every` s."""
    try:
        if os.stat(path).st_mtime < time.time() - every:
            os.utime(path)
    except OSError:
        pass


@contextmanager
def work_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary directory `parent/<prefix><random>`, locked by this process (and the workers it forks,
    which share the lock) while in use and removed afterwards; `sweep(parent, prefix)` removes it if its
    owners are gone."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    setup = Path(tempfile.mkdtemp(prefix=f".setup-{prefix.lstrip('.')}", dir=parent))
    fd = -1
    path = None
    try:
        fd = os.open(setup / OWNER, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = parent / (prefix + setup.name[len(f".setup-{prefix.lstrip('.')}"):])
        os.rename(setup, path)
        yield path
    finally:
        shutil.rmtree(path if path is not None else setup, ignore_errors=True)
        if fd >= 0:
            os.close(fd)


def sweep(parent: Path, prefix: str) -> int:
    """Remove the work directories under `parent` named `<prefix>*` whose owner is gone; how many."""
    removed = 0
    try:
        candidates = [e for e in os.scandir(parent) if e.name.startswith(prefix)
                      or e.name.startswith(f".setup-{prefix.lstrip('.')}")]
    except OSError:
        return 0
    for ent in candidates:
        if not ent.is_dir(follow_symlinks=False):
            continue
        if not ent.name.startswith(prefix):  # a directory being set up: unlocked until its owner locks it
            try:
                if time.time() - ent.stat(follow_symlinks=False).st_mtime <= UNOWNED_AGE:
                    continue
            except OSError:
                continue
        try:
            fd = os.open(os.path.join(ent.path, OWNER), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                old = time.time() - ent.stat(follow_symlinks=False).st_mtime > UNOWNED_AGE
            except OSError:
                continue
            if old:
                shutil.rmtree(ent.path, ignore_errors=True)
                removed += 1
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its owner is alive
            continue
        else:
            shutil.rmtree(ent.path, ignore_errors=True)
            removed += 1
        finally:
            os.close(fd)
    return removed


@contextmanager
def locked(lock_path: Path, on_wait=None) -> Iterator[None]:
    """An exclusive lock on `lock_path` (created if needed) for the block; `on_wait()` is called first
    when another process holds it."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
