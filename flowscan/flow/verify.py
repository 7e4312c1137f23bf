"""Flow spec + one call graph per role -> FlowResult, hop by hop, with file:line evidence."""

from __future__ import annotations

import difflib
import re
from dataclasses import replace
from typing import Iterable

from flowscan.extract.facts import ConstantUse
from flowscan.graph.callgraph import COMPILED, Edge, Graph, address_key, narrowing_note, route_width
from flowscan.flow.conditions import Decision, combine, decide_case, decide_if
from flowscan.flow.results import (CONSUMER, MISSING, PRODUCER, SKIPPED, UNVERIFIABLE, VERIFIED, Condition, Evidence,
                                   FlowResult, HopResult, Site, SourceInfo, StageInfo, Step)
from flowscan.flow.spec import FlowSpec, Hop


def verify(spec: FlowSpec, graphs: dict[str, Graph], sources: Iterable[SourceInfo] = ()) -> FlowResult:
    result = FlowResult(flow=spec.name, title=spec.title, sources=list(sources),
                        stages=[StageInfo(s.id, s.title, s.role) for s in spec.stages])
    for hop in spec.hops:
        res = _verify_hop(hop, graphs)
        if res.status == MISSING and hop.optional:
            res.status = SKIPPED
        result.hops.append(res)
    result.context = neighbourhood(result, graphs)
    return result


# casts and helpers like OBJECT(), ARM_CPU(), and tracepoints: not what a reviewer of a path wants to see
_MACRO = re.compile(r"[A-Z_][A-Z0-9_]*$|trace_")


def _reset_field(field: str) -> bool:
    return field.startswith("phases.") or "reset" in field


def neighbourhood(result: FlowResult, graphs: dict[str, Graph]) -> dict[str, dict]:
    """What drift needs to know of the path beyond the hops' ends: what each function on it calls, what
    its class_inits register, and every function (and callback typedef) on a verified path with its
    file, line, parameters and text digest."""
    callees: dict[str, list[str]] = {}
    regs: dict[str, list[str]] = {}
    owners: dict[str, str] = {}  # hop id -> the parent class_init whose stored reset its qom-parent call runs
    functions: dict[str, dict] = {}
    for h in result.hops:
        if h.status != VERIFIED:
            continue
        for role, name, path in path_functions(h, graphs):
            g = graphs.get(role)
            key = f"{role}:{name}"
            if g is not None and name and key not in functions:
                info = function_info(g, name, path)
                if info:
                    functions[key] = info
        g = graphs.get(h.role)
        if g is None:
            continue
        if h.kind == "registration":
            regs[h.matched_from] = _reset_stores(g, h.matched_from)
            continue
        if h.kind not in ("call", "reach"):
            continue
        for st in h.steps:  # the parent class whose reset a qom-parent call runs: how it stores it
            if st.kind == "qom-parent" and st.store_path:
                owner = _store_owner(g, st)
                if owner:
                    owners[h.id] = owner
                if owner and owner not in regs:
                    regs[owner] = _reset_stores(g, owner)
        names = [h.matched_from, h.matched_to] + [s.callee for s in h.steps]
        for name in names:
            key = f"{h.role}:{name}"
            if not name or key in callees:
                continue
            defs = g.preferred(g.built(g.definitions(name)))
            callees[key] = sorted({e.callee for d in defs for e in g.callees(d, direct_only=True)
                                   if not _MACRO.match(e.callee)})
    return {"callees": callees, "registrations": regs, "functions": dict(sorted(functions.items())),
            "owners": dict(sorted(owners.items()))}


def _reset_stores(g: Graph, class_init: str) -> list[str]:
    """`api field=function` of the reset callbacks a class_init stores (`assignment phases.hold=f`)."""
    return sorted({f"{s.variable if s.kind == 'registration' else 'assignment'} {s.field}={s.function}"
                   for s in g.ix.stores_where("in_function", class_init)
                   if s.kind in ("registration", "assignment") and _reset_field(s.field)})


def _store_owner(g: Graph, st) -> str:
    """The function holding the store that justifies an indirect step (a class_init)."""
    return next((s.in_function for s in g.ix.stores_where("function", st.callee)
                 if s.path == st.store_path and s.line == st.store_line and s.in_function), "")


def path_functions(h: HopResult, graphs: dict[str, Graph]) -> list[tuple[str, str, str]]:
    """(role, name, file or '') of every function a verified hop stands on: its ends, each step's caller
    and callee, the class_init that stored an indirect target, the handoff's producers and consumers,
    and the function-pointer typedef of a field a callback was stored in (`typedef:ResettableHoldPhase`)."""
    out: list[tuple[str, str, str]] = []
    g = graphs.get(h.role)
    if h.kind in ("call", "reach", "flag"):
        if h.kind == "flag":
            out += [(h.role, e.function, e.path) for e in h.evidence if e.function]
        else:
            out.append((h.role, h.matched_from, h.steps[0].path if h.steps else ""))
        for st in h.steps:
            out.append((h.role, st.caller, st.path))
            out.append((h.role, st.callee, st.callee_path))
            if st.kind in ("field", "registration", "qom-parent") and g is not None:
                if st.store_path:
                    owner = _store_owner(g, st)
                    if owner:
                        out.append((h.role, owner, st.store_path))
                out += [(h.role, f"typedef:{t}", "") for t in callback_types(g, st.via)]
    elif h.kind == "registration" and g is not None:
        out.append((h.role, h.matched_from, ""))
        out.append((h.role, h.matched_to, h.to_path))
        for s in g.ix.stores_where("in_function", h.matched_from):
            if s.function == h.matched_to and s.field:
                out += [(h.role, f"typedef:{t}", "") for t in callback_types(g, s.field)]
    elif h.kind == "handoff":
        out += [(e.role, e.function, e.path) for e in h.evidence if e.function]
    return [(r, n, p) for r, n, p in out if n]


def callback_types(g: Graph, via: str) -> list[str]:
    """Function-pointer typedefs of the struct members a field path ends in (`phases.hold` ->
    ResettableHoldPhase)."""
    last = via.rsplit(".", 1)[-1] if via else ""
    if not last.isidentifier():
        return []
    return [t for t in g.ix.member_types(last) if g.ix.typedefs(t)]


def function_info(g: Graph, name: str, path: str = "") -> dict:
    """Where a function (or `typedef:NAME`) is defined, its parameters and text digest; {} if unknown."""
    if name.startswith("typedef:"):
        tds = sorted(g.ix.typedefs(name[8:]), key=lambda t: (t.path, t.line))
        if not tds:
            return {}
        t = tds[0]
        return {"path": t.path, "line": t.line, "params": t.params, "return_type": t.return_type, "digest": ""}
    d = g.def_at(name, path) if path else None
    if d is None:
        defs = g.preferred(g.definitions(name))
        d = defs[0] if defs else None
    if d is None:
        return {}
    return {"path": d.path, "line": d.line, "params": d.params, "return_type": d.return_type,
            "digest": d.digest}


def _base(hop: Hop, status: str, **kw) -> HopResult:
    kw.setdefault("note", hop.note)
    return HopResult(id=hop.id, stage=hop.stage, kind=hop.kind, role=hop.role,
                     frm="|".join(hop.frm or hop.class_init), to="|".join(hop.to or hop.callback),
                     status=status, optional=hop.optional, to_role=hop.to_role, **kw)


def _verify_hop(hop: Hop, graphs: dict[str, Graph]) -> HopResult:
    role = hop.to_role if hop.kind == "handoff" else hop.role
    for r in {hop.role, role}:
        if r not in graphs:
            return _base(hop, UNVERIFIABLE, note=f"no source configured for role '{r}'")
    g = graphs[hop.role]
    if hop.kind in ("call", "reach"):
        return _verify_call(hop, g)
    if hop.kind == "handoff":
        return _verify_handoff(hop, g, graphs[hop.to_role])
    if hop.kind == "flag":
        return _verify_flag(hop, g)
    if hop.kind == "registration":
        return _verify_registration(hop, g)
    return _verify_unverifiable(hop, g)


# -- evidence helpers ------------------------------------------------------------------------------
def step_of(e: Edge) -> Step:
    return Step(caller=e.caller, callee=e.callee, kind=e.kind, path=e.path, line=e.line, via=e.via,
                store_path=e.store_path, store_line=e.store_line, fanout=e.fanout, callee_path=e.callee_path,
                cases=list(e.cases), ifs=list(e.ifs), conditions=list(e.conditions), reason=e.reason,
                obj_type=e.obj_type, condition_values=list(e.condition_values))


def edge_conditions(e: Edge) -> list[str]:
    out = [f"#if {c}" for c in e.conditions]
    out += [f"case {c}" for c in e.cases]
    out += [f"if ({c})" for c in e.ifs]
    return out


def edge_evidence(role: str, e: Edge) -> list[Evidence]:
    out = [call_evidence(role, e)]
    if e.store_path and e.kind == "macro":  # the #define the call went through
        out.append(Evidence(role=role, path=e.store_path, line=e.store_line, what="macro", callee=e.callee,
                            macro=e.via.split(">", 1)[0], via=e.via))
    elif e.store_path and e.kind == "inline":  # the call in the body of an __always_inline function
        out.append(Evidence(role=role, path=e.store_path, line=e.store_line, what="call",
                            function=e.via.rsplit(">", 1)[-1], callee=e.callee, how="direct"))
    elif e.store_path:
        what = {"argument": "argument", "notifier": "registration", "registration": "registration"}.get(
            e.kind, "store")
        out.append(Evidence(role=role, path=e.store_path, line=e.store_line, what=what, callee=e.callee,
                            via=e.via))
    return out


def call_evidence(role: str, e: Edge) -> Evidence:
    return Evidence(role=role, path=e.path, line=e.line, function=e.caller, what="call", callee=e.callee,
                    how=e.kind, via=e.via, fanout=e.fanout,
                    macro=e.via.split(">", 1)[0] if e.kind == "macro" else "")


# -- call sites and the flow's defaults --------------------------------------------------------------
def site_conditions(g: Graph, e: Edge, defaults: dict[str, str]) -> list[Condition]:
    """The edge's conditions, each decided under the defaults (case labels by their switch's expression)."""
    values = e.condition_values or ("",) * len(e.conditions)
    build = g.build.title if g.build is not None else ""
    out = [Condition(f"#if {c}", {"true": True, "false": False}.get(v),
                     f"build configuration: {build}" if build else "no build configuration")
           for c, v in zip(e.conditions, values)]
    for label in e.cases:
        subject, labels = _switch_of(g, e.caller, label)
        d = decide_case(label, subject, labels, defaults)
        out.append(Condition(f"case {label}", d.value, d.why))
    for c in e.ifs:
        d: Decision = decide_if(c, defaults)
        out.append(Condition(f"if ({c})", d.value, d.why))
    return out


def _switch_of(g: Graph, function: str, label: str) -> tuple[str, list[str]]:
    """The expression a `case` label is tested against, and all labels of that switch."""
    first = label.split("|")[0].strip()
    uses = [u for u in g.constants_in(function) if u.kind == "case"]
    subject = next((u.target for u in uses if u.name == first), "")
    return subject, sorted({u.name for u in uses if u.target == subject})


def call_sites(g: Graph, edges: list[Edge], defaults: dict[str, str], chosen: Edge | None) -> list[Site]:
    """One Site per call site (path:line) among `edges`, targets joined, in line order."""
    by_site: dict[tuple[str, int], list[Edge]] = {}
    for e in sorted(edges, key=lambda e: (e.path, e.line, e.callee)):
        by_site.setdefault((e.path, e.line), []).append(e)
    out = []
    for (path, line), es in by_site.items():
        e = es[0]
        conds = site_conditions(g, e, defaults)
        # (an #if the build configuration decides counts; one it cannot decide does not make the site unknown)
        decided = [c.value for c in conds if not c.text.startswith("#if ") or c.value is not None]
        out.append(Site(path=path, line=line, caller=e.caller, callee="|".join(dict.fromkeys(x.callee for x in es)),
                        kind=e.kind, via=e.via, conditions=conds, default_taken=combine(decided),
                        chosen=chosen is not None and (chosen.path, chosen.line) == (path, line)))
    return out


def _taken_rank(site: Site) -> int:
    """A site the defaults decide to take first, a site they rule out last; the rest keep line order (a
    site without conditions may still sit after an early return, so it does not beat an undecided one)."""
    if site.default_taken is False:
        return 2
    decided = any(c.value is True for c in site.conditions if not c.text.startswith("#if "))
    return 0 if site.default_taken is True and decided else 1


def _matches_when(e: Edge, when: tuple[str, ...]) -> bool:
    labels = {part.strip() for c in e.cases for part in c.split("|")}
    for token in when:
        if token in labels or token in e.conditions or any(token in i for i in e.ifs):
            continue
        return False
    return True


def _in_slot(e: Edge, slots: tuple[str, ...]) -> bool:
    """A table target stored at one of the slots the hop selects (any target when it selects none)."""
    return not slots or e.kind != "table" or any(at in slots for at, _p, _l in e.slots)


def _narrowed(g: Graph, e: Edge, slots: tuple[str, ...]) -> Edge:
    """A table dispatch whose slot the flow names (`arm_exit_handlers[ESR_ELx_EC_HVC64]`: the exception
    class the guest's instruction raises) fans out only to what is stored at that slot; the store of
    that slot is the evidence."""
    if not slots or e.kind != "table" or not _in_slot(e, slots):
        return e
    fn = g.def_at(e.caller, e.caller_path)
    same = [o for o in (g.callees(fn) if fn is not None else ()) if (o.path, o.line) == (e.path, e.line)
            and o.kind == "table" and _in_slot(o, slots)]
    fanout = len({(o.callee, o.callee_path) for o in same}) or 1
    at, path, line = next(s for s in e.slots if s[0] in slots)
    table = re.match(r"slot \[[^]]*\] of (\S+)", e.reason)
    return replace(e, fanout=fanout, store_path=path, store_line=line,
                   reason=f"slot [{at}] of {table.group(1) if table else e.via} ({path}:{line}), the slot the "
                          f"flow selects (the table holds {e.fanout} targets)")


def _similar(name: str, pool: Iterable[str], n: int = 5) -> list[str]:
    return difflib.get_close_matches(name, sorted(set(pool)), n=n, cutoff=0.6)


def _candidates(g: Graph, hop: Hop, callees: list[str]) -> list[str]:
    out: list[str] = []
    for to in hop.to:
        for c in _similar(to, callees, 3):
            out.append(f"{c} (called by {'|'.join(hop.frm)} now: likely rename)")
    for to in hop.to:
        for c in _similar(to, g.def_names(), 4):
            if not any(o.startswith(c + " ") for o in out) and c not in hop.to:
                out.append(f"{c} (similar name)")
    return out[:6]


def _finish_call(hop: Hop, g: Graph, edges: list[Edge], from_name: str, sites: list[Site] | None = None) -> HopResult:
    edges = [_narrowed(g, e, hop.slot) for e in edges]
    last = edges[-1]
    to_def = g.def_at(last.callee, last.callee_path) if last.callee_path else None
    evidence = [ev for e in edges for ev in edge_evidence(hop.role, e)]
    conditions: list[str] = []
    for e in edges:
        for c in edge_conditions(e):
            if c not in conditions:
                conditions.append(c)
    defaults = dict(hop.defaults)
    if sites is None:
        sites = call_sites(g, _same_call(g, last), defaults, last)
    chosen = next((st for st in sites if st.chosen), None)
    indirect = [e for e in edges if e.kind not in COMPILED]
    width = route_width(edges) if indirect else 0
    wide = width > hop.wide_fanout
    res = _base(hop, VERIFIED, matched_from=from_name, matched_to=last.callee, resolution=last.kind,
                steps=[step_of(e) for e in edges], evidence=evidence, conditions=conditions,
                signature=to_def.params if to_def else "", to_path=to_def.path if to_def else "",
                to_line=to_def.line if to_def else 0, sites=sites,
                default_taken=chosen.default_taken if chosen else None, width=width, wide=wide)
    if wide:
        depth = (hop.within or 1) + 3
        for to in hop.to:
            alt = g.path(from_name, to, max_depth=depth, max_fanout=hop.wide_fanout)
            if alt:
                res.narrower = [step_of(e) for e in alt]
                break
    return res


def _same_call(g: Graph, last: Edge) -> list[Edge]:
    """Every call from the last step's caller into its callee (a hop lists all its call sites)."""
    fn = g.def_at(last.caller, last.caller_path)
    if fn is None:
        return [last]
    return [e for e in g.callees(fn) if e.callee == last.callee] or [last]


# -- hop kinds -------------------------------------------------------------------------------------
def _verify_call(hop: Hop, g: Graph) -> HopResult:
    from_defs = [(f, d) for f in hop.frm for d in g.preferred(g.built(g.definitions(f)))]
    if not from_defs:
        cands = [f"{c} (similar name)" for f in hop.frm for c in _similar(f, g.def_names(), 4)]
        return _base(hop, MISSING, candidates=cands[:6],
                     note=f"{'|'.join(hop.frm)} is not defined in the scanned scope")
    callees: list[str] = []
    defaults = dict(hop.defaults)
    if hop.kind == "reach":
        for f, _d in from_defs:
            for to in hop.to:
                path = g.route(f, to, max_depth=hop.within)
                if path is not None and (not hop.when or _matches_when(path[-1], hop.when)) and \
                        all(_in_slot(e, hop.slot) for e in path):
                    result = _finish_call(hop, g, path, f)
                    if g.route_cut:
                        result.note = "; ".join(filter(None, (result.note, narrowing_note(g.route_cut))))
                    return result
    else:
        for f, d in from_defs:
            edges = sorted(g.callees(d), key=lambda e: (e.line, e.callee, e.callee_path))
            callees.extend(e.callee for e in edges)
            into = [e for e in edges if e.callee in hop.to]
            hits = [e for e in into if _matches_when(e, hop.when) and _in_slot(e, hop.slot)]
            if hits and hop.address:
                return _verify_address(hop, g, hits, f)
            if hits:
                # the call the default configuration takes, then a defined target, then the first by line
                sites = call_sites(g, into, defaults, None)
                taken = {(st.path, st.line): st for st in sites}
                hits.sort(key=lambda e: (_taken_rank(taken[(e.path, e.line)]), e.line,
                                         0 if e.callee_path else 1))
                for st in sites:
                    st.chosen = (st.path, st.line) == (hits[0].path, hits[0].line)
                return _finish_call(hop, g, [hits[0]], f, sites)
            near = into
            if near and hop.slot and not any(_in_slot(e, hop.slot) for e in near):
                e = near[0]
                return _base(hop, MISSING, matched_from=f, evidence=edge_evidence(hop.role, e),
                             note=f"{e.callee} is stored at [{'|'.join(at for at, _p, _l in e.slots)}] of {e.via}, "
                                  f"not at [{'|'.join(hop.slot)}]")
            if near and hop.when:
                e = near[0]
                return _base(hop, MISSING, matched_from=f, evidence=edge_evidence(hop.role, e),
                             note=f"{e.callee} is called at {e.path}:{e.line} but not under "
                                  f"{', '.join(hop.when)} (cases: {', '.join(e.cases) or 'none'})")
    note = ""
    for f, _d in from_defs:
        for to in hop.to:
            path = g.path(f, to, max_depth=4)
            if path:
                note = "reachable through " + " -> ".join([path[0].caller] + [e.callee for e in path])
                break
        if note:
            break
    if not note:
        note = f"{'|'.join(hop.to)} not called from {'|'.join(hop.frm)}"
    return _base(hop, MISSING, matched_from=from_defs[0][0], candidates=_candidates(g, hop, callees),
                 note=note)


def _verify_address(hop: Hop, g: Graph, hits: list[Edge], from_name: str) -> HopResult:
    """A call through an ops table's member (`mr->ops->write`) that reaches `to` only if `to`'s table is
    the one mapped at the hop's address: the call site's fan-out narrowed by where regions are mapped."""
    member = hits[0].via.rsplit(".", 1)[-1] if hits[0].via else hits[0].callee
    handlers = g.region_handlers(member, hop.address)
    served = {(h.function, h.function_path): h for h in handlers}
    kept = [e for e in hits if (e.callee, e.callee_path) in served]
    if not kept:
        held = ", ".join(f"{h.function} ({h.ops})" for h in handlers) or "no ops table"
        return _base(hop, MISSING, matched_from=from_name, evidence=edge_evidence(hop.role, hits[0]),
                     note=f"{'|'.join(hop.address)}: mapped to {held}, not {'|'.join(hop.to)}",
                     candidates=[f"{h.function} (mapped at {h.address})" for h in handlers][:6])
    res = _finish_call(hop, g, [kept[0]], from_name)
    h = served[(kept[0].callee, kept[0].callee_path)]
    res.evidence.extend([
        Evidence(role=hop.role, path=h.map_path, line=h.map_line, function=h.map_function, what="region-map",
                 api=h.map_api, constant=h.address, target=h.ops),
        Evidence(role=hop.role, path=h.ops_path, line=h.ops_line, what="region-ops", api=h.ops_api,
                 target=h.ops),
    ])
    res.conditions.append(f"address {h.address}: {len(handlers)} of {kept[0].fanout} targets "
                          f"({', '.join(x.function for x in handlers)})")
    return res


def _literal_uses(g: Graph, names: tuple[str, ...], functions: set[str]) -> list[ConstantUse]:
    """Numbers passed to calls (`outb(0xfe, 0x64)`): the index keeps named constants only, so a literal
    handoff constant (an I/O port) is looked up among the arguments of the functions' call sites."""
    wanted = {address_key(n) for n in names if n[:1].isdigit()}
    out: list[ConstantUse] = []
    if not wanted:
        return out
    for f in sorted(functions):
        for d in g.preferred(g.built(g.definitions(f))):
            for c in g.calls_of(d):
                out.extend(ConstantUse(name=a, kind="call-arg", target=c.callee, function=f, path=c.path,
                                       line=c.line) for a in c.args if address_key(a) in wanted)
    return out


def _verify_handoff(hop: Hop, gp: Graph, gc: Graph) -> HopResult:
    evidence: list[Evidence] = []
    conditions: list[str] = []
    missing: list[str] = []
    for c in hop.constants:
        producers = set(c.produced_by or hop.frm)
        consumers = set(c.consumed_by or hop.to)
        prod = [u for n in c.names for u in gp.constant_uses(n)
                if u.function in producers and u.kind in ("assign", "call-arg")]
        prod += _literal_uses(gp, c.names, producers)
        cons = [u for n in c.names for u in gc.constant_uses(n)
                if u.function in consumers and u.kind in ("case", "call-arg", "assign")]
        cons += _literal_uses(gc, c.names, consumers)
        # Written through a macro (`PSCI_FN_NATIVE(0_2, CPU_ON)` -> PSCI_0_2_FN64_CPU_ON): the #define
        # is evidence, and the #if branch that defines it a condition.
        via_macro = [(prod, hop.role, x) for f in sorted(producers) for x in gp.expanded_constants(f)
                     if x[1] in c.names and x[0].kind in ("assign", "call-arg")]
        via_macro += [(cons, hop.to_role, x) for f in sorted(consumers) for x in gc.expanded_constants(f)
                      if x[1] in c.names and x[0].kind in ("case", "call-arg", "assign")]
        macro_evidence = []
        through: dict[int, str] = {}  # id of a use written through a macro -> the macro
        for side, role, (u, name, macro, conds) in via_macro:
            side.append(u)
            through[id(u)] = macro.name
            macro_evidence.append(Evidence(role=role, path=macro.path, line=macro.line, function=u.function,
                                           what="macro", constant=name, target=u.name, macro=macro.name))
            conditions.extend(f"#if {x}" for x in conds if f"#if {x}" not in conditions)
        if not prod:
            missing.append(f"{'|'.join(c.names)} not produced by {'|'.join(sorted(producers))}")
        if not cons:
            missing.append(f"{'|'.join(c.names)} not consumed by {'|'.join(sorted(consumers))}")
        for u in sorted(prod, key=lambda u: (u.path, u.line))[:2]:
            evidence.append(Evidence(role=hop.role, path=u.path, line=u.line, function=u.function,
                                     what=u.kind, constant=u.name, target=u.target, side=PRODUCER,
                                     macro=through.get(id(u), "")))
        for u in sorted(cons, key=lambda u: (u.path, u.line))[:2]:
            evidence.append(Evidence(role=hop.to_role, path=u.path, line=u.line, function=u.function,
                                     what=u.kind, constant=u.name, target=u.target, side=CONSUMER,
                                     macro=through.get(id(u), "")))
            if u.kind == "case":
                conditions.append(f"case {u.name}")
        evidence.extend(macro_evidence)
    for ins in hop.instructions:
        evidence += _instruction_evidence(hop, ins, gp, gc, missing)
    # the constants as the consumer spells them (the producer's spelling when nothing consumes them)
    consumed = [e.constant for e in evidence if e.side == CONSUMER]
    constants = list(dict.fromkeys(consumed or [e.constant for e in evidence if e.side == PRODUCER]))
    if missing:
        return _base(hop, MISSING, evidence=evidence, note="; ".join(missing), constants=constants,
                     candidates=_constant_candidates(hop, gp, gc))
    return _base(hop, VERIFIED, evidence=evidence, conditions=conditions, resolution="constant",
                 matched_from="|".join(hop.frm), matched_to="|".join(hop.to), constants=constants)


def _instruction_evidence(hop: Hop, ins, gp: Graph, gc: Graph, missing: list[str]) -> list[Evidence]:
    """A trapping instruction in the producer (assembly facts) and the consumer in the dispatch-table
    slot the trap selects (`arm_exit_handlers[ESR_ELx_EC_HVC64] = handle_hvc`)."""
    producers = set(ins.produced_by or hop.frm)
    consumers = ins.consumed_by or hop.to
    prod = sorted((u for n in ins.names for u in gp.constant_uses(n)
                   if u.kind == "insn" and u.function in producers), key=lambda u: (u.path, u.line))
    cons = sorted((s for f in consumers for s in gc.ix.stores_where("function", f)
                   if s.index in ins.slots), key=lambda s: (s.path, s.line))
    if not prod:
        missing.append(f"no {'|'.join(ins.names)} instruction in {'|'.join(sorted(producers))}")
    if not cons:
        missing.append(f"{'|'.join(consumers)} is not stored at [{'|'.join(ins.slots)}]")
    out = [Evidence(role=hop.role, path=u.path, line=u.line, function=u.function, what="insn", constant=u.name,
                    target=u.target, side=PRODUCER) for u in prod[:2]]
    out += [Evidence(role=hop.to_role, path=s.path, line=s.line, function=s.function, what="slot", callee=s.function,
                     via=s.variable, constant=s.index, side=CONSUMER) for s in cons[:2]]
    return out


def _constant_candidates(hop: Hop, gp: Graph, gc: Graph) -> list[str]:
    out = []
    for c in hop.constants:
        for f in c.consumed_by or hop.to:
            labels = sorted({u.name for u in gc.constants_in(f) if u.kind == "case"})
            if labels:
                out.append(f"{f} tests: {', '.join(labels[:8])}")
    return out[:4]


def _verify_flag(hop: Hop, g: Graph) -> HopResult:
    writes = [r for r in g.global_refs(hop.flag) if r.write and r.function in hop.frm]
    if not writes:
        cands = sorted({r.name for f in hop.frm for r in g.globals_in(f) if r.write})
        return _base(hop, MISSING, note=f"{'|'.join(hop.frm)} does not write '{hop.flag}'", flag=hop.flag,
                     candidates=[f"{c} (written there)" for c in cands][:6])
    reads = {r.function: r for r in g.global_refs(hop.flag) if not r.write}
    w = sorted(writes, key=lambda r: (r.path, r.line))[0]
    evidence = [Evidence(role=hop.role, path=w.path, line=w.line, function=w.function, what="write",
                         flag=hop.flag)]
    for to in hop.to:
        if to in reads:
            r = reads[to]
            evidence.append(Evidence(role=hop.role, path=r.path, line=r.line, function=to, what="read",
                                     flag=hop.flag))
            return _base(hop, VERIFIED, evidence=evidence, resolution="flag", matched_from=w.function,
                         matched_to=to, flag=hop.flag)
        for reader, r in sorted(reads.items()):
            path = g.path(to, reader, max_depth=hop.within or 2)
            if path:
                evidence.extend(ev for e in path for ev in edge_evidence(hop.role, e))
                evidence.append(Evidence(role=hop.role, path=r.path, line=r.line, function=reader,
                                         what="read", flag=hop.flag))
                return _base(hop, VERIFIED, evidence=evidence, resolution="flag", matched_from=w.function,
                             matched_to=to, steps=[step_of(e) for e in path], flag=hop.flag)
    return _base(hop, MISSING, evidence=evidence, flag=hop.flag,
                 note=f"'{hop.flag}' is not read by {'|'.join(hop.to)} within {hop.within or 2} calls",
                 candidates=[f"{f} reads it" for f in sorted(reads)][:6])


def _verify_registration(hop: Hop, g: Graph) -> HopResult:
    found = []
    for ci in hop.class_init:
        for s in g.ix.stores_where("in_function", ci):
            if s.function in hop.callback and s.kind in ("registration", "assignment"):
                found.append((ci, s))
    if found:
        ci, s = sorted(found, key=lambda p: (p[1].kind != "registration", p[1].line))[0]
        api = s.variable if s.kind == "registration" else "assignment"
        if hop.api and api not in hop.api:
            return _base(hop, MISSING, note=f"{ci} registers {s.function} with {api}, not {'|'.join(hop.api)}",
                         evidence=[_reg_evidence(hop, ci, s, api)], api=api, field=s.field)
        fn = g.lookup(s.function, s.path)
        return _base(hop, VERIFIED, evidence=[_reg_evidence(hop, ci, s, api)], resolution="registration",
                     matched_from=ci, matched_to=s.function, api=api, field=s.field,
                     signature=fn[0].params if fn else "", to_path=fn[0].path if fn else "",
                     to_line=fn[0].line if fn else 0, conditions=[f"#if {c}" for c in s.conditions])
    cands = []
    for ci in hop.class_init:
        for s in g.ix.stores_where("in_function", ci):
            if s.kind in ("registration", "assignment") and s.field:
                cands.append(f"{s.function} ({s.field} via {s.variable if s.kind == 'registration' else 'assignment'})")
    if not cands:
        cands = [f"{c} (similar class_init)" for ci in hop.class_init for c in _similar(ci, g.def_names(), 3)]
    defined = [ci for ci in hop.class_init if g.definitions(ci)]
    note = (f"{'|'.join(hop.class_init)} does not register {'|'.join(hop.callback)}" if defined
            else f"{'|'.join(hop.class_init)} is not defined in the scanned scope")
    return _base(hop, MISSING, note=note, candidates=sorted(set(cands))[:6], field=hop.phase)


def _reg_evidence(hop: Hop, ci: str, s, api: str) -> Evidence:
    return Evidence(role=hop.role, path=s.path, line=s.line, function=ci, what="registration",
                    callee=s.function, api=api, field=s.field)


def _verify_unverifiable(hop: Hop, g: Graph) -> HopResult:
    evidence = []
    for f in hop.frm:
        for d in g.preferred(g.built(g.definitions(f))):
            for c in g.calls_of(d):
                if any(c.callee == t or t.endswith("." + c.callee) or t.endswith(c.callee) for t in hop.to):
                    evidence.append(Evidence(role=hop.role, path=c.path, line=c.line, function=f,
                                             what="unresolved", how=c.kind,
                                             callee=f"{c.base + '.' if c.base else ''}{c.callee}"))
                    break
    return _base(hop, UNVERIFIABLE, evidence=evidence[:2], note=hop.note or "cannot be checked statically")
