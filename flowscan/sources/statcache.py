"""A checkout's stat cache: which blob id each file had when it last had this size, mtime, ctime and inode.

A plain directory has no commit to name its contents, so its listing (path, blob id) is what identifies
it, and hashing every file for that costs a read of the whole tree on every question (211 MB on QEMU).
Like git's own index, this cache remembers each file's stat beside its blob id: a file whose stat is
unchanged is not read again, so an unchanged checkout is listed from a walk alone and finds its index;
a touched or edited file is re-hashed, and only its facts are extracted again (facts are cached by blob).

Racily clean files (git's term): a file changed within the timestamp granularity of the moment it was
recorded can keep the recorded stat. So, as git does, an entry whose mtime or ctime is not safely older
than the walk that recorded it is written without its blob id ("smudged") and is hashed again next time,
and an entry is trusted only if it is older than the cache file itself.

One cache per checkout root (the walk always covers the whole tree; a scope only filters it), in
CACHE/checkouts/, written atomically with a checksum: a damaged or truncated cache is discarded (the
files are hashed again and the answers stay the same). A read older than a day marks its use in the
file's mtime (for `flowscan gc`): that only makes the entries older than the cache file, and a racy entry
was smudged when written, whatever the file's mtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from flowscan.fileio import atomic_write_bytes, mark_used

VERSION = 1
RACY_NS = 2_000_000_000  # timestamps this close to the recording walk are not trusted (FAT has 2 s)
Stat = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
SUFFIX = ".stat"
USED_NS = 86400 * 10**9  # a read marks the cache used (its mtime) when it was not marked for this long


def stat_key(st: os.stat_result) -> Stat:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def cache_file(cache_dir: Path, root: Path) -> Path:
    """Where the stat cache of the checkout at `root` lives."""
    name = hashlib.sha256(os.fsencode(str(root))).hexdigest()[:24]
    return checkouts_dir(cache_dir) / f"{name}{SUFFIX}"


def checkouts_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "checkouts"


@dataclass
class StatCache:
    """path -> (stat, blob id) of one checkout, as last recorded (only trusted entries are kept on load)."""

    path: Path
    root: str
    entries: dict[str, tuple[Stat, str]]
    discarded: str = ""  # why a cache on disk was not used ('' when it was, or there was none)

    @classmethod
    def load(cls, path: Path, root: Path) -> "StatCache":
        """The cache at `path`, or an empty one when there is none or it is damaged (with the reason)."""
        path = Path(path)
        try:
            raw = path.read_bytes()
            own_mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return cls(path, str(root), {})
        except OSError as exc:
            return cls(path, str(root), {}, discarded=f"unreadable ({exc.strerror})")
        if own_mtime < time.time_ns() - USED_NS:  # its use, for `flowscan gc` (see mark_used)
            mark_used(path, 0)
        try:
            head, _, body = raw.partition(b"\n")
            meta = json.loads(head)
            if (not isinstance(meta, dict) or meta.get("version") != VERSION or meta.get("root") != str(root)
                    or meta.get("blake2b") != hashlib.blake2b(body, digest_size=20).hexdigest()):
                raise ValueError("checksum, version or root differ")
            rows = json.loads(body)
            entries = {}
            for p, (size, mtime, ctime, ino, blob) in rows.items():
                # git's rule: an entry not older than the cache file may have changed unseen
                if blob and mtime < own_mtime and ctime < own_mtime:
                    entries[p] = ((size, mtime, ctime, ino), blob)
        except (ValueError, TypeError, AttributeError) as exc:
            return cls(path, str(root), {}, discarded=f"damaged ({exc})" if str(exc) else "damaged")
        return cls(path, str(root), entries)

    def blob(self, path: str, key: Stat) -> str:
        """The recorded blob id of `path` if its stat is still `key`, else ''."""
        known = self.entries.get(path)
        return known[1] if known is not None and known[0] == key else ""

    def save(self, entries: dict[str, tuple[Stat, str]], started_ns: int) -> None:
        """Record `entries` (taken by a walk that started at `started_ns`); racy ones without their blob."""
        rows = {p: [*key, "" if is_racy(key, started_ns) else blob] for p, (key, blob) in sorted(entries.items())}
        body = json.dumps(rows, separators=(",", ":")).encode()
        head = json.dumps({"version": VERSION, "root": self.root,
                           "blake2b": hashlib.blake2b(body, digest_size=20).hexdigest()}).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, head + b"\n" + body)
        self.entries = dict(entries)


def recorded_root(path: Path) -> str:
    """The checkout the cache at `path` is of ('' when its header does not read)."""
    try:
        with open(path, "rb") as fh:
            meta = json.loads(fh.readline(1 << 16))
        return meta["root"] if isinstance(meta, dict) and isinstance(meta.get("root"), str) else ""
    except (OSError, ValueError):
        return ""


def is_racy(key: Stat, started_ns: int) -> bool:
    """Was the file changed too close to the walk that took `key` for its stat to vouch for its bytes?"""
    return key[1] >= started_ns - RACY_NS or key[2] >= started_ns - RACY_NS


def now_ns() -> int:
    """The time a walk starts, on the clock file timestamps come from."""
    return time.time_ns()
