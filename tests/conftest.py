"""Shared test fixtures: tagged git repositories built at test time from the miniature trees in fixtures/."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
# Fixture versions, oldest first; the folder name is the tag.
VERSIONS = {"linux": ["v6.1", "v6.12"], "qemu": ["v7.2.0", "v10.0.0"]}


def _git(repo: Path, *args: str) -> None:
    env = {"GIT_AUTHOR_NAME": "fx", "GIT_AUTHOR_EMAIL": "fx@localhost", "GIT_COMMITTER_NAME": "fx",
           "GIT_COMMITTER_EMAIL": "fx@localhost", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo),
           "PATH": "/usr/bin:/bin:/usr/local/bin"}
    subprocess.run(["git", *args], cwd=repo, check=True, env=env, capture_output=True)


def make_fixture_repo(project: str, dest: Path) -> Path:
    """One commit and one tag per fixture version, like ../shared/realtrees/get-real-trees does."""
    dest.mkdir(parents=True, exist_ok=True)
    _git(dest, "init", "-q", "-b", "master")
    for tag in VERSIONS[project]:
        for child in dest.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        shutil.copytree(FIXTURES / project / tag, dest, dirs_exist_ok=True)
        _git(dest, "add", "-A")
        _git(dest, "commit", "-q", "-m", f"{project} {tag}")
        _git(dest, "tag", tag)
    return dest


@pytest.fixture(scope="session")
def fixture_repos(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fxrepos")
    return {p: make_fixture_repo(p, base / p) for p in VERSIONS}


@pytest.fixture(scope="session")
def linux_new() -> Path:
    return FIXTURES / "linux" / "v6.12"


@pytest.fixture(scope="session")
def linux_old() -> Path:
    return FIXTURES / "linux" / "v6.1"


@pytest.fixture(scope="session")
def qemu_new() -> Path:
    return FIXTURES / "qemu" / "v10.0.0"


@pytest.fixture(scope="session")
def qemu_old() -> Path:
    return FIXTURES / "qemu" / "v7.2.0"


# Saved results (real pipeline output on the fixtures, see tests/data/make_samples.py) for render/report.
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def sample():
    from flowscan.flow.results import FlowResult
    return FlowResult.from_json(json.loads((DATA / "arm64-reboot.json").read_text()))


@pytest.fixture(scope="module")
def old_sample():
    from flowscan.flow.results import FlowResult
    return FlowResult.from_json(json.loads((DATA / "arm64-reboot-old.json").read_text()))


@pytest.fixture(scope="module")
def drift_sample():
    from flowscan.flow.results import DriftReport
    return DriftReport.from_json(json.loads((DATA / "arm64-reboot-drift.json").read_text()))
