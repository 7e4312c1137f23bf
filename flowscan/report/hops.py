"""The hop view every output shares: where a hop's evidence is, how it was resolved, in which stage."""

from __future__ import annotations

import re

from flowscan.flow.results import SEVERITIES, DriftItem, DriftReport, Evidence, FlowResult, HopResult, StageInfo

_REG_TEXT = re.compile(r"^[^:]+: (\S+) (\S+) = (\S+)$")  # "ci: api field = fn"
_CONSUMER_TEXT = re.compile(r"^[^:]+: (?:case|assign|call-arg) (.+)$")  # "fn: case NAME"
_PRODUCER_TEXT = re.compile(r"^[^:]+: (.+) \((?:assign|call-arg|case)\b[^()]*\)$")  # "fn: NAME (kind target)"
_FLAG_TEXT = re.compile(r" (?:sets|polls|clears|reads|writes) (\S+)$")


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


def hop_names(hop: HopResult) -> tuple[str, str]:
    return hop.matched_from or hop.frm, hop.matched_to or hop.to


def primary_evidence(hop: HopResult) -> Evidence | None:
    """Where a hop is best seen: the call into the target, the consumer's case, the flag write, the registration."""
    if hop.steps:
        if hop.kind != "flag":
            st = hop.steps[-1]
            return Evidence(hop.role, st.path, st.line, st.caller, "call",
                            f"{st.caller} -> {st.callee} [{st.kind}]")
    if hop.kind == "handoff":
        cons = [e for e in hop.evidence if e.role == (hop.to_role or hop.role) and e.what == "case"]
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


def hop_how(hop: HopResult) -> str:
    """How a hop was resolved, in a few words."""
    if hop.kind == "handoff":
        consts = handoff_constants(hop)
        return "handoff" + (f": {', '.join(consts)}" if consts else "")
    if hop.kind == "flag":
        return f"flag: {flag_name(hop)}"
    if hop.kind == "registration":
        api, fld = registration_field(hop)
        return "registration" + (f": {api or hop.api}" if (api or hop.api) else "") + (f" {fld}" if fld else "")
    if hop.status in ("missing", "skipped-optional") and not hop.steps:
        return "-"
    if hop.status == "unverifiable":
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


def handoff_constants(hop: HopResult) -> list[str]:
    """The constants that carry a handoff, as the consumer spells them (producer spelling when unconsumed)."""
    consumed: list[str] = []
    produced: list[str] = []
    for ev in hop.evidence:
        m = _CONSUMER_TEXT.match(ev.text)
        if m and ev.role == target_role(hop) and m.group(1) not in consumed:
            consumed.append(m.group(1))
            continue
        m = _PRODUCER_TEXT.match(ev.text)
        if m and m.group(1) not in produced:
            produced.append(m.group(1))
    for c in hop.conditions:
        if c.startswith("case ") and c[5:] not in consumed:
            consumed.append(c[5:])
    return consumed or produced


def flag_name(hop: HopResult) -> str:
    for ev in hop.evidence:
        m = _FLAG_TEXT.search(ev.text)
        if m:
            return m.group(1)
    if ":" in hop.id:
        return hop.id.split(":", 1)[1]
    return hop.note or "flag"


def registration_field(hop: HopResult) -> tuple[str, str]:
    """(api, field) of a registration hop, from its evidence ('ci: api field = fn')."""
    for ev in hop.evidence:
        m = _REG_TEXT.match(ev.text)
        if m:
            return m.group(1), m.group(2)
    phase = hop.id.rsplit(":", 1)[1] if ":" in hop.id else ""
    return hop.api, phase


def target_role(hop: HopResult) -> str:
    return hop.to_role or hop.role
