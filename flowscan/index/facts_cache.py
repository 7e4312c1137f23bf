"""Facts cache: the JSON of one file's FileFacts, keyed by (git blob id, EXTRACTOR_VERSION).

Layout: ``<root>/<first 2 hex of blob>/<rest of blob>``; one file per blob. Each entry is a single
header line followed by the body, the compact JSON compressed with zlib (level 1: ~10x smaller on real
facts, 3 GB -> 0.3 GB for one and a half Linux trees, for a few percent of the parse time)::

    FSF2 <extractor version> <blob id> <body length> <blake2b-128 of body>\\n<zlib(json)>

An entry whose header does not match (other magic, other extractor version, other blob id, wrong length,
wrong checksum: truncated, overwritten, copied from elsewhere) is deleted and reported as a miss, so it is
rebuilt and never trusted. Writes go to a temporary file in the same directory and are moved into place
with ``os.replace``: readers see a whole entry or none, and two processes writing the same key at once
both succeed (last one wins, with identical content). No fsync: a torn write after a crash fails the
length/checksum test and is rebuilt, which is cheaper than syncing 60k small files.

A writer killed between the two steps leaves its temporary file (``.<name>.<pid>.<random>.tmp``) behind.
`sweep_temporary` removes those whose writer is gone (no such process) or that are older than
`TEMP_AGE` (a live writer holds one for milliseconds); it walks the whole cache, so a run does it at most
once per `SWEEP_EVERY` (the time is kept in ``<root>/.swept``).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
import zlib
from pathlib import Path

from flowscan.extract.facts import EXTRACTOR_VERSION

MAGIC = "FSF2"
_BLOB = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_TEMP = re.compile(r"\.[0-9a-f]{38,62}\.(\d+)\.[0-9a-f]+\.tmp")
TEMP_AGE = 300.0  # seconds after which a temporary file is abandoned whoever wrote it
DEAD_AGE = 5.0  # ... or after this when its writer's process is gone
SWEEP_EVERY = 3600.0
SWEPT = ".swept"


def facts_dir(cache_dir: Path) -> Path:
    """The facts cache inside flowscan's cache directory."""
    return Path(cache_dir) / "facts"


def _digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


class FactsCache:
    """get/put FileFacts JSON text by blob id; counters: hits, misses, corrupt, writes."""

    def __init__(self, root: Path, version: str = EXTRACTOR_VERSION):
        if not version or any(c.isspace() for c in version):
            raise ValueError(f"extractor version must be one word: {version!r}")
        self.root = Path(root)
        self.version = version
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self.writes = 0

    @property
    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt, "writes": self.writes}

    def path(self, blob: str) -> Path:
        if not isinstance(blob, str) or not _BLOB.fullmatch(blob):
            raise ValueError(f"not a git blob id: {blob!r}")
        return self.root / blob[:2] / blob[2:]

    def _header(self, blob: str, body: bytes) -> bytes:
        return f"{MAGIC} {self.version} {blob} {len(body)} {_digest(body)}\n".encode("ascii")

    def get(self, blob: str) -> str | None:
        """The cached JSON text, or None (absent, or found bad and deleted)."""
        path = self.path(blob)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError:
            self.misses += 1
            return None
        text = self._check(blob, raw)
        if text is None:
            self.corrupt += 1
            self.misses += 1
            self.drop(blob)
            return None
        self.hits += 1
        return text

    def _check(self, blob: str, raw: bytes) -> str | None:
        end = raw.find(b"\n", 0, 256)
        if end < 0:
            return None
        parts = raw[:end].split(b" ")
        body = raw[end + 1:]
        if len(parts) != 5:
            return None
        magic, version, key, length, digest = (p.decode("ascii", "replace") for p in parts)
        if magic != MAGIC or version != self.version or key != blob:
            return None
        if not length.isdigit() or int(length) != len(body) or digest != _digest(body):
            return None
        try:
            return zlib.decompress(body).decode("utf-8")
        except (zlib.error, UnicodeDecodeError):
            return None

    def put(self, blob: str, text: str) -> None:
        """Store atomically: a temporary file in the same directory, then os.replace."""
        path = self.path(blob)
        body = zlib.compress(text.encode("utf-8"), 1)
        data = self._header(blob, body) + body
        tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fh = open(tmp, "xb")
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(tmp, "xb")
        try:
            with fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
        self.writes += 1

    def drop(self, blob: str) -> None:
        try:
            self.path(blob).unlink()
        except OSError:
            pass


def cache_info(root: Path) -> dict:
    """Entry count and bytes of a facts cache (for `flowscan sources`)."""
    root = Path(root)
    entries = 0
    size = 0
    if root.is_dir():
        with os.scandir(root) as shards:
            for shard in shards:
                if not shard.is_dir(follow_symlinks=False) or len(shard.name) != 2:
                    continue
                with os.scandir(shard.path) as it:
                    for ent in it:
                        if ent.name.startswith(".") or not ent.is_file(follow_symlinks=False):
                            continue
                        entries += 1
                        size += ent.stat(follow_symlinks=False).st_size
    return {"path": str(root), "entries": entries, "bytes": size}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def sweep_temporary(root: Path, force: bool = False, now: float | None = None) -> int:
    """Remove the temporary files of killed writers (see the module's docstring); how many. Without
    `force`, only when the last sweep is older than SWEEP_EVERY."""
    root = Path(root)
    now = time.time() if now is None else now
    stamp = root / SWEPT
    if not force:
        try:
            if now - stamp.stat().st_mtime < SWEEP_EVERY:
                return 0
        except FileNotFoundError:
            pass
        except OSError:
            return 0
    removed = 0
    try:
        shards = [e.path for e in os.scandir(root) if len(e.name) == 2 and e.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    for shard in shards:
        try:
            names = [e for e in os.scandir(shard) if e.name.startswith(".") and e.name.endswith(".tmp")]
        except OSError:
            continue
        for ent in names:
            m = _TEMP.fullmatch(ent.name)
            if m is None or not ent.is_file(follow_symlinks=False):
                continue
            try:
                age = now - ent.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if age > TEMP_AGE or (age > DEAD_AGE and not _alive(int(m.group(1)))):
                try:
                    os.unlink(ent.path)
                    removed += 1
                except OSError:
                    pass
    try:
        stamp.touch()
        os.utime(stamp, (now, now))
    except OSError:
        pass
    return removed
