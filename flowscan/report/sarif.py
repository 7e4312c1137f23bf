"""DriftReport -> SARIF 2.1.0 for code scanning: one result per drift item, located in the new tree."""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path

from flowscan import __version__
from flowscan.flow.results import DRIFT_CLASSES, DriftReport, Evidence, FlowResult, HopResult, SourceInfo
from flowscan.report.hops import ev_loc, evidence_text, primary_evidence, sorted_items, source_text

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


def _base_id(role: str, old: bool = False) -> str:
    return f"{role.upper()}{'_OLD' if old else ''}_SRCROOT"


def _base_uri(s: SourceInfo) -> dict:
    where: dict = {"description": {"text": f"{s.role} tree: {source_text(s)}"}}
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
                       "oldSources": [source_text(s) for s in report.old_sources],
                       "newSources": [source_text(s) for s in report.new_sources]},
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}
