"""Read saved results: a trace result, a baseline, or a diff (which carries both results), of this schema
version or the previous one (flowscan.flow.upgrade).

A saved result is input like any other: a hand-edited baseline, a truncated download, a file of another
tool. Each trace result is validated against docs/result-schema.json (after upgrading an older version)
before it is turned into objects, so a wrong field is one line naming where it is, never a traceback
from deep in the code that trusted it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from flowscan.errors import FlowscanError
from flowscan.flow.results import DriftReport, FlowResult
from flowscan.flow.upgrade import upgrade
from flowscan.resources import result_schema_path


@cache
def _validator():
    """The result schema as a reader needs it: fields may be missing (older writers; the dataclasses give
    defaults, and one without a default fails to load with one line), `context` (what the report shows beside
    the hops, not read back) may hold anything."""
    import jsonschema

    schema = json.loads(result_schema_path().read_text(encoding="utf-8"))
    schema.setdefault("properties", {})["context"] = {}
    # Values are checked where the reader branches on them (a hop's status); elsewhere (what a piece of
    # evidence is, which side, a hop's kind) new words appear as flowscan learns new facts and are shown as they are.
    evidence = schema.get("$defs", {}).get("evidence", {}).get("properties", {})
    for name in ("what", "side"):
        evidence.get(name, {}).pop("enum", None)
    schema.get("$defs", {}).get("hop", {}).get("properties", {}).get("kind", {}).pop("enum", None)
    lenient = jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                           {"required": lambda _v, _req, _instance, _schema: None})
    return lenient(schema)


def _check(data, path: Path, where: str) -> None:
    """One line for the first thing wrong with a trace result at `where` ('' for the top level)."""
    import jsonschema

    try:
        err = jsonschema.exceptions.best_match(_validator().iter_errors(data))
    except RecursionError:
        raise FlowscanError(f"{path}: malformed flowscan result (nested too deeply)") from None
    if err is None:
        return
    at = "/".join([where, *map(str, err.absolute_path)]).strip("/") or "top level"
    message = " ".join(err.message.split())
    if len(message) > 160:
        message = message[:157] + "..."
    raise FlowscanError(f"{path}: malformed flowscan result: {at}: {message}")


def load_result_file(path: Path) -> tuple[FlowResult, DriftReport | None, FlowResult | None]:
    """-> (result, drift, old): drift and old are set when the file is a saved `flowscan diff --format json`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlowscanError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise FlowscanError(f"{path}: is a directory, not a flowscan result") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FlowscanError(f"{path}: not a flowscan result (invalid JSON: {exc})") from None
    except RecursionError:
        raise FlowscanError(f"{path}: not a flowscan result (JSON nested too deeply)") from None
    if not isinstance(data, dict) or data.get("schema_version") is None:
        raise FlowscanError(f"{path}: not a flowscan result (no schema_version)")
    try:
        data = upgrade(data)
    except FlowscanError as exc:  # a version this flowscan cannot read
        raise FlowscanError(f"{path}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        raise FlowscanError(f"{path}: malformed flowscan result ({type(exc).__name__}: {exc})"[:300]) from None
    if not isinstance(data, dict):
        raise FlowscanError(f"{path}: not a flowscan result")
    is_diff = "items" in data and "new" in data
    if not is_diff and "hops" not in data:
        raise FlowscanError(f"{path}: not a flowscan result (neither a trace nor a diff)")
    if is_diff:
        for side in ("old", "new"):
            _check(data.get(side), path, side)
        if not isinstance(data["items"], list) or not all(isinstance(i, dict) for i in data["items"]):
            raise FlowscanError(f"{path}: malformed flowscan result: items: must be a list of objects")
    else:
        _check(data, path, "")
    try:
        if is_diff:
            return FlowResult.from_json(data["new"]), DriftReport.from_json(data), FlowResult.from_json(data["old"])
        return FlowResult.from_json(data), None, None
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        raise FlowscanError(f"{path}: malformed flowscan result ({type(exc).__name__}: {exc})"[:300]) from None
