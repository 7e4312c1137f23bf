"""The results of verifying a flow, and drift items: plain dataclasses with a versioned JSON form.

This is the contract between verify -> drift -> report, and the `--format json` output users keep
(baselines). Facts are fields, never prose: every output builds its text from them
(flowscan.report.hops). Bump SCHEMA_VERSION on any incompatible change and teach flowscan.flow.upgrade to
read the previous version; docs/result-schema.json describes the current one. A new field with a default
is compatible: older files of the same version read with the default (fields use
dataclasses.field(): a fact named `field` shadows the bare name in the class body).
"""

from __future__ import annotations

import json
import typing
import dataclasses
from dataclasses import asdict, dataclass, fields, is_dataclass

SCHEMA_VERSION = 2

VERIFIED = "verified"
MISSING = "missing"
UNVERIFIABLE = "unverifiable"
SKIPPED = "skipped-optional"
STATUSES = (VERIFIED, MISSING, UNVERIFIABLE, SKIPPED)
PASSING = (VERIFIED, UNVERIFIABLE, SKIPPED)  # statuses that do not fail a flow
NOT_FOUND = (MISSING, SKIPPED)  # statuses of a hop whose target was not found
HOP_KINDS = ("call", "reach", "handoff", "flag", "registration", "unverifiable")

# Evidence.what: the kind of fact one piece of evidence is.
EVIDENCE_KINDS = ("call", "unresolved", "store", "argument", "registration", "assign", "call-arg", "case",
                  "write", "read", "definition", "file", "region-map", "region-ops", "macro",
                  "insn", "slot")  # insn: a trapping instruction (assembly); slot: a table slot it selects
PRODUCER, CONSUMER = "producer", "consumer"  # Evidence.side of a handoff's constant uses


@dataclass
class Evidence:
    """One place in one tree that backs a hop: a call site, a store, a constant use, a flag access.

    Which fields are set depends on `what` (see EVIDENCE_KINDS); the others keep their defaults.
    """

    role: str  # guest | host | vmm
    path: str
    line: int
    function: str = ""  # enclosing function (registrations: the class_init)
    what: str = ""  # one of EVIDENCE_KINDS
    callee: str = ""  # call / unresolved: the function called; store / argument / registration: the one stored
    how: str = ""  # call: how it resolved (direct, field, registration, ...); unresolved: the call's kind
    via: str = ""  # the field path, table, variable or chain an indirect call went through
    fanout: int = 0  # call: how many targets its call site resolves to (0: not known)
    constant: str = ""  # assign / call-arg / case: the constant; region-map: the address mapped
    target: str = ""  # assign: the field written; call-arg: the function called; case: the switch expression;
    #                   region-map / region-ops: the ops table
    side: str = ""  # handoffs: PRODUCER or CONSUMER of the constant
    api: str = ""  # registration: the registration API ("assignment" for a plain store); region-*: the call
    field: str = ""  # registration: the field it fills ("phases.hold")
    flag: str = ""  # write / read: the flag variable
    signature: str = ""  # definition: the parameter list
    macro: str = ""  # the macro the fact was written through, when any


@dataclass
class Step:
    """One call edge on a hop's path (a `call` hop has one, a `reach` hop one per call)."""

    caller: str
    callee: str
    kind: str  # direct | field | registration | qom-parent | table | type | variable | argument | notifier
    path: str
    line: int
    via: str = ""
    store_path: str = ""
    store_line: int = 0
    fanout: int = 1
    callee_path: str = ""
    cases: list[str] = dataclasses.field(default_factory=list)
    ifs: list[str] = dataclasses.field(default_factory=list)
    conditions: list[str] = dataclasses.field(default_factory=list)
    reason: str = ""  # why an indirect target was kept (the store, registration, slot or QOM type)
    obj_type: str = ""  # the QOM type a class dispatch was narrowed to
    # Each of `conditions` for the build configuration: "true", "false" or "unknown" (empty: none).
    condition_values: list[str] = dataclasses.field(default_factory=list)


@dataclass
class Condition:
    """One condition of a call site (`case X`, `if (c)`, `#if C`) and whether the flow's default takes it."""

    text: str
    value: bool | None = None  # None: not decided statically (or an #if: the build configuration's)
    why: str = ""  # "reboot_mode = REBOOT_COLD", "not decided statically: psci_system_reset2_supported"


@dataclass
class Site:
    """One call site of a hop: a hop lists all of them, each with its conditions."""

    path: str
    line: int
    caller: str
    callee: str  # the matched target(s), alternatives joined by "|"
    kind: str = "direct"
    via: str = ""
    conditions: list[Condition] = dataclasses.field(default_factory=list)
    default_taken: bool | None = None  # does the flow's default configuration take this call? None: unknown
    chosen: bool = False  # the site the hop's evidence is about


def step_evidence(role: str, st: Step) -> Evidence:
    """A call edge of a hop's path as evidence: where the call is, what it calls, how it resolved."""
    return Evidence(role, st.path, st.line, st.caller, "call", callee=st.callee, how=st.kind, fanout=st.fanout)


@dataclass
class HopResult:
    id: str
    stage: str
    kind: str  # one of HOP_KINDS
    role: str  # role of `from` (handoffs: the producing role)
    frm: str  # the spec's from (alternatives joined by "|")
    to: str
    status: str  # one of STATUSES
    optional: bool = False
    to_role: str = ""  # handoffs: the consuming role
    matched_from: str = ""  # which alternative matched
    matched_to: str = ""
    resolution: str = ""  # how the (last) call resolved: direct, field, registration, qom-parent, ...
    steps: list[Step] = dataclasses.field(default_factory=list)
    evidence: list[Evidence] = dataclasses.field(default_factory=list)
    conditions: list[str] = dataclasses.field(default_factory=list)  # #if / case / if conditions putting it on the path
    candidates: list[str] = dataclasses.field(default_factory=list)  # missing: nearest candidates
    signature: str = ""  # params of the matched `to` definition (for signature drift)
    to_path: str = ""  # file of the matched `to` definition
    to_line: int = 0
    api: str = ""  # registrations: the API used
    field: str = ""  # registrations: the field filled ("phases.hold"); not found: the spec's phase
    constants: list[str] = dataclasses.field(default_factory=list)  # handoffs: the constants that carry it
    flag: str = ""  # flags: the variable set and polled
    note: str = ""
    sites: list[Site] = dataclasses.field(default_factory=list)  # call/reach hops: every call site into the target
    default_taken: bool | None = None  # the chosen site under the flow's defaults (None: not decided)
    width: int = 0  # the widest dispatch on the route (largest fan-out of an indirect step; 0: none)
    wide: bool = False  # verified only through a dispatch wider than the flow's wide_fanout
    narrower: list[Step] = dataclasses.field(default_factory=list)  # a narrower route found beyond `within`, if wide


@dataclass
class SourceInfo:
    role: str
    repo: str = ""
    ref: str = ""
    commit: str = ""
    src: str = ""
    url_template: str = ""
    build: str = ""  # the build configuration used, or why there was none (a note for outputs)


@dataclass
class StageInfo:
    id: str
    title: str
    role: str


@dataclass
class FlowResult:
    flow: str
    title: str
    sources: list[SourceInfo] = dataclasses.field(default_factory=list)
    stages: list[StageInfo] = dataclasses.field(default_factory=list)
    hops: list[HopResult] = dataclasses.field(default_factory=list)
    # The neighbourhood of the path, for drift: "callees" maps "role:function" to the sorted names it calls;
    # "registrations" maps a class_init on the path to its sorted "api field=function" registrations.
    context: dict[str, dict[str, list[str]]] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    tool: str = "flowscan"

    def summary(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for h in self.hops:
            out[h.status] += 1
        out["total"] = len(self.hops)
        return out

    @property
    def ok(self) -> bool:
        """Every required hop is verified (unverifiable and optional hops don't fail a flow)."""
        return all(h.status in PASSING for h in self.hops)

    def to_json(self) -> dict:
        data = asdict(self)
        data["summary"] = self.summary()
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: dict) -> "FlowResult":
        """From the current schema's JSON (flowscan.flow.upgrade converts older ones first)."""
        return from_dict(cls, {k: v for k, v in data.items() if k != "summary"})


DRIFT_CLASSES = ("renamed", "moved", "signature-changed", "registration-api-changed", "path-changed",
                 "broken", "newly-verified", "calls-added", "calls-removed", "registration-changed")
SEVERITIES = ("info", "changed", "broken")  # ordered: --fail-on compares against this order


@dataclass
class DriftItem:
    kind: str  # one of DRIFT_CLASSES
    severity: str  # one of SEVERITIES
    hop: str  # hop id ('' for neighbourhood items)
    stage: str
    role: str
    subject: str  # what changed, e.g. "kvm_hvc_call_handler -> kvm_smccc_call_handler"
    detail: str = ""
    old: Evidence | None = None
    new: Evidence | None = None
    confidence: float = 1.0  # renames: how sure (0..1)


@dataclass
class DriftReport:
    flow: str
    old_sources: list[SourceInfo] = dataclasses.field(default_factory=list)
    new_sources: list[SourceInfo] = dataclasses.field(default_factory=list)
    items: list[DriftItem] = dataclasses.field(default_factory=list)
    # "role:function" on both verified paths whose text is identical (line shifts only): not drift
    unchanged: list[str] = dataclasses.field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: dict) -> "DriftReport":
        return from_dict(cls, {k: v for k, v in data.items() if k not in ("old", "new")})


def from_dict(cls, data: dict):
    """A result dataclass from its JSON form, nested dataclasses included (by the field types).

    Missing keys take the field's default; an unknown key is a TypeError (not a result of this version).
    """
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = _hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown field {unknown[0]!r}")
    return cls(**{k: _value(hints[k], v) for k, v in data.items()})


_HINTS: dict[type, dict] = {}


def _hints(cls) -> dict:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _value(hint, value):
    if value is None:
        return None
    if is_dataclass(hint):
        return from_dict(hint, value)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is list and args and is_dataclass(args[0]):
        return [from_dict(args[0], v) for v in value]
    if len(args) == 1 and is_dataclass(args[0]):  # X | None
        return from_dict(args[0], value)
    return value
