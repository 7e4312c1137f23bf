"""DriftReport -> GitHub Actions workflow commands: `::error file=...,line=...,title=...::message`."""

from __future__ import annotations

from flowscan.flow.results import DriftReport
from flowscan.report.hops import ev_loc, sorted_items

GITHUB_LEVELS = {"broken": "error", "changed": "warning", "info": "notice"}


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
