"""FlowResult / DriftReport -> text for people and machines: terminal table, Markdown, JUnit XML, SARIF,
GitHub Actions annotations, and (via flowscan.html_report) one self-contained HTML page.

All output is deterministic: it follows the order of the input (stages, hops, drift items by severity)
and carries no timestamps, so it can be committed and diffed.
"""

from __future__ import annotations

import hashlib
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

from flowscan import __version__
from flowscan.report.diagram import source_url
from flowscan.report.hops import ev_loc, evidence_line, evidence_text, hop_how, hop_names, path_text, primary_evidence, sorted_items, stages
from flowscan.flow.results import DRIFT_CLASSES, SEVERITIES, DriftItem, DriftReport, Evidence, FlowResult, HopResult, SourceInfo

__all__ = ["trace_table", "trace_markdown", "drift_markdown", "drift_text", "junit_xml", "sarif",
           "github_annotations", "SARIF_SCHEMA_URI", "RULES"]

SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"

# drift class -> (short description, full description, default level)
RULES: dict[str, tuple[str, str, str]] = {
    "renamed": ("A function on the flow was renamed.",
                "The hop now reaches a function with a different name that plays the same part (an "
                "alternative of the spec, or a close name at the same call site).", "warning"),
    "moved": ("A function on the flow moved to another file.",
              "The definition or call site of a hop is now in a different file; line shifts alone are not "
              "reported.", "warning"),
    "signature-changed": ("A function on the flow changed its parameters.",
                          "The parameter list of a hop's target differs between the two versions.", "warning"),
    "registration-api-changed": ("A callback is registered through a different API.",
                                 "The class_init registers the callback with another registration API (for "
                                 "example device_class_set_parent_reset -> resettable_class_set_parent_phases).",
                                 "warning"),
    "path-changed": ("The calls between two hops changed.",
                     "Intermediate calls were added to or removed from the path a hop takes.", "warning"),
    "broken": ("A hop of the flow no longer verifies.",
               "A hop that was verified in the old version is missing in the new one: the flow is broken "
               "there or has moved beyond what the spec describes.", "error"),
    "newly-verified": ("A hop verifies now that did not before.",
                       "A hop that was missing in the old version is verified in the new one.", "note"),
    "calls-added": ("New calls next to the flow.",
                    "A function on the flow calls functions it did not call before.", "note"),
    "calls-removed": ("Calls next to the flow were removed.",
                      "A function on the flow no longer calls functions it called before.", "note"),
    "registration-changed": ("A registration on the flow changed.",
                             "The callback, field or class_init of a registration differs between versions.",
                             "warning"),
}
LEVELS = {"broken": "error", "changed": "warning", "info": "note"}
GITHUB_LEVELS = {"broken": "error", "changed": "warning", "info": "notice"}
STATUS_MARK = {"verified": "✅ verified", "missing": "❌ **missing**", "unverifiable": "➖ unverifiable",
               "skipped-optional": "⏭️ optional, not found"}


# -- shared helpers --------------------------------------------------------------------------------





















def _summary_line(result: FlowResult) -> str:
    s = result.summary()
    parts = [f"{s[k]} {k}" for k in ("verified", "missing", "unverifiable", "skipped-optional") if s[k]]
    verdict = "OK" if result.ok else f"FAIL ({s['missing']} required hop{'s' if s['missing'] != 1 else ''} missing)"
    return f"{s['total']} hops: {', '.join(parts) or 'none'} -> {verdict}"


def _source_text(s: SourceInfo) -> str:
    bits = [s.repo or s.src or "?"]
    if s.ref:
        bits.append(s.ref)
    if s.commit:
        bits.append(f"({s.commit[:12]})")
    return " ".join(bits)


def _templates(sources: list[SourceInfo]) -> dict[str, SourceInfo]:
    return {s.role: s for s in sources}


def _link(sources: dict[str, SourceInfo], role: str, path: str, line: int) -> str:
    s = sources.get(role)
    if not s or not s.url_template:
        return ""
    return source_url(s.url_template, path, line, s.ref, s.commit)





def _severity_counts(report: DriftReport) -> dict[str, int]:
    return {sev: sum(1 for it in report.items if it.severity == sev) for sev in reversed(SEVERITIES)}


# -- terminal ---------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    out = []
    for r in [header, ["-" * w for w in widths]] + rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return out


def trace_table(result: FlowResult) -> str:
    """Plain-text table for the terminal; one line per hop, summary at the end."""
    lines = [f"{result.title or result.flow} ({result.flow})"]
    lines += [f"  {s.role}: {_source_text(s)}" for s in result.sources]
    lines.append("")
    rows = []
    for st in stages(result):
        for h in (h for h in result.hops if h.stage == st.id):
            frm, to = hop_names(h)
            ev = primary_evidence(h)
            rows.append([st.id, frm, to, h.status, hop_how(h), ev_loc(ev) or "-", "; ".join(h.conditions)])
    lines += _table(["STAGE", "FROM", "TO", "STATUS", "HOW", "WHERE", "CONDITIONS"], rows)
    lines.append("")
    lines.append(_summary_line(result))
    return "\n".join(lines) + "\n"


# -- Markdown ---------------------------------------------------------------------------------------
def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{_md(text)}`" if text else ""


def _md_link(text: str, url: str) -> str:
    return f"[{_md(text)}]({url})" if url else _md(text)


def trace_markdown(result: FlowResult) -> str:
    """A report a person reads: sources, per stage a table of hops, conditions, candidates, summary."""
    src = _templates(result.sources)
    out = [f"# {result.title or result.flow}", "",
           f"Flow `{result.flow}` · {_summary_line(result)}", ""]
    if result.sources:
        out += ["## Sources", "", "| role | repository | ref | commit |", "| --- | --- | --- | --- |"]
        for s in result.sources:
            out.append(f"| {s.role} | {_md(s.repo or s.src or '?')} | {_code(s.ref)} | {_code(s.commit)} |")
        out.append("")
    for i, st in enumerate(stages(result), 1):
        hops = [h for h in result.hops if h.stage == st.id]
        if not hops:
            continue
        out += [f"## {i}. {st.title}", "", f"Stage `{st.id}`, role `{st.role}`.", "",
                "| hop | status | how | where | conditions |", "| --- | --- | --- | --- | --- |"]
        for h in hops:
            frm, to = hop_names(h)
            cell = f"{_code(frm)} → {_code(to)}"
            if h.kind == "handoff":
                cell += f" <sub>({h.role} → {h.to_role or h.role})</sub>"
            path = path_text(h)
            if path:
                cell += f"<br><sub>{_md(path)}</sub>"
            ev = primary_evidence(h)
            where = _md_link(ev_loc(ev), _link(src, ev.role, ev.path, ev.line)) if ev else ""
            out.append(f"| {cell} | {STATUS_MARK.get(h.status, h.status)} | {_md(hop_how(h))} | {where} | "
                       f"{_md('; '.join(h.conditions))} |")
        notes = [h for h in hops if h.note and h.status != "missing"]
        if notes:
            out.append("")
            out += [f"- {_code(h.id)}: {h.note}" for h in notes]
        out.append("")
    missing = [h for h in result.hops if h.status in ("missing", "skipped-optional")]
    if missing:
        out += ["## Missing hops", ""]
        for h in missing:
            frm, to = hop_names(h)
            opt = " (optional)" if h.status == "skipped-optional" else ""
            out += [f"### {_code(frm)} → {_code(to)}{opt}", "",
                    f"Hop `{h.id}` in stage `{h.stage}` ({h.kind}, role {h.role}).", ""]
            if h.note:
                out += [h.note, ""]
            if h.evidence:
                out += ["Seen:", ""] + [f"- {_md_link(ev_loc(e), _link(src, e.role, e.path, e.line))} {evidence_text(e)}"
                                        for e in h.evidence] + [""]
            if h.candidates:
                out += ["Nearest candidates:", ""] + [f"- {c}" for c in h.candidates] + [""]
            else:
                out += ["No candidates found.", ""]
    unver = [h for h in result.hops if h.status == "unverifiable"]
    if unver:
        out += ["## Not checkable statically", ""]
        for h in unver:
            frm, to = hop_names(h)
            ev = primary_evidence(h)
            where = f" ({_md_link(ev_loc(ev), _link(src, ev.role, ev.path, ev.line))})" if ev else ""
            out.append(f"- {_code(frm)} → {_code(to)}{where}: {h.note or 'cannot be checked statically'}")
        out.append("")
    s = result.summary()
    out += ["## Summary", "", "| verified | missing | unverifiable | optional, not found | total |",
            "| ---: | ---: | ---: | ---: | ---: |",
            f"| {s['verified']} | {s['missing']} | {s['unverifiable']} | {s['skipped-optional']} | {s['total']} |",
            "", "**Result: the flow verifies.**" if result.ok else
            f"**Result: {s['missing']} required hop{'s' if s['missing'] != 1 else ''} missing.**", ""]
    return "\n".join(out)


def _refs(sources: list[SourceInfo]) -> str:
    return ", ".join(f"{s.role} {s.ref or s.commit[:12] or '?'}" for s in sources)


def drift_markdown(report: DriftReport) -> str:
    """Summary for CI: counts by severity, a table of items with old/new file:line."""
    counts = _severity_counts(report)
    out = [f"## flowscan drift: `{report.flow}`", ""]
    if report.old_sources or report.new_sources:
        out += [f"{_md(_refs(report.old_sources))} → {_md(_refs(report.new_sources))}", ""]
    if not report.items:
        return "\n".join(out + ["No drift: the flow matches the baseline.", ""])
    marks = {"broken": "🔴", "changed": "🟠", "info": "🔵"}
    out += [" · ".join(f"{marks[k]} **{v} {k}**" if v else f"{v} {k}" for k, v in counts.items()), "",
            "| severity | class | stage | hop | what changed | old | new |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    old_src, new_src = _templates(report.old_sources), _templates(report.new_sources)
    for it in sorted_items(report):
        what = _md(it.subject) + (f"<br><sub>{_md(it.detail)}</sub>" if it.detail else "")
        if it.kind == "renamed" and it.confidence < 1:
            what += f" <sub>(confidence {it.confidence:.2f})</sub>"
        old = _md_link(ev_loc(it.old), _link(old_src, it.old.role, it.old.path, it.old.line)) if it.old else ""
        new = _md_link(ev_loc(it.new), _link(new_src, it.new.role, it.new.path, it.new.line)) if it.new else ""
        out.append(f"| {marks.get(it.severity, '')} {it.severity} | {it.kind} | {_code(it.stage)} | "
                   f"{_code(it.hop) or '—'} | {what} | {old} | {new} |")
    out.append("")
    return "\n".join(out)


def drift_text(report: DriftReport) -> str:
    counts = _severity_counts(report)
    lines = [f"drift {report.flow}: " + ", ".join(f"{v} {k}" for k, v in counts.items())]
    if report.old_sources or report.new_sources:
        lines.append(f"  {_refs(report.old_sources)} -> {_refs(report.new_sources)}")
    if not report.items:
        lines.append("no drift")
        return "\n".join(lines) + "\n"
    lines.append("")
    rows = []
    for it in sorted_items(report):
        rows.append([it.severity.upper(), it.kind, it.stage, it.hop or "-", it.subject,
                     ev_loc(it.old) or "-", ev_loc(it.new) or "-"])
    table = _table(["SEVERITY", "CLASS", "STAGE", "HOP", "WHAT", "OLD", "NEW"], rows)
    lines += table[:2]
    for it, row in zip(sorted_items(report), table[2:]):
        lines.append(row)
        if it.detail:
            lines.append(" " * 4 + it.detail)
    return "\n".join(lines) + "\n"


# -- JUnit ------------------------------------------------------------------------------------------
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
            out = [f"{h.kind}: {frm} -> {to} [{h.status}]", f"how: {hop_how(h)}"]
            if ev:
                out.append(f"where: {ev.role} {ev_loc(ev)}")
            out += [f"evidence: {evidence_line(e)}" for e in h.evidence]
            if h.conditions:
                out.append("conditions: " + "; ".join(h.conditions))
            if h.note:
                out.append("note: " + h.note)
            items = by_hop.get(h.id, [])
            bad = [it for it in items if it.severity in ("broken", "changed")]
            if h.status == "missing" or bad:
                msgs = []
                if h.status == "missing":
                    msgs.append(f"missing: {frm} -> {to}" + (f" ({h.note})" if h.note else ""))
                msgs += [f"drift {it.kind} ({it.severity}): {it.subject}" for it in bad]
                text = []
                if h.candidates:
                    text.append("candidates:\n" + "\n".join(f"  {c}" for c in h.candidates))
                text += [_drift_detail(it) for it in bad]
                f = ET.SubElement(tc, "failure", message="; ".join(msgs),
                                  type="missing" if h.status == "missing" else bad[0].kind)
                f.text = "\n".join(text) if text else None
                counts["failures"] += 1
            elif h.status in ("unverifiable", "skipped-optional"):
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


# -- SARIF ------------------------------------------------------------------------------------------
def _base_id(role: str, old: bool = False) -> str:
    return f"{role.upper()}{'_OLD' if old else ''}_SRCROOT"


def _base_uri(s: SourceInfo) -> dict:
    where: dict = {"description": {"text": f"{s.role} tree: {_source_text(s)}"}}
    local = s.src or (s.repo if s.repo and "://" not in s.repo and not s.repo.startswith("git@") else "")
    if local:
        where["uri"] = Path(local).expanduser().resolve().as_uri().rstrip("/") + "/"
    return where


def _physical(ev: Evidence, old: bool = False) -> dict:
    where: dict = {"artifactLocation": {"uri": urllib.parse.quote(ev.path.lstrip("/")),
                                      "uriBaseId": _base_id(ev.role, old)}}
    if ev.line > 0:
        where["region"] = {"startLine": ev.line}
    return where


def _function_location(result: FlowResult, role: str, name: str) -> Evidence | None:
    """Where `name` is defined in a result (a hop's matched target), else one of its call sites."""
    for h in result.hops:
        if h.matched_to == name and h.to_path and (h.to_role or h.role) == role:
            return Evidence(role, h.to_path, h.to_line, name, "definition")
    sites = sorted((st.path, st.line) for h in result.hops if h.role == role for st in h.steps
                   if st.caller == name and st.path)
    return Evidence(role, sites[0][0], sites[0][1], name, "call") if sites else None


def _new_location(result: FlowResult, hop: HopResult) -> Evidence | None:
    """A location in the new tree for a drift item that has none: the hop's own evidence, its target's
    definition, else the definition of the function it starts from (a broken hop: where the call was)."""
    ev = primary_evidence(hop)
    if ev is not None:
        return ev
    if hop.to_path:
        return Evidence(hop.to_role or hop.role, hop.to_path, hop.to_line, hop.matched_to, "definition")
    for name in [hop.matched_from] + hop.frm.split("|"):
        if name:
            ev = _function_location(result, hop.role, name)
            if ev is not None:
                return ev
    return None


def _rule_name(kind: str) -> str:
    return "".join(p.capitalize() for p in kind.split("-"))


def sarif(report: DriftReport, new: FlowResult | None = None) -> dict:
    """SARIF 2.1.0: one result per drift item, located at the new evidence (relative uri + uriBaseId per role)."""
    kinds = list(DRIFT_CLASSES) + sorted({it.kind for it in report.items} - set(DRIFT_CLASSES))
    rules = []
    for k in kinds:
        short, full, level = RULES.get(k, (f"Drift: {k}.", f"Drift of class {k}.", "warning"))
        rules.append({"id": k, "name": _rule_name(k), "shortDescription": {"text": short},
                      "fullDescription": {"text": full}, "defaultConfiguration": {"level": level},
                      "properties": {"tags": ["flowscan", "drift"]}})
    index = {k: i for i, k in enumerate(kinds)}
    hops = {h.id: h for h in new.hops} if new else {}

    results = []
    for it in sorted_items(report):
        message = it.subject + (f": {it.detail}" if it.detail else "")
        if it.kind == "renamed" and it.confidence < 1:
            message += f" (confidence {it.confidence:.2f})"
        res: dict = {"ruleId": it.kind, "ruleIndex": index[it.kind], "level": LEVELS.get(it.severity, "warning"),
                     "message": {"text": message}}
        where = it.new
        if where is None and it.hop in hops:
            where = _new_location(new, hops[it.hop])
        if where is not None and where.path:
            res["locations"] = [{"physicalLocation": _physical(where)}]
        if it.old is not None and it.old.path:
            res["relatedLocations"] = [{"id": 1, "physicalLocation": _physical(it.old, old=True),
                                        "message": {"text": f"before: {evidence_text(it.old) or ev_loc(it.old)}"}}]
        key = "|".join((report.flow, it.hop, it.kind, it.subject))
        res["partialFingerprints"] = {"flowscanDrift/v1": hashlib.sha256(key.encode()).hexdigest()[:32]}
        res["properties"] = {"hop": it.hop, "stage": it.stage, "role": it.role, "severity": it.severity,
                             "confidence": it.confidence}
        results.append(res)

    bases: dict = {}
    for s in report.new_sources:
        bases[_base_id(s.role)] = _base_uri(s)
    for s in report.old_sources:
        bases[_base_id(s.role, old=True)] = _base_uri(s)
    for it in report.items:  # roles without a source entry still need their base ids declared
        for ev, old in ((it.new, False), (it.old, True)):
            if ev is not None:
                bases.setdefault(_base_id(ev.role, old), {"description": {"text": f"{ev.role} tree"}})
    run: dict = {
        "tool": {"driver": {"name": "flowscan", "version": __version__, "semanticVersion": __version__,
                            "rules": rules}},
        "automationDetails": {"id": f"flowscan/{report.flow}/"},
        "originalUriBaseIds": dict(sorted(bases.items())),
        "results": results,
        "columnKind": "unicodeCodePoints",
        "properties": {"flow": report.flow,
                       "oldSources": [_source_text(s) for s in report.old_sources],
                       "newSources": [_source_text(s) for s in report.new_sources]},
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}


# -- GitHub Actions ---------------------------------------------------------------------------------
def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(report: DriftReport) -> str:
    """`::error file=...,line=...,title=...::message` lines (error/warning/notice by severity)."""
    lines = []
    for it in sorted_items(report):
        props = []
        ev = it.new or it.old
        if ev is not None and ev.path:
            props.append(f"file={_gh_prop(ev.path)}")
            if ev.line > 0:
                props.append(f"line={ev.line}")
        props.append(f"title={_gh_prop(f'flowscan {it.kind}' + (f' ({it.hop})' if it.hop else ''))}")
        msg = it.subject + (f": {it.detail}" if it.detail else "")
        if it.new is None and it.old is not None:
            msg += f" (was at {ev_loc(it.old)})"
        lines.append(f"::{GITHUB_LEVELS.get(it.severity, 'warning')} {','.join(props)}::{_gh_data(msg)}")
    return "\n".join(lines) + ("\n" if lines else "")

