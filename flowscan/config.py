"""flowscan.toml: the flow to check, where the cache lives, and the guest/host/vmm sources.

    flow = "arm64-reboot"
    cache_dir = ".flowscan-cache"          # optional
    network_timeout = 60                   # optional: seconds a remote may stay silent
                                           # ($FLOWSCAN_NETWORK_TIMEOUT overrides it)
    [sources.guest]
    repo = "https://..."                   # or a local path; or src = "a/plain/dir"
    ref = "v6.12.8"
    scope = ["arch/arm64", "kernel"]       # optional
    url_template = "https://.../tree/{path}?h={ref}#n{line}"   # optional

Relative paths in the file are relative to the file's directory; on the command line, to the current one.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from flowscan.errors import FlowscanError
from flowscan.sources.refs import Source, is_local_path, validate_ref, validate_repo

ROLES = ("guest", "host", "vmm")
DEFAULT_REPOS = {
    "guest": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
    "host": "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git",
    "vmm": "https://gitlab.com/qemu-project/qemu.git",
}
CONFIG_NAME = "flowscan.toml"
_TOP_KEYS = ("flow", "cache_dir", "network_timeout", "sources")
_SOURCE_KEYS = ("repo", "ref", "src", "scope", "url_template")


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/flowscan, or ~/.cache/flowscan."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "flowscan"


@dataclass
class SourceConfig:
    role: str
    repo: str = ""
    ref: str = ""
    src: str = ""
    scope: list[str] = field(default_factory=list)
    url_template: str = ""

    def source(self) -> Source:
        return Source(role=self.role, repo=self.repo, ref=self.ref, src=self.src)


@dataclass
class Config:
    flow: str = ""
    cache_dir: Path = field(default_factory=default_cache_dir)
    sources: dict[str, SourceConfig] = field(default_factory=dict)
    path: Path | None = None
    network_timeout: float | None = None  # None: the default (flowscan.sources.git)

    def source(self, role: str) -> SourceConfig:
        """The configured source for a role (empty when the file has none)."""
        _check_role(role)
        return self.sources.get(role) or SourceConfig(role=role)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise FlowscanError(f"unknown role '{role}' (expected one of {', '.join(ROLES)})")


def _resolve_path(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path))


def _resolve_repo(value: str, base: Path) -> str:
    return _resolve_path(value, base) if is_local_path(value) else value


def load_config(path: Path | None = None) -> Config:
    """Read flowscan.toml (``path``, or the one in the current directory if there is one)."""
    explicit = path is not None
    path = Path(path) if explicit else Path.cwd() / CONFIG_NAME
    if not path.is_file():
        if explicit:
            raise FlowscanError(f"no such config file: {path}")
        return Config()
    name = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except RecursionError:
        raise FlowscanError(f"{name}: invalid TOML: nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        raise FlowscanError(f"{name}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowscanError(f"{name}: cannot read: {exc}") from None
    base = path.resolve().parent

    def bad(key: str, why: str) -> FlowscanError:
        return FlowscanError(f"{name}: {key}: {why}")

    for key in data:
        if key not in _TOP_KEYS:
            raise bad(key, f"unknown key (expected {', '.join(_TOP_KEYS)})")
    cfg = Config(path=path)
    if "flow" in data:
        if not isinstance(data["flow"], str):
            raise bad("flow", "must be a string")
        cfg.flow = data["flow"]
    if "cache_dir" in data:
        if not isinstance(data["cache_dir"], str) or not data["cache_dir"].strip():
            raise bad("cache_dir", "must be a non-empty string")
        cfg.cache_dir = Path(_resolve_path(data["cache_dir"], base))
    if "network_timeout" in data:
        value = data["network_timeout"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
            raise bad("network_timeout", "must be a number of seconds above 0")
        cfg.network_timeout = float(value)
    sources = data.get("sources", {})
    if not isinstance(sources, dict):
        raise bad("sources", "must be a table ([sources.guest], [sources.host], [sources.vmm])")
    for role, table in sources.items():
        key = f"sources.{role}"
        if role not in ROLES:
            raise bad(key, f"unknown role (expected one of {', '.join(ROLES)})")
        if not isinstance(table, dict):
            raise bad(key, "must be a table")
        sc = SourceConfig(role=role)
        for k, v in table.items():
            if k not in _SOURCE_KEYS:
                raise bad(f"{key}.{k}", f"unknown key (expected {', '.join(_SOURCE_KEYS)})")
            if k == "scope":
                if isinstance(v, str):
                    v = [v]
                if not isinstance(v, list) or not all(isinstance(s, str) and s.strip() for s in v):
                    raise bad(f"{key}.scope", "must be a list of non-empty strings")
                sc.scope = list(v)
            elif not isinstance(v, str):
                raise bad(f"{key}.{k}", "must be a string")
            else:
                setattr(sc, k, v)
        for k, check in (("repo", validate_repo), ("ref", validate_ref)):
            if getattr(sc, k):
                try:
                    check(getattr(sc, k))
                except FlowscanError as exc:
                    raise bad(f"{key}.{k}", str(exc)) from None
        if sc.repo:
            sc.repo = _resolve_repo(sc.repo, base)
        if sc.src:
            if sc.repo or sc.ref:
                raise bad(key, "src (a plain directory) excludes repo and ref")
            sc.src = _resolve_path(sc.src, base)
        elif sc.ref and not sc.repo:
            raise bad(f"{key}.ref", "given without repo")
        cfg.sources[role] = sc
    return cfg


def merge_cli(config: Config, role: str, repo: str | None = None, ref: str | None = None,
              src: str | None = None) -> SourceConfig:
    """The source for ``role``: the config's, overridden by what the command line gives."""
    _check_role(role)
    base = config.source(role)
    if src and (repo or ref):
        raise FlowscanError(f"{role}: --src excludes --repo and --ref")
    if src:
        return replace(base, repo="", ref="", src=_resolve_path(src, Path.cwd()))
    merged = replace(base, scope=list(base.scope))
    if repo:
        validate_repo(repo)
        merged.repo = _resolve_repo(repo, Path.cwd())
        merged.src = ""
    if ref:
        validate_ref(ref)
        if not merged.repo:
            raise FlowscanError(f"{role}: --ref {ref} given but no repository (--repo or "
                                f"[sources.{role}] repo in {CONFIG_NAME})")
        merged.ref = ref
        merged.src = ""
    return merged
