"""The `if` conditions and `case` labels around a call, from byte intervals rather than ancestor walks.

Walking each call's ancestors cost a fifth of extraction: tree-sitter has no cheap parent pointer, so
each walk re-descended from the last node asked. Here the if, case and function nodes the query found
are swept once in document order with the calls, as a stack of nested intervals; each interval's text
(the condition, negated in its `else`; the labels falling through to a case) is made once, however many
calls it encloses.
"""

from __future__ import annotations

from typing import Callable, Sequence

from tree_sitter import Node

from flowscan.extract.conditionals import MAX_DEPTH

# A call's context is looked for in this many enclosing if/case statements at most (real code nests a
# dozen; a hostile file 20,000 deep would make every call copy them all), and shown for the innermost
# MAX_DEPTH.
MAX_CONTEXT_WALK = 256

Norm = Callable[[str, int], str]
Context = tuple[tuple[str, ...], tuple[str, ...]]


class Lineage:
    """A node's ancestors without `Node.parent`: tree-sitter finds a parent by walking down from the root,
    so asking for parents per fact is quadratic in the depth (a file nested 20,000 `#if` levels deep took
    minutes). The ancestors of the last node asked are kept; the next node's are found by dropping those
    that do not contain it and walking down from the deepest one that does, which costs the distance
    between the two nodes: linear over a pass in document order."""

    def __init__(self, root: Node):
        self.root = root
        self.chain: list[Node] = [root]  # the root, ..., the parent of the last node asked
        self._siblings: dict[int, dict[int, int]] = {}

    def of(self, node: Node) -> list[Node]:
        """The ancestors of `node`, outermost (the root) first."""
        chain = self.chain
        s, e = node.start_byte, node.end_byte
        while len(chain) > 1 and not (chain[-1].start_byte <= s and e <= chain[-1].end_byte
                                      and chain[-1] != node):
            chain.pop()
        while True:
            child = chain[-1].child_with_descendant(node)
            if child is None:  # not below the kept chain after all (zero-width nodes): from the root
                if len(chain) == 1:
                    break
                del chain[1:]
                continue
            if child == node:
                break
            chain.append(child)
        return chain

    def prev_named_siblings(self, node: Node, parent: Node) -> list[Node]:
        """The named siblings before `node`, nearest first (`prev_named_sibling` also asks for the parent)."""
        kids = parent.named_children
        at = self._siblings.get(parent.id)
        if at is None:
            at = self._siblings[parent.id] = {k.id: i for i, k in enumerate(kids)}
        i = at.get(node.id, 0)
        return kids[i - 1::-1] if i else []


class _If:
    __slots__ = ("start", "end", "node", "cond_start", "cond_end", "alt_start", "text", "negated")

    def __init__(self, node: Node):
        self.start, self.end, self.node = node.start_byte, node.end_byte, node
        self.cond_start = -2  # not looked at yet (most ifs enclose no call)

    def _look(self, norm: Norm) -> None:
        node = self.node
        cond = node.child_by_field_name("condition")
        alt = node.child_by_field_name("alternative")
        self.alt_start = alt.start_byte if alt is not None else self.end + 1
        self.cond_start = self.cond_end = -1
        self.text = self.negated = ""
        if cond is not None:
            self.cond_start, self.cond_end = cond.start_byte, cond.end_byte
            text = norm(cond.text.decode("utf-8", "replace"), 120)
            if text.startswith("(") and text.endswith(")"):
                text = text[1:-1].strip()
            self.text = text

    def shown(self, at: int, norm: Norm) -> str | None:
        """The condition as it holds at byte `at` (None inside the condition itself)."""
        if self.cond_start == -2:
            self._look(norm)
        if self.cond_start < 0 or self.cond_start <= at < self.cond_end:
            return None
        if at < self.alt_start:
            return self.text
        if not self.negated:
            t = self.text
            self.negated = t[1:] if t.startswith("!") and "(" not in t[1:2] and \
                all(c not in t for c in " |&?") else f"!({t})"
        return self.negated


class _Case:
    __slots__ = ("start", "end", "node", "label")

    def __init__(self, node: Node):
        self.start, self.end, self.node, self.label = node.start_byte, node.end_byte, node, ""


class _Function:
    __slots__ = ("start", "end")

    def __init__(self, node: Node):
        self.start, self.end = node.start_byte, node.end_byte


def contexts(targets: Sequence[Node], ifs: Sequence[Node], cases: Sequence[Node], functions: Sequence[Node],
             lineage: Lineage, norm: Norm) -> dict[tuple[int, int], Context]:
    """(start, end) of each target -> its enclosing case labels and if conditions, outermost first, up to
    the function it is in."""
    items: list[tuple[int, int, int, object]] = []  # (start, -end, 0 for a statement / 1 for a target, x)
    for n in functions:
        items.append((n.start_byte, -n.end_byte, 0, _Function(n)))
    for n in ifs:
        items.append((n.start_byte, -n.end_byte, 0, _If(n)))
    for n in cases:
        items.append((n.start_byte, -n.end_byte, 0, _Case(n)))
    for n in targets:
        items.append((n.start_byte, -n.end_byte, 1, None))
    items.sort(key=lambda it: (it[0], it[1], it[2]))
    stack: list = []
    floor: list[int] = []  # per stack entry: the index just above the innermost function at or below it
    out: dict[tuple[int, int], Context] = {}
    for start, neg_end, is_target, entry in items:
        end = -neg_end
        while stack and not (stack[-1].start <= start and end <= stack[-1].end):
            stack.pop()
            floor.pop()
        if not is_target:
            below = floor[-1] if floor else 0
            floor.append(len(stack) + 1 if isinstance(entry, _Function) else below)
            stack.append(entry)
            continue
        if (start, end) in out:
            continue
        lo = max(floor[-1] if floor else 0, len(stack) - MAX_CONTEXT_WALK)
        found_cases: list[str] = []
        found_ifs: list[str] = []
        for i in range(len(stack) - 1, lo - 1, -1):  # innermost first
            cur = stack[i]
            if isinstance(cur, _If):
                text = cur.shown(start, norm)
                if text is not None:
                    found_ifs.append(text)
            else:
                if not cur.label:
                    cur.label = _case_label(cur.node, lineage, norm)
                found_cases.append(cur.label)
        out[(start, end)] = (innermost(found_cases, "case"), innermost(found_ifs, "if"))
    return out


def innermost(found: list[str], what: str) -> tuple[str, ...]:
    """Conditions found innermost first -> outermost first, at most MAX_DEPTH of them (the innermost)."""
    if len(found) <= MAX_DEPTH:
        return tuple(reversed(found))
    return (f"... ({len(found) - MAX_DEPTH} outer {what} levels)", *reversed(found[:MAX_DEPTH]))


def _case_label(case: Node, lineage: Lineage, norm: Norm) -> str:
    """`case A: case B: stmt` -> "A|B" (fall-through labels are empty case statements before it)."""
    labels = [_case_value(case, norm)]
    for sib in lineage.prev_named_siblings(case, lineage.of(case)[-1]):
        if sib.type != "case_statement" or sib.named_child_count > 1:
            break
        labels.append(_case_value(sib, norm))
    return "|".join(reversed(labels))


def _case_value(case: Node, norm: Norm) -> str:
    value = case.child_by_field_name("value")
    return norm(value.text.decode("utf-8", "replace"), 80) if value is not None else "default"
