"""From "which tree, which ref, which scope" to a call graph: open the source, scan (cached), build the graph.

The one place where sources, scan and graph meet, so the CLI stays a thin layer of options.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import gc
import json

from flowscan.cache import FactsCache
from flowscan.fileio import atomic_write_text
from flowscan.errors import FlowscanError
from flowscan.facts import FileFacts
from flowscan.graph import Graph
from flowscan.resources import fixtures_dir
from flowscan.results import SourceInfo
from flowscan.scan import ScanStats, scan
from flowscan.sources import Source, Tree, open_tree
from flowscan.spec import FlowSpec

# The embedded default: the bundled miniature trees (newer versions), so `flowscan trace` runs anywhere.
DEMO = {"guest": ("linux", "v6.12"), "host": ("linux", "v6.12"), "vmm": ("qemu", "v10.0.0")}


@dataclass
class Loaded:
    source: Source
    tree: Tree
    facts: list[FileFacts]
    graph: Graph
    stats: ScanStats
    info: SourceInfo = field(default_factory=lambda: SourceInfo(role=""))


def demo_source(role: str) -> Source:
    project, version = DEMO[role]
    return Source(role=role, src=str(fixtures_dir() / project / version))


def record_scan(cache_dir: Path, label: str, stats: ScanStats) -> None:
    """Keep the last scan's counts per tree, for `flowscan sources` (hit rates). Best effort."""
    path = cache_dir / "scans.json"
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    data[label] = {"files": stats.files, "parsed": stats.parsed, "reused": stats.reused,
                   "skipped": stats.skipped, "seconds": round(stats.seconds, 2)}
    try:
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass


def load(source: Source, scopes: Sequence[str] = (), *, cache_dir: Path, jobs: int = 0, progress: bool = True,
         prefer: Sequence[str] = (), strict_scopes: bool = True, url_template: str = "") -> Loaded:
    tree = open_tree(source, cache_dir, progress=progress)
    cache = FactsCache(cache_dir / "facts")
    # Facts are millions of small acyclic objects: the cyclic collector only burns time on them
    # (a quarter to 40% of a load), so it is off while they are made and they are frozen afterwards.
    gc.disable()
    try:
        facts, stats = scan(tree, list(scopes), cache, jobs=jobs, progress=progress, strict=strict_scopes)
        graph = Graph(facts, prefer=prefer)
    finally:
        gc.freeze()
        gc.enable()
    if not facts or all(f.skipped for f in facts):
        raise FlowscanError(f"no C files to analyse in {tree.label}" + (f" (scope: {', '.join(scopes)})"
                                                                         if scopes else ""))
    record_scan(cache_dir, tree.label + (f" ({', '.join(scopes)})" if scopes else " (whole tree)"), stats)
    info = SourceInfo(role=source.role, repo=source.repo, ref=source.ref, commit=tree.commit, src=source.src,
                      url_template=url_template)
    return Loaded(source=source, tree=tree, facts=facts, graph=graph, stats=stats, info=info)


def load_roles(spec: FlowSpec, sources: dict[str, Source], *, cache_dir: Path, jobs: int = 0,
               progress: bool = True, url_templates: dict[str, str] | None = None) -> dict[str, Loaded]:
    """One graph per role the flow uses; a role whose source and scope equal another's shares its graph."""
    out: dict[str, Loaded] = {}
    by_key: dict[tuple, Loaded] = {}
    for role in spec.roles():
        src = sources[role]
        key = (src.repo, src.ref, src.src, spec.scopes.get(role, ()), spec.prefer.get(role, ()))
        if key not in by_key:
            by_key[key] = load(src, spec.scopes.get(role, ()), cache_dir=cache_dir, jobs=jobs,
                               progress=progress, prefer=spec.prefer.get(role, ()), strict_scopes=False,
                               url_template=(url_templates or {}).get(role, ""))
        loaded = by_key[key]  # shared with another role: same tree, own role and URL template
        out[role] = replace(loaded, source=src, info=replace(
            loaded.info, role=role, url_template=(url_templates or {}).get(role, "")))
    return out
