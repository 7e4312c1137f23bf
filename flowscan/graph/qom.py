"""The QOM type hierarchy: TypeInfo `.name/.parent/.class_init`, with type-name macros resolved."""

from __future__ import annotations

from dataclasses import dataclass

from flowscan.extract.facts import MacroDef, QomType


@dataclass(frozen=True)
class TypeNode:
    name: str  # resolved type name ("kvm-arm-gicv3"), or the macro when it has no string definition
    macro: str  # the expression as written (TYPE_KVM_ARM_GICV3)
    parent: str  # resolved parent name
    class_init: str
    instance_init: str
    path: str
    line: int
    parent_expr: str = ""  # the parent as written (TYPE_ARM_GICV3_COMMON)


def _unquote(text: str) -> str | None:
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"' and '"' not in text[1:-1]:
        return text[1:-1]
    return None


class QomIndex:
    def __init__(self, types: list[QomType], macros: list[MacroDef], ask=None):
        self._ask = ask or (lambda kind, value: None)  # see Index.lookups
        self.macros: dict[str, str] = {}
        for m in macros:
            value = _unquote(m.value)
            if value is not None:
                self.macros.setdefault(m.name, value)
        self.named_by: dict[str, list[str]] = {}  # a type name -> the macros spelling it (TYPE_ARM_CPU)
        for name, value in self.macros.items():
            self.named_by.setdefault(value, []).append(name)
        self.types: dict[str, TypeNode] = {}
        self.by_class_init: dict[str, list[TypeNode]] = {}
        for t in sorted(types, key=lambda t: (t.path, t.line)):
            node = TypeNode(name=self.resolve(t.name), macro=t.name, parent=self.resolve(t.parent) if t.parent
                            else "", class_init=t.class_init, instance_init=t.instance_init, path=t.path,
                            line=t.line, parent_expr=t.parent.strip())
            self.types.setdefault(node.name, node)
            if node.class_init:
                self.by_class_init.setdefault(node.class_init, []).append(node)

    def resolve(self, expr: str) -> str:
        value = _unquote(expr)
        if value is not None:
            return value
        return self.macros.get(expr.strip(), expr.strip())

    def class_types(self, class_init: str) -> list[TypeNode]:
        """The types whose class_init is this function (their names and parents as the #defines of their
        macros spell them)."""
        self._ask("name", class_init)
        nodes = self.by_class_init.get(class_init, [])
        for node in nodes:
            for expr in (node.macro, node.parent_expr):
                if expr.isidentifier():
                    self._ask("macro", expr)
        return nodes

    def find(self, name: str) -> TypeNode | None:
        """By type name, by macro (TYPE_ARM_CPU) or by TypeInfo variable name."""
        self._ask("name", name)
        if name in self.types:
            return self.types[name]
        resolved = self.resolve(name)
        if resolved in self.types:
            return self.types[resolved]
        for macro in self.named_by.get(resolved, ()):  # its TypeInfo spells the macro, not the string
            self._ask("name", macro)
        return None

    def ancestors(self, node: TypeNode) -> list[TypeNode]:
        """The parents of a type, nearest first (stops at unknown types and cycles)."""
        out: list[TypeNode] = []
        seen = {node.name}
        cur = node
        while cur.parent and cur.parent not in seen:
            self._ask("name", cur.parent_expr.strip('"'))
            nxt = self.types.get(cur.parent)
            if nxt is None:
                break
            out.append(nxt)
            seen.add(nxt.name)
            cur = nxt
        return out

    def descendants(self, node: TypeNode) -> list[TypeNode]:
        """Every type below `node` (subclasses may override what it inherits), in name order."""
        children: dict[str, list[TypeNode]] = {}
        for t in self.types.values():
            if t.parent and t.parent != t.name:
                children.setdefault(t.parent, []).append(t)
        out: list[TypeNode] = []
        seen = {node.name}
        todo = [node.name]
        while todo:
            cur = todo.pop()
            for spelled in (cur, *self.named_by.get(cur, ())):  # a subtype's TypeInfo spells its parent
                self._ask("name", spelled)
            for c in children.get(cur, ()):
                if c.name not in seen:
                    seen.add(c.name)
                    out.append(c)
                    todo.append(c.name)
        return sorted(out, key=lambda t: t.name)
