"""FlowResult / DriftReport -> plain text for the terminal: one line per hop or drift item, then a summary."""

from __future__ import annotations

from flowscan.flow.results import DriftReport, FlowResult
from flowscan.report.hops import (conditions_text, ev_loc, where_text, hop_how, hop_names, primary_evidence, refs_text, severity_counts,
                                  site_count_text, sorted_items, source_text, stages, status_text,
                                  summary_line)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell, a dashed rule under the header."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    out = []
    for r in [header, ["-" * w for w in widths]] + rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return out


def trace_table(result: FlowResult) -> str:
    """Plain-text table for the terminal; one line per hop, summary at the end."""
    lines = [f"{result.title or result.flow} ({result.flow})"]
    for s in result.sources:
        lines.append(f"  {s.role}: {source_text(s)}")
        if s.build:
            lines.append(f"    build: {s.build}")
    lines.append("")
    rows = []
    for st in stages(result):
        for h in (h for h in result.hops if h.stage == st.id):
            frm, to = hop_names(h)
            ev = primary_evidence(h)
            rows.append([st.id, frm, to, status_text(h), hop_how(h), (where_text(h) or "-") + site_count_text(h),
                         conditions_text(h)])
    lines += table(["STAGE", "FROM", "TO", "STATUS", "HOW", "WHERE", "CONDITIONS"], rows)
    lines.append("")
    lines.append(summary_line(result))
    return "\n".join(lines) + "\n"


def drift_text(report: DriftReport) -> str:
    counts = severity_counts(report)
    lines = [f"drift {report.flow}: " + ", ".join(f"{v} {k}" for k, v in counts.items())]
    if report.old_sources or report.new_sources:
        lines.append(f"  {refs_text(report.old_sources)} -> {refs_text(report.new_sources)}")
    if not report.items:
        lines.append("no drift")
        return "\n".join(lines) + "\n"
    lines.append("")
    rows = []
    for it in sorted_items(report):
        rows.append([it.severity.upper(), it.kind, it.stage, it.hop or "-", it.subject,
                     ev_loc(it.old) or "-", ev_loc(it.new) or "-"])
    grid = table(["SEVERITY", "CLASS", "STAGE", "HOP", "WHAT", "OLD", "NEW"], rows)
    lines += grid[:2]
    for it, row in zip(sorted_items(report), grid[2:]):
        lines.append(row)
        if it.detail:
            lines.append(" " * 4 + it.detail)
    return "\n".join(lines) + "\n"
