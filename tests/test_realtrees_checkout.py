"""A checkout of real QEMU stays warm across an edit: the next question reads only the edited file and
answers as a fresh index of the edited checkout does."""

from __future__ import annotations

import subprocess
import time

import pytest

from flowscan.sources import checkout, statcache
from flowscan.sources.trees import git_blob_id
from tests.test_realtrees import QEMU, cache, fs  # noqa: F401 (fixtures)

pytestmark = pytest.mark.realtrees
PATHS = ("accel", "system", "hw/core", "hw/intc", "target/arm", "include/hw")


def test_qemu_checkout_edit_reads_one_file(fs, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(statcache, "RACY_NS", 0)
    co = tmp_path / "qemu"
    co.mkdir()
    archive = subprocess.run(["git", "-C", str(QEMU), "archive", "v10.0.13", *PATHS], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(co)], input=archive, check=True)
    time.sleep(0.05)
    assert fs("index", "--src", str(co))[0] == 0
    code, before, _ = fs("callers", "qemu_system_reset", "--src", str(co))
    assert code == 0 and "system/runstate.c:" in before
    runstate = co / "system" / "runstate.c"
    runstate.write_text(runstate.read_text().replace(
        "void qemu_system_reset(ShutdownCause reason)\n",
        "void probe_edit(void)\n{\n    qemu_system_reset(SHUTDOWN_CAUSE_NONE);\n}\n\n"
        "void qemu_system_reset(ShutdownCause reason)\n", 1))
    seen: list[int] = []
    monkeypatch.setattr(checkout, "git_blob_id", lambda data: seen.append(len(data)) or git_blob_id(data))
    code, after, _ = fs("callers", "qemu_system_reset", "--src", str(co))
    assert code == 0 and "probe_edit -> qemu_system_reset  [direct]" in after
    assert seen and set(seen) == {runstate.stat().st_size}  # only the edited file was read
    monkeypatch.undo()
    code, fresh, _ = fs("--cache-dir", str(tmp_path / "fresh"), "callers", "qemu_system_reset", "--src", str(co),
                        "--whole")
    assert (code, fresh) == (0, after)
