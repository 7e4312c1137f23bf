"""Locate the data files in `queries/`, both in a source checkout and in an installed wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def queries_dir() -> Path:
    here = Path(__file__).resolve().parent
    for cand in (here / "queries", here.parent / "queries"):
        if (cand / "c").is_dir():
            return cand
    raise RuntimeError(f"flowscan data directory 'queries' not found next to {here}")


def query_text(name: str) -> str:
    return (queries_dir() / "c" / name).read_text(encoding="utf-8")


@cache
def fixtures_dir() -> Path:
    """The bundled miniature Linux/QEMU trees (the embedded default of `flowscan trace`)."""
    here = Path(__file__).resolve().parent
    for cand in (here / "fixtures", here.parent / "fixtures"):
        if (cand / "linux").is_dir():
            return cand
    raise RuntimeError(f"flowscan bundled fixtures not found next to {here}")


@cache
def result_schema_path() -> Path:
    """docs/result-schema.json: the JSON schema of a saved result (validated before a result is read back)."""
    here = Path(__file__).resolve().parent
    for cand in (here / "docs", here.parent / "docs"):
        if (cand / "result-schema.json").is_file():
            return cand / "result-schema.json"
    raise RuntimeError(f"flowscan result schema not found next to {here}")
