"""Links to source lines: each role's URL template filled with a path, a line and the tree's ref or commit."""

from __future__ import annotations

import re
from typing import Iterable

from flowscan.flow.results import Evidence, SourceInfo

_URL_KEYS = re.compile(r"\{(path|line|ref|commit)\}")


def source_url(template: str, path: str, line: int = 0, ref: str = "", commit: str = "") -> str:
    """Fill a URL template such as `https://host/tree/{path}?h={ref}#n{line}` (keys path, line, ref, commit)."""
    if not template or not path:
        return ""
    values = {"path": path, "line": str(line or 1), "ref": ref or commit, "commit": commit or ref}
    return _URL_KEYS.sub(lambda m: values[m.group(1)], template)


class SourceLinks:
    """role -> link to a line of that role's tree: the given templates (flowscan.toml) win over the
    template a result was saved with; the ref and commit come from the result's sources."""

    def __init__(self, sources: Iterable[SourceInfo], templates: dict[str, str] | None = None):
        self._roles: dict[str, tuple[str, str, str]] = {}
        for s in sources:
            self._roles[s.role] = ((templates or {}).get(s.role) or s.url_template or "", s.ref, s.commit)
        for role, tmpl in sorted((templates or {}).items()):
            self._roles.setdefault(role, (tmpl, "", ""))

    def url(self, role: str, path: str, line: int) -> str:
        tmpl, ref, commit = self._roles.get(role, ("", "", ""))
        return source_url(tmpl, path, line, ref, commit)

    def of(self, ev: Evidence | None) -> str:
        return self.url(ev.role, ev.path, ev.line) if ev is not None else ""
