"""Flow specs: TOML files in queries/flows/ (or a user's file), validated against a JSON schema.

Spec errors name the file, the line of the offending stage/hop and what is wrong, so a user can fix a
spec without reading Python. The format is documented in docs/flow-spec.md.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema

from flowscan.config import ROLES
from flowscan.errors import FlowscanError
from flowscan.resources import queries_dir
from flowscan.buildconfig.load import profiles as build_profiles

_NAMES = {"oneOf": [{"type": "string", "minLength": 1},
                    {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}]}
# variable or switch expression -> the constant it holds on the route taken by default
_DEFAULTS = {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}
WIDE_FANOUT = 8  # a dispatch to more targets than this says little about which one the machine takes
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "stage"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "roles": {"type": "object", "additionalProperties": False, "properties": {
            r: {"type": "object", "additionalProperties": False, "properties": {
                "title": {"type": "string"},
                "scope": {"type": "array", "items": {"type": "string"}},
                "prefer": {"type": "array", "items": {"type": "string"}},
                "default": _DEFAULTS,
                "config": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
            }} for r in ROLES}},
        "wide_fanout": {"type": "integer", "minimum": 1},
        "stage": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False, "required": ["id", "role", "hop"],
            "properties": {
                "id": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
                "title": {"type": "string"},
                "role": {"enum": list(ROLES)},
                "hop": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "kind": {"enum": ["call", "reach", "handoff", "flag", "registration", "unverifiable"]},
                        "from": _NAMES, "to": _NAMES,
                        "role": {"enum": list(ROLES)},
                        "to_role": {"enum": list(ROLES)},
                        "within": {"type": "integer", "minimum": 1, "maximum": 30},
                        "when": {"type": "array", "items": {"type": "string"}},
                        "slot": _NAMES,
                        "optional": {"type": "boolean"},
                        "note": {"type": "string"},
                        "reason": {"type": "string"},
                        "flag": {"type": "string"},
                        "class_init": _NAMES, "phase": {"type": "string"}, "callback": _NAMES,
                        "api": _NAMES,
                        "address": _NAMES,
                        "default": _DEFAULTS,
                        "wide_fanout": {"type": "integer", "minimum": 1},
                        "constant": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "additionalProperties": False, "required": ["name"],
                            "properties": {"name": _NAMES, "produced_by": _NAMES, "consumed_by": _NAMES}}},
                        "instruction": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "additionalProperties": False, "required": ["name", "slot"],
                            "properties": {"name": _NAMES, "slot": _NAMES, "produced_by": _NAMES,
                                           "consumed_by": _NAMES}}},
                    },
                    "allOf": [
                        {"if": {"properties": {"kind": {"const": "registration"}}, "required": ["kind"]},
                         "then": {"required": ["class_init", "callback"]},
                         "else": {"required": ["from", "to"]}},
                        {"if": {"properties": {"kind": {"const": "handoff"}}, "required": ["kind"]},
                         "then": {"required": ["to_role"],
                                  "anyOf": [{"required": ["constant"]}, {"required": ["instruction"]}]}},
                        {"if": {"properties": {"kind": {"const": "flag"}}, "required": ["kind"]},
                         "then": {"required": ["flag"]}},
                    ]}},
            }}},
    },
}


def _names(value) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class Constant:
    names: tuple[str, ...]  # alternative spellings
    produced_by: tuple[str, ...] = ()
    consumed_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Instruction:
    """A trapping instruction (`hvc`) in the producer's assembly, consumed by the function the other
    side stores in a dispatch table slot (`arm_exit_handlers[ESR_ELx_EC_HVC64] = handle_hvc`)."""

    names: tuple[str, ...]  # mnemonics
    slots: tuple[str, ...]  # table designators that select the consumer
    produced_by: tuple[str, ...] = ()
    consumed_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hop:
    id: str
    stage: str
    kind: str
    role: str
    frm: tuple[str, ...] = ()
    to: tuple[str, ...] = ()
    to_role: str = ""
    within: int = 0
    when: tuple[str, ...] = ()
    optional: bool = False
    note: str = ""
    flag: str = ""
    class_init: tuple[str, ...] = ()
    phase: str = ""
    callback: tuple[str, ...] = ()
    api: tuple[str, ...] = ()
    constants: tuple[Constant, ...] = ()
    address: tuple[str, ...] = ()  # call hops through an ops table: the address (port) it must serve
    slot: tuple[str, ...] = ()  # call hops through a dispatch table: the slot(s) the flow selects
    instructions: tuple[Instruction, ...] = ()
    line: int = 0  # in the spec file
    defaults: tuple[tuple[str, str], ...] = ()  # the role's defaults updated by the hop's own
    wide_fanout: int = WIDE_FANOUT


@dataclass(frozen=True)
class Stage:
    id: str
    title: str
    role: str


@dataclass
class FlowSpec:
    name: str
    title: str
    description: str
    path: Path
    stages: list[Stage] = field(default_factory=list)
    hops: list[Hop] = field(default_factory=list)
    scopes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prefer: dict[str, tuple[str, ...]] = field(default_factory=dict)
    role_titles: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, dict[str, str]] = field(default_factory=dict)  # per role
    wide_fanout: int = WIDE_FANOUT
    builds: dict[str, str] = field(default_factory=dict)  # role -> build configuration (queries/build/)

    def roles(self) -> list[str]:
        used = {h.role for h in self.hops} | {h.to_role for h in self.hops if h.to_role}
        return [r for r in ROLES if r in used]


def builtin_flows() -> dict[str, Path]:
    return {p.stem: p for p in sorted((queries_dir() / "flows").glob("*.toml"))}


def find_flow(name_or_path: str) -> Path:
    flows = builtin_flows()
    if name_or_path in flows:
        return flows[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return path
    known = ", ".join(flows) or "none"
    raise FlowscanError(f"unknown flow '{name_or_path}' (built-in flows: {known}; or give a .toml file)")


def _header_lines(text: str) -> tuple[list[int], list[list[int]]]:
    """Line numbers of each [[stage]] and, per stage, of each [[stage.hop]] (for error messages)."""
    stages: list[int] = []
    hops: list[list[int]] = []
    for no, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if re.match(r"\[\[\s*stage\s*\]\]", s):
            stages.append(no)
            hops.append([])
        elif re.match(r"\[\[\s*stage\s*\.\s*hop\s*\]\]", s) and hops:
            hops[-1].append(no)
    return stages, hops


def load_flow(path: Path) -> FlowSpec:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FlowscanError(f"cannot read flow spec {path}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FlowscanError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise FlowscanError(f"{path}: invalid TOML: nested too deeply") from None
    stage_lines, hop_lines = _header_lines(text)

    def where(p) -> str:
        parts = list(p)
        line = 0
        if len(parts) >= 2 and parts[0] == "stage" and isinstance(parts[1], int):
            si = parts[1]
            line = stage_lines[si] if si < len(stage_lines) else 0
            if len(parts) >= 4 and parts[2] == "hop" and isinstance(parts[3], int) and si < len(hop_lines) \
                    and parts[3] < len(hop_lines[si]):
                line = hop_lines[si][parts[3]]
        return f"{path}:{line}" if line else str(path)

    validator = jsonschema.Draft202012Validator(SCHEMA)
    try:
        errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    except RecursionError:
        raise FlowscanError(f"{path}: nested too deeply to be a flow spec") from None
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        field_path = ".".join(str(p) for p in err.absolute_path) or "top level"
        raise FlowscanError(f"{where(err.absolute_path)}: {field_path}: {err.message}")
    roles = data.get("roles", {})
    spec = FlowSpec(name=data["name"], title=data.get("title", data["name"]),
                    description=data.get("description", ""), path=Path(path),
                    scopes={r: tuple(v.get("scope", ())) for r, v in roles.items()},
                    prefer={r: tuple(v.get("prefer", ())) for r, v in roles.items()},
                    role_titles={r: v.get("title", r) for r, v in roles.items()},
                    defaults={r: dict(v.get("default", {})) for r, v in roles.items()},
                    wide_fanout=data.get("wide_fanout", WIDE_FANOUT),
                    builds={r: v["config"] for r, v in roles.items() if v.get("config")})
    for role, name in spec.builds.items():
        if name not in build_profiles():
            raise FlowscanError(f"{path}: roles.{role}.config: unknown build configuration '{name}' "
                                f"(known: {', '.join(build_profiles())})")
    seen_ids: set[str] = set()
    for si, st in enumerate(data["stage"]):
        spec.stages.append(Stage(id=st["id"], title=st.get("title", st["id"]), role=st["role"]))
        for hi, h in enumerate(st["hop"]):
            kind = h.get("kind", "call")
            line = hop_lines[si][hi] if si < len(hop_lines) and hi < len(hop_lines[si]) else 0
            frm, to = _names(h.get("from")), _names(h.get("to"))
            if kind == "registration":
                default_id = f"{_names(h['class_init'])[0]}:{h.get('phase', 'reset')}"
            else:
                default_id = f"{frm[0]}->{to[0]}"
            hop_id = h.get("id", default_id)
            if hop_id in seen_ids:
                raise FlowscanError(f"{path}:{line}: duplicate hop id '{hop_id}' (give the hop an `id`)")
            seen_ids.add(hop_id)
            if kind in ("reach", "flag") and "within" not in h and kind == "reach":
                raise FlowscanError(f"{path}:{line}: a reach hop needs `within` (maximum number of calls)")
            spec.hops.append(Hop(
                id=hop_id, stage=st["id"], kind=kind, role=h.get("role", st["role"]), frm=frm, to=to,
                to_role=h.get("to_role", ""), within=h.get("within", 0), when=tuple(h.get("when", ())),
                optional=h.get("optional", False), note=h.get("note", h.get("reason", "")),
                flag=h.get("flag", ""), class_init=_names(h.get("class_init")), phase=h.get("phase", "hold"),
                callback=_names(h.get("callback")), api=_names(h.get("api")),
                constants=tuple(Constant(_names(c["name"]), _names(c.get("produced_by")),
                                         _names(c.get("consumed_by"))) for c in h.get("constant", ())),
                address=_names(h.get("address")), slot=_names(h.get("slot")), line=line,
                instructions=tuple(Instruction(_names(i["name"]), _names(i["slot"]), _names(i.get("produced_by")),
                                               _names(i.get("consumed_by"))) for i in h.get("instruction", ())),
                defaults=tuple(sorted({**spec.defaults.get(h.get("role", st["role"]), {}),
                                       **h.get("default", {})}.items())),
                wide_fanout=h.get("wide_fanout", spec.wide_fanout)))
    return spec
