"""The rows of one stage: which calls share a line of the picture, so a stage is never wider than a page.

Graphviz alone puts every callee of a fan-out on one rank (a device-reset stage with a dozen hold phases
becomes one very wide line) and lets stages drift sideways. Deciding the rows here, before drawing, lets the
painter pin them (`rank=same`) next to a left rail that every stage shares, and wrap a row that would be
too wide onto the next one, like words onto the next line. Pure data in, pure data out: the same stage
always gives the same rows, so the DOT stays deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Rows", "stage_rows", "text_width"]

# Average glyph widths of Helvetica, in em: bold names and plain small text (close enough to budget a row).
_BOLD_EM, _PLAIN_EM = 0.6, 0.55


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Estimated width in points of one line of Helvetica text."""
    return len(text) * size * (_BOLD_EM if bold else _PLAIN_EM)


@dataclass
class Rows:
    rows: list[list[str]]  # node ids per row, top to bottom, each row in the stage's node order
    back: set[tuple[str, str]]  # edges (tail, head) that point up the rows (a cycle's closing call)


def stage_rows(nodes: list[str], edges: list[tuple[str, str]], cost: dict[str, float], budget: float) -> Rows:
    """Rows for the nodes of one stage, given its edges inside the stage in drawing order, each node's width
    (cost, with what hangs above it) and the width a row may take.

    A callee goes below all its callers (longest path from the stage's entry calls, a cycle broken where
    a depth-first walk in node order closes it); a row that is full pushes the next node down, and its
    callees with it."""
    index = {n: i for i, n in enumerate(nodes)}
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for t, h in edges:
        if t in index and h in index and t != h and h not in succ[t]:
            succ[t].append(h)
    back = _back_edges(nodes, succ)
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for t in nodes:
        for h in succ[t]:
            if (t, h) not in back:
                preds[h].append(t)
    layer: dict[str, int] = {}
    for n in _topological(nodes, succ, back, index):
        layer[n] = max((layer[p] + 1 for p in preds[n]), default=0)
    used: list[float] = []
    row_of: dict[str, int] = {}
    for n in sorted(nodes, key=lambda n: (layer[n], index[n])):
        r = max((row_of[p] + 1 for p in preds[n]), default=0)
        while r < len(used) and used[r] > 0 and used[r] + cost.get(n, 0) > budget:
            r += 1
        while len(used) <= r:
            used.append(0.0)
        used[r] += cost.get(n, 0)
        row_of[n] = r
    rows: list[list[str]] = [[] for _ in used]
    for n in nodes:
        rows[row_of[n]].append(n)
    return Rows([r for r in rows if r] or [[]], back)


def _back_edges(nodes: list[str], succ: dict[str, list[str]]) -> set[tuple[str, str]]:
    """Edges closing a cycle, found by an iterative depth-first walk in node order."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    back: set[tuple[str, str]] = set()
    for root in nodes:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ[root]))]
        while stack:
            n, it = stack[-1]
            h = next(it, None)
            if h is None:
                state[n] = 2
                stack.pop()
            elif state.get(h) == 1:
                back.add((n, h))
            elif h not in state:
                state[h] = 1
                stack.append((h, iter(succ[h])))
    return back


def _topological(nodes: list[str], succ: dict[str, list[str]], back: set[tuple[str, str]],
                 index: dict[str, int]) -> list[str]:
    """Nodes callers first (Kahn's order; ties by node order)."""
    indeg = {n: 0 for n in nodes}
    for t in nodes:
        for h in succ[t]:
            if (t, h) not in back:
                indeg[h] += 1
    ready = sorted((n for n in nodes if indeg[n] == 0), key=index.__getitem__)
    out: list[str] = []
    while ready:
        n = ready.pop(0)
        out.append(n)
        for h in succ[n]:
            if (n, h) not in back:
                indeg[h] -= 1
                if indeg[h] == 0:
                    ready.append(h)
                    ready.sort(key=index.__getitem__)
    return out
