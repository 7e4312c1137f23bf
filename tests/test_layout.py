"""Diagrams read at a page's width: stacked top to bottom, not wider than 1.5 x their height, and labels
legible when the picture is fitted to a 1,400 px browser window (function names >= 8 px, the smallest text
>= 6 px), for the full built-in flows traced on the fixtures (arm64-reboot: 81 hops in 11 stages), their
drift between the two fixture versions, and the saved sample flow."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from flowscan.flow.drift import diff_results
from flowscan.flow.results import FlowResult
from flowscan.flow.spec import builtin_flows
from flowscan.report import html as html_report
from flowscan.report.diagram import hop_class
from flowscan.report import painter
from flowscan.report.rows import stage_rows
from tests.conftest import FIXTURES
from tests.helpers import run

SVG = "{http://www.w3.org/2000/svg}"
WINDOW = 1400
PAGE = WINDOW - 2 * 22 - 2  # the HTML page's side padding and the diagram's border
CHROMIUM = Path("/usr/bin/chromium")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz `dot`")

OLD = {"guest": FIXTURES / "linux" / "v6.1", "host": FIXTURES / "linux" / "v6.1", "vmm": FIXTURES / "qemu" / "v7.2.0"}
NEW = {"guest": FIXTURES / "linux" / "v6.12", "host": FIXTURES / "linux" / "v6.12", "vmm": FIXTURES / "qemu" / "v10.0.0"}


def _trace(capsys, tmp_path, flow: str, trees: dict[str, Path]) -> FlowResult:
    args = [a for role, p in trees.items() for a in (f"--{role}-src", str(p))]
    code, out, err = run(capsys, "-q", "--cache-dir", str(tmp_path / "cache"), "trace", flow, *args,
                         "--format", "json")
    assert code in (0, 1) and "Traceback" not in err, err
    return FlowResult.from_json(json.loads(out))


def _measure(svg: str) -> tuple[float, float, float, float]:
    """(width, height, smallest bold font, smallest font), in the SVG's own units (points)."""
    root = ET.fromstring(svg)
    w, h = (float(root.get(k).removesuffix("pt")) for k in ("width", "height"))
    sizes = [(float(t.get("font-size")), t.get("font-weight") == "bold") for t in root.iter(f"{SVG}text")
             if t.get("font-size") and (t.text or "").strip()]
    return w, h, min(s for s, bold in sizes if bold), min(s for s, _ in sizes)


def _cluster_lefts(svg: str) -> list[float]:
    """The left edge (SVG units) of every stage's cluster box, in flow order."""
    out = []
    for g in ET.fromstring(svg).iter(f"{SVG}g"):
        if "cluster" in (g.get("class") or "").split():
            path = next(g.iter(f"{SVG}path"))
            out.append(min(float(x) for x in re.findall(r"(-?\d+(?:\.\d+)?),-?\d", path.get("d"))))
    return out


def _check_ratio(svg: str, what: str) -> None:
    w, h, _bold, _small = _measure(svg)
    assert w <= 1.5 * h, f"{what}: {w:.0f} x {h:.0f} pt is wider than 1.5 x its height"


def _check_fit(svg: str, what: str) -> None:
    _check_ratio(svg, what)
    w, _h, bold, small = _measure(svg)
    scale = min(1.0, PAGE / (w * 4 / 3)) * 4 / 3  # CSS px per SVG unit at fit width (never enlarged)
    assert bold * scale >= 8, f"{what}: function names {bold * scale:.1f} px at fit width"
    assert small * scale >= 6, f"{what}: smallest text {small * scale:.1f} px at fit width"


@needs_dot
@pytest.mark.parametrize("flow", sorted(builtin_flows()))
def test_builtin_flow_diagrams_legible_at_fit_width(capsys, tmp_path, flow):
    new = _trace(capsys, tmp_path, flow, NEW)
    old = _trace(capsys, tmp_path, flow, OLD)
    assert len(new.hops) >= 50, f"{flow}: the full built-in flow, not a cut-down one ({len(new.hops)} hops)"
    trace_svg = painter.svg_text(painter.flow_graph(new))
    _check_fit(trace_svg, f"{flow} trace")
    drift = diff_results(old, new)
    assert drift.items, f"{flow}: the fixture versions drift"
    drift_svg = painter.svg_text(painter.drift_graph(drift, new, old))
    _check_fit(drift_svg, f"{flow} drift")
    for what, svg in (("trace", trace_svg), ("drift", drift_svg)):
        lefts = _cluster_lefts(svg)
        assert len(lefts) == len(new.stages), what
        # no staircase: every stage starts at the same left edge
        assert max(lefts) - min(lefts) <= 16, f"{flow} {what}: stage left edges {[round(x) for x in lefts]}"


@needs_dot
def test_sample_flow_and_drift_legible_at_fit_width(sample, old_sample, drift_sample):
    _check_fit(painter.svg_text(painter.flow_graph(sample)), "sample trace")
    _check_fit(painter.svg_text(painter.drift_graph(drift_sample, sample, old_sample)), "sample drift")


@needs_dot
def test_measure_counts_what_a_reader_sees():
    """The measure itself: a picture scaled down to fit is judged at the reduced size."""
    wide = '<svg xmlns="http://www.w3.org/2000/svg" width="4000pt" height="1000pt"><text font-size="11" ' \
           'font-weight="bold">f</text><text font-size="8">a.c:1</text></svg>'
    with pytest.raises(AssertionError, match="wider than 1.5"):
        _check_fit(wide, "wide")
    tall = wide.replace('height="1000pt"', 'height="9000pt"')
    with pytest.raises(AssertionError, match="function names"):
        _check_fit(tall, "tall")


def test_rows_put_callees_below_callers_and_wrap_a_wide_fan_out():
    fan = [f"f{i}" for i in range(12)]
    nodes = ["top", *fan, "leaf"]
    edges = [("top", f) for f in fan] + [("f11", "leaf")]
    cost = {n: 100.0 for n in nodes}
    rows = stage_rows(nodes, edges, cost, budget=450).rows
    assert rows[0] == ["top"]
    assert rows[1:4] == [fan[0:4], fan[4:8], fan[8:12]]  # a row full at 4 x 100 <= 450 wraps
    assert rows[4] == ["leaf"]  # below its caller, which wrapped onto the third row
    assert stage_rows(nodes, edges, cost, budget=10_000).rows == [["top"], fan, ["leaf"]]
    assert stage_rows(nodes, edges, cost, budget=450) == stage_rows(nodes, edges, cost, budget=450)


def test_rows_break_a_cycle_where_it_closes():
    res = stage_rows(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")], {}, budget=100)
    assert res.rows == [["a"], ["b"], ["c"]] and res.back == {("c", "a")}
    assert stage_rows([], [], {}, budget=100).rows == [[]]  # an empty stage still has its (rail's) row


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
@needs_dot
@pytest.mark.parametrize("page_kind", ["trace", "drift"])
@pytest.mark.parametrize("flow", sorted(builtin_flows()))
def test_html_page_at_1400px_shows_first_and_last_hop_labels(capsys, tmp_path, flow, page_kind):
    new = _trace(capsys, tmp_path, flow, NEW)
    page = tmp_path / "page.html"
    if page_kind == "trace":
        content = html_report.html_page(new, painter.svg_text(painter.flow_graph(new)))
    else:
        old = _trace(capsys, tmp_path, flow, OLD)
        drift = diff_results(old, new)
        content = html_report.html_page(new, painter.svg_text(painter.drift_graph(drift, new, old)), drift)
    page.write_text(content, encoding="utf-8")
    dom = _chromium([f"--window-size={WINDOW},1000", "--dump-dom", f"{page.as_uri()}#measure"], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-measure="([^"]*)"', dom.stdout)
    assert m, "the page did not measure its labels"
    labels = m.group(1).split(";")
    assert len(labels) == 2
    for label in labels:
        hop, text, left, top, right, bottom, vw, vh, size = label.split("|")
        left, top, right, bottom, vw, vh = map(int, (left, top, right, bottom, vw, vh))
        assert text.strip(), label
        assert 0 <= left < right <= vw and 0 <= top < bottom <= vh, f"{hop} label off screen: {label}"
        assert float(size) >= 8, f"{hop} label {size} px at fit width"
    for label, hop in zip(labels, (new.hops[0], new.hops[-1])):
        hop_id, text = label.split("|")[:2]
        assert hop_id == hop_class(hop.id), label
        names = {hop.matched_from, hop.matched_to, hop.frm, hop.to, *hop.constants}
        assert text.replace(" | ", "|") in names, (label, names)
    shot = tmp_path / "page.png"
    res = _chromium([f"--screenshot={shot}", f"--window-size={WINDOW},1000", page.as_uri()], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (WINDOW, 1000)
