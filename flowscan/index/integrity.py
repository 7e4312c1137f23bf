"""Is a stored index the one that was built? A seal beside it says, so a damaged index is rebuilt, not read.

SQLite notices some damage (a torn page, a dropped table) only when a query reaches it, and none at all
in a flipped bit of a name. So when an index is complete its builder writes ``<index>.seal``: the blake2b
of the file and the file's size, mtime and inode. Opening checks the stat first (no read at all, the warm
path stays instant); only a file that changed since it was sealed is hashed again, and it is used only if
the hash still matches. An index without a seal (built before seals, or its builder was killed between
the two writes) gets SQLite's own ``quick_check`` once and is sealed if it passes. Damage that keeps
size, mtime and inode is not looked for; SQLite's errors at query time cover what it detects.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from pathlib import Path

from flowscan.fileio import atomic_write_text

SEAL_SUFFIX = ".seal"
_CHUNK = 1 << 20


def seal_path(index: Path) -> Path:
    return Path(str(index) + SEAL_SUFFIX)


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _record(path: Path) -> dict:
    return {"blake2b": digest(path), "stat": _stamp(os.stat(path))}


def seal(index: Path, coming: Path | None = None) -> None:
    """Record what the complete index at `index` is. `coming`: a complete index about to be moved onto
    `index` (os.replace keeps its size, mtime and inode): both are recorded, so whichever one a crash
    leaves there reads as sealed; settle() after the move forgets the old one."""
    index = Path(index)
    if coming is None:
        atomic_write_text(seal_path(index), json.dumps(_record(index)) + "\n")
        return
    records = [_record(coming)]
    old = _read_seal(index)
    try:
        stamp = _stamp(os.stat(index))
    except OSError:
        stamp = None
    if stamp is not None:  # (an old index sealed as it is needs no second read)
        known = [r for r in _records(old) if r.get("stat") == stamp] if old is not None else []
        records.append(known[0] if known else _record(index))
    data = {**records[0], "also": records[1:]}
    atomic_write_text(seal_path(index), json.dumps(data) + "\n")


def settle(index: Path) -> None:
    """After the move: keep only the record of the index that is there now (no read of it)."""
    data = _read_seal(index)
    stamp = _stamp(os.stat(index))
    now = [r for r in _records(data) if r.get("stat") == stamp] if data is not None else []
    if now:
        atomic_write_text(seal_path(index), json.dumps({"blake2b": now[0]["blake2b"], "stat": stamp}) + "\n")
    else:
        seal(index)


def _read_seal(index: Path) -> dict | None:
    try:
        data = json.loads(seal_path(index).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("blake2b"), str) or not isinstance(data.get("stat"), list):
        return None
    return data


def _records(data: dict) -> list[dict]:
    also = data.get("also", [])
    return [data, *(r for r in also if isinstance(r, dict))] if isinstance(also, list) else [data]


def unchanged(index: Path) -> bool:
    """The cheap test: sealed, and not written since (no read of the index)."""
    data = _read_seal(index)
    try:
        return data is not None and _stamp(os.stat(index)) in [r.get("stat") for r in _records(data)]
    except OSError:
        return False


def verify(index: Path, expected: set[tuple[str, str]]) -> str:
    """'' when the index is whole (it is then sealed as it is now), else what is wrong with it."""
    index = Path(index)
    data = _read_seal(index)
    if data is not None:
        if not unchanged(index) and digest(index) not in [r.get("blake2b") for r in _records(data)]:
            return "its contents changed since it was built"
    else:
        problem = quick_problem(index)
        if problem:
            return problem
    problem = schema_problem(index, expected)
    if problem:
        return problem
    if data is None or not unchanged(index):
        seal(index)
    return ""


def quick_problem(index: Path) -> str:
    """'' when SQLite's quick_check finds the database sound (it reads all of it)."""
    try:
        db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
        try:
            rows = [r[0] for r in db.execute("PRAGMA quick_check")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return f"not a readable database ({exc})"
    return "" if rows == ["ok"] else f"damaged ({rows[0][:100] if rows else 'no answer'})"


def schema_problem(index: Path, expected: set[tuple[str, str]]) -> str:
    """'' when every table and index the layout needs is there."""
    try:
        db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
        try:
            have = set(db.execute("SELECT type, name FROM sqlite_master"))
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return f"not a readable database ({exc})"
    missing = sorted(name for _kind, name in expected - have)
    return f"{', '.join(missing[:3])} missing" if missing else ""


def expected_objects(*scripts: str) -> set[tuple[str, str]]:
    """The (type, name) of every table and index the CREATE statements in `scripts` make."""
    return {(kind.lower(), name) for script in scripts
            for kind, name in re.findall(r"CREATE\s+(TABLE|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", script)}


def discard(index: Path) -> None:
    for path in (Path(index), seal_path(index)):
        try:
            os.unlink(path)
        except OSError:
            pass
