"""The results of verifying a flow, and drift items: plain dataclasses with a versioned JSON form.

This is the contract between verify -> drift -> render/report, and the `--format json` output users keep
(baselines). Bump SCHEMA_VERSION on any incompatible change; docs/result-schema.json describes it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

SCHEMA_VERSION = 1

STATUSES = ("verified", "missing", "unverifiable", "skipped-optional")
HOP_KINDS = ("call", "reach", "handoff", "flag", "registration", "unverifiable")


@dataclass
class Evidence:
    """One place in one tree that backs a hop: a call site, a store, a case label, a flag write."""

    role: str  # guest | host | vmm
    path: str
    line: int
    function: str = ""  # enclosing function
    what: str = ""  # "call", "store", "case", "assign", "registration", "read", "write", "definition"
    text: str = ""  # short human text: "kvm_psci_1_x_call -> kvm_psci_system_reset2 [direct]"


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
    cases: list[str] = field(default_factory=list)
    ifs: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)


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
    steps: list[Step] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)  # #if / case / if conditions putting it on the path
    candidates: list[str] = field(default_factory=list)  # missing: nearest candidates
    signature: str = ""  # params of the matched `to` definition (for signature drift)
    to_path: str = ""  # file of the matched `to` definition
    to_line: int = 0
    api: str = ""  # registrations: the API used
    note: str = ""


@dataclass
class SourceInfo:
    role: str
    repo: str = ""
    ref: str = ""
    commit: str = ""
    src: str = ""
    url_template: str = ""


@dataclass
class StageInfo:
    id: str
    title: str
    role: str


@dataclass
class FlowResult:
    flow: str
    title: str
    sources: list[SourceInfo] = field(default_factory=list)
    stages: list[StageInfo] = field(default_factory=list)
    hops: list[HopResult] = field(default_factory=list)
    # The neighbourhood of the path, for drift: "callees" maps "role:function" to the sorted names it calls;
    # "registrations" maps a class_init on the path to its sorted "api field=function" registrations.
    context: dict[str, dict[str, list[str]]] = field(default_factory=dict)
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
        return all(h.status in ("verified", "unverifiable", "skipped-optional") for h in self.hops)

    def to_json(self) -> dict:
        data = asdict(self)
        data["summary"] = self.summary()
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: dict) -> "FlowResult":
        hops = []
        for h in data.get("hops", ()):
            h = dict(h)
            h["steps"] = [Step(**s) for s in h.get("steps", ())]
            h["evidence"] = [Evidence(**e) for e in h.get("evidence", ())]
            hops.append(HopResult(**h))
        return cls(flow=data["flow"], title=data.get("title", ""),
                   sources=[SourceInfo(**s) for s in data.get("sources", ())],
                   stages=[StageInfo(**s) for s in data.get("stages", ())], hops=hops,
                   context=data.get("context", {}),
                   schema_version=data.get("schema_version", SCHEMA_VERSION), tool=data.get("tool", "flowscan"))


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
    old_sources: list[SourceInfo] = field(default_factory=list)
    new_sources: list[SourceInfo] = field(default_factory=list)
    items: list[DriftItem] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: dict) -> "DriftReport":
        items = []
        for it in data.get("items", ()):
            it = dict(it)
            it["old"] = Evidence(**it["old"]) if it.get("old") else None
            it["new"] = Evidence(**it["new"]) if it.get("new") else None
            items.append(DriftItem(**it))
        return cls(flow=data["flow"], old_sources=[SourceInfo(**s) for s in data.get("old_sources", ())],
                   new_sources=[SourceInfo(**s) for s in data.get("new_sources", ())], items=items,
                   schema_version=data.get("schema_version", SCHEMA_VERSION))
