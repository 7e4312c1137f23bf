"""The view of results every output shares: where a hop's evidence is, how it was resolved, in which stage,
evidence in words, summary and source lines. Text, Markdown, JUnit, SARIF, HTML and the diagram build on it."""

from __future__ import annotations

from flowscan.flow.results import (CONSUMER, MISSING, NOT_FOUND, PRODUCER, SEVERITIES, STATUSES, UNVERIFIABLE,
                                   DriftItem, DriftReport, Evidence, FlowResult, HopResult, SourceInfo, StageInfo,
                                   step_evidence)


def loc(path: str, line: int) -> str:
    return f"{path}:{line}" if path and line else path


def ev_loc(ev: Evidence | None) -> str:
    return loc(ev.path, ev.line) if ev else ""


def stages(result: FlowResult) -> list[StageInfo]:
    stages = list(result.stages)
    known = {s.id for s in stages}
    for h in result.hops:
        if h.stage not in known:
            stages.append(StageInfo(h.stage, h.stage, h.role))
            known.add(h.stage)
    return stages


def conditions_text(hop: HopResult, sep: str = "; ") -> str:
    """The hop's conditions, each #if one followed by its value for the build configuration when it has
    one (from the shown call site): `#if !CONFIG_USER_ONLY (true); if (kvm_enabled())`."""
    shown = next((s for s in hop.sites if s.chosen), hop.sites[0] if hop.sites else None)
    values = {c.text: c.value for c in shown.conditions} if shown is not None else {}
    out = []
    for c in hop.conditions:
        v = values.get(c) if c.startswith("#if ") else None
        out.append(c + ({True: " (true)", False: " (false)"}.get(v, "")))
    return sep.join(out)


def hop_names(hop: HopResult) -> tuple[str, str]:
    return hop.matched_from or hop.frm, hop.matched_to or hop.to


def primary_evidence(hop: HopResult) -> Evidence | None:
    """Where a hop is best seen: the call into the target, the consumer's case, the flag write, the registration."""
    if hop.steps and hop.kind != "flag":
        return step_evidence(hop.role, hop.steps[-1])
    if hop.kind == "handoff":
        cons = [e for e in hop.evidence if e.role == target_role(hop) and e.what == "case"]
        if cons:
            return cons[0]
    if hop.kind == "flag":
        writes = [e for e in hop.evidence if e.what == "write"]
        if writes:
            return writes[0]
    if hop.kind == "registration":
        regs = [e for e in hop.evidence if e.what == "registration"]
        if regs:
            return regs[0]
    return hop.evidence[0] if hop.evidence else None


def handoff_ends(hop: HopResult) -> tuple[Evidence | None, Evidence | None]:
    """A handoff's first producer and first consumer evidence (both sides' file:line)."""
    prod = next((e for e in hop.evidence if e.side == PRODUCER and e.role == hop.role), None)
    cons = next((e for e in hop.evidence if e.side == CONSUMER and e.role == target_role(hop)), None)
    return prod, cons


def where_text(hop: HopResult) -> str:
    """The table's WHERE: the primary evidence; for a handoff, producer -> consumer."""
    if hop.kind == "handoff":
        prod, cons = handoff_ends(hop)
        if prod and cons:
            return f"{ev_loc(prod)} -> {ev_loc(cons)}"
    return ev_loc(primary_evidence(hop))


def evidence_text(ev: Evidence) -> str:
    """One piece of evidence in a few words, from its fields."""
    if ev.what == "call":
        return f"{ev.function} -> {ev.callee} [{ev.how}{': ' + ev.via if ev.via else ''}]"
    if ev.what == "unresolved":
        return f"{ev.function} -> {ev.callee} [{ev.how}: not resolvable statically]"
    if ev.what == "registration" and ev.api:
        return f"{ev.function}: {ev.api} {ev.field} = {ev.callee}"
    if ev.what in ("store", "argument", "registration"):
        return f"{ev.callee} stored for {ev.via}" if ev.via else ev.callee
    if ev.what == "macro":
        if ev.constant:
            return f"#define {ev.macro}: {ev.target} -> {ev.constant}"
        return f"#define {ev.macro}: -> {ev.callee}" + (f" [{ev.via}]" if ev.via and ev.via != ev.macro else "")
    if ev.what == "insn":
        return f"{ev.function}: {ev.target}"
    if ev.what == "slot":
        return f"{ev.via}[{ev.constant}] = {ev.callee}"
    if ev.side == PRODUCER:
        return f"{ev.function}: {ev.constant} ({ev.what} {ev.target})"
    if ev.side == CONSUMER:
        return f"{ev.function}: {ev.what} {ev.constant}"
    if ev.what == "write":
        return f"{ev.function} sets {ev.flag}"
    if ev.what == "read":
        return f"{ev.function} polls {ev.flag}"
    if ev.what == "definition":
        return f"{ev.function}{ev.signature}"
    if ev.what == "region-map":
        return f"{ev.api}(..., {ev.constant}): the region of {ev.target}"
    if ev.what == "region-ops":
        return f"{ev.api}(..., &{ev.target}, ...)"
    return ""


def evidence_line(ev: Evidence) -> str:
    """`role path:line [what] text`: one piece of evidence on a line of its own (tooltips, JUnit)."""
    return f"{ev.role} {ev_loc(ev)} [{ev.what}] {evidence_text(ev)}".rstrip()


def hop_how(hop: HopResult) -> str:
    """How a hop was resolved, in a few words."""
    if hop.kind == "handoff":
        return "handoff" + (f": {', '.join(hop.constants)}" if hop.constants else "")
    if hop.kind == "flag":
        return f"flag: {hop.flag or 'flag'}"
    if hop.kind == "registration":
        return "registration" + (f": {hop.api}" if hop.api else "") + (f" {hop.field}" if hop.field else "")
    if hop.status in NOT_FOUND and not hop.steps:
        return "-"
    if hop.status == UNVERIFIABLE:
        return "not checkable statically"
    if hop.kind == "reach" and hop.steps:
        last = hop.steps[-1]
        how = last.kind + (f": {last.via}" if last.via else "")
        return f"reach, {len(hop.steps)} calls, last {how}"
    if hop.steps:
        st = hop.steps[-1]
        return st.kind + (f": {st.via}" if st.via else "")
    return hop.resolution or "-"


def path_text(hop: HopResult) -> str:
    if len(hop.steps) < 2:
        return ""
    return " -> ".join([hop.steps[0].caller] + [s.callee for s in hop.steps])


def sorted_items(report: DriftReport) -> list[DriftItem]:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(report.items, key=lambda it: -rank.get(it.severity, 0))  # stable: input order within


def target_role(hop: HopResult) -> str:
    return hop.to_role or hop.role


def summary_line(result: FlowResult) -> str:
    """`56 hops: 51 verified, 3 missing, ... -> FAIL (3 required hops missing)`."""
    s = result.summary()
    parts = [f"{s[k]} {k}" for k in STATUSES if s[k]]
    verdict = "OK" if result.ok else f"FAIL ({s[MISSING]} required hop{'s' if s[MISSING] != 1 else ''} missing)"
    return f"{s['total']} hops: {', '.join(parts) or 'none'} -> {verdict}"


def source_text(s: SourceInfo) -> str:
    """`repo ref (commit)` of one role's tree."""
    bits = [s.repo or s.src or "?"]
    if s.ref:
        bits.append(s.ref)
    if s.commit:
        bits.append(f"({s.commit[:12]})")
    return " ".join(bits)


def refs_text(sources: list[SourceInfo]) -> str:
    """`guest v6.1, host v6.1, vmm v7.2.0`."""
    return ", ".join(f"{s.role} {s.ref or s.commit[:12] or '?'}" for s in sources)


def severity_counts(report: DriftReport) -> dict[str, int]:
    """Items per severity, worst first."""
    return {sev: sum(1 for it in report.items if it.severity == sev) for sev in reversed(SEVERITIES)}


def status_text(hop: HopResult) -> str:
    """The status as every output says it: a hop verified only through a wide dispatch says so."""
    if hop.status == "verified" and hop.wide:
        return f"verified (wide: {hop.width})"
    return hop.status


def site_count_text(hop: HopResult) -> str:
    """' (+1 site)' when a hop has more call sites than the one shown."""
    n = len(hop.sites) - 1
    return f" (+{n} site{'s' if n != 1 else ''})" if n > 0 else ""


def _taken(value: bool | None) -> str:
    return {True: "taken by default", False: "not taken by default", None: "not decided statically"}[value]


def site_lines(hop: HopResult) -> list[str]:
    """One line per call site: where, which target, its conditions decided, and whether the default takes it."""
    out = []
    for s in hop.sites:
        conds = "; ".join(f"{c.text} [{'true' if c.value else 'false' if c.value is False else '?'}: {c.why}]"
                          for c in s.conditions)
        mark = " (shown)" if s.chosen and len(hop.sites) > 1 else ""
        out.append(f"{loc(s.path, s.line)}{mark} -> {s.callee}: {_taken(s.default_taken)}"
                   + (f"; {conds}" if conds else ""))
    return out


def dispatch_lines(hop: HopResult) -> list[str]:
    """Every indirect step of the route with its fan-out and why the target was kept; the narrower route."""
    out = [f"{st.caller} -> {st.callee} [{st.kind}{': ' + st.via if st.via else ''}]: fan-out {st.fanout}"
           + (f", type {st.obj_type}" if st.obj_type else "") + (f"; {st.reason}" if st.reason else "")
           for st in hop.steps if st.kind not in ("direct", "macro", "inline")]
    if hop.narrower:
        out.append("narrower route: " + " -> ".join([hop.narrower[0].caller] + [s.callee for s in hop.narrower]))
    return out
