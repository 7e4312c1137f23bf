"""Read saved results: a trace result, a baseline, or a diff (which carries both results), of this schema
version or the previous one (flowscan.flow.upgrade)."""

from __future__ import annotations

import json
from pathlib import Path

from flowscan.errors import FlowscanError
from flowscan.flow.results import DriftReport, FlowResult
from flowscan.flow.upgrade import upgrade


def load_result_file(path: Path) -> tuple[FlowResult, DriftReport | None, FlowResult | None]:
    """-> (result, drift, old): drift and old are set when the file is a saved `flowscan diff --format json`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FlowscanError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FlowscanError(f"{path}: not a flowscan result (invalid JSON: {exc})") from None
    if not isinstance(data, dict) or data.get("schema_version") is None:
        raise FlowscanError(f"{path}: not a flowscan result (no schema_version)")
    try:
        data = upgrade(data)
        if "items" in data and "new" in data:
            return FlowResult.from_json(data["new"]), DriftReport.from_json(data), FlowResult.from_json(data["old"])
        if "hops" in data:
            return FlowResult.from_json(data), None, None
    except FlowscanError as exc:  # a version this flowscan cannot read
        raise FlowscanError(f"{path}: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise FlowscanError(f"{path}: malformed flowscan result ({exc})") from None
    raise FlowscanError(f"{path}: not a flowscan result (neither a trace nor a diff)")
