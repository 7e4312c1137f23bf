"""The Graphviz painter: a diagram model (flowscan.report.diagram) -> graphviz.Digraph, and writing it as
DOT, SVG, PNG or PDF.

Stages are stacked top to bottom in flow order and share one left edge; inside a stage the calls read top
to bottom in rows (flowscan.report.rows) that wrap before they get wider than a page, so the picture reads
down the page at its width. Edge styles say how a call was found: solid = direct call, dashed = resolved indirect call (labelled `kind: via`), bold = handoff,
dotted = flag, hollow arrow = registration, double = folded chain; colours say the hop's status (or, in a
drift diagram, the drift class) on edges and target nodes; every node and edge has a tooltip with its
evidence, and a link to the source line when a URL template is known for its role. The same model gives
byte-identical DOT.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import graphviz

from flowscan.errors import FlowscanError
from flowscan.fileio import atomic_write_bytes
from flowscan.flow.results import NOT_FOUND, STATUSES, UNVERIFIABLE, VERIFIED, DriftItem, DriftReport, FlowResult, StageInfo
from flowscan.report.diagram import (Diagram, Edge, Model, Node, drift_diagram, flow_diagram, hop_class, item_line,
                                     item_rank, old_name, sanitize, shorten, top_item)
from flowscan.report.hops import evidence_line, loc
from flowscan.report.links import SourceLinks
from flowscan.report.rows import stage_rows, text_width
from flowscan.report.palette import (DRIFT_COLOURS, PLAIN, ROLE_FILLS, STATUS_COLOURS, STATUS_RANK, UNCHANGED,
                                     drift_colour)

__all__ = ["flow_graph", "drift_graph", "paint", "write", "dot_available", "svg_text", "INSTALL_HINT", "FORMATS"]

INSTALL_HINT = ("Graphviz 'dot' was not found on PATH: install Graphviz (apt-get install graphviz / "
                "brew install graphviz), or write a .dot file instead")

FONT = "Helvetica"
FADED = "#9e9e9e"  # text of the unchanged path in a drift diagram
FORMATS = ("dot", "svg", "png", "pdf")
# The width (points) a row of calls may take before it wraps: a picture this wide, fitted to a 1,400 px
# window, still shows 11 pt function names at >= 8 px and 9 pt file:line at >= 6 px.
ROW_WIDTH = 1150.0
_TAG = re.compile(r"<[^>]*>")
_SIZE = re.compile(r'point-size="([\d.]+)"')


def _esc(text: str) -> str:
    """Text for a quoted DOT escString (tooltips, URLs): backslashes literal, lines joined with \\n."""
    return "\\n".join(text.replace("\\", "\\\\").splitlines())


def _h(text: str) -> str:
    """Text for an HTML-like label."""
    return html.escape(text, quote=True)


def _edge_id(e: Edge, index: int) -> str:
    return f"e{index}_{sanitize(e.hops[0])}"


# -- colours ---------------------------------------------------------------------------------------
class _Colours:
    """Status colours for a flow; drift colours (per hop id) for a drift diagram."""

    def __init__(self, model: Model, drift: dict[str, list[DriftItem]] | None):
        self.model = model
        self.drift = drift

    def hop(self, hop_id: str) -> tuple[str, str]:
        if self.drift is None:
            return STATUS_COLOURS.get(self.model.hops[hop_id].status, UNCHANGED)
        items = self.drift.get(hop_id)
        if not items:
            return UNCHANGED
        return drift_colour(top_item(items))

    def worst(self, hop_ids: list[str]) -> tuple[str, str]:
        if not hop_ids:
            return PLAIN
        if self.drift is None:
            hid = max(hop_ids, key=lambda h: (STATUS_RANK.get(self.model.hops[h].status, 0), -hop_ids.index(h)))
            return self.hop(hid)
        with_items = [h for h in hop_ids if self.drift.get(h)]
        if not with_items:
            return UNCHANGED
        best = max(with_items, key=lambda h: item_rank(top_item(self.drift[h])))
        return self.hop(best)


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


def _url(links: SourceLinks, role: str, path: str, line: int) -> str:
    # Graphviz 2.4x copies URLs into SVG without escaping '&': pre-escape it (entities are left alone).
    return links.url(role, path, line).replace("&", "&amp;")


def _node_label(n: Node, model: Model, extra: list[str]) -> str:
    """Name in bold, then file:line (definition, else where it was seen), then drift notes; one cell each."""
    small = '<font point-size="9" color="#455a64">{}</font>'
    if n.kind == "handoff":
        cells = [f'<b>{_h(c)}</b>' for c in n.text] + [small.format(f"handoff {_h(n.note)}")]
    else:
        cells = [f'<b>{_h(n.name.replace("|", " | "))}</b>']
        seen = "registers" if n.kind == "class_init" else "call site"
        where = loc(*n.defn) if n.defn[0] else (f"{loc(*n.callsite)} ({seen})" if n.callsite[0] else "")
        if where:
            cells.append(small.format(_h(where)))
        elif n.target_of:
            statuses = {model.hops[h].status for h in n.target_of}
            why = ("outside the scanned trees" if statuses == {UNVERIFIABLE} else
                   "not found" if statuses & set(NOT_FOUND) else "no definition in scope")
            cells.append(small.format(why))
        if n.kind == "class_init" and n.note:
            cells.append(small.format(_h(n.note)))
    cells += [f'<font point-size="9" color="#37474f"><i>{_h(x)}</i></font>' for x in extra]
    rows = "".join(f'<tr><td cellpadding="{1 if i else 0}">{c}</td></tr>' for i, c in enumerate(cells))
    return f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="0">{rows}</table>>'


def _label_width(label: str, size: float) -> float:
    """Estimated width (points) of an HTML-like label: its widest line (a table row or a <br/> line)."""
    widest = 0.0
    for line in re.split(r"<tr>|<br/>", label):
        text = html.unescape(_TAG.sub("", line)).strip()
        if text:
            sizes = _SIZE.findall(line)
            widest = max(widest, text_width(text, float(sizes[-1]) if sizes else size, "<b>" in line))
    return widest


def _node_width(n: Node, attrs: dict[str, str]) -> float:
    """Estimated width (points) a node takes in its row: label, margins and the gap to the next node."""
    margin = 0.3 if n.kind == "handoff" else 0.12
    return _label_width(attrs["label"], 11) + 2 * 72 * margin + 12


def _edge_label_width(e: Edge, drift_lines: list[str]) -> float:
    return _label_width(_edge_label(e, drift_lines), 9) + 10


def _node_tooltip(n: Node, model: Model, extra: list[str]) -> str:
    if n.kind == "handoff":
        hop = model.hops[n.target_of[0]]
        lines = [f"handoff {n.note}: {', '.join(n.text)}", f"hop {hop.id} [{hop.status}]"]
        lines += [evidence_line(ev) for ev in hop.evidence]
        if hop.note:
            lines.append("note: " + hop.note)
    else:
        lines = [f"{n.name}  [{n.role}]"]
        if n.defn[0]:
            lines.append(f"defined at {loc(*n.defn)}")
        if n.signature:
            lines.append(f"signature: {n.signature}")
        if n.callsite[0]:
            lines.append(f"call site: {loc(*n.callsite)}")
        for hid in n.target_of:
            hop = model.hops[hid]
            lines.append(f"target of hop {hid} [{hop.status}]" + (f" ({hop.resolution})" if hop.resolution else ""))
            if hop.conditions:
                lines.append("  conditions: " + "; ".join(hop.conditions))
            if hop.status in NOT_FOUND and hop.candidates:
                lines.append("  candidates: " + "; ".join(hop.candidates))
            if hop.status != VERIFIED and hop.note:
                lines.append("  note: " + hop.note)
    return _esc("\n".join(lines + extra))


def _edge_label(e: Edge, drift_lines: list[str] = ()) -> str:
    """`kind: via` and conditions; on a changed edge of a drift diagram, the old and new lines in bold."""
    if not e.label and not drift_lines:
        return ""
    first, rest = (e.label[0], e.label[1:]) if e.label else ("", [])
    parts = ([_h(first)] if first else []) + [f'<font point-size="8">{_h(x)}</font>' for x in rest]
    parts += [f"<b>{_h(x)}</b>" for x in drift_lines]
    return '<<font point-size="9">' + "<br/>".join(parts) + "</font>>"


def _old_new(it: DriftItem) -> list[str]:
    """Where a drift item was and is, for the edge it sits on ('kind: a.c:10', '→ b.c:12')."""
    old, new = (loc(it.old.path, it.old.line) if it.old else ""), (loc(it.new.path, it.new.line) if it.new else "")
    if not old and not new:
        return []
    return [f"{it.kind}: {old or '-'}", f"→ {new or '-'}"]  # two lines: a long pair would widen its row


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

    def row(title: str, cells: list[str]) -> str:
        head = f"<b>{_h(title)}</b>" if title else " "
        return f'<tr><td align="left">{head}   </td>{"".join(cells)}</tr>'

    lines = [line("───▶", "direct call"), line("– – ▶", "indirect call (kind: via)"),
             line("━━▶", "handoff across roles"), line("·····▶", "flag set / polled")]
    lines2 = [line("───▷", "registers a callback"), line("───┤", "hop not found"),
              line("– – o", "not checkable statically")]
    if collapse:
        lines2.append(line("═══▶", "folded chain (+N calls)"))
    if drift:
        colours = [swatch(DRIFT_COLOURS.get(k, UNCHANGED), k) for k in kinds] + [swatch(UNCHANGED, "unchanged")]
    else:
        colours = [swatch(STATUS_COLOURS[s], s) for s in STATUSES]
    shapes = [line("▢", "function"), line("▤", "class_init (registers)"), line("⇨", "handoff: the constants")]
    # Rows, not one long line: the legend must not set the picture's width.
    colour_rows = [row(("drift" if drift else "status") if not i else "", colours[i:i + 5])
                   for i in range(0, len(colours), 5)]
    return ('<table border="0" cellborder="0" cellspacing="0" cellpadding="2">'
            + row("Legend", lines) + row("", lines2) + "".join(colour_rows)
            + row("shapes", shapes) + "</table>")


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


def paint(diagram: Diagram, url_templates: dict[str, str] | None = None) -> graphviz.Digraph:
    """The diagram as a graphviz graph; url_templates (role -> template) override the result's."""
    model, drift, node_items, old_hops = diagram.model, diagram.drift, diagram.node_items, diagram.old_hops
    colours = _Colours(model, drift)
    templates = SourceLinks(diagram.result.sources, url_templates)
    g = graphviz.Digraph(name=sanitize(diagram.result.flow) or "flow")
    g.attr("graph", rankdir="TB", newrank="true", remincross="false", fontname=FONT, fontsize="12", nodesep="0.1",
           ranksep="0.4", outputorder="edgesfirst", labelloc="t", labeljust="l", pad="0.3",
           label=_header(diagram.title, diagram.subtitle,
                         _legend(drift is not None, diagram.drift_kinds, diagram.collapse), diagram.others),
           tooltip=_esc(diagram.title))
    g.attr("node", shape="box", style="rounded,filled", fontname=FONT, fontsize="11", margin="0.12,0.05",
           height="0.3")
    g.attr("edge", fontname=FONT, fontsize="9", arrowsize="0.7", color="#37474f")

    stage_index = {st.id: i for i, st in enumerate(model.stages)}
    by_stage: dict[str, list[Node]] = {s.id: [] for s in model.stages}
    for n in sorted(model.nodes.values(), key=lambda n: n.order):
        by_stage[n.stage].append(n)
    stage_of = {n.id: n.stage for n in model.nodes.values()}

    edges = [_edge_drawing(e, i, model, colours, drift, templates, stage_index, stage_of)
             for i, e in enumerate(model.edges)]
    attrs_of = {n.id: _node_attrs(n, model, colours, templates, drift, old_hops, node_items)
                for n in model.nodes.values()}
    # Where each node's width goes: its own box, or the labels of the calls into it (they sit just above it).
    cost = {nid: _node_width(model.nodes[nid], a) for nid, a in attrs_of.items()}
    into: dict[str, float] = {}
    for tail, head, attrs, width in edges:
        if stage_of[tail] == stage_of[head] and tail != head:
            into[head] = into.get(head, 0) + width
    cost = {nid: max(w, into.get(nid, 0)) for nid, w in cost.items()}

    # Stages are stacked top to bottom in flow order, each a cluster whose calls read top to bottom in rows
    # (flowscan.report.rows: a row too wide for the page wraps onto the next). Each row is pinned (rank=same)
    # beside an invisible rail node on its left; the rails of all stages form one straight vertical line
    # (one group, heavy edges), so every stage starts at the same left edge instead of drifting sideways,
    # and the last rail of a stage sits above the first of the next, so the stages never overlap.
    previous = ""
    back: set[tuple[str, str]] = set()
    for i, st in enumerate(model.stages):
        ids = [n.id for n in by_stage[st.id]]
        inner = [(t, h) for t, h, _a, _w in edges if stage_of[t] == st.id and stage_of[h] == st.id]
        layout = stage_rows(ids, inner, cost, ROW_WIDTH)
        back |= layout.back
        with g.subgraph(name=f"cluster_{i:02d}_{sanitize(st.id)}") as c:
            c.attr(label=_cluster_label(i, st), style="rounded,filled", color="#90a4ae", labeljust="l",
                   fillcolor=ROLE_FILLS.get(st.role, "#f7f7f7"), margin="14",
                   tooltip=_esc(f"stage {st.id}: {st.title} (role {st.role})"))
            for n in by_stage[st.id]:
                c.node(n.id, **attrs_of[n.id])
            for k, row in enumerate(layout.rows):
                rail = f"r_{i:02d}_{k:02d}"
                with c.subgraph() as r:
                    r.attr(rank="same")
                    r.node(rail, label="", shape="point", style="invis", width="0", height="0", group="rail")
                    for nid in row:
                        r.node(nid)
                for nid in row:  # a flat edge keeps the rail left of every call of its row
                    c.edge(rail, nid, style="invis", weight="1")
                if previous:
                    g.edge(previous, rail, style="invis", weight="10")
                previous = rail

    for tail, head, attrs, _width in edges:
        if (tail, head) in back:
            attrs["constraint"] = "false"  # a cycle's closing call does not push its rows apart
        g.edge(tail, head, **attrs)
    return g


def _edge_drawing(e: Edge, i: int, model: Model, colours: "_Colours", drift, templates, stage_index: dict[str, int],
                  stage_of: dict[str, str]) -> tuple[str, str, dict[str, str], float]:
    """(tail, head, attributes, label width) of one edge as drawn."""
    hop_line, _fill = colours.worst(e.hops)
    attrs = dict(_EDGE_STYLE[e.style])
    attrs.update(id=_edge_id(e, i), color=hop_line)
    attrs["class"] = " ".join(["flow-edge"] + [hop_class(h) for h in e.hops])
    if e.style == "folded":
        attrs["color"] = f"{hop_line}:invis:{hop_line}"
    drift_lines: list[str] = []
    if drift is not None:
        items = [it for hid in e.hops for it in drift.get(hid, ())]
        ends = set(model.nodes[e.head].target_of) if e.head in model.nodes else set()
        ending = [it for hid in e.hops if hid in ends for it in drift.get(hid, ())]
        if ending:  # the old and new lines on the edge that reaches the hop's target, once
            drift_lines = _old_new(top_item(ending))
        if items:
            attrs["penwidth"] = str(max(2.2, float(attrs.get("penwidth", "1"))))
        else:  # the unchanged path is faded, so the changes stand out
            attrs["penwidth"] = "0.8"
    label = _edge_label(e, drift_lines)
    width = 0.0
    if label:
        attrs["label"] = label
        attrs["fontcolor"] = (hop_line if e.style in ("missing", "unverifiable") or drift_lines else
                              FADED if drift is not None else "#263238")
        width = _edge_label_width(e, drift_lines)
    tip = list(e.tooltip)
    if drift is not None:
        for hid in e.hops:
            tip += [item_line(it) for it in drift.get(hid, ())]
    attrs["tooltip"] = _esc("\n".join(tip))
    attrs["labeltooltip"] = attrs["tooltip"]
    st_t, st_h = stage_index[stage_of[e.tail]], stage_index[stage_of[e.head]]
    tail, head = e.tail, e.head
    if st_t != st_h:
        attrs["weight"] = "0"  # only the rail places the stages: a hop across stages must not skew them
        if "label" in attrs:
            # Between stages an edge runs outside the clusters it passes, so a label there would sit beside
            # them and widen the picture: it is placed once the stages are laid out, beside the edge.
            attrs["xlabel"] = attrs.pop("label")
            width = 0.0
    if st_t > st_h:
        # An edge up to an earlier stage (a class_init registering a hold phase drawn above it) is laid
        # out downwards with its arrow reversed: it runs straight between the stages instead of looping
        # round the side of the picture.
        tail, head = head, tail
        attrs.update(dir="back", arrowtail=attrs.pop("arrowhead", "normal"))
    url = _url(templates, *e.url) if e.url[1] else ""
    if url:
        attrs["URL"] = url
        attrs["target"] = "_blank"
    return tail, head, attrs, width


def _node_attrs(n: Node, model: Model, colours: "_Colours", templates, drift, old_hops,
                node_items: dict[str, list[DriftItem]]) -> dict[str, str]:
    extra: list[str] = []
    tip_extra: list[str] = []
    faded = False
    if drift is None:
        line, fill = colours.worst(n.target_of)
    else:
        items = [(hid, it) for hid in n.target_of for it in drift.get(hid, ())]
        items += [("", it) for it in node_items.get(n.id, ())]
        line, fill = drift_colour(top_item([it for _h, it in items])) if items else \
            (UNCHANGED if n.target_of or n.kind != "function" else PLAIN)
        faded = not items
        for hid, it in items:
            tip_extra.append(item_line(it))
            pair = [x.strip() for x in it.subject.split(" -> ", 1)] if " -> " in it.subject else []
            if it.kind == "renamed":
                was = old_name(it, old_hops.get(hid), n.name)
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
    if faded:
        attrs["fontcolor"] = FADED
    if n.kind == "class_init":
        attrs.update(shape="note", style="filled")
    elif n.kind == "handoff":
        attrs.update(shape="cds", style="filled", margin="0.3,0.1", penwidth="2")
    elif n.target_of and all(model.hops[h].status == UNVERIFIABLE for h in n.target_of):
        attrs["style"] = "rounded,filled,dashed"
    path, line_no = n.defn if n.defn[0] else n.callsite
    url = _url(templates, n.role, path, line_no) if n.kind != "handoff" else ""
    if url:
        attrs["URL"] = url
        attrs["target"] = "_blank"
    return attrs


def _others_table(items: list[DriftItem]) -> str:
    rows = ['<tr><td align="left"><b>drift outside the flow\'s hops</b></td></tr>']
    for it in items:
        line, _fill = drift_colour(it)
        text = f"{it.subject}" + (f" ({it.detail})" if it.detail else "")
        # room after the class: a browser's font is often wider than Graphviz's guess, and the class must
        # not run into the text
        rows.append(f'<tr><td align="left"><font point-size="10"><font color="{line}">{_h(it.kind)} '
                    f'[{_h(it.severity)}]      </font>{_h(shorten(text, 96))}</font></td></tr>')
    return '<table border="0" cellborder="0" cellspacing="1" cellpadding="1">' + "".join(rows) + "</table>"


def flow_graph(result: FlowResult, collapse: bool = False,
               url_templates: dict[str, str] | None = None) -> graphviz.Digraph:
    """The verified flow: one cluster per stage, status colours, legend, tooltips and source links."""
    return paint(flow_diagram(result, collapse), url_templates)


def drift_graph(report: DriftReport, new: FlowResult, old: FlowResult | None = None, collapse: bool = False,
                url_templates: dict[str, str] | None = None) -> graphviz.Digraph:
    """The new flow coloured by drift class (per DriftItem, matched to hops by item.hop == hop.id)."""
    return paint(drift_diagram(report, new, old, collapse), url_templates)


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
        raise FlowscanError(f"{out}: HTML pages are written by flowscan.report.html.html_page, not painter.write")
    if fmt not in FORMATS:
        raise FlowscanError(f"{out}: unknown output format '{out.suffix}' (use .dot, .svg, .png, .pdf or .html)")
    data = graph.source.encode("utf-8") if fmt == "dot" else _pipe(graph, fmt)
    try:
        atomic_write_bytes(out, data)
    except OSError as exc:
        raise FlowscanError(f"{out}: cannot write: {exc.strerror}") from None
