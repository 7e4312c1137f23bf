"""The built wheel carries queries/ and the bundled fixtures, and an installed (non-editable) flowscan finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True)
    if proc.returncode != 0 and "hatchling" in proc.stderr:
        pytest.skip("hatchling (a test extra) is not installed")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp / "dist").glob("flowscan-*.whl")
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return wheel, site


def test_wheel_contains_queries_and_fixtures(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "flowscan/queries/c/calls.scm" in names
    assert "flowscan/queries/registrations.toml" in names
    assert "flowscan/queries/flows/arm64-reboot.toml" in names
    assert "flowscan/queries/c/macros.toml" in names
    assert "flowscan/fixtures/qemu/v10.0.0/accel/kvm/kvm-all.c" in names


def test_installed_package_finds_its_data(installed, tmp_path):
    _, site = installed
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import flowscan.resources as r; print(r.queries_dir())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(site / "flowscan" / "queries")
    proc = subprocess.run([sys.executable, "-m", "flowscan", "-q", "--cache-dir", str(tmp_path / "c"), "trace"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "81 hops: 79 verified, 2 unverifiable -> OK" in proc.stdout
    assert str(site / "flowscan" / "fixtures" / "linux" / "v6.12") in proc.stdout
