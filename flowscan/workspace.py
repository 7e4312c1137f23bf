"""From "which tree, which ref, which scope" to a call graph: open the source, scan (cached), build the graph.

The one place where sources, scan and graph meet, so the CLI stays a thin layer of options.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence, TypeVar

from flowscan.index.facts_cache import FactsCache, facts_dir, sweep_temporary
from flowscan.errors import FlowscanError
from flowscan.fileio import atomic_write_text, locked
from flowscan.index import integrity
from flowscan.graph.callgraph import Graph
from flowscan.index.store import INDEX_VERSION, Index, hold, index_key, index_path, layout, lock_of, registry_digest
from flowscan.extract.apis import default_registry
from flowscan.extract.macros import check_macro_tables, facts_version
from flowscan.resources import fixtures_dir
from flowscan.flow.results import SourceInfo
from flowscan.index.stats import ScanStats
from flowscan.index.update import LISTING, listing_digest, update_index
from flowscan.progress import NULL, Progress
from flowscan.sources.refs import FileEntry, Source
from flowscan.sources.scopes import norm_scope
from flowscan.sources.checkout import DirTree
from flowscan.sources.tree import Tree
from flowscan.sources.buildfiles import BuildFiles
from flowscan.buildconfig.load import for_tree, guess_profile
from flowscan.buildconfig.model import BuildConfig

if TYPE_CHECKING:  # (spec.py brings jsonschema: a question on an index needs neither)
    from flowscan.flow.spec import FlowSpec

T = TypeVar("T")
OPENED: list[Path] = []  # the indexes this process reads (checked again when SQLite reports damage)

# The embedded default: the bundled miniature trees (newer versions), so `flowscan trace` runs anywhere.
DEMO = {"guest": ("linux", "v6.12"), "host": ("linux", "v6.12"), "vmm": ("qemu", "v10.0.0")}


@dataclass
class Loaded:
    source: Source
    tree: Tree
    graph: Graph
    stats: ScanStats
    info: SourceInfo = field(default_factory=lambda: SourceInfo(role=""))


def demo_source(role: str) -> Source:
    project, version = DEMO[role]
    return Source(role=role, src=str(fixtures_dir() / project / version))


def scans_path(cache_dir: Path) -> Path:
    """Where the last scan of each tree is recorded."""
    return Path(cache_dir) / "scans.json"


def record_scan(cache_dir: Path, label: str, stats: ScanStats) -> None:
    """Keep the last scan's counts per tree, for `flowscan sources` (hit rates). Best effort."""
    path = scans_path(cache_dir)
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    data[label] = {"files": stats.files, "parsed": stats.parsed, "reused": stats.reused,
                   "skipped": stats.skipped, "indexed": stats.indexed, "seconds": round(stats.seconds, 2)}
    try:
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass


def _open_index(path: Path) -> Index | None:
    """The index built earlier, when it is there and sealed as it is now (no read of it: the warm path)."""
    if not path.is_file():
        return None
    hold(path)  # (then it is checked again: gc may have removed it meanwhile)
    if not path.is_file() or not integrity.unchanged(path):
        return None
    return _opened(path)


def _opened(path: Path) -> Index | None:
    hold(path)
    try:
        ix = Index.open(path)
        if ix.meta().get("version") == INDEX_VERSION:
            OPENED.append(path)
            return ix
        ix.db.close()
    except sqlite3.DatabaseError:
        pass
    return None


def _checked_index(path: Path, label: str, progress: Progress) -> Index | None:
    """The index after a full check (the caller holds its lock), or None: there is none, or it was damaged
    and is gone (the caller rebuilds it)."""
    if not path.is_file():
        integrity.discard(path)
        return None
    problem = integrity.verify(path, layout())
    ix = None if problem else _opened(path)
    if ix is None:
        progress.warn(f"the index of {label} was damaged ({problem or 'unreadable'}): rebuilding it")
        integrity.discard(path)
    return ix


def discard_damaged() -> list[Path]:
    """After SQLite reported damage during a question: the indexes this process opened that fail a full
    check, removed (the caller may ask again: they are rebuilt)."""
    bad = []
    for path in dict.fromkeys(OPENED):
        with locked(_lock_of(path)):
            if path.is_file() and (integrity.schema_problem(path, layout()) or integrity.quick_problem(path)):
                integrity.discard(path)
                bad.append(path)
    OPENED.clear()
    return bad


def _facts_cache(cache_dir: Path) -> FactsCache:
    """The facts cache, rid of what killed writers left in it (checked at most hourly)."""
    sweep_temporary(facts_dir(cache_dir))
    return FactsCache(facts_dir(cache_dir), facts_version())


def _lock_of(index: Path) -> Path:
    return lock_of(index)


def _index_path(tree: Tree, scopes: Sequence[str], cache_dir: Path, strict: bool,
                registry) -> tuple[Path, list[FileEntry] | None]:
    """Where this tree and scope's index lives (and the listing, for a checkout: its index is the
    checkout's, one per root and scope, kept up to date with the listing by flowscan.index.update)."""
    snapshot = tree.snapshot(scopes)
    entries = None
    if not snapshot:  # a plain directory: its index is found by where it is, its listing says if it is current
        entries = tree.files(scopes, strict)
        root = getattr(tree, "root", tree.label)
        parts = [str(root), *sorted({norm_scope(s, root) for s in scopes})]
        snapshot = "checkout " + hashlib.sha256(b"\0".join(map(os.fsencode, parts))).hexdigest()
    return index_path(cache_dir, index_key(snapshot, registry_digest(registry))), entries


def _current(ix: Index, entries: list[FileEntry] | None) -> bool:
    """Does the index hold this listing (always, for a commit's: its key names the contents)?"""
    return entries is None or ix.meta().get(LISTING) == listing_digest(entries)


def open_source(source: Source, cache_dir: Path, progress: Progress = NULL,
                network_timeout: float | None = None) -> Tree:
    """The source's tree; a checkout keeps a stat cache in `cache_dir`, so an unchanged one is listed
    without reading its files (and so finds its index, as a commit does)."""
    if source.src and not (source.repo or source.ref):  # (no GitPython on a checkout's path)
        tree: Tree = DirTree(Path(source.src), progress)
    else:
        from flowscan.sources.clones import open_tree

        tree = open_tree(source, cache_dir, progress=progress, network_timeout=network_timeout)
    if isinstance(tree, DirTree):
        tree.keep_stat_cache(cache_dir)
    return tree


def _no_files(tree: Tree, scopes: Sequence[str]) -> FlowscanError:
    return FlowscanError(f"no C files to analyse in {tree.label}" + (f" (scope: {', '.join(scopes)})"
                                                                     if scopes else ""))


def build_config(tree: Tree, name: str = "", config_file: Path | None = None,
                 cache_dir: Path | None = None) -> tuple[BuildConfig | None, str]:
    """The tree's build configuration (`name`, a profile in queries/build/, with the user's file laid
    over it), or (None, why not): then every file counts as built, as without one."""
    if not name and config_file is None:
        return None, "no build configuration: every file counted as built, #if conditions not evaluated"
    files = BuildFiles(tree)
    if not name:
        name = guess_profile(files)
        if not name:
            return None, (f"{tree.label}: neither Kbuild nor meson.build files: {config_file} not used, "
                          f"every file counted as built")
    return for_tree(files, name, config_file, cache_dir)


def load(source: Source, scopes: Sequence[str] = (), *, cache_dir: Path, jobs: int = 0, progress: Progress = NULL,
         prefer: Sequence[str] = (), strict_scopes: bool = True, url_template: str = "",
         tree: Tree | None = None, network_timeout: float | None = None, build: str = "",
         config_file: Path | None = None, listed: tuple[Path, list[FileEntry] | None] | None = None) -> Loaded:
    """The graph of a tree and scope from its index, built first when there is none; `build` names the
    build configuration (queries/build/NAME.toml), `config_file` a user's values for it; `listed` what
    _index_path just gave for this tree and scope (a checkout is not walked twice)."""
    check_macro_tables()
    tree = tree or open_source(source, cache_dir, progress=progress, network_timeout=network_timeout)
    registry = default_registry()
    path, entries = listed or _index_path(tree, scopes, cache_dir, strict_scopes, registry)
    started = time.perf_counter()
    stats = None
    ix = _open_index(path)
    if ix is not None and not _current(ix, entries):  # a checkout edited since: its index is updated
        ix.db.close()
        ix = None
    if ix is None:
        # one builder per index; the others wait for it and use its work
        with locked(_lock_of(path), lambda: progress.message(f"waiting for another flowscan indexing {tree.label}")):
            ix = _checked_index(path, tree.label, progress)
            meta = {"version": INDEX_VERSION, "tree": tree.label, "commit": tree.commit, "scopes": " ".join(scopes)}
            if entries is not None:
                meta[LISTING] = listing_digest(entries)
            if ix is not None and not _current(ix, entries):
                ix.db.close()
                ix = None
                stats = update_index(tree, entries, _facts_cache(cache_dir), path, registry=registry, meta=meta,
                                     jobs=jobs, progress=progress)
                ix = _opened(path) if stats is not None else None
            if ix is None:
                from flowscan.index.build import build_index  # (workers and pools: not for a warm question)

                if entries is None:
                    entries = tree.files(scopes, strict_scopes)
                stats = build_index(tree, entries, _facts_cache(cache_dir), path, jobs=jobs, progress=progress,
                                    registry=registry, meta=meta, updatable=isinstance(tree, DirTree))
                integrity.seal(path)
                ix = _opened(path)
                if ix is None:
                    raise FlowscanError(f"the index of {tree.label} just built at {path} cannot be read")
    if stats is None:  # answered from an index built earlier
        counts = ix.file_counts()
        stats = ScanStats(files=counts["files"], reused=counts["files"] - counts["skipped"],
                          skipped=counts["skipped"], indexed=True)
    stats.seconds = time.perf_counter() - started
    if not stats.files or stats.skipped == stats.files:
        raise _no_files(tree, scopes)
    cfg, note = build_config(tree, build, config_file, cache_dir)
    graph = Graph(ix, registry=registry, prefer=prefer, build=cfg)
    record_scan(cache_dir, tree.label + (f" ({', '.join(scopes)})" if scopes else " (whole tree)"), stats)
    info = SourceInfo(role=source.role, repo=source.repo, ref=source.ref, commit=tree.commit, src=source.src,
                      url_template=url_template, build=note)
    return Loaded(source=source, tree=tree, graph=graph, stats=stats, info=info)


def ask(source: Source, scopes: Sequence[str], question: Callable[[Graph], T], seeds: Sequence[str], *,
        cache_dir: Path, jobs: int = 0, progress: Progress = NULL, prefer: Sequence[str] = (),
        whole: bool = False, network_timeout: float | None = None, build: str = "",
        config_file: Path | None = None) -> T:
    """Answer a question about named functions: from the tree's index when it has one (warm), else from
    the files that can matter to it (flowscan.cold), else (too many of those, or `whole`) by
    building the index."""
    check_macro_tables()
    tree = open_source(source, cache_dir, progress=progress, network_timeout=network_timeout)
    registry = default_registry()
    path, entries = _index_path(tree, scopes, cache_dir, True, registry)
    cfg, _note = build_config(tree, build, config_file, cache_dir)
    if not whole and not path.is_file():
        from flowscan import cold as prefilter

        if entries is None:
            entries = tree.files(scopes, True)
        if not entries:
            raise _no_files(tree, scopes)
        try:
            result, used, rounds = prefilter.answer(
                tree, entries, question, seeds, cache=_facts_cache(cache_dir), registry=registry,
                prefer=prefer, jobs=jobs, progress=progress, work_dir=path.parent, build=cfg)
            progress.message(f"answered from the {used} of {len(entries)} files that spell the names "
                             f"it needed ({rounds} rounds); --whole indexes all of {tree.label}")
            return result
        except prefilter.TooWide:
            pass
    loaded = load(source, scopes, cache_dir=cache_dir, jobs=jobs, progress=progress, prefer=prefer, tree=tree,
                  build=build, config_file=config_file, listed=(path, entries))
    return question(loaded.graph)


def load_roles(spec: FlowSpec, sources: dict[str, Source], *, cache_dir: Path, jobs: int = 0,
               progress: Progress = NULL, url_templates: dict[str, str] | None = None,
               network_timeout: float | None = None,
               config_files: dict[str, Path] | None = None) -> dict[str, Loaded]:
    """One graph per role the flow uses, with the build configuration the spec names for the role (and
    the user's file for it); a role whose source, scope and configuration equal another's shares its
    graph."""
    config_files = config_files or {}
    out: dict[str, Loaded] = {}
    by_key: dict[tuple, Loaded] = {}
    for role in spec.roles():
        src = sources[role]
        build, cfile = spec.builds.get(role, ""), config_files.get(role)
        key = (src.repo, src.ref, src.src, spec.scopes.get(role, ()), spec.prefer.get(role, ()), build, cfile)
        if key not in by_key:
            by_key[key] = load(src, spec.scopes.get(role, ()), cache_dir=cache_dir, jobs=jobs,
                               progress=progress, prefer=spec.prefer.get(role, ()), strict_scopes=False,
                               url_template=(url_templates or {}).get(role, ""), network_timeout=network_timeout,
                               build=build, config_file=cfile)
        loaded = by_key[key]  # shared with another role: same tree, own role and URL template
        out[role] = replace(loaded, source=src, info=replace(
            loaded.info, role=role, url_template=(url_templates or {}).get(role, "")))
    return out


def last_scans(cache_dir: Path) -> dict:
    """What record_scan kept: per tree label, the last scan's counts ({} when there is nothing readable)."""
    try:
        data = json.loads(scans_path(cache_dir).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def inventory(config, cache_dir: Path) -> dict:
    """What is configured (flowscan.toml) and what the cache holds: facts, indexes, clones, last scans."""
    from flowscan.index.facts_cache import cache_info
    from flowscan.index.store import index_info, indexes_dir
    from flowscan.sources.clones import cached_repos

    return {"config": str(config.path) if config.path else None, "flow": config.flow, "cache_dir": str(cache_dir),
            "sources": {r: {"repo": s.repo, "ref": s.ref, "src": str(s.src) if s.src else "",
                            "scope": list(s.scope)} for r, s in sorted(config.sources.items())},
            "facts_cache": cache_info(facts_dir(cache_dir)), "indexes": index_info(indexes_dir(cache_dir)),
            "repos": cached_repos(cache_dir), "scans": last_scans(cache_dir)}
