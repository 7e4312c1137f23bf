"""The colours every picture of a flow shares (the diagram and the HTML page): by hop status, by drift class."""

from __future__ import annotations

from flowscan.flow.results import DriftItem, MISSING, SKIPPED, UNVERIFIABLE, VERIFIED

# status -> (line colour, fill colour)
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    VERIFIED: ("#2e7d32", "#e8f5e9"),
    MISSING: ("#c62828", "#ffebee"),
    UNVERIFIABLE: ("#757575", "#eeeeee"),
    SKIPPED: ("#b08900", "#fff8c4"),
}
STATUS_RANK = {VERIFIED: 0, SKIPPED: 1, UNVERIFIABLE: 2, MISSING: 3}  # which status colours a shared edge

# drift class -> (line colour, fill colour)
DRIFT_COLOURS: dict[str, tuple[str, str]] = {
    "broken": ("#c62828", "#ffebee"),
    "renamed": ("#1565c0", "#e3f2fd"),
    "moved": ("#6a1b9a", "#f3e5f5"),
    "signature-changed": ("#ef6c00", "#fff3e0"),
    "registration-api-changed": ("#ad1457", "#fce4ec"),
    "registration-changed": ("#ad1457", "#fce4ec"),
    "path-changed": ("#00838f", "#e0f7fa"),
    "calls-added": ("#5d4037", "#efebe9"),
    "calls-removed": ("#5d4037", "#efebe9"),
    "newly-verified": ("#2e7d32", "#e8f5e9"),
}
SEVERITY_COLOURS = {"broken": ("#c62828", "#ffebee"), "changed": ("#ef6c00", "#fff3e0"),
                    "info": ("#1565c0", "#e3f2fd")}
UNCHANGED = ("#9e9e9e", "#ffffff")
PLAIN = ("#37474f", "#ffffff")  # nodes that are no hop's target (roots)
ROLE_FILLS = {"guest": "#f4f8fd", "host": "#fbf6ee", "vmm": "#f3faf4"}


def drift_colour(it: DriftItem) -> tuple[str, str]:
    """Colour of a drift item: its class's, except that anything of severity broken is drawn as broken."""
    if it.severity == "broken":
        return DRIFT_COLOURS["broken"]
    return DRIFT_COLOURS.get(it.kind) or SEVERITY_COLOURS.get(it.severity, UNCHANGED)
