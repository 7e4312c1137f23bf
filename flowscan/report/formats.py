"""The formatter table: every output format by name, each a writer with one signature, Outcome -> text.

`trace --format`, `diff --format` and the outputs of `check` all come from WRITERS, so a new format is one
row here. A writer that needs drift (SARIF, GitHub annotations) is offered only where there is drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from flowscan.flow.results import DriftReport, FlowResult

# The writers' modules load when a writer runs: the CLI reads this table at start, and a question that
# writes no report (defs, callers, ...) should not pay for XML, SARIF and Markdown.


@dataclass
class Outcome:
    """What a command produced: a verified flow, and for a diff or a check the drift and the old flow."""

    result: FlowResult
    drift: DriftReport | None = None
    old: FlowResult | None = None


@dataclass(frozen=True)
class Writer:
    write: Callable[[Outcome], str]
    help: str
    needs_drift: bool = False
    check_option: str = ""  # `check --OPTION FILE` writes this format to FILE


def _text(o: Outcome) -> str:
    from flowscan.report import text

    return text.drift_text(o.drift) if o.drift is not None else text.trace_table(o.result)


def _json(o: Outcome) -> str:
    if o.drift is None:
        return o.result.dumps()
    data = o.drift.to_json()  # a saved diff carries both flows: `flowscan render` and `diff` read it back
    data["old"] = o.old.to_json() if o.old is not None else None
    data["new"] = o.result.to_json()
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _markdown(o: Outcome) -> str:
    from flowscan.report import markdown

    return markdown.drift_markdown(o.drift) if o.drift is not None else markdown.trace_markdown(o.result)


def _junit(o: Outcome) -> str:
    from flowscan.report import junit

    return junit.junit_xml(o.result, o.drift)


def _sarif(o: Outcome) -> str:
    from flowscan.report import sarif

    return json.dumps(sarif.sarif(o.drift, o.result), indent=2, sort_keys=True) + "\n"


def _github(o: Outcome) -> str:
    from flowscan.report import github

    return github.github_annotations(o.drift)


WRITERS: dict[str, Writer] = {
    "text": Writer(_text, "a table for the terminal"),
    "json": Writer(_json, "the versioned result (docs/result-schema.json); a diff carries both flows"),
    "md": Writer(_markdown, "a Markdown summary", check_option="markdown"),
    "junit": Writer(_junit, "JUnit XML (one test case per hop)", check_option="junit"),
    "sarif": Writer(_sarif, "SARIF 2.1.0 (one result per drift item)", needs_drift=True, check_option="sarif"),
    "github": Writer(_github, "GitHub Actions annotations", needs_drift=True),
}
ALIASES = {"table": "text"}  # `trace --format table`, as it was spelled before


def names(drift: bool) -> list[str]:
    """The formats a command offers: all of them where there is drift, else those that need none."""
    return [n for n, w in WRITERS.items() if drift or not w.needs_drift]


def render(name: str, outcome: Outcome) -> str:
    return WRITERS[ALIASES.get(name, name)].write(outcome)
