"""Three-valued logic for "is it built": True, False, or None (unknown: kept, as if built)."""

from __future__ import annotations

from typing import Iterable

Tri = "bool | None"


def all3(values: Iterable[bool | None]) -> bool | None:
    out: bool | None = True
    for v in values:
        if v is False:
            return False
        if v is None:
            out = None
    return out


def any3(values: Iterable[bool | None]) -> bool | None:
    out: bool | None = False
    for v in values:
        if v is True:
            return True
        if v is None:
            out = None
    return out


def not3(v: bool | None) -> bool | None:
    return None if v is None else not v
