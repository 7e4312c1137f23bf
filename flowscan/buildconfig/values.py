"""Configuration values: `CONFIG_X=y` files (.config, config-host.mak, config-devices.mak, KEY=y lists),
looked up three-valued.

A resolved Linux .config is complete for its prefix (`CONFIG_`): a symbol it does not set is off. A
QEMU configuration names only what flowscan knows (the accelerators, the target, the devices it
resolved); any other name is unknown, and conditions on it are kept, not dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flowscan.errors import FlowscanError

_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[:?]?=\s*(.*?)\s*$")
_NOT_SET = re.compile(r"^#\s*([A-Za-z_][A-Za-z0-9_]*) is not set\s*$")


def parse_assignments(text: str, where: str = "") -> dict[str, str]:
    """KEY=VALUE lines (`# KEY is not set` = n; other comments and blank lines skipped; quotes kept off)."""
    out: dict[str, str] = {}
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        m = _NOT_SET.match(line)
        if m:
            out[m.group(1)] = "n"
            continue
        if line.startswith("#") or line.startswith("include "):
            continue
        m = _LINE.match(line)
        if not m:
            raise FlowscanError(f"{where or 'configuration'}:{no}: not a KEY=VALUE line: {line[:60]}")
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out[m.group(1)] = value
    return out


@dataclass
class Values:
    """Symbol values ('y', 'm', 'n', a number or a string) with the prefix they are complete for."""

    values: dict[str, str] = field(default_factory=dict)
    complete_prefix: str = ""  # names with this prefix that are not in `values` are 'n'
    known_unset: frozenset[str] = frozenset()  # names known to be undefined (CONFIG_USER_ONLY in softmmu)

    def get(self, name: str) -> str | None:
        """The value, 'n' when known to be off, None when unknown."""
        v = self.values.get(name)
        if v is not None:
            return v
        if name in self.known_unset or (self.complete_prefix and name.startswith(self.complete_prefix)):
            return "n"
        return None

    # For #if: what the generated header defines (autoconf.h: X=y -> `#define X 1`, X=m -> `X_MODULE 1`).
    def defined(self, name: str) -> bool | None:
        if name.endswith("_MODULE"):
            base = self.get(name[: -len("_MODULE")])
            if base is not None:
                return base == "m"
        v = self.get(name)
        if v is None:
            return None
        return v not in ("n", "m", "")

    def value(self, name: str) -> int | None:
        d = self.defined(name)
        if d is None:
            return None
        if not d:
            return 0
        v = self.values.get(name, "y")
        if v == "y":
            return 1
        try:
            return int(v, 0)
        except ValueError:
            return 1  # a string value: defined (nonzero for #ifdef-style tests)
