"""config.py: flowscan.toml loading, path resolution, errors naming file and key, command line merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowscan.config import Config, SourceConfig, default_cache_dir, load_config, merge_cli
from flowscan.errors import FlowscanError
from flowscan.sources.refs import Source

FULL = '''
flow = "arm64-reboot"
cache_dir = ".flowscan-cache"
[sources.guest]
repo = "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"
ref = "v6.12.8"
scope = ["arch/arm64", "kernel", "drivers/firmware"]
url_template = "https://git.kernel.org/tree/{path}?h={ref}#n{line}"
[sources.host]
repo = "../trees/linux"
ref = "v6.1.176"
[sources.vmm]
src = "qemu-src"
scope = ["hw", "target/arm"]
'''


def write_config(tmp_path: Path, text: str, name: str = "flowscan.toml") -> Path:
    path = tmp_path / "project" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_full_config(tmp_path):
    path = write_config(tmp_path, FULL)
    cfg = load_config(path)
    base = path.parent.resolve()
    assert cfg.flow == "arm64-reboot" and cfg.path == path
    assert cfg.cache_dir == base / ".flowscan-cache"
    guest = cfg.sources["guest"]
    assert guest == SourceConfig(role="guest", repo="https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
                                 ref="v6.12.8", scope=["arch/arm64", "kernel", "drivers/firmware"],
                                 url_template="https://git.kernel.org/tree/{path}?h={ref}#n{line}")
    assert cfg.sources["host"].repo == str(base / "../trees/linux")  # relative to the file, not the cwd
    assert cfg.sources["vmm"].src == str(base / "qemu-src")
    assert cfg.sources["vmm"].source() == Source(role="vmm", src=str(base / "qemu-src"))
    assert guest.source() == Source("guest", guest.repo, "v6.12.8")


def test_default_file_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg == Config() and cfg.path is None and cfg.sources == {}
    (tmp_path / "flowscan.toml").write_text('flow = "x"\n')
    assert load_config().flow == "x"


def test_explicit_missing_file(tmp_path):
    with pytest.raises(FlowscanError, match="no such config file: .*nope.toml"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("text, message", [
    ('flow = "x\n', r"flowscan.toml: invalid TOML"),
    ('flows = "x"\n', r"flowscan.toml: flows: unknown key"),
    ('flow = 3\n', r"flowscan.toml: flow: must be a string"),
    ('cache_dir = ["a"]\n', r"flowscan.toml: cache_dir: must be a non-empty string"),
    ('sources = "x"\n', r"flowscan.toml: sources: must be a table"),
    ('[sources.quest]\nrepo = "x"\n', r"flowscan.toml: sources.quest: unknown role"),
    ('[sources.guest]\nrepo = "x"\nbranch = "y"\n', r"flowscan.toml: sources.guest.branch: unknown key"),
    ('[sources.guest]\nrepo = "x"\nref = 6\n', r"flowscan.toml: sources.guest.ref: must be a string"),
    ('[sources.guest]\nrepo = "x"\nscope = [1]\n', r"sources.guest.scope: must be a list of non-empty strings"),
    ('[sources.guest]\nrepo = "x"\nscope = 1\n', r"sources.guest.scope: must be a list"),
    ('[sources.guest]\nrepo = "x"\nref = "-x"\n', r"sources.guest.ref: invalid ref '-x'"),
    ('[sources.guest]\nrepo = "x"\nref = "a..b"\n', r"sources.guest.ref: invalid ref 'a..b'"),
    ('[sources.guest]\nrepo = "ext::sh -c x"\n', r"sources.guest.repo: invalid repository"),
    ('[sources.guest]\nrepo = "x"\nsrc = "y"\n', r"sources.guest: src .* excludes repo and ref"),
    ('[sources.guest]\nref = "v1"\n', r"sources.guest.ref: given without repo"),
])
def test_bad_configs(tmp_path, text, message):
    path = write_config(tmp_path, text)
    with pytest.raises(FlowscanError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_scope_may_be_a_single_string(tmp_path):
    cfg = load_config(write_config(tmp_path, '[sources.guest]\nrepo = "x"\nscope = "kernel"\n'))
    assert cfg.sources["guest"].scope == ["kernel"]


def test_scp_like_repo_is_not_a_path(tmp_path):
    cfg = load_config(write_config(tmp_path, '[sources.vmm]\nrepo = "git@gitlab.com:qemu-project/qemu.git"\n'))
    assert cfg.sources["vmm"].repo == "git@gitlab.com:qemu-project/qemu.git"


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "flowscan"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "flowscan"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # not absolute: ignored, as the spec says
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "flowscan"
    assert Config().cache_dir == default_cache_dir()


def test_merge_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write_config(tmp_path, FULL))
    guest = cfg.sources["guest"]
    assert merge_cli(cfg, "guest") == guest
    assert merge_cli(cfg, "guest", ref="v6.13").ref == "v6.13"
    assert merge_cli(cfg, "guest", ref="v6.13").repo == guest.repo
    over = merge_cli(cfg, "guest", repo="mylinux", ref="v1")
    assert (over.repo, over.ref, over.scope) == (str(tmp_path / "mylinux"), "v1", guest.scope)
    d = merge_cli(cfg, "guest", src="somedir")
    assert (d.repo, d.ref, d.src) == ("", "", str(tmp_path / "somedir"))
    vmm = merge_cli(cfg, "vmm", repo="https://gitlab.com/qemu-project/qemu.git", ref="v10.0.0")
    assert (vmm.src, vmm.repo, vmm.scope) == ("", "https://gitlab.com/qemu-project/qemu.git", ["hw", "target/arm"])
    merged = merge_cli(cfg, "guest", ref="v7")
    merged.scope.append("x")
    assert "x" not in cfg.sources["guest"].scope  # the config is not modified through the result


def test_merge_cli_errors(tmp_path):
    cfg = load_config(write_config(tmp_path, FULL))
    with pytest.raises(FlowscanError, match="unknown role 'quest'"):
        merge_cli(cfg, "quest")
    with pytest.raises(FlowscanError, match="--ref v1 given but no repository"):
        merge_cli(cfg, "vmm", ref="v1")
    with pytest.raises(FlowscanError, match="--ref v1 given but no repository"):
        merge_cli(Config(), "guest", ref="v1")
    with pytest.raises(FlowscanError, match="--src excludes"):
        merge_cli(cfg, "guest", src="x", ref="v1")
    with pytest.raises(FlowscanError, match="invalid ref '-x'"):
        merge_cli(cfg, "guest", ref="-x")
    with pytest.raises(FlowscanError, match="invalid repository"):
        merge_cli(cfg, "guest", repo="ext::sh")
    assert merge_cli(Config(), "host") == SourceConfig(role="host")
