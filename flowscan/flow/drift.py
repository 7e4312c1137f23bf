"""Two verified flows -> classified drift items (what changed on the path between two releases).

Line shifts alone are not drift. Renames are told apart from breakage by evidence: the same hop (same
caller position) now reaches a differently named function, how alike the names are, and how much the
old and new function's callees overlap; the confidence says how sure that is.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Iterable

from flowscan.flow.results import (MISSING, SEVERITIES, VERIFIED, DriftItem, DriftReport, Evidence, FlowResult,
                                   HopResult, step_evidence)

SEVERITY_OF = {"broken": "broken", "renamed": "changed", "moved": "changed", "signature-changed": "changed",
               "registration-api-changed": "changed", "path-changed": "changed", "newly-verified": "info",
               "calls-added": "info", "calls-removed": "info", "registration-changed": "changed"}
_WS = re.compile(r"\s+")


def _ev(h: HopResult) -> Evidence | None:
    return h.evidence[0] if h.evidence else None


def _to_ev(h: HopResult) -> Evidence | None:
    if h.to_path:
        return Evidence(role=h.to_role or h.role, path=h.to_path, line=h.to_line, function=h.matched_to,
                        what="definition", signature=h.signature)
    return _ev(h)


def _sig(params: str) -> str:
    """Parameter types only: renaming a parameter is not a signature change."""
    out = []
    for p in params.strip().strip("()").split(","):
        words = _WS.sub(" ", p.replace("*", " * ")).strip().split(" ")
        if len(words) > 1 and words[-1] not in ("*",) and words[-1].isidentifier() and \
                words[-1] not in ("void", "int", "char", "long", "unsigned", "bool"):
            words = words[:-1]
        out.append(" ".join(words).replace(" *", "*"))
    return "(" + ", ".join(out) + ")"


def _confidence(old: str, new: str, old_callees: Iterable[str], new_callees: Iterable[str]) -> float:
    name = difflib.SequenceMatcher(None, old, new).ratio()
    a, b = set(old_callees), set(new_callees)
    overlap = len(a & b) / len(a | b) if a | b else 0.0
    # same caller position is given (same hop), worth 0.4
    return round(min(1.0, 0.4 + 0.35 * name + 0.25 * overlap), 2)


def _item(kind: str, h: HopResult, subject: str, detail: str = "", old: Evidence | None = None,
          new: Evidence | None = None, confidence: float = 1.0, severity: str = "") -> DriftItem:
    return DriftItem(kind=kind, severity=severity or SEVERITY_OF[kind], hop=h.id, stage=h.stage, role=h.role,
                     subject=subject, detail=detail, old=old, new=new, confidence=confidence)


def diff_results(old: FlowResult, new: FlowResult) -> DriftReport:
    report = DriftReport(flow=new.flow, old_sources=old.sources, new_sources=new.sources)
    old_hops = {h.id: h for h in old.hops}
    old_callees = old.context.get("callees", {})
    new_callees = new.context.get("callees", {})
    renames: dict[str, str] = {}
    seen_renames: set[tuple[str, str]] = set()
    seen_sigs: set[str] = set()
    moved: dict[tuple[str, str, str], list[str]] = {}
    items: list[DriftItem] = []

    def rename(h: HopResult, o: str, n: str, old_ev, new_ev):
        if not o or not n or o == n or (o, n) in seen_renames:
            return
        seen_renames.add((o, n))
        renames[o] = n
        conf = _confidence(o, n, old_callees.get(f"{h.role}:{o}", ()), new_callees.get(f"{h.role}:{n}", ()))
        items.append(_item("renamed", h, f"{o} -> {n}", f"the hop now reaches {n} where it reached {o}",
                           old_ev, new_ev, conf))

    def note_path(h_old: HopResult, h_new: HopResult):
        # functions whose file changed (call sites of `from`, definitions of `to`)
        pairs = []
        eo, en = _ev(h_old), _ev(h_new)
        if eo and en and h_old.kind in ("call", "reach") and eo.function == en.function:
            pairs.append((h_new.role, eo.function, eo.path, en.path))
        if h_old.to_path and h_new.to_path and h_old.matched_to == h_new.matched_to:
            pairs.append((h_new.to_role or h_new.role, h_new.matched_to, h_old.to_path, h_new.to_path))
        for role, fn, po, pn in pairs:
            if po != pn:
                moved.setdefault((role, po, pn), [])
                if fn not in moved[(role, po, pn)]:
                    moved[(role, po, pn)].append(fn)

    for h in new.hops:
        o = old_hops.get(h.id)
        if o is None:
            continue
        if o.status == VERIFIED and h.status == MISSING:
            cand = next((c for c in h.candidates if "likely rename" in c), "")
            if cand and h.kind == "call":
                newname = cand.split(" ", 1)[0]
                conf = _confidence(o.matched_to, newname, old_callees.get(f"{h.role}:{o.matched_to}", ()), ())
                items.append(_item("renamed", h, f"{o.matched_to} -> {newname}",
                                   f"{o.matched_to} is gone and {o.matched_from} now calls {newname}; the spec "
                                   "does not know the new name, so the hop is broken", _to_ev(o), None, conf,
                                   severity="broken"))
                continue
            items.append(_item("broken", h, f"{h.frm} -> {h.to}", h.note, _ev(o), None))
            continue
        if o.status != VERIFIED and h.status == VERIFIED:
            items.append(_item("newly-verified", h, f"{h.frm} -> {h.to}", h.note, None, _ev(h)))
            continue
        if o.status != VERIFIED or h.status != VERIFIED:
            continue
        if h.kind == "registration":
            rename(h, o.matched_to, h.matched_to, _to_ev(o), _to_ev(h))
            if o.api != h.api:
                items.append(_item("registration-api-changed", h, f"{h.matched_from}: {o.api} -> {h.api}",
                                   f"{h.matched_to} registered with {h.api} (was {o.api})", _ev(o), _ev(h)))
            continue
        if h.kind in ("call", "reach"):
            rename(h, o.matched_from, h.matched_from, _ev(o), _ev(h))
            rename(h, o.matched_to, h.matched_to, _to_ev(o), _to_ev(h))
            note_path(o, h)
            if o.signature and h.signature and _sig(o.signature) != _sig(h.signature):
                key = f"{o.matched_to}{o.signature}->{h.matched_to}{h.signature}"
                if key not in seen_sigs:
                    seen_sigs.add(key)
                    items.append(_item("signature-changed", h, f"{h.matched_to}{h.signature}",
                                       f"was {o.matched_to}{o.signature}", _to_ev(o), _to_ev(h)))
            old_chain = [renames.get(s.callee, s.callee) for s in o.steps]
            new_chain = [s.callee for s in h.steps]
            old_kinds = [s.kind for s in o.steps]
            new_kinds = [s.kind for s in h.steps]
            if old_chain != new_chain or old_kinds != new_kinds:
                before = " -> ".join([o.matched_from] + [f"{c} [{k}]" for c, k in zip(
                    [s.callee for s in o.steps], old_kinds)])
                after = " -> ".join([h.matched_from] + [f"{c} [{k}]" for c, k in zip(new_chain, new_kinds)])
                i = next((k for k, (a, b) in enumerate(zip(o.steps, h.steps))
                          if (renames.get(a.callee, a.callee), a.kind) != (b.callee, b.kind)),
                         min(len(o.steps), len(h.steps)) - 1)
                so, sn = o.steps[max(i, 0)], h.steps[max(i, 0)]
                items.append(_item("path-changed", h, f"{h.frm} -> {h.to}", f"was: {before}; now: {after}",
                                   step_evidence(h.role, so), step_evidence(h.role, sn)))
        elif h.kind == "flag":
            note_path(o, h)

    for (role, po, pn), fns in sorted(moved.items()):
        hop = next((h for h in new.hops if h.matched_from in fns or h.matched_to in fns),
                   next(h for h in new.hops if h.role == role or h.to_role == role))
        items.append(DriftItem(kind="moved", severity="changed", hop="", stage=hop.stage, role=role,
                               subject=f"{po} -> {pn}", detail="functions: " + ", ".join(sorted(fns)),
                               old=Evidence(role=role, path=po, line=0, what="file"),
                               new=Evidence(role=role, path=pn, line=0, what="file")))
    items.extend(_neighbourhood(old, new, renames))
    report.items = sorted(items, key=lambda i: (SEVERITIES.index(i.severity) * -1, i.stage, i.kind, i.subject))
    return report


def _neighbourhood(old: FlowResult, new: FlowResult, renames: dict[str, str]) -> list[DriftItem]:
    out: list[DriftItem] = []
    oc, nc = old.context.get("callees", {}), new.context.get("callees", {})
    back = {v: k for k, v in renames.items()}
    for key in sorted(nc):
        role, fn = key.split(":", 1)
        okey = f"{role}:{back.get(fn, fn)}"
        if okey not in oc:
            continue
        before = {renames.get(c, c) for c in oc[okey]}
        after = set(nc[key])
        added, removed = sorted(after - before), sorted(before - after)
        stage = next((h.stage for h in new.hops if h.role == role and
                      (fn in (h.matched_from, h.matched_to) or any(st.callee == fn for st in h.steps))), "")
        if added:
            out.append(DriftItem(kind="calls-added", severity="info", hop="", stage=stage, role=role,
                                 subject=fn, detail="now also calls " + ", ".join(added)))
        if removed:
            out.append(DriftItem(kind="calls-removed", severity="info", hop="", stage=stage, role=role,
                                 subject=fn, detail="no longer calls " + ", ".join(removed)))
    orr, nr = old.context.get("registrations", {}), new.context.get("registrations", {})
    api_changed = {h.matched_from for h in new.hops if h.kind == "registration"
                   for o in old.hops if o.id == h.id and o.api and h.api and o.api != h.api}
    for ci in sorted(set(orr) & set(nr) - api_changed):
        if orr[ci] != nr[ci]:
            gone = sorted(set(orr[ci]) - set(nr[ci]))
            came = sorted(set(nr[ci]) - set(orr[ci]))
            stage = next((h.stage for h in new.hops if h.matched_from == ci), "")
            out.append(DriftItem(kind="registration-changed", severity="changed", hop="", stage=stage,
                                 role="vmm", subject=ci,
                                 detail="; ".join(filter(None, ["removed: " + ", ".join(gone) if gone else "",
                                                                "added: " + ", ".join(came) if came else ""]))))
    return out


def diff_flows(old: FlowResult, new: FlowResult, old_graphs=None, new_graphs=None) -> DriftReport:
    """Graphs are accepted for symmetry; the neighbourhood already travels inside each result's context."""
    return diff_results(old, new)


def fails(report: DriftReport, fail_on: str) -> bool:
    if fail_on == "any":
        return bool(report.items)
    threshold = SEVERITIES.index("broken" if fail_on == "broken" else "changed")
    return any(SEVERITIES.index(i.severity) >= threshold for i in report.items)


def baseline_json(result: FlowResult) -> str:
    """Deterministic, reviewable JSON: what a user commits as the baseline."""
    return json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n"
