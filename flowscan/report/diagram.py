"""FlowResult / DriftReport -> graphviz.Digraph, and writing it as DOT, SVG, PNG or PDF.

The picture reads like the hand-written analysis it automates: one column per stage, stages left to right
in flow order, calls top to bottom inside a stage.

- nodes are functions (`n_<role>_<name>`: colon-free, stable), labelled with the name and file:line;
  a registration's class_init is a note; a handoff across roles is its own node (`h_<hop id>`) in the
  handoff's stage, labelled with the constants that carry it;
- edge styles say how a call was found: solid = direct call, dashed = resolved indirect call (labelled
  `kind: via`), bold = handoff, dotted = flag, hollow arrow = registration, double = folded chain;
- colours say the hop's status (or, in a drift diagram, the drift class) on edges and target nodes;
- every node and edge has a tooltip with its evidence, and a link to the source line when a URL template
  is known for its role.

Everything is emitted in a fixed order derived from the input (stage order, then first appearance in the
hop list) so the same result gives byte-identical DOT.
"""

from __future__ import annotations

import html
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import graphviz

from flowscan.errors import FlowscanError
from flowscan.fileio import atomic_write_bytes
from flowscan.report.hops import evidence_line, target_role
from flowscan.flow.results import DRIFT_CLASSES, SEVERITIES, VERIFIED, DriftItem, DriftReport, FlowResult, HopResult, StageInfo

__all__ = ["flow_graph", "drift_graph", "write", "dot_available", "svg_text", "node_id",
           "handoff_node_id", "hop_class", "source_url", "STATUS_COLOURS", "DRIFT_COLOURS", "INSTALL_HINT"]

INSTALL_HINT = ("Graphviz 'dot' was not found on PATH: install Graphviz (apt-get install graphviz / "
                "brew install graphviz), or write a .dot file instead")

# status -> (line colour, fill colour)
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "verified": ("#2e7d32", "#e8f5e9"),
    "missing": ("#c62828", "#ffebee"),
    "unverifiable": ("#757575", "#eeeeee"),
    "skipped-optional": ("#b08900", "#fff8c4"),
}
STATUS_RANK = {"verified": 0, "skipped-optional": 1, "unverifiable": 2, "missing": 3}

# drift class -> (line colour, fill colour)
DRIFT_COLOURS: dict[str, tuple[str, str]] = {
    "broken": ("#c62828", "#ffebee"),
    "renamed": ("#1565c0", "#e3f2fd"),
    "moved": ("#6a1b9a", "#f3e5f5"),
    "signature-changed": ("#ef6c00", "#fff3e0"),
    "registration-api-changed": ("#ad1457", "#fce4ec"),
    "registration-changed": ("#ad1457", "#fce4ec"),
    "path-changed": ("#00838f", "#e0f7fa"),
    "calls-added": ("#5d4037", "#efebe9"),
    "calls-removed": ("#5d4037", "#efebe9"),
    "newly-verified": ("#2e7d32", "#e8f5e9"),
}
SEVERITY_COLOURS = {"broken": ("#c62828", "#ffebee"), "changed": ("#ef6c00", "#fff3e0"),
                    "info": ("#1565c0", "#e3f2fd")}
UNCHANGED = ("#9e9e9e", "#ffffff")
PLAIN = ("#37474f", "#ffffff")  # nodes that are no hop's target (roots)

ROLE_FILLS = {"guest": "#f4f8fd", "host": "#fbf6ee", "vmm": "#f3faf4"}
FONT = "Helvetica"
FORMATS = ("dot", "svg", "png", "pdf")

_SAFE = re.compile(r"[^A-Za-z0-9_]")
_URL_KEYS = re.compile(r"\{(path|line|ref|commit)\}")


# -- ids and helpers -------------------------------------------------------------------------------
def _sanitize(text: str) -> str:
    return _SAFE.sub(lambda m: f"_{ord(m.group()):x}_", text)


def node_id(role: str, name: str) -> str:
    """Stable, colon-free id of a function node (also the id of its <g> element in SVG output)."""
    return f"n_{_sanitize(role)}_{_sanitize(name)}"


def handoff_node_id(hop_id: str) -> str:
    return f"h_{_sanitize(hop_id)}"


def hop_class(hop_id: str) -> str:
    """CSS class carried by every SVG node and edge that belongs to a hop (`hop-<sanitized id>`); the HTML
    page gives each hop's table row the same string as its id."""
    return f"hop-{_sanitize(hop_id)}"


def _esc(text: str) -> str:
    """Text for a quoted DOT escString (tooltips, URLs): backslashes literal, lines joined with \\n."""
    return "\\n".join(text.replace("\\", "\\\\").splitlines())


def _h(text: str) -> str:
    """Text for an HTML-like label."""
    return html.escape(text, quote=True)


def _short(text: str, n: int = 44) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def source_url(template: str, path: str, line: int = 0, ref: str = "", commit: str = "") -> str:
    """Fill a URL template such as `https://host/tree/{path}?h={ref}#n{line}` (keys path, line, ref, commit)."""
    if not template or not path:
        return ""
    values = {"path": path, "line": str(line or 1), "ref": ref or commit, "commit": commit or ref}
    return _URL_KEYS.sub(lambda m: values[m.group(1)], template)


def _name_of(matched: str, spec: str) -> str:
    return matched or spec


def _loc(path: str, line: int) -> str:
    return f"{path}:{line}" if path and line else path


def _conditions_short(step) -> list[str]:
    out = [f"case {c}" for c in step.cases] + [f"#if {c}" for c in step.conditions]
    return [_short(c, 40) for c in out[:2]] + (["…"] if len(out) > 2 else [])











# -- the model: nodes and edges, independent of graphviz ---------------------------------------------
@dataclass
class _Node:
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
class _Edge:
    tail: str
    head: str
    style: str  # direct | indirect | handoff | flag | registration | missing | unverifiable | folded
    label: list[str]
    hops: list[str] = field(default_factory=list)
    tooltip: list[str] = field(default_factory=list)
    url: tuple[str, str, int] = ("", "", 0)  # (role, path, line)
    order: int = 0


@dataclass
class _Model:
    stages: list[StageInfo]
    nodes: dict[str, _Node]
    edges: list[_Edge]
    hops: dict[str, HopResult]


class _Builder:
    def __init__(self, result: FlowResult, collapse: bool):
        self.result = result
        self.collapse = collapse
        self.nodes: dict[str, _Node] = {}
        self.edges: dict[tuple, _Edge] = {}
        self.stage_ids = [s.id for s in result.stages]
        self.sites: dict[tuple, str] = {}

    def node(self, role: str, name: str, stage: str, weight: float, strong: bool, hop: str,
             kind: str = "function") -> _Node:
        nid = node_id(role, name) if kind != "handoff" else handoff_node_id(name)
        n = self.nodes.get(nid)
        if n is None:
            n = self.nodes[nid] = _Node(id=nid, role=role, name=name, order=len(self.nodes), kind=kind)
        if kind == "class_init":
            n.kind = "class_init"
        bucket = n.strong if strong else n.weak
        bucket[stage] = bucket.get(stage, 0) + weight
        if hop not in n.mentioned_by:
            n.mentioned_by.append(hop)
        return n

    def edge(self, tail: _Node, head: _Node, style: str, label: list[str], hop: HopResult,
             tooltip: list[str], url: tuple[str, str, int]) -> _Edge:
        # One call site resolving to several targets (a table, a notifier chain): label the first edge only.
        site = (tail.id, style, tuple(label), url)
        if label and url[1] and site in self.sites and self.sites[site] != head.id:
            label = []
        elif label and url[1]:
            self.sites.setdefault(site, head.id)
        key = (tail.id, head.id, style, tuple(label))
        e = self.edges.get(key)
        if e is None:
            e = self.edges[key] = _Edge(tail.id, head.id, style, label, url=url, order=len(self.edges))
        if hop.id not in e.hops:
            e.hops.append(hop.id)
            if e.tooltip:
                e.tooltip.append("")
            e.tooltip.extend(tooltip)
        return e

    @staticmethod
    def _set_def(n: _Node, path: str, line: int, signature: str = "") -> None:
        if path and (not n.defn[0] or (line and not n.defn[1])):
            n.defn = (path, line)
        if signature and not n.signature:
            n.signature = signature

    @staticmethod
    def _set_call(n: _Node, path: str, line: int) -> None:
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
            lines.append("conditions: " + "; ".join(hop.conditions))
        if hop.note:
            lines.append("note: " + hop.note)
        if hop.candidates:
            lines.append("candidates: " + "; ".join(hop.candidates))
        return lines

    def _step_lines(self, step) -> list[str]:
        how = step.kind + (f": {step.via}" if step.via else "")
        lines = [f"{step.caller} -> {step.callee}", f"  call at {_loc(step.path, step.line)} ({how})"]
        if step.store_path:
            lines.append(f"  stored at {_loc(step.store_path, step.store_line)}")
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

    def _target(self, n: _Node, hop: HopResult) -> None:
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
                label = [_short(f"{st.kind}: {st.via}" if st.via else st.kind, 48)] + _conditions_short(st)
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
        if hop.status == "unverifiable" or hop.kind == "unverifiable":
            style, label = "unverifiable", ["not checkable statically"]
        elif hop.status == "skipped-optional":
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
        label = [f"flag: {name}"] + (["missing"] if hop.status == "missing" else [])
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
        if hop.api:
            label.append(hop.api)
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

    def build(self) -> _Model:
        for hop in self.result.hops:
            self.add(hop)
        stages = self.place()
        hops = {h.id: h for h in self.result.hops}
        return _Model(stages=stages, nodes=self.nodes, edges=sorted(self.edges.values(), key=lambda e: e.order),
                      hops=hops)


def _model(result: FlowResult, collapse: bool) -> _Model:
    return _Builder(result, collapse).build()


def _edge_id(e: _Edge, index: int) -> str:
    return f"e{index}_{_sanitize(e.hops[0])}"


# -- colours ---------------------------------------------------------------------------------------
class _Colours:
    """Status colours for a flow; drift colours (per hop id) for a drift diagram."""

    def __init__(self, model: _Model, drift: dict[str, list[DriftItem]] | None):
        self.model = model
        self.drift = drift

    def hop(self, hop_id: str) -> tuple[str, str]:
        if self.drift is None:
            return STATUS_COLOURS.get(self.model.hops[hop_id].status, UNCHANGED)
        items = self.drift.get(hop_id)
        if not items:
            return UNCHANGED
        return drift_colour(_top_item(items))

    def worst(self, hop_ids: list[str]) -> tuple[str, str]:
        if not hop_ids:
            return PLAIN
        if self.drift is None:
            hid = max(hop_ids, key=lambda h: (STATUS_RANK.get(self.model.hops[h].status, 0), -hop_ids.index(h)))
            return self.hop(hid)
        with_items = [h for h in hop_ids if self.drift.get(h)]
        if not with_items:
            return UNCHANGED
        best = max(with_items, key=lambda h: _item_rank(_top_item(self.drift[h])))
        return self.hop(best)


def drift_colour(it: DriftItem) -> tuple[str, str]:
    """Colour of a drift item: its class's, except that anything of severity broken is drawn as broken."""
    if it.severity == "broken":
        return DRIFT_COLOURS["broken"]
    return DRIFT_COLOURS.get(it.kind) or SEVERITY_COLOURS.get(it.severity, UNCHANGED)


def _item_rank(it: DriftItem) -> tuple[int, int]:
    sev = SEVERITIES.index(it.severity) if it.severity in SEVERITIES else 0
    kind = DRIFT_CLASSES.index(it.kind) if it.kind in DRIFT_CLASSES else len(DRIFT_CLASSES)
    return (sev, -kind)


def _top_item(items: list[DriftItem]) -> DriftItem:
    return max(items, key=_item_rank)


# -- emitting graphviz -----------------------------------------------------------------------------
_EDGE_STYLE = {
    "direct": {"style": "solid"},
    "indirect": {"style": "dashed"},
    "handoff": {"style": "bold", "penwidth": "2.6", "arrowsize": "0.9"},
    "flag": {"style": "dotted", "penwidth": "1.8"},
    "registration": {"style": "solid", "arrowhead": "onormal", "penwidth": "1.2"},
    "missing": {"style": "solid", "penwidth": "1.8", "arrowhead": "tee"},
    "unverifiable": {"style": "dashed", "arrowhead": "odot"},
    "folded": {"style": "solid"},
}


def _templates(result: FlowResult, url_templates: dict[str, str] | None) -> dict[str, tuple[str, str, str]]:
    """role -> (template, ref, commit)."""
    out: dict[str, tuple[str, str, str]] = {}
    for s in result.sources:
        tmpl = (url_templates or {}).get(s.role) or s.url_template
        out[s.role] = (tmpl or "", s.ref, s.commit)
    for role, tmpl in sorted((url_templates or {}).items()):
        out.setdefault(role, (tmpl, "", ""))
    return out


def _url(templates, role: str, path: str, line: int) -> str:
    tmpl, ref, commit = templates.get(role, ("", "", ""))
    # Graphviz 2.4x copies URLs into SVG without escaping '&': pre-escape it (entities are left alone).
    return source_url(tmpl, path, line, ref, commit).replace("&", "&amp;")


def _node_label(n: _Node, model: _Model, extra: list[str]) -> str:
    """Name in bold, then file:line (definition, else where it was seen), then drift notes; one cell each."""
    small = '<font point-size="9" color="#455a64">{}</font>'
    if n.kind == "handoff":
        cells = [f'<b>{_h(c)}</b>' for c in n.text] + [small.format(f"handoff {_h(n.note)}")]
    else:
        cells = [f'<b>{_h(n.name.replace("|", " | "))}</b>']
        seen = "registers" if n.kind == "class_init" else "call site"
        loc = _loc(*n.defn) if n.defn[0] else (f"{_loc(*n.callsite)} ({seen})" if n.callsite[0] else "")
        if loc:
            cells.append(small.format(_h(loc)))
        elif n.target_of:
            statuses = {model.hops[h].status for h in n.target_of}
            why = ("outside the scanned trees" if statuses == {"unverifiable"} else
                   "not found" if statuses & {"missing", "skipped-optional"} else "no definition in scope")
            cells.append(small.format(why))
    cells += [f'<font point-size="9" color="#37474f"><i>{_h(x)}</i></font>' for x in extra]
    rows = "".join(f'<tr><td cellpadding="{1 if i else 0}">{c}</td></tr>' for i, c in enumerate(cells))
    return f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="0">{rows}</table>>'


def _node_tooltip(n: _Node, model: _Model, extra: list[str]) -> str:
    if n.kind == "handoff":
        hop = model.hops[n.target_of[0]]
        lines = [f"handoff {n.note}: {', '.join(n.text)}", f"hop {hop.id} [{hop.status}]"]
        lines += [evidence_line(ev) for ev in hop.evidence]
        if hop.note:
            lines.append("note: " + hop.note)
    else:
        lines = [f"{n.name}  [{n.role}]"]
        if n.defn[0]:
            lines.append(f"defined at {_loc(*n.defn)}")
        if n.signature:
            lines.append(f"signature: {n.signature}")
        if n.callsite[0]:
            lines.append(f"call site: {_loc(*n.callsite)}")
        for hid in n.target_of:
            hop = model.hops[hid]
            lines.append(f"target of hop {hid} [{hop.status}]" + (f" ({hop.resolution})" if hop.resolution else ""))
            if hop.conditions:
                lines.append("  conditions: " + "; ".join(hop.conditions))
            if hop.status in ("missing", "skipped-optional") and hop.candidates:
                lines.append("  candidates: " + "; ".join(hop.candidates))
            if hop.status != "verified" and hop.note:
                lines.append("  note: " + hop.note)
    return _esc("\n".join(lines + extra))


def _edge_label(e: _Edge) -> str:
    if not e.label:
        return ""
    first, rest = e.label[0], e.label[1:]
    parts = [f"{_h(first)}"] + [f'<font point-size="8">{_h(x)}</font>' for x in rest]
    return '<<font point-size="9">' + "<br/>".join(parts) + "</font>>"


def _legend(drift: bool, kinds: list[str], collapse: bool) -> str:
    """Legend cells (one table row) for the header: line styles, then colours."""
    ink = "#37474f"

    def line(sample: str, text: str) -> str:
        return (f'<td align="right"><font color="{ink}" point-size="11">{sample}</font></td>'
                f'<td align="left">{_h(text)}   </td>')

    def swatch(colours: tuple[str, str], text: str) -> str:
        stroke, fill = colours
        return (f'<td bgcolor="{fill}" border="1" color="{stroke}" width="22"> </td>'
                f'<td align="left"><font color="{stroke}">{_h(text)}</font>   </td>')

    cells = ['<td align="left"><b>Legend</b>   </td>',
             line("───▶", "direct call"), line("– – ▶", "indirect call (kind: via)"),
             line("━━▶", "handoff across roles"), line("·····▶", "flag set / polled"),
             line("───▷", "registers a callback"), line("───┤", "hop not found"),
             line("– – o", "not checkable statically")]
    if collapse:
        cells.append(line("═══▶", "folded chain (+N calls)"))
    cells.append('<td align="left">   <b>{}</b>   </td>'.format("drift" if drift else "status"))
    if drift:
        cells += [swatch(DRIFT_COLOURS.get(k, UNCHANGED), k) for k in kinds]
        cells.append(swatch(UNCHANGED, "unchanged"))
    else:
        cells += [swatch(STATUS_COLOURS[s], s) for s in ("verified", "missing", "unverifiable", "skipped-optional")]
    cells += ['<td align="left">   <b>shapes</b>   </td>', line("▢", "function"),
              line("▤", "class_init (registers)"), line("⇨", "handoff: the constants")]
    return ('<table border="0" cellborder="0" cellspacing="0" cellpadding="2"><tr>' + "".join(cells)
            + "</tr></table>")


def _header(title: str, subtitle: str, legend: str, others: list[DriftItem] | None) -> str:
    rows = [f'<tr><td align="left"><font point-size="16"><b>{_h(title)}</b></font></td></tr>',
            f'<tr><td align="left"><font point-size="11" color="#37474f">{_h(subtitle)}</font></td></tr>',
            f'<tr><td align="left" border="1" color="#b0bec5" sides="tb" cellpadding="4">{legend}</td></tr>']
    if others:
        rows.append(f'<tr><td align="left">{_others_table(others)}</td></tr>')
    return ('<<table border="0" cellborder="0" cellspacing="2" cellpadding="1">' + "".join(rows)
            + "</table>>")


def _cluster_label(i: int, st: StageInfo) -> str:
    return ('<<table border="0" cellborder="0" cellspacing="0" cellpadding="1">'
            f'<tr><td align="left"><font point-size="13"><b>{i + 1}. {_h(st.title)}</b></font></td></tr>'
            f'<tr><td align="left"><font point-size="9" color="#546e7a">stage {_h(st.id)} · role '
            f'{_h(st.role)}</font></td></tr></table>>')


def _render(result: FlowResult, collapse: bool, url_templates: dict[str, str] | None,
            drift: dict[str, list[DriftItem]] | None, title: str, subtitle: str,
            old: FlowResult | None = None, others: list[DriftItem] | None = None) -> graphviz.Digraph:
    model = _model(result, collapse)
    colours = _Colours(model, drift)
    templates = _templates(result, url_templates)
    all_items = [it for items in (drift or {}).values() for it in items] + list(others or [])
    node_items, others = _attach_to_nodes(model, others or [])
    kinds = sorted({"broken" if it.severity == "broken" else it.kind for it in all_items},
                   key=lambda k: (DRIFT_CLASSES.index(k) if k in DRIFT_CLASSES else 99, k))
    g = graphviz.Digraph(name=_sanitize(result.flow) or "flow")
    g.attr("graph", rankdir="TB", newrank="true", fontname=FONT, fontsize="12", nodesep="0.3",
           ranksep="0.4", outputorder="edgesfirst", labelloc="t", labeljust="l", pad="0.3",
           label=_header(title, subtitle, _legend(drift is not None, kinds, collapse), others),
           tooltip=_esc(title))
    g.attr("node", shape="box", style="rounded,filled", fontname=FONT, fontsize="11", margin="0.12,0.05",
           height="0.3")
    g.attr("edge", fontname=FONT, fontsize="9", arrowsize="0.7", color="#37474f")

    old_hops = {h.id: h for h in old.hops} if old else {}
    stage_index = {st.id: i for i, st in enumerate(model.stages)}
    by_stage: dict[str, list[_Node]] = {s.id: [] for s in model.stages}
    for n in sorted(model.nodes.values(), key=lambda n: n.order):
        by_stage[n.stage].append(n)
    stage_of = {n.id: n.stage for n in model.nodes.values()}
    kind_of = {n.id: n.kind for n in model.nodes.values()}

    # Stages are columns, left to right: every cluster has an invisible anchor on the top rank, and an
    # invisible root keeps the anchors in stage order (ordering=out). Edges that go forward to a later
    # stage constrain ranks (the next stage starts below the hop that leads into it, so the edge stays
    # short and never crosses a column upwards); edges back to an earlier stage do not.
    anchors = []
    for i, st in enumerate(model.stages):
        anchor = f"a_{_sanitize(st.id)}"
        anchors.append(anchor)
        with g.subgraph(name=f"cluster_{i:02d}_{_sanitize(st.id)}") as c:
            c.attr(label=_cluster_label(i, st), style="rounded,filled", color="#90a4ae", labeljust="l",
                   fillcolor=ROLE_FILLS.get(st.role, "#f7f7f7"), margin="14",
                   tooltip=_esc(f"stage {st.id}: {st.title} (role {st.role})"))
            c.node(anchor, label="", shape="point", style="invis", width="0", height="0")
            for n in by_stage[st.id]:
                c.node(n.id, **_node_attrs(n, model, colours, templates, drift, old_hops, node_items))
            fed = {e.head for e in model.edges
                   if e.tail != e.head and (stage_of.get(e.tail) == st.id
                                            or stage_index[stage_of[e.tail]] < stage_index[st.id]
                                            or e.style == "registration")}
            roots = [n.id for n in by_stage[st.id] if n.id not in fed and n.kind == "function"]
            for r in roots:
                c.edge(anchor, r, style="invis", weight="2")

    g.node("a__root", label="", shape="point", style="invis", width="0", height="0", ordering="out")
    for a in anchors:
        g.edge("a__root", a, style="invis")
    with g.subgraph() as s:
        s.attr(rank="same")
        for a in anchors:
            s.node(a)

    for i, e in enumerate(model.edges):
        hop_line, _fill = colours.worst(e.hops)
        attrs = dict(_EDGE_STYLE[e.style])
        attrs.update(id=_edge_id(e, i), color=hop_line)
        attrs["class"] = " ".join(["flow-edge"] + [hop_class(h) for h in e.hops])
        if e.style == "folded":
            attrs["color"] = f"{hop_line}:invis:{hop_line}"
        label = _edge_label(e)
        if label:
            attrs["label"] = label
            attrs["fontcolor"] = hop_line if e.style in ("missing", "unverifiable") else "#263238"
        tip = list(e.tooltip)
        if drift is not None:
            for hid in e.hops:
                tip += [_item_line(it) for it in drift.get(hid, ())]
        attrs["tooltip"] = _esc("\n".join(tip))
        attrs["labeltooltip"] = attrs["tooltip"]
        st_t, st_h = stage_index[stage_of[e.tail]], stage_index[stage_of[e.head]]
        if st_t > st_h and e.style != "registration" and kind_of[e.head] != "handoff":
            attrs["constraint"] = "false"
        url = _url(templates, *e.url) if e.url[1] else ""
        if url:
            attrs["URL"] = url
            attrs["target"] = "_blank"
        g.edge(e.tail, e.head, **attrs)
    return g


def _node_attrs(n: _Node, model: _Model, colours: "_Colours", templates, drift, old_hops,
                node_items: dict[str, list[DriftItem]]) -> dict[str, str]:
    extra: list[str] = []
    tip_extra: list[str] = []
    if drift is None:
        line, fill = colours.worst(n.target_of)
    else:
        items = [(hid, it) for hid in n.target_of for it in drift.get(hid, ())]
        items += [("", it) for it in node_items.get(n.id, ())]
        line, fill = drift_colour(_top_item([it for _h, it in items])) if items else \
            (UNCHANGED if n.target_of or n.kind != "function" else PLAIN)
        for hid, it in items:
            tip_extra.append(_item_line(it))
            pair = [x.strip() for x in it.subject.split(" -> ", 1)] if " -> " in it.subject else []
            if it.kind == "renamed":
                was = _old_name(it, old_hops.get(hid), n.name)
                if was:
                    extra.append(f"was {was}")
                elif pair and pair[0] == n.name:
                    extra.append(f"now {pair[1]}?")
            elif it.kind == "moved":
                before = pair[0] if pair and pair[1] == n.defn[0] else (it.old.path if it.old else "")
                if before and before != n.defn[0]:
                    extra.append(f"moved from {before}")
        extra = list(dict.fromkeys(extra))
    attrs = {"id": n.id, "label": _node_label(n, model, extra), "color": line, "fillcolor": fill,
             "tooltip": _node_tooltip(n, model, tip_extra),
             "class": " ".join(["flow-node"] + [hop_class(h) for h in dict.fromkeys(n.target_of + n.mentioned_by)])}
    if n.target_of:
        attrs["penwidth"] = "1.6"
    if n.kind == "class_init":
        attrs.update(shape="note", style="filled")
    elif n.kind == "handoff":
        attrs.update(shape="cds", style="filled", margin="0.3,0.1", penwidth="2")
    elif n.target_of and all(model.hops[h].status == "unverifiable" for h in n.target_of):
        attrs["style"] = "rounded,filled,dashed"
    path, line_no = n.defn if n.defn[0] else n.callsite
    url = _url(templates, n.role, path, line_no) if n.kind != "handoff" else ""
    if url:
        attrs["URL"] = url
        attrs["target"] = "_blank"
    return attrs


def _attach_to_nodes(model: _Model, items: list[DriftItem]) -> tuple[dict[str, list[DriftItem]], list[DriftItem]]:
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


def _item_line(it: DriftItem) -> str:
    text = f"drift {it.kind} ({it.severity}): {it.subject}"
    if it.detail:
        text += f" - {it.detail}"
    locs = []
    if it.old:
        locs.append(f"old {_loc(it.old.path, it.old.line)}")
    if it.new:
        locs.append(f"new {_loc(it.new.path, it.new.line)}")
    if locs:
        text += " [" + ", ".join(locs) + "]"
    if it.kind == "renamed" and it.confidence < 1:
        text += f" confidence {it.confidence:.2f}"
    return text


def _old_name(it: DriftItem, old_hop: HopResult | None, new_name: str) -> str:
    if old_hop is not None and old_hop.matched_to and old_hop.matched_to != new_name:
        return old_hop.matched_to
    if " -> " in it.subject:
        a, b = (x.strip() for x in it.subject.split(" -> ", 1))
        if b == new_name and a != new_name:
            return a
    if it.old and it.old.function and it.old.function != new_name:
        return it.old.function
    return ""


def _others_table(items: list[DriftItem]) -> str:
    rows = ['<tr><td align="left"><b>drift outside the flow\'s hops</b></td></tr>']
    for it in items:
        line, _fill = drift_colour(it)
        text = f"{it.subject}" + (f" ({it.detail})" if it.detail else "")
        rows.append(f'<tr><td align="left"><font color="{line}">{_h(it.kind)} [{_h(it.severity)}]</font> '
                    f'{_h(_short(text, 110))}</td></tr>')
    return '<table border="0" cellborder="0" cellspacing="1" cellpadding="1">' + "".join(rows) + "</table>"


def _repo_name(repo: str) -> str:
    name = repo.rstrip("/").rsplit("/", 1)[-1]
    return name[:-4] if name.endswith(".git") else name


def _sources_line(result: FlowResult) -> str:
    parts = []
    for s in result.sources:
        ref = s.ref or (s.commit[:12] if s.commit else "")
        parts.append(f"{s.role}: {_repo_name(s.repo or s.src) or '?'}{' ' + ref if ref else ''}")
    return " · ".join(parts)


def flow_graph(result: FlowResult, collapse: bool = False,
               url_templates: dict[str, str] | None = None) -> graphviz.Digraph:
    """The verified flow: one cluster per stage, status colours, legend, tooltips and source links."""
    s = result.summary()
    counts = ", ".join(f"{s[k]} {k}" for k in ("verified", "missing", "unverifiable", "skipped-optional") if s[k])
    subtitle = " · ".join(x for x in (_sources_line(result), f"{s['total']} hops: {counts}") if x)
    return _render(result, collapse, url_templates, None, f"{result.title or result.flow} ({result.flow})",
                   subtitle)


def drift_graph(report: DriftReport, new: FlowResult, old: FlowResult | None = None, collapse: bool = False,
                url_templates: dict[str, str] | None = None) -> graphviz.Digraph:
    """The new flow coloured by drift class (per DriftItem, matched to hops by item.hop == hop.id)."""
    hop_ids = {h.id for h in new.hops}
    drift: dict[str, list[DriftItem]] = {}
    others: list[DriftItem] = []
    for it in report.items:
        if it.hop in hop_ids:
            drift.setdefault(it.hop, []).append(it)
        else:
            others.append(it)
    for items in drift.values():
        items.sort(key=lambda it: (-_item_rank(it)[0], it.kind, it.subject))
    others.sort(key=lambda it: (-_item_rank(it)[0], it.stage, it.kind, it.subject))
    counts = {sev: sum(1 for it in report.items if it.severity == sev) for sev in reversed(SEVERITIES)}
    old_refs = ", ".join(f"{s.role} {s.ref or s.commit[:12]}" for s in report.old_sources)
    new_refs = ", ".join(f"{s.role} {s.ref or s.commit[:12]}" for s in report.new_sources)
    subtitle = " · ".join(x for x in (f"{old_refs} → {new_refs}" if old_refs or new_refs else "",
                                      ", ".join(f"{v} {k}" for k, v in counts.items()) or "no drift") if x)
    return _render(new, collapse, url_templates, drift, f"drift: {new.title or new.flow} ({report.flow})",
                   subtitle, old=old, others=others)


# -- output ----------------------------------------------------------------------------------------
def dot_available() -> bool:
    return shutil.which("dot") is not None


def _pipe(graph: graphviz.Digraph, fmt: str) -> bytes:
    if not dot_available():
        raise FlowscanError(INSTALL_HINT)
    try:
        return graph.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise FlowscanError(INSTALL_HINT) from None
    except graphviz.CalledProcessError as exc:
        err = (exc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise FlowscanError(f"dot failed: {err[-1] if err else exc}") from None


def svg_text(graph: graphviz.Digraph) -> str:
    """The graph as SVG text (needs `dot`)."""
    return _pipe(graph, "svg").decode("utf-8")


def write(graph: graphviz.Digraph, out: Path) -> None:
    """Write by suffix: .dot (no `dot` binary needed), .svg, .png, .pdf."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt == "gv":
        fmt = "dot"
    if fmt == "html":
        raise FlowscanError(f"{out}: HTML pages are written by flowscan.report.html_page, not render.write")
    if fmt not in FORMATS:
        raise FlowscanError(f"{out}: unknown output format '{out.suffix}' (use .dot, .svg, .png, .pdf or .html)")
    data = graph.source.encode("utf-8") if fmt == "dot" else _pipe(graph, fmt)
    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        raise FlowscanError(f"{out}: cannot write: {exc.strerror}") from None
