"""Two verified flows -> classified drift items (what changed on the path between two releases).

Line shifts alone are not drift. Renames are told apart from breakage by evidence: the same hop (same
caller position) now reaches a differently named function, how alike the names are, and how much the
old and new function's callees overlap; the confidence says how sure that is.
"""

from __future__ import annotations

import difflib
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
    items: list[DriftItem] = []

    def rename(h: HopResult, o: str, n: str, old_ev, new_ev):
        if not o or not n or o == n or (o, n) in seen_renames:
            return
        seen_renames.add((o, n))
        renames[o] = n
        conf = _confidence(o, n, old_callees.get(f"{h.role}:{o}", ()), new_callees.get(f"{h.role}:{n}", ()))
        items.append(_item("renamed", h, f"{o} -> {n}", f"the hop now reaches {n} where it reached {o}",
                           old_ev, new_ev, conf))

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
            _step_renames(h, o, rename)
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

    # the parent class_init behind a qom-parent call, renamed (cpu_class_init -> cpu_common_class_init)
    oo, no = old.context.get("owners", {}), new.context.get("owners", {})
    ofn, nfn = old.context.get("functions", {}), new.context.get("functions", {})
    for h in new.hops:
        a, b = oo.get(h.id, ""), no.get(h.id, "")
        if a and b and a != b and f"{h.role}:{a}" not in nfn and f"{h.role}:{b}" not in ofn:
            rename(h, a, b, _def_ev(h.role, a, ofn), _def_ev(h.role, b, nfn))
    fn_items, report.unchanged = _functions(old, new, renames)
    items.extend(fn_items)
    items.extend(_call_order(old, new, renames))
    items.extend(_neighbourhood(old, new, renames))
    report.items = sorted(items, key=lambda i: (SEVERITIES.index(i.severity) * -1, i.stage, i.kind, i.subject))
    return report


def _def_ev(role: str, name: str, fns: dict) -> Evidence | None:
    info = fns.get(f"{role}:{name}")
    if not info:
        return None
    return Evidence(role=role, path=info["path"], line=info["line"], function=name, what="definition",
                    signature=info["params"])


def _step_renames(h: HopResult, o: HopResult, rename) -> None:
    """A reach whose path has the same shape: an intermediate step that now has another, similar name
    (same position, same kind of call) is a rename of that step."""
    if h.kind != "reach" or len(o.steps) != len(h.steps):
        return
    for a, b in zip(o.steps[:-1], h.steps[:-1]):
        if a.callee != b.callee and a.kind == b.kind and \
                difflib.SequenceMatcher(None, a.callee, b.callee).ratio() >= 0.5:
            rename(h, a.callee, b.callee, step_evidence(h.role, a), step_evidence(h.role, b))


def _types(params: str) -> list[str]:
    inner = _sig(params)[1:-1]
    return [t.strip() for t in inner.split(",")] if inner.strip() else []


def _delta(o: dict, n: dict) -> tuple:
    """What a signature change is, by parameter types (names do not matter): the same delta in many
    functions is one mechanical change."""
    a, b = _types(o.get("params", "")), _types(n.get("params", ""))
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b).get_opcodes():
        if op != "equal":
            out.append((", ".join(a[i1:i2]), ", ".join(b[j1:j2])))
    ro, rn = _WS.sub(" ", o.get("return_type", "")).strip(), _WS.sub(" ", n.get("return_type", "")).strip()
    if ro != rn:
        out.append((f"returns {ro or '?'}", f"returns {rn or '?'}"))
    return tuple(out)


def _delta_text(delta: tuple) -> str:
    return "; ".join(f"{a} -> {b}" if a and b else f"+ {b}" if b else f"- {a}" for a, b in delta)


def _decl(name: str, info: dict, delta: tuple) -> str:
    """`name(params)`, with the return type in front when the return type is what changed."""
    ret = f"{info.get('return_type', '')} " if any(a.startswith("returns ") for a, _ in delta) else ""
    return f"{ret}{_shown(name)}{info.get('params', '')}"


def _shown(name: str) -> str:
    return "typedef " + name[8:] if name.startswith("typedef:") else name


def _stage_of(new: FlowResult, role: str, name: str) -> str:
    for h in new.hops:
        if (h.role == role or h.to_role == role) and (
                name in (h.matched_from, h.matched_to) or any(name in (st.caller, st.callee) for st in h.steps)
                or any(e.function == name for e in h.evidence)):
            return h.stage
    return next((h.stage for h in new.hops if h.role == role), "")


def _functions(old: FlowResult, new: FlowResult, renames: dict[str, str]) -> tuple[list[DriftItem], list[str]]:
    """Every function on both verified paths (hop ends, intermediate steps, class_inits, callback
    typedefs): a file change is `moved`, a parameter/return type change `signature-changed` (the same
    change in several functions is one item listing them). Functions whose text is identical are the
    `unchanged` list: a line shift alone is never drift."""
    of, nf = old.context.get("functions", {}), new.context.get("functions", {})
    back = {v: k for k, v in renames.items()}
    moved: dict[tuple[str, str, str], list[str]] = {}
    sigs: dict[tuple[str, tuple], list[tuple[str, str, dict, dict]]] = {}
    unchanged: list[str] = []
    for key, n in nf.items():
        role, name = key.split(":", 1)
        oname = back.get(name, name)
        o = of.get(f"{role}:{oname}")
        if not o:
            continue
        if o["path"] != n["path"] and not name.startswith("typedef:"):
            moved.setdefault((role, o["path"], n["path"]), []).append(name)
        delta = _delta(o, n)
        if delta:
            sigs.setdefault((role, delta), []).append((oname, name, o, n))
        elif oname == name and o["path"] == n["path"] and (o.get("digest") == n.get("digest")):
            unchanged.append(key)
    items: list[DriftItem] = []
    for (role, po, pn), fns in sorted(moved.items()):
        items.append(DriftItem(kind="moved", severity="changed", hop="", stage=_stage_of(new, role, fns[0]),
                               role=role, subject=f"{po} -> {pn}", detail="functions: " + ", ".join(sorted(fns)),
                               old=Evidence(role=role, path=po, line=0, what="file"),
                               new=Evidence(role=role, path=pn, line=0, what="file")))
    for (role, delta), fns in sorted(sigs.items(), key=lambda kv: (kv[0][0], sorted(f[1] for f in kv[1]))):
        fns.sort(key=lambda f: f[1])
        oname, name, o, n = fns[0]
        old_ev = Evidence(role=role, path=o["path"], line=o["line"], function=_shown(oname), what="definition",
                          signature=o["params"])
        new_ev = Evidence(role=role, path=n["path"], line=n["line"], function=_shown(name), what="definition",
                          signature=n["params"])
        if len(fns) == 1:
            items.append(DriftItem(kind="signature-changed", severity="changed", hop="",
                                   stage=_stage_of(new, role, name), role=role,
                                   subject=_decl(name, n, delta), detail=f"was {_decl(oname, o, delta)}",
                                   old=old_ev, new=new_ev))
            continue
        items.append(DriftItem(
            kind="signature-changed", severity="changed", hop="", stage=_stage_of(new, role, name), role=role,
            subject=f"{len(fns)} functions: {_delta_text(delta)}",
            detail="one change in every one of them (" + "; ".join(
                f"{_shown(f[1])} {f[3]['path']}:{f[3]['line']}" for f in fns) + f"); e.g. was {_decl(oname, o, delta)}, "
                f"now {_decl(name, n, delta)}",
            old=old_ev, new=new_ev))
    return items, sorted(unchanged)


def _path_calls(result: FlowResult, renames: dict[str, str] | None = None) -> dict[tuple[str, str], dict]:
    """(role, caller) -> {callee: first step on the verified path}, names mapped through `renames`."""
    ren = renames or {}
    out: dict[tuple[str, str], dict] = {}
    for h in result.hops:
        if h.status != "verified":
            continue
        for st in h.steps:
            calls = out.setdefault((h.role, ren.get(st.caller, st.caller)), {})
            callee = ren.get(st.callee, st.callee)
            if callee not in calls or st.line < calls[callee].line:
                calls[callee] = st
    return out


def _conds(st) -> tuple:
    return (tuple(_WS.sub(" ", c) for c in st.cases), tuple(_WS.sub(" ", c) for c in st.ifs),
            tuple(_WS.sub(" ", c) for c in st.conditions))


def _conds_text(st) -> str:
    parts = [f"#if {c}" for c in st.conditions] + [f"case {c}" for c in st.cases] + [f"if ({c})" for c in st.ifs]
    return ", ".join(parts) or "unconditional"


def _call_order(old: FlowResult, new: FlowResult, renames: dict[str, str]) -> list[DriftItem]:
    """A call on the path that moved within its caller: now before/after another call on the path, or
    under other conditions (`case`, `if`, `#if`). Both call sites are given."""
    oc, nc = _path_calls(old, renames), _path_calls(new)
    items: list[DriftItem] = []
    for (role, caller), calls in sorted(nc.items()):
        before = oc.get((role, caller))
        if not before:
            continue
        common = [c for c in calls if c in before]
        order = sorted(common, key=lambda c: (before[c].line, c))
        stage = _stage_of(new, role, caller)
        for i, a in enumerate(order):
            for b in order[i + 1:]:
                if calls[b].line < calls[a].line and before[a].path == before[b].path:
                    items.append(DriftItem(
                        kind="path-changed", severity="changed", hop="", stage=stage, role=role,
                        subject=f"{caller}: {b} now before {a}",
                        detail=f"was: {a} at line {before[a].line}, then {before[b].callee} at line {before[b].line}; "
                               f"now: {b} at line {calls[b].line}, then {a} at line {calls[a].line}",
                        old=step_evidence(role, before[b]), new=step_evidence(role, calls[b])))
        for c in sorted(common):
            if _conds(before[c]) != _conds(calls[c]):
                items.append(DriftItem(
                    kind="path-changed", severity="changed", hop="", stage=stage, role=role,
                    subject=f"{caller} -> {c}: under other conditions",
                    detail=f"was: {_conds_text(before[c])}; now: {_conds_text(calls[c])}",
                    old=step_evidence(role, before[c]), new=step_evidence(role, calls[c])))
    return items


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
    for ci in sorted(set(nr) - api_changed):
        oci = back.get(ci, ci)  # a renamed class_init is compared with its old self
        if oci in orr and orr[oci] != nr[ci]:
            gone = sorted(set(orr[oci]) - set(nr[ci]))
            came = sorted(set(nr[ci]) - set(orr[oci]))
            stage = next((h.stage for h in new.hops if h.matched_from == ci), "")
            out.append(DriftItem(kind="registration-changed", severity="changed", hop="", stage=stage,
                                 role="vmm", subject=ci,
                                 detail="; ".join(filter(None, ["removed: " + ", ".join(gone) if gone else "",
                                                                "added: " + ", ".join(came) if came else ""]))))
    return out


def fails(report: DriftReport, fail_on: str) -> bool:
    if fail_on == "any":
        return bool(report.items)
    threshold = SEVERITIES.index("broken" if fail_on == "broken" else "changed")
    return any(SEVERITIES.index(i.severity) >= threshold for i in report.items)
