"""Registration call sites, interpreted with the data in queries/registrations.toml.

`resettable_class_set_parent_phases(rc, NULL, hold, NULL, &kgc->parent_phases)` becomes a Registration
row (who registers what, where the parent's value is kept) and synthetic PointerStores
(`phases.hold <- hold`, owner ResettableClass), so indirect-call resolution treats registrations and plain
assignments alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import Iterable

from flowscan.extract.facts import CallSite, PointerStore
from flowscan.extract.apis import Registry


@dataclass(frozen=True)
class Registration:
    api: str
    kind: str  # field | notifier
    path: str
    line: int
    function: str  # enclosing function (a class_init for QOM registrations)
    owner: str  # type whose fields are filled (field APIs)
    callbacks: tuple[tuple[str, str, str], ...]  # (phase, field, function); field '' for notifiers
    parent_storage: str = ""  # the parent argument as written: "&kgc->parent_phases"
    parent_base: str = ""  # "kgc"
    parent_path: str = ""  # "parent_phases"
    parent_fields: tuple[tuple[str, str], ...] = ()
    chain: str = ""  # notifier chain
    conditions: tuple[str, ...] = ()


def _strip_ref(text: str) -> str:
    text = text.strip()
    while text.startswith(("&", "(")):
        text = text.lstrip("&(").rstrip(")").strip()
    return text


def chain_name(text: str) -> str:
    """`&restart_handler_list` or `&priv->nh` -> the chain's name (last member), as registration and dispatch
    sites both spell it."""
    return _strip_ref(text).replace("->", ".").rsplit(".", 1)[-1]


def _is_nothing(text: str) -> bool:
    return text in ("NULL", "0", "nullptr", "") or text.startswith("(void")


def find_registrations(calls: Iterable[CallSite], stores: Iterable[PointerStore],
                       registry: Registry) -> list[Registration]:
    """Every registration among these call sites, in path/line order (`stores`: where notifier blocks
    name their callbacks)."""
    block_callbacks: dict[tuple[str, str], list[PointerStore]] = {}
    for s in stores:
        if s.kind == "initializer" and s.field == "notifier_call" and s.variable:
            block_callbacks.setdefault((s.path, s.variable), []).append(s)
    out: list[Registration] = []
    for call in calls:
        if call.kind != "direct":
            continue
        api = registry.fields.get(call.callee)
        if api is not None:
            out.append(_field_registration(call, api))
            continue
        napi = registry.notifiers.get(call.callee)
        if napi is not None:
            reg = _notifier_registration(call, napi, block_callbacks)
            if reg is not None:
                out.append(reg)
    out.sort(key=lambda r: (r.path, r.line, r.api))
    return out


def _arg(call: CallSite, index: int) -> str:
    return call.args[index] if 0 <= index < len(call.args) else ""


def _field_registration(call: CallSite, api) -> Registration:
    callbacks = []
    for st in api.stores:
        value = _strip_ref(_arg(call, st.arg))
        if not _is_nothing(value) and value.isidentifier():
            callbacks.append((st.phase, st.field, value))
    storage = _arg(call, api.parent_arg) if api.parent_arg >= 0 else ""
    from flowscan.extract.parse import field_path_text

    base, path = field_path_text(_strip_ref(storage)) if storage else ("", "")
    return Registration(api=api.api, kind="field", path=call.path, line=call.line, function=call.caller,
                        owner=api.owner, callbacks=tuple(callbacks), parent_storage=storage,
                        parent_base=base, parent_path=path, parent_fields=api.parent_fields,
                        conditions=call.conditions)


def _notifier_registration(call: CallSite, api, block_callbacks) -> Registration | None:
    chain = api.chain
    if not chain and api.chain_arg >= 0:
        raw = _strip_ref(_arg(call, api.chain_arg))
        chain = chain_name(dict(api.chain_map).get(raw, raw))
    callbacks = []
    if api.callback_arg >= 0:
        value = _strip_ref(_arg(call, api.callback_arg))
        if value.isidentifier():
            callbacks.append(("notifier_call", "", value))
    elif api.block_arg >= 0:
        block = _strip_ref(_arg(call, api.block_arg))
        for s in block_callbacks.get((call.path, block), ()):
            callbacks.append(("notifier_call", "", s.function))
    if not chain:
        return None
    return Registration(api=api.api, kind="notifier", path=call.path, line=call.line, function=call.caller,
                        owner="", callbacks=tuple(callbacks), chain=chain, conditions=call.conditions)


def synthetic_stores(regs: list[Registration]) -> list[PointerStore]:
    """Field registrations as stores, so field-call resolution sees them like `rc->phases.hold = f`."""
    out = []
    for r in regs:
        if r.kind != "field":
            continue
        for _phase, field, fn in r.callbacks:
            out.append(PointerStore(function=fn, kind="registration", path=r.path, line=r.line, field=field,
                                    variable=r.api, var_type=r.owner, in_function=r.function,
                                    conditions=r.conditions))
    return out
