"""FlowResult / DriftReport -> Markdown a person reads: per stage a table of hops, missing hops with their
candidates, a summary; for drift, counts by severity and a table of items with old/new links."""

from __future__ import annotations

from flowscan.flow.results import MISSING, NOT_FOUND, SKIPPED, UNVERIFIABLE, VERIFIED, DriftReport, FlowResult
from flowscan.report.hops import (conditions_text, dispatch_lines, ev_loc, handoff_ends, evidence_text, hop_how, hop_names, path_text,
                                  primary_evidence, refs_text, severity_counts, site_lines, sorted_items,
                                  stages, summary_line)
from flowscan.report.links import SourceLinks

STATUS_MARK = {VERIFIED: "✅ verified", MISSING: "❌ **missing**", UNVERIFIABLE: "➖ unverifiable",
               SKIPPED: "⏭️ optional, not found"}


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{_md(text)}`" if text else ""


def _md_link(text: str, url: str) -> str:
    return f"[{_md(text)}]({url})" if url else _md(text)


def trace_markdown(result: FlowResult) -> str:
    """A report a person reads: sources, per stage a table of hops, conditions, candidates, summary."""
    links = SourceLinks(result.sources)
    out = [f"# {result.title or result.flow}", "",
           f"Flow `{result.flow}` · {summary_line(result)}", ""]
    if result.sources:
        out += ["## Sources", "", "| role | repository | ref | commit |", "| --- | --- | --- | --- |"]
        for s in result.sources:
            out.append(f"| {s.role} | {_md(s.repo or s.src or '?')} | {_code(s.ref)} | {_code(s.commit)} |")
        out.append("")
        builds = [s for s in result.sources if s.build]
        if builds:
            out += [f"- build ({s.role}): {_md(s.build)}" for s in builds] + [""]
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
            where = _md_link(ev_loc(ev), links.of(ev)) if ev else ""
            prod, cons = handoff_ends(h) if h.kind == "handoff" else (None, None)
            if prod and cons:  # a handoff: both sides
                where = f"{_md_link(ev_loc(prod), links.of(prod))} → {_md_link(ev_loc(cons), links.of(cons))}"
            mark = STATUS_MARK.get(h.status, h.status) + (f" (wide: {h.width})" if h.wide and h.status == VERIFIED else "")
            out.append(f"| {cell} | {mark} | {_md(hop_how(h))} | {where} | "
                       f"{_md(conditions_text(h))} |")
        notes = [h for h in hops if h.note and h.status != MISSING]
        if notes:
            out.append("")
            out += [f"- {_code(h.id)}: {h.note}" for h in notes]
        detail = [h for h in hops if len(h.sites) > 1 or dispatch_lines(h)]
        if detail:
            out.append("")
            for h in detail:
                if len(h.sites) > 1:
                    out.append(f"- {_code(h.id)} call sites:")
                    out += [f"  - {_md(line)}" for line in site_lines(h)]
                lines = dispatch_lines(h)
                if lines:
                    out.append(f"- {_code(h.id)} dispatch:")
                    out += [f"  - {_md(line)}" for line in lines]
        out.append("")
    missing = [h for h in result.hops if h.status in NOT_FOUND]
    if missing:
        out += ["## Missing hops", ""]
        for h in missing:
            frm, to = hop_names(h)
            opt = " (optional)" if h.status == SKIPPED else ""
            out += [f"### {_code(frm)} → {_code(to)}{opt}", "",
                    f"Hop `{h.id}` in stage `{h.stage}` ({h.kind}, role {h.role}).", ""]
            if h.note:
                out += [h.note, ""]
            if h.evidence:
                out += ["Seen:", ""] + [f"- {_md_link(ev_loc(e), links.of(e))} {evidence_text(e)}"
                                        for e in h.evidence] + [""]
            if h.candidates:
                out += ["Nearest candidates:", ""] + [f"- {c}" for c in h.candidates] + [""]
            else:
                out += ["No candidates found.", ""]
    unver = [h for h in result.hops if h.status == UNVERIFIABLE]
    if unver:
        out += ["## Not checkable statically", ""]
        for h in unver:
            frm, to = hop_names(h)
            ev = primary_evidence(h)
            where = f" ({_md_link(ev_loc(ev), links.of(ev))})" if ev else ""
            out.append(f"- {_code(frm)} → {_code(to)}{where}: {h.note or 'cannot be checked statically'}")
        out.append("")
    s = result.summary()
    out += ["## Summary", "", "| verified | missing | unverifiable | optional, not found | total |",
            "| ---: | ---: | ---: | ---: | ---: |",
            f"| {s[VERIFIED]} | {s[MISSING]} | {s[UNVERIFIABLE]} | {s[SKIPPED]} | {s['total']} |",
            "", "**Result: the flow verifies.**" if result.ok else
            f"**Result: {s[MISSING]} required hop{'s' if s[MISSING] != 1 else ''} missing.**", ""]
    return "\n".join(out)


def drift_markdown(report: DriftReport) -> str:
    """Summary for CI: counts by severity, a table of items with old/new file:line."""
    counts = severity_counts(report)
    out = [f"## flowscan drift: `{report.flow}`", ""]
    if report.old_sources or report.new_sources:
        out += [f"{_md(refs_text(report.old_sources))} → {_md(refs_text(report.new_sources))}", ""]
    if not report.items:
        return "\n".join(out + ["No drift: the flow matches the baseline.", ""])
    marks = {"broken": "🔴", "changed": "🟠", "info": "🔵"}
    out += [" · ".join(f"{marks[k]} **{v} {k}**" if v else f"{v} {k}" for k, v in counts.items()), "",
            "| severity | class | stage | hop | what changed | old | new |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    old_links, new_links = SourceLinks(report.old_sources), SourceLinks(report.new_sources)
    for it in sorted_items(report):
        what = _md(it.subject) + (f"<br><sub>{_md(it.detail)}</sub>" if it.detail else "")
        if it.kind == "renamed" and it.confidence < 1:
            what += f" <sub>(confidence {it.confidence:.2f})</sub>"
        old = _md_link(ev_loc(it.old), old_links.of(it.old)) if it.old else ""
        new = _md_link(ev_loc(it.new), new_links.of(it.new)) if it.new else ""
        out.append(f"| {marks.get(it.severity, '')} {it.severity} | {it.kind} | {_code(it.stage)} | "
                   f"{_code(it.hop) or '—'} | {what} | {old} | {new} |")
    out.append("")
    return "\n".join(out)
