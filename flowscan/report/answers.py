"""Answers to the query commands (defs, callees, callers, path, registrations, types) as text, JSON or CSV.

Sorted and deterministic, so output can be committed and diffed.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Sequence

from flowscan.extract.facts import FunctionDef
from flowscan.graph.callgraph import Edge, Graph
from flowscan.extract.registrations import Registration


def _json(data) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _how(e: Edge) -> str:
    if e.kind == "direct":
        return "direct"
    out = f"{e.kind}: {e.via}" if e.via else e.kind
    if e.store_path:
        at = {"macro": "#define at", "inline": "called at"}.get(e.kind, "stored at")
        out += f" ({at} {e.store_path}:{e.store_line}"
        out += f", 1 of {e.fanout})" if e.fanout > 1 else ")"
    return out


def _ctx(e: Edge) -> str:
    values = e.condition_values or ("",) * len(e.conditions)
    parts = [f"#if {c}" + (f" ({v})" if v else "") for c, v in zip(e.conditions, values)]
    parts += [f"case {c}" for c in e.cases] + [f"if ({c})" for c in e.ifs]
    return ("  [" + "; ".join(parts) + "]") if parts else ""


def _cond_text(conds: Sequence[str], values: Sequence[str]) -> str:
    """`#if A && B`, each condition followed by its value for the build configuration when there is one."""
    if not values:
        return " && ".join(conds)
    return " && ".join(f"{c} ({v})" for c, v in zip(conds, values))


def defs(name: str, found: Sequence[FunctionDef], fmt: str, graph: Graph | None = None) -> str:
    """Every definition; with a build configuration, each says whether it is built (a definition that
    is not built is never chosen) and what its #if conditions come to."""
    rows = sorted(found, key=lambda d: (d.path, d.line))
    build = graph.build if graph is not None else None
    if fmt == "json":
        out = []
        for d in rows:
            item = asdict(d)
            if build is not None:
                item["build"] = graph.def_status(d)
                if d.conditions:
                    item["condition_values"] = list(build.conditions(d.conditions))
            out.append(item)
        return _json(out)
    lines = []
    for d in rows:
        values = build.conditions(d.conditions) if build is not None and d.conditions else ()
        cond = f"  [#if {_cond_text(d.conditions, values)}]" if d.conditions else ""
        static = "static " if d.static else ""
        status = graph.def_status(d) if build is not None else ""
        mark = f"  ({status})" if status in ("not built", "stub") else ""
        lines.append(f"{d.path}:{d.line}: {static}{d.return_type} {d.name}{d.params}{cond}{mark}")
    return "\n".join(lines) + "\n"


def edges(edges_: Sequence[Edge], fmt: str, side: str) -> str:
    """side = 'callee' lists what is called, 'caller' lists who calls."""
    # (the whole edge breaks ties: a set's order changes with the hash seed, and answers must not)
    rows = sorted(set(edges_), key=lambda e: (e.path, e.line, e.callee, e.caller, e.kind, e.callee_path, e.via,
                                              e.store_path, e.store_line, e.reason, e.cases, e.ifs, e.conditions))
    if fmt == "json":
        return _json([e.to_json() for e in rows])
    lines = []
    for e in rows:
        if side == "callee":
            target = e.callee + (f" ({e.callee_path})" if e.callee_path else " (not defined in scope)")
            lines.append(f"{e.path}:{e.line}: {e.caller} -> {target}  [{_how(e)}]{_ctx(e)}")
        else:
            lines.append(f"{e.path}:{e.line}: {e.caller} -> {e.callee}  [{_how(e)}]{_ctx(e)}")
    return "\n".join(lines) + ("\n" if lines else "")


def path(path_: Sequence[Edge], fmt: str) -> str:
    if fmt == "json":
        return _json([e.to_json() for e in path_])
    lines = [f"{i}. {e.caller} -> {e.callee}  {e.path}:{e.line}  [{_how(e)}]{_ctx(e)}"
             for i, e in enumerate(path_, 1)]
    return "\n".join(lines) + "\n"


REG_COLUMNS = ("api", "path", "line", "class_init", "type", "parent_type", "enter", "hold", "exit", "reset",
               "other", "parent_storage")


def registration_rows(graph: Graph, regs: Sequence[Registration]) -> list[dict]:
    rows = []
    for r in regs:
        types = graph.qom.class_types(r.function)
        row = {k: "" for k in REG_COLUMNS}
        row.update(api=r.api, path=r.path, line=r.line, class_init=r.function,
                   type=",".join(t.name for t in types), parent_type=",".join(t.parent for t in types),
                   parent_storage=r.parent_storage)
        other = []
        for phase, field, fn in r.callbacks:
            if phase in ("enter", "hold", "exit", "reset"):
                row[phase] = fn
            else:
                other.append(f"{phase}={fn}")
        if r.kind == "notifier":
            other.append(f"chain={r.chain}")
        row["other"] = " ".join(other)
        rows.append(row)
    return rows


def registrations(graph: Graph, regs: Sequence[Registration], fmt: str) -> str:
    rows = registration_rows(graph, regs)
    if fmt == "json":
        return _json(rows)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=REG_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    lines = []
    for r in rows:
        cbs = " ".join(f"{k}={r[k]}" for k in ("enter", "hold", "exit", "reset") if r[k])
        if r["other"]:
            cbs = (cbs + " " + r["other"]).strip()
        typ = f" type={r['type']} parent={r['parent_type']}" if r["type"] else ""
        parent = f" parent-storage={r['parent_storage']}" if r["parent_storage"] else ""
        lines.append(f"{r['path']}:{r['line']}: {r['api']} in {r['class_init'] or '(file scope)'}{typ}: "
                     f"{cbs}{parent}")
    return "\n".join(lines) + ("\n" if lines else "")


PHASE_FIELDS = (("enter", "phases.enter"), ("hold", "phases.hold"), ("exit", "phases.exit"),
                ("reset", "reset"), ("legacy_reset", "legacy_reset"))


def type_rows(graph: Graph, names: Sequence[str]) -> list[dict]:
    rows = []
    for name in names:
        node = graph.qom.find(name)
        if node is None:
            continue
        phases = {}
        for label, fld in PHASE_FIELDS:
            found = graph.inherited_setter(node, fld)
            if found:
                store, owner = found
                phases[label] = {"function": store.function, "set_by": owner.name,
                                 "at": f"{store.path}:{store.line}"}
        rows.append({"name": node.name, "macro": node.macro, "parent": node.parent,
                     "ancestors": [a.name for a in graph.qom.ancestors(node)],
                     "class_init": node.class_init, "path": node.path, "line": node.line, "phases": phases})
    return rows


def types(graph: Graph, names: Sequence[str], fmt: str) -> str:
    rows = type_rows(graph, names)
    if fmt == "json":
        return _json(rows)
    lines = []
    for r in rows:
        chain = " -> ".join([r["name"], *r["ancestors"]])
        lines.append(f"{r['name']} ({r['macro']}) {r['path']}:{r['line']} class_init={r['class_init'] or '-'}")
        lines.append(f"  ancestry: {chain}")
        for label, p in sorted(r["phases"].items()):
            own = "" if p["set_by"] == r["name"] else f" (inherited from {p['set_by']})"
            lines.append(f"  {label}: {p['function']} at {p['at']}{own}")
    return "\n".join(lines) + ("\n" if lines else "")
