"""Cold questions: answer from the files that can matter, found by their tokens (as `git grep` finds them).

A question (`defs`, `callers`, `callees`) on a tree that has no index yet starts from the files that
spell its name, answers on an index of just those files, and records every key the answer looked up
(a function name, a struct member, a type, a notifier chain). Any fact that could answer such a key sits
in a file that spells the key, so the files spelling the new keys are added and the question is asked
again, until it asks for nothing new: the answer is then the one the index of the whole tree gives
(the real-tree tests check this). The question's index grows by the files each round adds (only those
are read and inserted; flowscan.index.update.extend_index). Keys that registrations supply without
spelling them (the member a registration API fills, the chain a mode constant selects) bring in the
API's name.

What a token search cannot see: a name made by token pasting (`HELPER(foo)` defines `helper_foo`) is
found only where it is also spelled out. A question that needs more than a share of the tree, or asks for
everything (the list of all names, all registrations), builds the whole index instead: then every later
question on the tree is warm.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

from flowscan import fileio
from flowscan.index.facts_cache import FactsCache
from flowscan.errors import FlowscanError
from flowscan.graph.callgraph import Graph
from flowscan.index.store import Index
from flowscan.extract.registrations import chain_name
from flowscan.extract.apis import Registry
from flowscan.index.build import WORK_PREFIX, build_index
from flowscan.index.update import extend_index
from flowscan.progress import NULL, Progress
from flowscan.sources.refs import FileEntry
from flowscan.sources.tree import Tree

T = TypeVar("T")
MAX_ROUNDS = 12  # (each round follows the search one call further; the whole index costs more)
QUESTION_PREFIX = ".question-"
WIDE = 0.4  # a question whose files pass this share of the tree's bytes gets the whole index instead
MAX_NEW = 200  # ... and so does one that asks for more new names than this in a round (every notifier
# callback of Linux, each with its struct): searching for them would cost more than indexing


class TooWide(Exception):
    """The question needs (nearly) the whole tree: build its index."""


def tokens_for(asked: Iterable[tuple[str, str]], registry: Registry
               ) -> tuple[set[str], set[str], set[str], set[str]]:
    """The words, the struct members (spelled `.m` or `->m`), the defined names (spelled on a line
    that starts in column 0) and the macros (on a `#define` line) whose files can hold the facts behind
    these lookups."""
    words: set[str] = set()
    members: set[str] = set()
    defs: set[str] = set()
    macros: set[str] = set()
    for kind, value in asked:
        if kind == "all":
            raise TooWide(value)
        if not value or any(c.isspace() for c in value):
            continue
        if kind == "def":  # a definition; calls of undefined macros (`assert`) ask this everywhere
            defs.add(value)
            continue
        if kind == "macro":  # only a #define line can hold it (macro bodies name the caller's locals too)
            macros.add(value)
            continue
        if kind == "member":  # stores into it and calls through it; and the registration APIs that fill it
            members.add(value)
            words.update(api.api for api in registry.fields.values()
                         if any(st.field.rsplit(".", 1)[-1] == value for st in api.stores))
            continue
        words.add(value)
        if kind == "owner":  # ... or fill members of this type
            words.update(api.api for api in registry.fields.values() if value in api.owner.split("|"))
        elif kind == "chain":  # notifier APIs that register on this chain without naming it
            words.update(api.api for api in registry.notifiers.values()
                         if api.chain == value or any(chain_name(v) == value for _, v in api.chain_map))
    return words, members, defs, macros


def fresh(wanted: dict[str, set[str]], searched: dict[str, set[str]]) -> dict[str, set[str]]:
    """What is still to search for: a word already searched for covers its member accesses and
    definition lines too."""
    return {kind: wanted[kind] - searched[kind] - (searched["words"] if kind != "words" else set())
            for kind in wanted}


def answer(tree: Tree, entries: Sequence[FileEntry], question: Callable[[Graph], T], seeds: Sequence[str], *,
           cache: FactsCache | None, registry: Registry, prefer: Sequence[str] = (), jobs: int = 0,
           progress: Progress = NULL, work_dir: Path | None = None, build=None) -> tuple[T, int, int]:
    """Ask `question` on the fewest files that give the whole tree's answer; returns (answer, files
    used, rounds).
    Raises TooWide when that is not worth it."""
    by_path = {e.path: e for e in entries}
    ids = {p: i + 1 for i, p in enumerate(sorted(by_path))}  # (any subset's ids are in path order)
    total = sum(e.size for e in entries) or 1
    wanted = {"words": set(seeds), "members": set(), "defs": set(), "macros": set()}
    searched: dict[str, set[str]] = {kind: set() for kind in wanted}
    files: set[str] = set()
    indexed: set[str] = set()  # the files in the question's index
    parent = Path(work_dir) if work_dir is not None else Path(tempfile.gettempdir())
    fileio.sweep(parent, QUESTION_PREFIX)  # scratch indexes of questions that were killed
    fileio.sweep(parent, WORK_PREFIX)  # ... and of index builds that were (a cold answer builds none)
    with fileio.work_dir(parent, QUESTION_PREFIX) as tmp:
        result: tuple[str, object] | None = None
        for rnd in range(MAX_ROUNDS):
            before = len(files)
            files |= tree.grep(entries, **fresh(wanted, searched))
            for kind in wanted:
                searched[kind] |= wanted[kind]
            if result is not None and len(files) == before:  # the same files: the same answer, settled
                return _settle(result, len(files), rnd)
            if sum(by_path[p].size for p in files) > WIDE * total:
                raise TooWide(f"{len(files)} files")
            # one index, grown by the files each round adds: only those are read and inserted
            dest = Path(tmp) / "question.sqlite"
            added = [by_path[p] for p in sorted(files - indexed)]
            if not indexed:
                build_index(tree, added, cache, dest, jobs=jobs, progress=progress, registry=registry,
                            partial=True, updatable=True, ids=ids)
            else:
                extend_index(tree, added, ids, cache, dest, registry=registry, meta={"files": str(len(files))},
                             jobs=jobs, progress=progress)
            indexed |= files
            ix = Index.open(dest, partial=True)
            try:
                graph = Graph(ix, registry=registry, prefer=prefer, build=build)
                try:
                    result = ("answer", question(graph))
                except FlowscanError as exc:
                    result = ("error", exc)
                for kind, more in zip(("words", "members", "defs", "macros"), tokens_for(ix.lookups(), registry)):
                    wanted[kind] |= more
            finally:
                ix.db.close()
            new = sum(map(len, fresh(wanted, searched).values()))
            if new > MAX_NEW:
                raise TooWide(f"{new} more names to look for")
            if not new:
                return _settle(result, len(files), rnd + 1)
    raise TooWide(f"still asking after {MAX_ROUNDS} rounds")


def _settle(result: tuple[str, object], files: int, rounds: int):
    if result[0] == "error":
        raise result[1]  # type: ignore[misc]
    return result[1], files, rounds
