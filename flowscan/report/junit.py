"""FlowResult (+ DriftReport) -> JUnit XML for CI: one test case per hop, drift items on their hop."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from flowscan.flow.results import MISSING, SKIPPED, UNVERIFIABLE, DriftItem, DriftReport, FlowResult
from flowscan.report.hops import (dispatch_lines, ev_loc, evidence_line, evidence_text, hop_how, hop_names,
                                  primary_evidence, site_lines, sorted_items, stages, status_text)


def junit_xml(result: FlowResult, report: DriftReport | None = None) -> str:
    """One <testcase> per hop (classname flow.stage, name hop id): missing -> <failure>, unverifiable and
    optional-not-found -> <skipped>; drift items attached to their hop (broken/changed -> <failure>, info ->
    <system-out>); drift items on no hop get their own suite `<flow>.drift`."""
    by_hop: dict[str, list[DriftItem]] = {}
    hop_ids = {h.id for h in result.hops}
    loose: list[DriftItem] = []
    for it in (sorted_items(report) if report else []):
        (by_hop.setdefault(it.hop, []) if it.hop in hop_ids else loose).append(it)

    root = ET.Element("testsuites", name=f"flowscan {result.flow}")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    props = [(f"{s.role}.{k}", v) for s in result.sources for k, v in (("repo", s.repo), ("ref", s.ref),
                                                                          ("commit", s.commit)) if v]

    def suite(name: str) -> ET.Element:
        el = ET.SubElement(root, "testsuite", name=name)
        if props:
            p = ET.SubElement(el, "properties")
            for k, v in props:
                ET.SubElement(p, "property", name=k, value=v)
        return el

    def close(el: ET.Element, counts: dict[str, int]) -> None:
        el.set("tests", str(counts["tests"]))
        el.set("failures", str(counts["failures"]))
        el.set("errors", "0")
        el.set("skipped", str(counts["skipped"]))
        el.set("time", "0")
        for k in totals:
            totals[k] += counts[k]

    for st in stages(result):
        hops = [h for h in result.hops if h.stage == st.id]
        if not hops:
            continue
        el = suite(f"{result.flow}.{st.id}")
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for h in hops:
            counts["tests"] += 1
            tc = ET.SubElement(el, "testcase", classname=f"{result.flow}.{st.id}", name=h.id, time="0")
            frm, to = hop_names(h)
            ev = primary_evidence(h)
            out = [f"{h.kind}: {frm} -> {to} [{status_text(h)}]", f"how: {hop_how(h)}"]
            if ev:
                out.append(f"where: {ev.role} {ev_loc(ev)}")
            out += [f"evidence: {evidence_line(e)}" for e in h.evidence]
            if h.conditions:
                out.append("conditions: " + "; ".join(h.conditions))
            if len(h.sites) > 1:
                out += [f"site: {line}" for line in site_lines(h)]
            out += [f"dispatch: {line}" for line in dispatch_lines(h)]
            if h.note:
                out.append("note: " + h.note)
            items = by_hop.get(h.id, [])
            bad = [it for it in items if it.severity in ("broken", "changed")]
            if h.status == MISSING or bad:
                msgs = []
                if h.status == MISSING:
                    msgs.append(f"missing: {frm} -> {to}" + (f" ({h.note})" if h.note else ""))
                msgs += [f"drift {it.kind} ({it.severity}): {it.subject}" for it in bad]
                text = []
                if h.candidates:
                    text.append("candidates:\n" + "\n".join(f"  {c}" for c in h.candidates))
                text += [_drift_detail(it) for it in bad]
                f = ET.SubElement(tc, "failure", message="; ".join(msgs),
                                  type=MISSING if h.status == MISSING else bad[0].kind)
                f.text = "\n".join(text) if text else None
                counts["failures"] += 1
            elif h.status in (UNVERIFIABLE, SKIPPED):
                ET.SubElement(tc, "skipped", message=f"{h.status}: {h.note}" if h.note else h.status)
                counts["skipped"] += 1
            out += [_drift_detail(it) for it in items if it.severity == "info"]
            ET.SubElement(tc, "system-out").text = "\n".join(out)
        close(el, counts)

    if loose:
        el = suite(f"{result.flow}.drift")
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for i, it in enumerate(loose, 1):
            counts["tests"] += 1
            tc = ET.SubElement(el, "testcase", classname=f"{result.flow}.drift",
                               name=f"{it.kind}: {it.subject}", time="0")
            if it.severity in ("broken", "changed"):
                ET.SubElement(tc, "failure", message=f"drift {it.kind} ({it.severity}): {it.subject}",
                              type=it.kind).text = _drift_detail(it)
                counts["failures"] += 1
            else:
                ET.SubElement(tc, "system-out").text = _drift_detail(it)
        close(el, counts)

    root.set("tests", str(totals["tests"]))
    root.set("failures", str(totals["failures"]))
    root.set("errors", "0")
    root.set("skipped", str(totals["skipped"]))
    root.set("time", "0")
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _drift_detail(it: DriftItem) -> str:
    lines = [f"drift {it.kind} ({it.severity}): {it.subject}"]
    if it.detail:
        lines.append(f"  {it.detail}")
    if it.old:
        lines.append(f"  old: {it.old.role} {ev_loc(it.old)} {evidence_text(it.old)}".rstrip())
    if it.new:
        lines.append(f"  new: {it.new.role} {ev_loc(it.new)} {evidence_text(it.new)}".rstrip())
    return "\n".join(lines)
