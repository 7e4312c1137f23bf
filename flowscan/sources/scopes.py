"""Scopes: which paths of a tree a question or a flow reads."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Iterable, Sequence


from flowscan.errors import FlowscanError
from flowscan.sources.refs import C_SUFFIXES, has_control, show



def norm_scope(scope: str, root: Path | None = None) -> str:
    """A scope relative to the tree root, posix, without '.' parts; '' is the whole tree."""
    raw = scope
    if not isinstance(scope, str) or not scope.strip() or has_control(scope) or "\n" in scope:
        raise FlowscanError(f"invalid scope '{show(str(raw))}'")
    scope = scope.strip()
    if scope.startswith("/"):
        if root is not None:
            rel = os.path.relpath(os.path.normpath(scope), os.path.realpath(root))
            if rel == ".." or rel.startswith("../"):
                raise FlowscanError(f"scope '{show(raw)}' points outside the tree {root}")
            scope = rel
        else:
            raise FlowscanError(f"scope '{show(raw)}' is absolute; scopes are relative to the tree root")
    parts = [p for p in scope.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FlowscanError(f"scope '{show(raw)}' points outside the tree ('..')")
    return "/".join(parts)


def _is_glob(scope: str) -> bool:
    return any(c in scope for c in "*?[")


def _scope_matches(path: str, scope: str) -> bool:
    if scope == "":
        return True
    if not _is_glob(scope):
        return path == scope or path.startswith(scope + "/")
    if fnmatch.fnmatchcase(path, scope):
        return True
    pos = path.find("/")
    while pos != -1:  # a directory that matches the glob takes everything under it
        if fnmatch.fnmatchcase(path[:pos], scope):
            return True
        pos = path.find("/", pos + 1)
    return False


def select(paths: Iterable[str], scopes: Sequence[str], label: str, strict: bool = True) -> set[str]:
    """Paths in any scope. strict: FlowscanError naming a scope that matches nothing; otherwise such
    scopes are skipped (flow specs name directories of several releases) unless none matches at all."""
    paths = list(paths)
    if not scopes or "" in scopes:
        return set(paths)
    chosen: set[str] = set()
    for scope in scopes:
        if _is_glob(scope):
            hit = [p for p in paths if _scope_matches(p, scope)]
        else:
            prefix = scope + "/"
            hit = [p for p in paths if p == scope or p.startswith(prefix)]
        if not hit and strict:
            raise FlowscanError(f"scope '{scope}' matches nothing in {label}")
        chosen.update(hit)
    if not chosen:
        raise FlowscanError(f"none of the scopes {', '.join(scopes)} matches anything in {label}")
    return chosen


def pathspec_of(scope: str) -> str:
    """The literal directory part of a scope, so git can limit the listing even for globs."""
    if not _is_glob(scope):
        return scope
    head = []
    for part in scope.split("/"):
        if _is_glob(part):
            break
        head.append(part)
    return "/".join(head)


def is_c(path: str) -> bool:
    return path.endswith(C_SUFFIXES)


# ------------------------------------------------------------------------------------------ trees
