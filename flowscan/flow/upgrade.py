"""Saved results of an older schema version -> the current JSON form, so old baselines keep working.

Version 1 kept the facts of a piece of evidence (constant, API, field, flag, ...) only inside its `text`;
version 2 has them as fields. Reading a version-1 file is the one place that takes that text apart: it
does so once, at load, and nothing downstream sees the prose.
"""

from __future__ import annotations

from flowscan.errors import FlowscanError
from flowscan.flow.results import CONSUMER, PRODUCER, SCHEMA_VERSION

READABLE = (1, SCHEMA_VERSION)  # versions load_result_file accepts


def upgrade(data: dict) -> dict:
    """A trace result or a saved diff (which nests its two results) in the current version."""
    version = data.get("schema_version")
    if version == SCHEMA_VERSION:
        return data
    if version != 1:
        raise FlowscanError(f"result schema version {version} is not supported "
                         f"(this flowscan reads versions {', '.join(map(str, READABLE))})")
    out = dict(data, schema_version=SCHEMA_VERSION)
    if "hops" in out:
        out["hops"] = [_hop_v1(h) for h in out["hops"]]
    if "items" in out:
        out["items"] = [dict(it, old=_evidence_v1(it.get("old")), new=_evidence_v1(it.get("new")))
                        for it in out["items"]]
    for key in ("old", "new"):
        if isinstance(out.get(key), dict) and "hops" in out[key]:
            out[key] = upgrade(out[key])
    return out


def _hop_v1(hop: dict) -> dict:
    hop = dict(hop)
    evidence = [_evidence_v1(e) for e in hop.get("evidence", ())]
    hop["evidence"] = evidence
    kind, hop_id = hop.get("kind"), hop.get("id", "")
    suffix = hop_id.split(":", 1)[1] if ":" in hop_id else ""
    if kind == "handoff":
        hop["constants"] = _handoff_constants(hop, evidence)
    if kind == "flag":
        hop["flag"] = next((e["flag"] for e in evidence if e.get("flag")), suffix or hop.get("note", ""))
    if kind == "registration":
        reg = next((e for e in evidence if e.get("api")), None)
        if reg is not None:
            hop["field"] = reg["field"]
            hop["api"] = hop.get("api") or reg["api"]
        else:
            hop["field"] = hop_id.rsplit(":", 1)[1] if ":" in hop_id else ""
    return hop


def _handoff_constants(hop: dict, evidence: list[dict]) -> list[str]:
    """As version 1 showed them: the consumer's spelling (its cases too), else the producer's."""
    to_role = hop.get("to_role") or hop.get("role")
    consumed = [e["constant"] for e in evidence if e.get("side") == CONSUMER and e["role"] == to_role]
    consumed += [c[5:] for c in hop.get("conditions", ()) if c.startswith("case ")]
    produced = [e["constant"] for e in evidence if e.get("side") == PRODUCER]
    return list(dict.fromkeys(consumed or produced))


def _evidence_v1(ev: dict | None) -> dict | None:
    """Version-1 evidence: split its text into the fields version 2 stores."""
    if ev is None:
        return None
    ev = dict(ev)
    text = ev.pop("text", "")
    what, fn = ev.get("what", ""), ev.get("function", "")
    head, sep, rest = text.partition(": ")
    if what == "call" and " -> " in text and text.endswith("]"):
        caller, _, right = text.partition(" -> ")
        callee, _, how = right[:-1].partition(" [")
        how, _, via = how.partition(": ")
        if via == "not resolvable statically":
            ev.update(what="unresolved", callee=callee, how=how)
        else:
            ev.update(callee=callee, how=how, via=via)
        ev["function"] = fn or caller
    elif what in ("store", "argument", "registration"):
        if sep and " = " in rest:  # "class_init: api field = function"
            api_field, _, callee = rest.partition(" = ")
            api, _, fld = api_field.partition(" ")
            ev.update(api=api, field=fld, callee=callee)
        else:  # "function stored for via" or "function"
            callee, _, via = text.partition(" stored for ")
            ev.update(callee=callee, via=via)
    elif what in ("assign", "call-arg", "case") and sep:
        use, _, name = rest.partition(" ")
        if use == what and not rest.endswith(")"):  # consumer: "fn: case NAME"
            ev.update(constant=name, side=CONSUMER)
        else:  # producer: "fn: NAME (assign target)"
            name, _, target = rest.rstrip(")").partition(" (")
            ev.update(constant=name, target=target.partition(" ")[2], side=PRODUCER)
    elif what in ("write", "read") and " " in text:
        ev["flag"] = text.rsplit(" ", 1)[1]
    elif what == "definition" and fn and text.startswith(fn):
        ev["signature"] = text[len(fn):]
    elif not what and not text:
        ev["what"] = "file"
    return ev
