"""FlowResult / DriftReport -> the diagram model: what a picture of the flow shows, before any drawing.

The picture reads like the hand-written analysis it automates: one cluster per stage, calls inside it.

- nodes are functions (`n_<role>_<name>`: colon-free, stable), with the definition or call site seen;
  a registration's class_init is its own kind; a handoff across roles is a node (`h_<hop id>`) in the
  handoff's stage, carrying the constants;
- edges say how a call was found (direct, indirect `kind: via`, handoff, flag, registration, missing,
  unverifiable, folded chain), which hops they belong to, their tooltip lines and source location;
- a drift diagram adds the drift items per hop, the items on no hop attached to the nodes they name, and
  the rest.

Everything is built in a fixed order derived from the input (stage order, then first appearance in the
hop list), so the same result gives the same model. No graphviz here: flowscan.report.painter draws it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flowscan.flow.results import (DRIFT_CLASSES, MISSING, SEVERITIES, SKIPPED, STATUSES, UNVERIFIABLE, VERIFIED,
                                   DriftItem, DriftReport, FlowResult, HopResult, StageInfo)
from flowscan.report.hops import conditions_text, evidence_line, loc, refs_text, severity_counts, target_role

__all__ = ["Diagram", "Node", "Edge", "Model", "flow_diagram", "drift_diagram", "node_id", "handoff_node_id",
           "hop_class", "sanitize", "shorten", "item_line", "item_rank", "top_item", "old_name"]

_SAFE = re.compile(r"[^A-Za-z0-9_]")


# -- ids and helpers -------------------------------------------------------------------------------
def sanitize(text: str) -> str:
    """Text as an id: anything but letters, digits and '_' becomes `_<hex>_`."""
    return _SAFE.sub(lambda m: f"_{ord(m.group()):x}_", text)


def node_id(role: str, name: str) -> str:
    """Stable, colon-free id of a function node (also the id of its <g> element in SVG output)."""
    return f"n_{sanitize(role)}_{sanitize(name)}"


def handoff_node_id(hop_id: str) -> str:
    return f"h_{sanitize(hop_id)}"


def hop_class(hop_id: str) -> str:
    """CSS class carried by every SVG node and edge that belongs to a hop (`hop-<sanitized id>`); the HTML
    page gives each hop's table row the same string as its id."""
    return f"hop-{sanitize(hop_id)}"


def shorten(text: str, n: int = 44) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _name_of(matched: str, spec: str) -> str:
    return matched or spec


def _conditions_short(step) -> list[str]:
    out = [f"case {c}" for c in step.cases] + [f"#if {c}" for c in step.conditions]
    return [shorten(c, 40) for c in out[:2]] + (["…"] if len(out) > 2 else [])


@dataclass
class Node:
    id: str
    role: str
    name: str
    order: int
    kind: str = "function"  # function | class_init | handoff
    stage: str = ""
    strong: dict[str, float] = field(default_factory=dict)
    weak: dict[str, float] = field(default_factory=dict)
    defn: tuple[str, int] = ("", 0)
    callsite: tuple[str, int] = ("", 0)
    signature: str = ""
    target_of: list[str] = field(default_factory=list)  # hop ids
    mentioned_by: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)  # extra label lines (handoff constants)
    note: str = ""


@dataclass
class Edge:
    tail: str
    head: str
    style: str  # direct | indirect | handoff | flag | registration | missing | unverifiable | folded
    label: list[str]
    hops: list[str] = field(default_factory=list)
    tooltip: list[str] = field(default_factory=list)
    url: tuple[str, str, int] = ("", "", 0)  # (role, path, line)
    order: int = 0


@dataclass
class Model:
    stages: list[StageInfo]
    nodes: dict[str, Node]
    edges: list[Edge]
    hops: dict[str, HopResult]


class _Builder:
    def __init__(self, result: FlowResult, collapse: bool):
        self.result = result
        self.collapse = collapse
        self.nodes: dict[str, Node] = {}
        self.edges: dict[tuple, Edge] = {}
        self.stage_ids = [s.id for s in result.stages]
        self.sites: dict[tuple, str] = {}

    def node(self, role: str, name: str, stage: str, weight: float, strong: bool, hop: str,
             kind: str = "function") -> Node:
        nid = node_id(role, name) if kind != "handoff" else handoff_node_id(name)
        n = self.nodes.get(nid)
        if n is None:
            n = self.nodes[nid] = Node(id=nid, role=role, name=name, order=len(self.nodes), kind=kind)
        if kind == "class_init":
            n.kind = "class_init"
        bucket = n.strong if strong else n.weak
        bucket[stage] = bucket.get(stage, 0) + weight
        if hop not in n.mentioned_by:
            n.mentioned_by.append(hop)
        return n

    def edge(self, tail: Node, head: Node, style: str, label: list[str], hop: HopResult,
             tooltip: list[str], url: tuple[str, str, int]) -> Edge:
        # One call site resolving to several targets (a table, a notifier chain): label the first edge only.
        site = (tail.id, style, tuple(label), url)
        if label and url[1] and site in self.sites and self.sites[site] != head.id:
            label = []
        elif label and url[1]:
            self.sites.setdefault(site, head.id)
        key = (tail.id, head.id, style, tuple(label))
        e = self.edges.get(key)
        if e is None:
            e = self.edges[key] = Edge(tail.id, head.id, style, label, url=url, order=len(self.edges))
        if hop.id not in e.hops:
            e.hops.append(hop.id)
            if e.tooltip:
                e.tooltip.append("")
            e.tooltip.extend(tooltip)
        return e

    @staticmethod
    def _set_def(n: Node, path: str, line: int, signature: str = "") -> None:
        if path and (not n.defn[0] or (line and not n.defn[1])):
            n.defn = (path, line)
        if signature and not n.signature:
            n.signature = signature

    @staticmethod
    def _set_call(n: Node, path: str, line: int) -> None:
        if path and (not n.callsite[0] or (path, line) < n.callsite):
            n.callsite = (path, line)

    def _hop_head(self, hop: HopResult) -> list[str]:
        head = f"hop {hop.id} [{hop.status}]"
        lines = [head, f"{hop.kind}: {hop.frm} -> {hop.to}"]
        if hop.resolution:
            lines.append(f"resolved: {hop.resolution}")
        return lines

    def _hop_tail(self, hop: HopResult) -> list[str]:
        lines = []
        if hop.conditions:
            lines.append("conditions: " + conditions_text(hop))
        if hop.note:
            lines.append("note: " + hop.note)
        if hop.candidates:
            lines.append("candidates: " + "; ".join(hop.candidates))
        return lines

    def _step_lines(self, step) -> list[str]:
        how = step.kind + (f": {step.via}" if step.via else "")
        lines = [f"{step.caller} -> {step.callee}", f"  call at {loc(step.path, step.line)} ({how})"]
        if step.store_path:
            lines.append(f"  stored at {loc(step.store_path, step.store_line)}")
        if step.fanout > 1:
            lines.append(f"  call site resolves to {step.fanout} targets")
        conds = [f"case {c}" for c in step.cases] + [f"if ({c})" for c in step.ifs] + \
                [f"#if {c}" for c in step.conditions]
        if conds:
            lines.append("  under: " + "; ".join(conds))
        return lines

    def _evidence_lines(self, hop: HopResult) -> list[str]:
        return [evidence_line(ev) for ev in hop.evidence]

    # -- per hop ---------------------------------------------------------------------------------
    def add(self, hop: HopResult) -> None:
        if hop.stage not in self.stage_ids:
            self.stage_ids.append(hop.stage)
        if hop.kind == "handoff":
            self._handoff(hop)
        elif hop.kind == "registration":
            self._registration(hop)
        elif hop.kind == "flag":
            self._flag(hop)
        else:
            self._call(hop)

    def _target(self, n: Node, hop: HopResult) -> None:
        if hop.id not in n.target_of:
            n.target_of.append(hop.id)
        if hop.to_path and n.name == hop.matched_to:
            self._set_def(n, hop.to_path, hop.to_line, hop.signature)

    def _steps(self, hop: HopResult, steps, strong: bool, target: bool = True) -> None:
        steps = list(steps)
        fold = self.collapse and hop.kind == "reach" and len(steps) >= 4
        shown = [steps[0], None, steps[-1]] if fold else steps
        for i, st in enumerate(shown):
            if st is None:  # the folded middle
                hidden = steps[1:-1]
                a = self.node(hop.role, hidden[0].caller, hop.stage, 1, strong, hop.id)
                b = self.node(hop.role, hidden[-1].callee, hop.stage, 1, strong, hop.id)
                indirect = sum(1 for s in hidden if s.kind != "direct")
                label = [f"+{len(hidden)} calls" + (f" ({indirect} indirect)" if indirect else "")]
                tip = self._hop_head(hop) + ["folded calls:"] + [ln for s in hidden for ln in self._step_lines(s)]
                self.edge(a, b, "folded", label, hop, tip + self._hop_tail(hop),
                          (hop.role, hidden[0].path, hidden[0].line))
                continue
            a = self.node(hop.role, st.caller, hop.stage, 3 if i == 0 else 1, strong, hop.id)
            b = self.node(hop.role, st.callee, hop.stage, 2 if st is steps[-1] else 1, strong, hop.id)
            self._set_call(a, st.path, st.line)
            if st.callee_path:
                self._set_def(b, st.callee_path, 0)
            if st.kind == "direct":
                style, label = "direct", _conditions_short(st)
            else:
                style = "indirect"
                label = [shorten(f"{st.kind}: {st.via}" if st.via else st.kind, 48)] + _conditions_short(st)
            tip = self._hop_head(hop) + self._step_lines(st) + self._hop_tail(hop)
            self.edge(a, b, style, label, hop, tip, (hop.role, st.path, st.line))
        if steps and target:
            last = self.nodes[node_id(hop.role, steps[-1].callee)]
            self._target(last, hop)

    def _call(self, hop: HopResult) -> None:
        if hop.steps:
            self._steps(hop, hop.steps, True)
            return
        frm = self.node(hop.role, _name_of(hop.matched_from, hop.frm), hop.stage, 3, True, hop.id)
        to = self.node(target_role(hop), _name_of(hop.matched_to, hop.to), hop.stage, 2, True, hop.id)
        self._target(to, hop)
        ev = next((e for e in hop.evidence if e.path), None)
        if ev:
            self._set_call(frm, ev.path, ev.line)
        if hop.status == UNVERIFIABLE or hop.kind == "unverifiable":
            style, label = "unverifiable", ["not checkable statically"]
        elif hop.status == SKIPPED:
            style, label = "missing", ["optional: not found"]
        else:
            style, label = "missing", ["missing"]
        tip = self._hop_head(hop) + self._evidence_lines(hop) + self._hop_tail(hop)
        self.edge(frm, to, style, label, hop, tip, (hop.role, ev.path, ev.line) if ev else ("", "", 0))

    def _handoff(self, hop: HopResult) -> None:
        producers = [e.function for e in hop.evidence if e.role == hop.role and e.function]
        consumers = [e.function for e in hop.evidence if e.role == target_role(hop) and e.function
                     and (e.role != hop.role or e.what == "case")]
        tail_name = hop.matched_from if hop.matched_from and "|" not in hop.matched_from else \
            (producers[0] if producers else hop.frm)
        head_name = hop.matched_to if hop.matched_to and "|" not in hop.matched_to else \
            (consumers[0] if consumers else hop.to)
        frm = self.node(hop.role, tail_name, hop.stage, 0.5, False, hop.id)
        to = self.node(target_role(hop), head_name, hop.stage, 0.5, False, hop.id)
        mid = self.node(hop.role, hop.id, hop.stage, 10, True, hop.id, kind="handoff")
        mid.text = list(hop.constants) or [hop.to]
        mid.note = f"{hop.role} → {target_role(hop)}"
        self._target(mid, hop)
        self._target(to, hop)
        for ev in hop.evidence:
            n = frm if ev.function == tail_name and ev.role == hop.role else \
                to if ev.function == head_name and ev.role == target_role(hop) else None
            if n is not None:
                self._set_call(n, ev.path, ev.line)
        tip = self._hop_head(hop) + ["constants: " + ", ".join(mid.text)] + self._evidence_lines(hop) + \
            self._hop_tail(hop)
        prod = next((e for e in hop.evidence if e.role == hop.role), None)
        cons = next((e for e in hop.evidence if e.role == target_role(hop) and e is not prod), None)
        self.edge(frm, mid, "handoff", [], hop, tip, (hop.role, prod.path, prod.line) if prod else ("", "", 0))
        self.edge(mid, to, "handoff", [], hop, tip,
                  (target_role(hop), cons.path, cons.line) if cons else ("", "", 0))

    def _flag(self, hop: HopResult) -> None:
        frm = self.node(hop.role, _name_of(hop.matched_from, hop.frm), hop.stage, 0.5, False, hop.id)
        to = self.node(hop.role, _name_of(hop.matched_to, hop.to), hop.stage, 0.5, False, hop.id)
        self._target(to, hop)
        write = next((e for e in hop.evidence if e.what == "write"), None)
        if write:
            self._set_call(frm, write.path, write.line)
        name = hop.flag or "flag"
        tip = self._hop_head(hop) + [f"flag: {name}"] + self._evidence_lines(hop) + self._hop_tail(hop)
        label = [f"flag: {name}"] + (["missing"] if hop.status == MISSING else [])
        self.edge(frm, to, "flag", label, hop, tip, (hop.role, write.path, write.line) if write else ("", "", 0))
        if hop.steps:
            self._steps(hop, hop.steps, False, target=False)

    def _registration(self, hop: HopResult) -> None:
        ci = self.node(hop.role, _name_of(hop.matched_from, hop.frm), hop.stage, 3, True, hop.id,
                       kind="class_init")
        cb = self.node(hop.role, _name_of(hop.matched_to, hop.to), hop.stage, 0.5, False, hop.id)
        self._target(cb, hop)
        ev = next((e for e in hop.evidence if e.what == "registration"), None) or \
            next((e for e in hop.evidence), None)
        if ev:
            self._set_call(ci, ev.path, ev.line)
        label = [f"registers {hop.field.rsplit('.', 1)[-1]}" if hop.field else "registers"]
        if hop.api:  # named on the class_init's node, not along the edge (the edge would widen the stage)
            ci.note = hop.api
        if hop.status != VERIFIED:
            label.append(hop.status)
        tip = self._hop_head(hop) + ([f"api: {hop.api}"] if hop.api else []) + \
            ([f"field: {hop.field}"] if hop.field else []) + self._evidence_lines(hop) + self._hop_tail(hop)
        self.edge(ci, cb, "registration", label, hop, tip, (hop.role, ev.path, ev.line) if ev else ("", "", 0))

    # -- placement -----------------------------------------------------------------------------
    def place(self) -> list[StageInfo]:
        stages = list(self.result.stages)
        known = {s.id for s in stages}
        hop_roles = {h.stage: h.role for h in reversed(self.result.hops)}
        for sid in self.stage_ids:
            if sid not in known:
                stages.append(StageInfo(id=sid, title=sid, role=hop_roles.get(sid, "")))
                known.add(sid)
        order = {s.id: i for i, s in enumerate(stages)}
        for n in self.nodes.values():
            if n.kind == "handoff":
                n.stage = max(n.strong, key=lambda s: (n.strong[s], -order[s]))
                continue
            allowed = [s.id for s in stages if s.role == n.role] or [s.id for s in stages]
            for scores in (n.strong, n.weak):
                cands = [s for s in allowed if scores.get(s)]
                if cands:
                    n.stage = max(cands, key=lambda s: (scores[s], -order[s]))
                    break
            else:
                n.stage = allowed[0]
        return stages

    def build(self) -> Model:
        for hop in self.result.hops:
            self.add(hop)
        stages = self.place()
        hops = {h.id: h for h in self.result.hops}
        return Model(stages=stages, nodes=self.nodes, edges=sorted(self.edges.values(), key=lambda e: e.order),
                      hops=hops)


def build_model(result: FlowResult, collapse: bool) -> Model:
    return _Builder(result, collapse).build()


def item_rank(it: DriftItem) -> tuple[int, int]:
    sev = SEVERITIES.index(it.severity) if it.severity in SEVERITIES else 0
    kind = DRIFT_CLASSES.index(it.kind) if it.kind in DRIFT_CLASSES else len(DRIFT_CLASSES)
    return (sev, -kind)


def top_item(items: list[DriftItem]) -> DriftItem:
    return max(items, key=item_rank)


def _attach_to_nodes(model: Model, items: list[DriftItem]) -> tuple[dict[str, list[DriftItem]], list[DriftItem]]:
    """Drift items on no hop, attached to the nodes they name: a file move ("a.c -> b.c") to the functions
    defined in b.c, a neighbourhood item whose subject is a function to that function. The rest stays loose."""
    attached: dict[str, list[DriftItem]] = {}
    loose: list[DriftItem] = []
    for it in items:
        pair = [x.strip() for x in it.subject.split(" -> ", 1)] if " -> " in it.subject else []
        hits = []
        for n in model.nodes.values():
            if n.kind == "handoff" or (it.role and n.role != it.role):
                continue
            if (it.kind == "moved" and pair and n.defn[0] == pair[1]) or (not pair and n.name == it.subject):
                hits.append(n.id)
        for nid in hits:
            attached.setdefault(nid, []).append(it)
        if not hits:
            loose.append(it)
    return attached, loose


def item_line(it: DriftItem) -> str:
    text = f"drift {it.kind} ({it.severity}): {it.subject}"
    if it.detail:
        text += f" - {it.detail}"
    locs = []
    if it.old:
        locs.append(f"old {loc(it.old.path, it.old.line)}")
    if it.new:
        locs.append(f"new {loc(it.new.path, it.new.line)}")
    if locs:
        text += " [" + ", ".join(locs) + "]"
    if it.kind == "renamed" and it.confidence < 1:
        text += f" confidence {it.confidence:.2f}"
    return text


def old_name(it: DriftItem, old_hop: HopResult | None, new_name: str) -> str:
    if old_hop is not None and old_hop.matched_to and old_hop.matched_to != new_name:
        return old_hop.matched_to
    if " -> " in it.subject:
        a, b = (x.strip() for x in it.subject.split(" -> ", 1))
        if b == new_name and a != new_name:
            return a
    if it.old and it.old.function and it.old.function != new_name:
        return it.old.function
    return ""


def _repo_name(repo: str) -> str:
    name = repo.rstrip("/").rsplit("/", 1)[-1]
    return name[:-4] if name.endswith(".git") else name


def _sources_line(result: FlowResult) -> str:
    parts = []
    for s in result.sources:
        ref = s.ref or (s.commit[:12] if s.commit else "")
        parts.append(f"{s.role}: {_repo_name(s.repo or s.src) or '?'}{' ' + ref if ref else ''}")
    return " · ".join(parts)


@dataclass
class Diagram:
    """One picture's content: the model of a flow, its title, and for a drift the items to show on it."""

    result: FlowResult  # the (new) flow drawn
    model: Model
    title: str
    subtitle: str
    collapse: bool = False
    drift: dict[str, list[DriftItem]] | None = None  # a drift diagram: hop id -> its items, worst first
    node_items: dict[str, list[DriftItem]] = field(default_factory=dict)  # items on no hop, at the nodes they name
    others: list[DriftItem] = field(default_factory=list)  # items on no hop and no node
    old_hops: dict[str, HopResult] = field(default_factory=dict)
    drift_kinds: list[str] = field(default_factory=list)  # classes present, in DRIFT_CLASSES order (the legend)


def flow_diagram(result: FlowResult, collapse: bool = False) -> Diagram:
    """The verified flow: one cluster per stage, nodes and edges coloured by hop status."""
    s = result.summary()
    counts = ", ".join(f"{s[k]} {k}" for k in STATUSES if s[k])
    subtitle = " · ".join(x for x in (_sources_line(result), f"{s['total']} hops: {counts}") if x)
    return Diagram(result, build_model(result, collapse), f"{result.title or result.flow} ({result.flow})",
                   subtitle, collapse)


def drift_diagram(report: DriftReport, new: FlowResult, old: FlowResult | None = None,
                  collapse: bool = False) -> Diagram:
    """The new flow with the drift items (matched to hops by item.hop == hop.id)."""
    hop_ids = {h.id for h in new.hops}
    drift: dict[str, list[DriftItem]] = {}
    others: list[DriftItem] = []
    for it in report.items:
        if it.hop in hop_ids:
            drift.setdefault(it.hop, []).append(it)
        else:
            others.append(it)
    for items in drift.values():
        items.sort(key=lambda it: (-item_rank(it)[0], it.kind, it.subject))
    others.sort(key=lambda it: (-item_rank(it)[0], it.stage, it.kind, it.subject))
    old_refs, new_refs = refs_text(report.old_sources), refs_text(report.new_sources)
    counts = severity_counts(report)
    subtitle = " · ".join(x for x in (f"{old_refs} → {new_refs}" if old_refs or new_refs else "",
                                      ", ".join(f"{v} {k}" for k, v in counts.items()) or "no drift") if x)
    model = build_model(new, collapse)
    all_items = [it for items in drift.values() for it in items] + others
    kinds = sorted({"broken" if it.severity == "broken" else it.kind for it in all_items},
                   key=lambda k: (DRIFT_CLASSES.index(k) if k in DRIFT_CLASSES else 99, k))
    node_items, loose = _attach_to_nodes(model, others)
    return Diagram(new, model, f"drift: {new.title or new.flow} ({report.flow})", subtitle, collapse, drift,
                   node_items, loose, {h.id: h for h in old.hops} if old else {}, kinds)
