"""Sources and their validation: a role with a repository at a ref (or a plain directory); refs and URLs checked before they reach git."""

from __future__ import annotations

import re
from dataclasses import dataclass


from flowscan.errors import FlowscanError


C_SUFFIXES = (".c", ".h", ".S")  # .S: assembly, read by flowscan.extract.asm
MAX_FILE_SIZE = 4 * 1024 * 1024  # larger files are listed; the scanner skips them

_ALLOWED_SCHEMES = ("https", "http", "git", "ssh", "git+ssh", "ssh+git", "file")
HEX = re.compile(r"[0-9a-f]{4,64}")
FULL_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


# ----------------------------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Source:
    role: str  # guest | host | vmm | "" (ad-hoc queries)
    repo: str = ""  # git URL or local path (checkout or bare repo)
    ref: str = ""  # tag, branch or commit ('' = the remote's HEAD)
    src: str = ""  # a plain directory on disk (no git needed); exclusive with repo/ref


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the tree root, posix
    blob: str  # git blob id (sha1 hex); for plain dirs computed like `git hash-object`
    size: int


# ------------------------------------------------------------------------------------------ validation



def show(text: str) -> str:
    """Text safe to print on one line (control characters escaped)."""
    return text.encode("unicode_escape").decode("ascii")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def validate_ref(ref: str) -> str:
    """Return ``ref`` if it is a safe git ref name (git check-ref-format rules plus no leading '-')."""
    def bad(reason: str) -> FlowscanError:
        return FlowscanError(f"invalid ref '{show(ref)}': {reason}")

    if not isinstance(ref, str) or not ref:
        raise FlowscanError("invalid ref '': empty")
    if len(ref) > 255:
        raise bad("too long")
    if ref.startswith("-"):
        raise bad("must not begin with '-'")
    if has_control(ref):
        raise bad("contains control characters")
    if " " in ref:
        raise bad("contains a space")
    for ch in "~^:?*[\\":
        if ch in ref:
            raise bad(f"contains '{ch}'")
    if ".." in ref:
        raise bad("contains '..'")
    if "@{" in ref:
        raise bad("contains '@{'")
    if ref == "@":
        raise bad("'@' alone is not a ref")
    if ref.startswith("/") or ref.endswith("/") or "//" in ref:
        raise bad("empty path component")
    if ref.endswith("."):
        raise bad("must not end with '.'")
    for part in ref.split("/"):
        if part.startswith("."):
            raise bad("a component begins with '.'")
        if part.endswith(".lock"):
            raise bad("a component ends with '.lock'")
    return ref


def _is_url(repo: str) -> bool:
    return "://" in repo


def _is_scp_like(repo: str) -> bool:
    """git's rule: 'host:path' / 'user@host:path' when a ':' comes before any '/'."""
    if _is_url(repo) or ":" not in repo:
        return False
    colon = repo.index(":")
    slash = repo.find("/")
    return slash == -1 or colon < slash


def is_local_path(repo: str) -> bool:
    return not _is_url(repo) and not _is_scp_like(repo)


def local_transport(repo: str) -> bool:
    """git runs upload-pack on this machine for local paths and file:// URLs."""
    return is_local_path(repo) or repo.lower().startswith("file://")


def validate_repo(url_or_path: str) -> str:
    """Return the URL/path if git may be pointed at it; refuse transports that run commands."""
    repo = url_or_path

    def bad(reason: str) -> FlowscanError:
        return FlowscanError(f"invalid repository '{show(repo)}': {reason}")

    if not isinstance(repo, str) or not repo.strip():
        raise FlowscanError("invalid repository '': empty")
    if has_control(repo):
        raise bad("contains control characters")
    if repo.startswith("-"):
        raise bad("must not begin with '-'")
    helper = re.match(r"([A-Za-z0-9][A-Za-z0-9+.-]*)::", repo)
    if helper:
        raise bad(f"transport '{helper.group(1)}::' is not allowed (only https, http, git, ssh, file "
                  "URLs, user@host:path and local paths)")
    if _is_url(repo):
        scheme, rest = repo.split("://", 1)
        if scheme.lower() not in _ALLOWED_SCHEMES:
            raise bad(f"scheme '{scheme}' is not allowed (only {', '.join(_ALLOWED_SCHEMES)})")
        host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
        user = rest.split("/", 1)[0].rsplit("@", 1)[0] if "@" in rest.split("/", 1)[0] else ""
        if host.startswith("-") or user.startswith("-"):
            raise bad("host or user must not begin with '-'")
        if scheme.lower() != "file" and not host:
            raise bad("no host")
    elif _is_scp_like(repo):
        hostpart = repo.split(":", 1)[0]
        user, _, host = hostpart.rpartition("@")
        if not host or host.startswith("-") or user.startswith("-"):
            raise bad("host or user must not begin with '-'")
    return repo


# ------------------------------------------------------------------------------------------ git plumbing

