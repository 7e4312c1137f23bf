"""One self-contained HTML page: the diagram (inline SVG), the hop table and, for a diff, the drift list.

Nothing is loaded from anywhere (a Content-Security-Policy forbids it): styles and the small script are
inline. Every SVG node and edge carries the classes `hop-<id>` of the hops it belongs to, and each hop's
table row has that same string as its id, so clicking a node or an edge highlights and scrolls to its rows;
clicking a row highlights its nodes and edges. Ctrl/Cmd/Shift-click on a node follows its source link.
Opening the page with `#select=<svg element id>` selects that element on load.
"""

from __future__ import annotations

import html
import re

from flowscan.flow.results import MISSING, STATUSES, DriftReport, Evidence, FlowResult
from flowscan.report.diagram import hop_class
from flowscan.report.hops import (conditions_text, dispatch_lines, ev_loc, hop_how, hop_names, path_text, primary_evidence, site_lines,
                                  sorted_items, stages, status_text)
from flowscan.report.links import SourceLinks
from flowscan.report.palette import STATUS_COLOURS

_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
        "base-uri 'none'; form-action 'none'")

_CSS = """
:root { --ink:#263238; --muted:#607d8b; --line:#cfd8dc; --hl:#fff59d; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: var(--ink); background: #fafbfc; }
header { padding: 14px 22px 10px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 22px 0 8px; }
main { padding: 0 22px 40px; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.sources { color: var(--muted); margin: 2px 0 8px; }
.sources span { margin-right: 18px; }
.badges span { display: inline-block; padding: 1px 9px; margin-right: 6px; border-radius: 10px;
               border: 1px solid; font-size: 12.5px; }
.verdict { font-weight: 600; margin-left: 6px; }
.toolbar { display: flex; gap: 8px; align-items: center; margin: 14px 0 6px; color: var(--muted); }
.toolbar button { font: inherit; padding: 2px 10px; border: 1px solid var(--line); background: #fff;
                  border-radius: 4px; cursor: pointer; }
.toolbar button[aria-pressed="true"] { background: #eceff1; }
#diagram { overflow: auto; max-height: 78vh; background: #fff; border: 1px solid var(--line); border-radius: 6px;
           cursor: grab; }
#diagram.panning { cursor: grabbing; user-select: none; }
#diagram.fit svg { width: 100%; height: auto; }
#diagram svg { display: block; }
.toolbar .zoom { min-width: 3.5em; text-align: right; }
@page { size: A4 landscape; margin: 10mm; }
@media print {
  body { background: #fff; font-size: 10pt; }
  header, main { padding: 0; }
  .toolbar { display: none; }
  #diagram { max-height: none; overflow: visible; border: none; }
  #diagram svg { width: 100% !important; height: auto !important; }
  table.hops th, table.drift th { position: static; }
  tr.hop, tr.drift-item { break-inside: avoid; }
  h2 { break-after: avoid; }
}
#diagram .flow-node, #diagram .flow-edge { cursor: pointer; }
#diagram .sel > path, #diagram .sel polygon, #diagram .sel ellipse { stroke-width: 4px; }
#diagram .sel text { font-weight: bold; }
.nodiagram { padding: 18px; color: var(--muted); }
table.hops, table.drift, table.src { border-collapse: collapse; width: 100%; background: #fff; }
table.hops th, table.hops td, table.drift th, table.drift td { border-bottom: 1px solid var(--line);
    padding: 4px 8px; text-align: left; vertical-align: top; }
table.hops td.cond, table.hops td.notes, table.drift td.what { overflow-wrap: anywhere; }
table.hops td.where, table.drift td.mono, td.nowrap, table.drift th { white-space: nowrap; }
table.hops th, table.drift th { background: #eceff1; position: sticky; top: 0; font-weight: 600; }
tr.stage th { background: #f5f7f8; font-weight: 600; position: static; }
tr.hop { scroll-margin-top: 60px; }
tr.hop.hl td { background: var(--hl); }
tr.hop:target td { background: var(--hl); }
td.status { white-space: nowrap; font-weight: 600; }
td.where a { color: #1565c0; }
.sub { color: var(--muted); font-size: 12px; }
.sev-broken { color: #c62828; font-weight: 600; } .sev-changed { color: #ef6c00; font-weight: 600; }
.sev-info { color: #1565c0; }
"""

_JS = r"""
(function () {
  "use strict";
  var diagram = document.getElementById("diagram");
  var selected = [];
  function clear() {
    selected.forEach(function (el) { el.classList.remove("hl"); el.classList.remove("sel"); });
    selected = [];
  }
  function hopClasses(el) {
    return Array.prototype.filter.call(el.classList, function (c) { return c.indexOf("hop-") === 0; });
  }
  function mark(el, cls) { el.classList.add(cls); selected.push(el); }
  function selectHops(hops, from) {
    clear();
    var first = null;
    hops.forEach(function (h) {
      var row = document.getElementById(h);
      if (row) { mark(row, "hl"); if (!first) { first = row; } }
      if (diagram) {
        diagram.querySelectorAll("g." + h).forEach(function (g) { mark(g, "sel"); });
      }
    });
    if (from === "diagram" && first) { first.scrollIntoView({block: "center"}); }
    if (from === "table" && diagram) {
      var g = diagram.querySelector("g.flow-node.sel, g.flow-edge.sel");
      if (g && g.scrollIntoView) { g.scrollIntoView({block: "center", inline: "center"}); }
    }
    document.body.setAttribute("data-selected", hops.join(" "));
  }
  function selectElement(g) {
    var hops = hopClasses(g);
    selectHops(hops, "diagram");
    g.classList.add("sel");
  }
  if (diagram) {
    diagram.addEventListener("click", function (ev) {
      var g = ev.target.closest ? ev.target.closest("g.flow-node, g.flow-edge") : null;
      if (!g) { return; }
      if (ev.ctrlKey || ev.metaKey || ev.shiftKey) { return; }  // follow the source link
      ev.preventDefault();
      selectElement(g);
    });
  }
  document.querySelectorAll("tr.hop").forEach(function (row) {
    row.addEventListener("click", function (ev) {
      if (ev.target.closest && ev.target.closest("a")) { return; }
      selectHops([row.id], "table");
    });
  });
  // Zoom (buttons, ctrl/cmd + wheel) and pan (drag the background). The SVG's own width is its size at
  // 100%; "fit width" lets CSS scale it to the page.
  var svg = diagram ? diagram.querySelector("svg") : null;
  var natural = svg ? (svg.viewBox && svg.viewBox.baseVal && svg.viewBox.baseVal.width) || svg.getBBox().width : 0;
  var zoomLabel = document.getElementById("zoom-level");
  function currentScale() {
    if (!svg || !natural) { return 1; }
    return svg.getBoundingClientRect().width / (natural * 4 / 3);
  }
  function showScale() { if (zoomLabel) { zoomLabel.textContent = Math.round(currentScale() * 100) + "%"; } }
  function pressed(name) {
    document.querySelectorAll("button[data-zoom]").forEach(function (o) {
      o.setAttribute("aria-pressed", String(o.getAttribute("data-zoom") === name));
    });
  }
  function zoomTo(scale, cx, cy) {
    if (!svg || !natural) { return; }
    scale = Math.max(0.1, Math.min(4, scale));
    var box = diagram.getBoundingClientRect();
    var px = (cx === undefined ? box.width / 2 : cx - box.left), py = (cy === undefined ? box.height / 2 : cy - box.top);
    var old = svg.getBoundingClientRect().width || 1;
    var fx = (diagram.scrollLeft + px) / old, fy = (diagram.scrollTop + py) / (svg.getBoundingClientRect().height || 1);
    diagram.classList.remove("fit");
    svg.style.width = (natural * 4 / 3 * scale) + "px";
    svg.style.height = "auto";
    diagram.scrollLeft = fx * svg.getBoundingClientRect().width - px;
    diagram.scrollTop = fy * svg.getBoundingClientRect().height - py;
    pressed("");
    showScale();
  }
  document.querySelectorAll("button[data-zoom]").forEach(function (b) {
    b.addEventListener("click", function () {
      var what = b.getAttribute("data-zoom");
      if (what === "fit") {
        diagram.classList.add("fit"); if (svg) { svg.style.width = ""; svg.style.height = ""; }
        pressed("fit"); showScale();
      } else if (what === "actual") { zoomTo(1); pressed("actual"); }
      else if (what === "in") { zoomTo(currentScale() * 1.25); }
      else if (what === "out") { zoomTo(currentScale() / 1.25); }
    });
  });
  if (diagram) {
    diagram.addEventListener("wheel", function (ev) {
      if (!(ev.ctrlKey || ev.metaKey)) { return; }
      ev.preventDefault();
      zoomTo(currentScale() * (ev.deltaY < 0 ? 1.15 : 1 / 1.15), ev.clientX, ev.clientY);
    }, {passive: false});
    var drag = null;
    diagram.addEventListener("pointerdown", function (ev) {
      if (ev.button !== 0 || (ev.target.closest && ev.target.closest("g.flow-node, g.flow-edge"))) { return; }
      drag = {x: ev.clientX, y: ev.clientY, left: diagram.scrollLeft, top: diagram.scrollTop};
      diagram.classList.add("panning");
    });
    window.addEventListener("pointermove", function (ev) {
      if (!drag) { return; }
      diagram.scrollLeft = drag.left - (ev.clientX - drag.x);
      diagram.scrollTop = drag.top - (ev.clientY - drag.y);
    });
    window.addEventListener("pointerup", function () { drag = null; diagram.classList.remove("panning"); });
  }
  showScale();
  // #measure: for tests and the curious, where the first and last hop's labels are once scrolled to.
  if (/^#measure/.test(window.location.hash) && diagram) {
    var rows = document.querySelectorAll("tr.hop");
    var out = [];
    [rows[0], rows[rows.length - 1]].forEach(function (row) {
      if (!row) { return; }
      var g = diagram.querySelector("g.flow-node." + row.id);
      var text = g ? g.querySelector("text[font-weight='bold']") || g.querySelector("text") : null;
      if (!text) { out.push(row.id + " none"); return; }
      text.scrollIntoView({block: "center", inline: "center"});
      var r = text.getBoundingClientRect();
      var size = parseFloat(text.getAttribute("font-size")) * currentScale() * 4 / 3;
      out.push([row.id, text.textContent, Math.round(r.left), Math.round(r.top), Math.round(r.right),
                Math.round(r.bottom), window.innerWidth, window.innerHeight, size.toFixed(2)].join("|"));
    });
    document.body.setAttribute("data-measure", out.join(";"));
  }
  var m = /^#select=(.+)$/.exec(window.location.hash);
  if (m && diagram) {
    var target = document.getElementById(decodeURIComponent(m[1]));
    if (target) { selectElement(target); }
  }
  document.body.setAttribute("data-ready", "1");
})();
"""

_PROLOG = re.compile(r"^.*?(?=<svg\b)", re.S)
_COMMENT = re.compile(r"<!--.*?-->\s*", re.S)


def _clean_svg(svg: str) -> str:
    """Inline-able SVG: no XML prolog, DOCTYPE or comments (they carry Graphviz's version)."""
    svg = _PROLOG.sub("", svg, count=1)
    return _COMMENT.sub("", svg).strip()


def _e(text: str) -> str:
    return html.escape(text or "", quote=True)


def _link(links: SourceLinks, ev: Evidence) -> str:
    """file:line of a piece of evidence, as a link to the source line when its role has a URL template."""
    url, text = links.of(ev), ev_loc(ev)
    if url:
        return f'<a href="{_e(url)}" target="_blank" rel="noopener noreferrer">{_e(text)}</a>'
    return _e(text)


def _status_cell(status: str, text: str = "") -> str:
    line, fill = STATUS_COLOURS.get(status, ("#607d8b", "#ffffff"))
    return f'<td class="status" style="color:{line};background:{fill}">{_e(text or status)}</td>'


def html_page(result: FlowResult, svg: str, report: DriftReport | None = None) -> str:
    links = SourceLinks(result.sources)
    title = f"{result.title or result.flow} ({result.flow})"
    if report is not None:
        title = f"drift: {title}"
    s = result.summary()
    badges = []
    for k in STATUSES:
        line, fill = STATUS_COLOURS[k]
        badges.append(f'<span style="color:{line};background:{fill};border-color:{line}">{s[k]} {_e(k)}</span>')
    verdict = ('<span class="verdict" style="color:#2e7d32">the flow verifies</span>' if result.ok else
               f'<span class="verdict" style="color:#c62828">{s[MISSING]} required hop(s) missing</span>')

    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<link rel="icon" href="data:,">', f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", "</head>",
           "<body>", "<header>", f"<h1>{_e(title)}</h1>", '<div class="sources">']
    for src in result.sources:
        ref = src.ref + (f" ({src.commit[:12]})" if src.commit else "")
        out.append(f"<span><b>{_e(src.role)}</b>: {_e(src.repo or src.src)} <code>{_e(ref)}</code></span>")
    out += ["</div>", f'<div class="badges">{"".join(badges)} {verdict}</div>', "</header>", "<main>"]

    # diagram
    out.append('<div class="toolbar"><span>Diagram</span>'
               '<button type="button" data-zoom="fit" aria-pressed="true">fit width</button>'
               '<button type="button" data-zoom="actual" aria-pressed="false">actual size</button>'
               '<button type="button" data-zoom="out" title="zoom out (ctrl + wheel)">−</button>'
               '<span class="zoom" id="zoom-level"></span>'
               '<button type="button" data-zoom="in" title="zoom in (ctrl + wheel)">+</button>'
               '<span class="sub">click a node or an edge to find its hops below; ctrl-click opens the source; '
               'drag to pan</span></div>')
    if svg and "<svg" in svg:
        out.append(f'<div id="diagram" class="fit">{_clean_svg(svg)}</div>')
    else:
        out.append('<div id="diagram" class="fit"><div class="nodiagram">No diagram: Graphviz `dot` was not '
                   'available when this page was written.</div></div>')

    # drift list
    if report is not None:
        out.append(f"<h2>Drift ({len(report.items)})</h2>")
        if not report.items:
            out.append("<p>No drift: the flow matches the baseline.</p>")
        else:
            old_links, new_links = SourceLinks(report.old_sources), SourceLinks(report.new_sources)
            out += ['<table class="drift"><thead><tr><th>severity</th><th>class</th><th>stage</th><th>hop</th>'
                    "<th>what changed</th><th>old</th><th>new</th></tr></thead><tbody>"]
            hop_ids = {h.id for h in result.hops}
            for it in sorted_items(report):
                hop = (f'<a href="#{hop_class(it.hop)}"><code>{_e(it.hop)}</code></a>' if it.hop in hop_ids
                       else f"<code>{_e(it.hop)}</code>" if it.hop else "—")
                what = _e(it.subject) + (f'<div class="sub">{_e(it.detail)}</div>' if it.detail else "")
                old = _link(old_links, it.old) if it.old else ""
                new = _link(new_links, it.new) if it.new else ""
                out.append(f'<tr class="drift-item"><td class="nowrap sev-{_e(it.severity)}">{_e(it.severity)}</td>'
                           f'<td class="nowrap">{_e(it.kind)}</td><td class="nowrap">{_e(it.stage)}</td>'
                           f'<td>{hop}</td><td class="what">{what}</td>'
                           f'<td class="mono">{old}</td><td class="mono">{new}</td></tr>')
            out.append("</tbody></table>")

    # hop table
    out += ["<h2>Hops</h2>", '<table class="hops" id="hops"><thead><tr><th>hop</th><th>status</th><th>how</th>'
                             "<th>where</th><th>conditions</th><th>notes</th></tr></thead><tbody>"]
    for i, st in enumerate(stages(result), 1):
        hops = [h for h in result.hops if h.stage == st.id]
        if not hops:
            continue
        out.append(f'<tr class="stage"><th colspan="6">{i}. {_e(st.title)} '
                   f'<span class="sub">stage {_e(st.id)} · role {_e(st.role)}</span></th></tr>')
        for h in hops:
            frm, to = hop_names(h)
            ev = primary_evidence(h)
            where = _link(links, ev) if ev else ""
            path = path_text(h)
            cell = f"<code>{_e(frm)}</code> → <code>{_e(to)}</code>"
            if path:
                cell += f'<div class="sub mono">{_e(path)}</div>'
            default_id = f"{h.frm.split('|')[0]}->{h.to.split('|')[0]}"
            cell += f'<div class="sub">{_e(h.kind)}{" · " + _e(h.id) if h.id != default_id else ""}</div>'
            notes = []
            if h.note:
                notes.append(_e(h.note))
            if h.candidates:
                notes.append("candidates: " + "; ".join(_e(c) for c in h.candidates))
            if len(h.sites) > 1:
                notes.append("call sites:<br>" + "<br>".join(_e(line) for line in site_lines(h)))
            lines = dispatch_lines(h)
            if lines:
                notes.append("dispatch:<br>" + "<br>".join(_e(line) for line in lines))
            out.append(f'<tr class="hop" id="{hop_class(h.id)}" data-hop="{_e(h.id)}"><td>{cell}</td>'
                       f"{_status_cell(h.status, status_text(h))}<td>{_e(hop_how(h))}</td><td class=\"where mono\">{where}</td>"
                       f"<td class=\"cond\">{_e(conditions_text(h))}</td><td class=\"notes\">{'<br>'.join(notes)}</td></tr>")
    out += ["</tbody></table>", "</main>", f"<script>{_JS}</script>", "</body>", "</html>", ""]
    return "\n".join(out)
