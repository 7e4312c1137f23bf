"""Run one command as a whole process tree: wall-clock seconds and peak RSS of the tree.

The command starts in a new session; every ~50 ms the RSS of every process of that session (the
command, its worker processes, the git processes it starts) is read from /proc and summed; the peak
of that sum is reported. It is also compared with ``ru_maxrss`` from wait4 (the largest single process
of the tree) and the larger is kept, so a process too short-lived to be sampled still counts.
Summed RSS counts pages shared by forked workers once per process: an upper bound of the real use.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

POLL_SECONDS = 0.05
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Run:
    seconds: float
    peak_rss: int  # bytes
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False
    cpu: float = 0.0  # user + system seconds of the process and the descendants it waited for


def _session_rss(sid: int) -> int:
    total = 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ... ; comm may hold spaces and parentheses
        rest = raw[raw.rfind(b")") + 2:].split()
        try:
            if int(rest[3]) == sid:
                total += int(rest[21]) * PAGE
        except (IndexError, ValueError):
            continue
    return total


def run(cmd: list[str], cwd: str | None = None, env: dict | None = None, timeout: float | None = None) -> Run:
    """Run cmd to completion (or timeout: the whole session is killed) and measure it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
        except OSError as exc:
            return Run(0.0, 0, 127, "", f"{type(exc).__name__}: {exc}")
        peak = [0]
        done = threading.Event()
        timed_out = [False]

        def sample() -> None:
            while not done.is_set():
                rss = _session_rss(proc.pid)
                if rss > peak[0]:
                    peak[0] = rss
                if timeout is not None and time.perf_counter() - started > timeout and not timed_out[0]:
                    timed_out[0] = True
                    _kill_session(proc.pid)
                done.wait(POLL_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        while True:
            try:
                _pid, status, usage = os.wait4(proc.pid, 0)
                break
            except InterruptedError:
                continue
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if timed_out[0]:
            _kill_session(proc.pid)  # stragglers of the session, if any
        out.seek(0)
        err.seek(0)
        peak_bytes = max(peak[0], usage.ru_maxrss * 1024)
        return Run(seconds, peak_bytes, proc.returncode, out.read().decode("utf-8", "replace"),
                   err.read().decode("utf-8", "replace"), timed_out[0], usage.ru_utime + usage.ru_stime)


def _kill_session(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.5)
