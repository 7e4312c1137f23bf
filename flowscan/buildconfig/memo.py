"""A commit's evaluated build configuration, kept on disk so that a warm question does not evaluate it again.

Evaluating a configuration lists the tree's build files, parses hundreds of Makefiles or meson.build
files and resolves the device Kconfig: 0.5-0.9 s of a 1.1 s warm trace. Its answers are a function of
the commit, the profile, the user's file and this package's code, so they are kept per such key in
CACHE/buildconfig/memo-KEY.json: the values, the note, and each file's status as far as a run asked for
it. A status not recorded yet is computed by the real evaluator (built only then) and written back when
the process ends. A damaged or foreign memo is ignored (the configuration is evaluated as without one).
A plain directory has no commit to key by: its configuration is evaluated on every run.
"""

from __future__ import annotations

import atexit
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flowscan.buildconfig.model import BuildConfig
from flowscan.buildconfig.values import Values
from flowscan.fileio import atomic_write_text, mark_used
from flowscan.resources import queries_dir

VERSION = "bm-1"
Status = tuple[bool | None, bool]


def _code_digest() -> str:
    """This package's code and the build profiles: a change to either makes every memo stale."""
    h = hashlib.sha256(VERSION.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")) + sorted((queries_dir() / "build").glob("*.toml")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def memo_path(cache_dir: Path | None, commit: str, label: str, name: str,
              user_file: Path | None) -> Path | None:
    """Where the memo of this commit and configuration lives (None: nothing to key it by). The tree's
    label is part of the key: the notes name it."""
    if cache_dir is None or not commit:
        return None
    h = hashlib.sha256(f"{_code_digest()}\0{commit}\0{label}\0{name}\0".encode())
    if user_file is not None:
        try:
            h.update(Path(user_file).read_bytes())
        except OSError:
            return None  # (for_tree reports the unreadable file)
    return Path(cache_dir) / "buildconfig" / f"memo-{h.hexdigest()[:32]}.json"


@dataclass
class Memo:
    """What a memo file holds: the configuration's outcome and the file statuses known so far."""

    path: Path
    outcome: dict  # {"none": note} or {"name", "title", "notes", "note", "values", "prefix", "unset"}
    statuses: dict[str, Status] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, path: Path) -> "Memo | None":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != VERSION or not isinstance(data.get("outcome"), dict):
                return None
            statuses = {p: (s[0], bool(s[1])) for p, s in data.get("statuses", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError, IndexError, KeyError):
            return None
        mark_used(path)
        return cls(path, data["outcome"], statuses)

    def save(self) -> None:
        """Write back, merged with what a concurrent run wrote meanwhile (best effort: it is a cache)."""
        if not self.dirty or not self.path.parent.parent.is_dir():  # (the cache itself is gone: keep it so)
            return
        on_disk = Memo.load(self.path)
        if on_disk is not None and on_disk.outcome == self.outcome:
            self.statuses = {**on_disk.statuses, **self.statuses}
        text = json.dumps({"version": VERSION, "outcome": self.outcome,
                           "statuses": {p: list(s) for p, s in sorted(self.statuses.items())}},
                          separators=(",", ":"))
        try:
            self.path.parent.mkdir(exist_ok=True)
            atomic_write_text(self.path, text)
            self.dirty = False
        except OSError:
            pass


def recorded(cfg: BuildConfig | None, note: str) -> dict:
    """The outcome of an evaluation, as a memo keeps it."""
    if cfg is None:
        return {"none": note}
    return {"name": cfg.name, "title": cfg.title, "notes": list(cfg.notes), "note": note,
            "values": cfg.values.values, "prefix": cfg.values.complete_prefix,
            "unset": sorted(cfg.values.known_unset)}


def remembered(memo: Memo, evaluate: Callable[[], tuple[BuildConfig | None, str]]
               ) -> tuple[BuildConfig | None, str]:
    """The configuration from the memo; a file status it lacks is asked of `evaluate()`'s configuration
    (evaluated once, on the first such miss) and kept for the next run."""
    out = memo.outcome
    if "none" in out:
        return None, out["none"]
    real: list[BuildConfig | None] = []

    def file_status(path: str) -> Status:
        hit = memo.statuses.get(path)
        if hit is None:
            if not real:
                real.append(evaluate()[0])
            cfg = real[0]
            hit = (None, False) if cfg is None or cfg.file_status is None else cfg.file_status(path)
            memo.statuses[path] = hit
            if not memo.dirty:
                memo.dirty = True
                atexit.register(memo.save)
        return hit

    values = Values(dict(out["values"]), complete_prefix=out["prefix"], known_unset=frozenset(out["unset"]))
    return BuildConfig(name=out["name"], title=out["title"], values=values, file_status=file_status,
                       notes=list(out["notes"])), out["note"]


def through(path: Path | None, evaluate: Callable[[], tuple[BuildConfig | None, str]]
            ) -> tuple[BuildConfig | None, str]:
    """`evaluate()`, or its memo at `path` when there is one (a new memo is started otherwise)."""
    if path is None:
        return evaluate()
    memo = Memo.load(path)
    if memo is None:
        cfg, note = evaluate()
        memo = Memo(path, recorded(cfg, note), dirty=True)
        atexit.register(memo.save)
        if cfg is None:
            return cfg, note
        statuses, inner = memo.statuses, cfg.file_status

        def file_status(p: str) -> Status:
            hit = statuses.get(p)
            if hit is None:
                hit = (None, False) if inner is None else inner(p)
                statuses[p] = hit
            return hit
        cfg.file_status = file_status
        return cfg, note
    return remembered(memo, evaluate)
