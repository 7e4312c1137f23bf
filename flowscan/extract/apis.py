"""Registration APIs, loaded from queries/registrations.toml (data, validated against a JSON schema)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from flowscan.errors import FlowscanError
from flowscan.resources import queries_dir

_ARG = {"type": "integer", "minimum": 0}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "field": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["api", "owner", "stores"],
            "properties": {
                "api": {"type": "string"},
                "owner": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": "string"}}]},
                "object_arg": _ARG,
                "stores": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["arg", "field"],
                    "properties": {"arg": _ARG, "field": {"type": "string"}, "phase": {"type": "string"}}}},
                "parent": {"type": "object", "additionalProperties": False, "required": ["arg", "fields"],
                           "properties": {"arg": _ARG, "fields": {"type": "object",
                                                                  "additionalProperties": {"type": "string"}}}},
            }}},
        "notifier": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["api"],
            "properties": {"api": {"type": "string"}, "chain": {"type": "string"}, "chain_arg": _ARG,
                           "block_arg": _ARG, "callback_arg": _ARG,
                           "chain_map": {"type": "object", "additionalProperties": {"type": "string"}}},
            "oneOf": [{"required": ["block_arg"]}, {"required": ["callback_arg"]}],
        }},
        "spawn": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["api", "callback_arg"],
            "properties": {"api": {"type": "string"}, "callback_arg": _ARG}}},
        "dispatch": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["api", "chain_arg"],
            "properties": {"api": {"type": "string"}, "chain_arg": _ARG}}},
        "ops_call": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["macro", "owner"],
            "properties": {"macro": {"type": "string"}, "owner": {"type": "string"},
                           "prefix": {"type": "string"}}}},
        "region_ops": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["api", "region_arg", "ops_arg"],
            "properties": {"api": {"type": "string"}, "region_arg": _ARG, "ops_arg": _ARG}}},
        "region_map": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["api", "region_arg", "address_arg"],
            "properties": {"api": {"type": "string"}, "region_arg": _ARG, "address_arg": _ARG}}},
    },
}


@dataclass(frozen=True)
class FieldStore:
    arg: int
    field: str
    phase: str


@dataclass(frozen=True)
class FieldApi:
    api: str
    owner: str
    stores: tuple[FieldStore, ...]
    parent_arg: int = -1
    parent_fields: tuple[tuple[str, str], ...] = ()  # (sub-field of the storage, original field)
    object_arg: int = -1  # the object the callback is registered with (its QOM type narrows dispatch)


@dataclass(frozen=True)
class NotifierApi:
    api: str
    chain: str = ""
    chain_arg: int = -1
    block_arg: int = -1
    callback_arg: int = -1
    chain_map: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OpsCall:
    """`macro(prefix + member)(args)` calls the `member` of an ops struct of type `owner`
    (`static_call(kvm_x86_handle_exit)(vcpu)`, `kvm_x86_call(handle_exit)(vcpu)`)."""

    macro: str
    owner: str
    prefix: str = ""


@dataclass(frozen=True)
class RegionApi:
    """An API that binds an ops table to a region (`ops_arg`) or maps a region at an address
    (`address_arg`): which handler serves an I/O port or MMIO address is decided by these calls."""

    api: str
    region_arg: int
    ops_arg: int = -1
    address_arg: int = -1


@dataclass
class Registry:
    fields: dict[str, FieldApi] = field(default_factory=dict)
    notifiers: dict[str, NotifierApi] = field(default_factory=dict)
    dispatch: dict[str, int] = field(default_factory=dict)  # api -> chain argument
    spawn: dict[str, int] = field(default_factory=dict)  # api -> callback argument (threads, work)
    ops_calls: dict[str, tuple[OpsCall, ...]] = field(default_factory=dict)  # macro -> its rows
    region_ops: dict[str, RegionApi] = field(default_factory=dict)
    region_maps: dict[str, RegionApi] = field(default_factory=dict)

    def api_names(self) -> list[str]:
        return sorted({*self.fields, *self.notifiers, *self.spawn})


def load_registry(paths: tuple[Path, ...] = ()) -> Registry:
    """The built-in table plus any user files (later files add or replace APIs by name)."""
    reg = Registry()
    for path in (builtin_table(), *paths):
        _merge(reg, path)
    return reg


@cache
def default_registry() -> Registry:
    return load_registry()


def builtin_table() -> Path:
    return queries_dir() / "registrations.toml"


def validate_table(data: dict, path: Path) -> None:
    import jsonschema  # only when a user's table is read: the import alone costs a fast query a fifth

    try:
        jsonschema.validate(data, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        raise FlowscanError(f"{path}: {where}: {exc.message}") from None
    except RecursionError:
        raise FlowscanError(f"{path}: nested too deeply to be a registration table") from None


def _merge(reg: Registry, path: Path) -> None:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except RecursionError:
        raise FlowscanError(f"{path}: invalid TOML: nested too deeply") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FlowscanError(f"cannot read registration table {path}: {exc}") from None
    if Path(path) != builtin_table():  # the built-in table is checked by the tests; jsonschema costs 0.1 s
        validate_table(data, path)
    for row in data.get("field", ()):
        parent = row.get("parent", {})
        reg.fields[row["api"]] = FieldApi(
            api=row["api"], owner=row["owner"] if isinstance(row["owner"], str) else "|".join(row["owner"]),
            stores=tuple(FieldStore(s["arg"], s["field"], s.get("phase", s["field"].rsplit(".", 1)[-1]))
                         for s in row["stores"]),
            parent_arg=parent.get("arg", -1),
            parent_fields=tuple(sorted(parent.get("fields", {}).items())),
            object_arg=row.get("object_arg", -1))
    for row in data.get("notifier", ()):
        reg.notifiers[row["api"]] = NotifierApi(
            api=row["api"], chain=row.get("chain", ""), chain_arg=row.get("chain_arg", -1),
            block_arg=row.get("block_arg", -1), callback_arg=row.get("callback_arg", -1),
            chain_map=tuple(sorted(row.get("chain_map", {}).items())))
    for row in data.get("dispatch", ()):
        reg.dispatch[row["api"]] = row["chain_arg"]
    for row in data.get("spawn", ()):
        reg.spawn[row["api"]] = row["callback_arg"]
    for row in data.get("ops_call", ()):
        rows = [r for r in reg.ops_calls.get(row["macro"], ()) if r.prefix != row.get("prefix", "")]
        rows.append(OpsCall(row["macro"], row["owner"], row.get("prefix", "")))
        reg.ops_calls[row["macro"]] = tuple(sorted(rows, key=lambda r: -len(r.prefix)))  # longest first
    for row in data.get("region_ops", ()):
        reg.region_ops[row["api"]] = RegionApi(row["api"], row["region_arg"], ops_arg=row["ops_arg"])
    for row in data.get("region_map", ()):
        reg.region_maps[row["api"]] = RegionApi(row["api"], row["region_arg"], address_arg=row["address_arg"])
