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

The cache is one walk's snapshot, in walk order: the paths, their stat keys and blob ids, and the digest
of the whole listing. When every entry is trusted and the next walk finds the same paths with the same
keys (two list comparisons, no work per file), the listing and its digest are the recorded ones: a warm
question on whole Linux (60,000 C files) spends no Python per file beyond the walk's own stat. It is
binary for the same reason (JSON of 60,000 entries took 70 ms to load, this 10 ms): paths joined by NUL,
keys as little-endian int64 (text when one does not fit), blob ids as 40 hex digits each ('-' x 40:
smudged). A read older than a day marks its use in the file's mtime (for `flowscan gc`): that only
makes the entries older than the cache file, and a racy entry was smudged when written, whatever the
file's mtime. One cache per checkout root (the walk always covers the whole tree; a scope only filters it),
in CACHE/checkouts/, written atomically with a checksum: a damaged or truncated cache is discarded (the
files are hashed again and the answers stay the same).
"""

from __future__ import annotations

import array
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from flowscan.fileio import atomic_write_bytes, mark_used

VERSION = 2
RACY_NS = 2_000_000_000  # timestamps this close to the recording walk are not trusted (FAT has 2 s)
Stat = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode
SMUDGED = "-" * 40
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


class Snapshot:
    """The C files of one walk, in walk order: `keys` holds 4 ints per path (Stat), `blobs` 40 hex digits
    per path ('-' x 40 when smudged: hashed again); `digest` is the whole listing's (flowscan.sources.tree.
    listing_digest; '' when not known). A loaded one keeps its paths and keys as recorded (NUL-joined
    bytes, int64 array) until needed: comparing a walk with them is then two memory comparisons."""

    def __init__(self, paths: list[str] | None, keys: Sequence[int], blobs: str, digest: str = "",
                 packed: bytes | None = None):
        self._paths = paths
        self.packed = packed  # the paths as recorded (when `paths` is None)
        self.keys = keys
        self.blobs = blobs
        self.digest = digest

    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            packed = self.packed or b""
            self._paths = packed.decode("utf-8", "surrogateescape").split("\0") if packed else []
        return self._paths

    def blob(self, i: int) -> str:
        b = self.blobs[40 * i:40 * i + 40]
        return "" if b == SMUDGED else b

    def key(self, i: int) -> Stat:
        k = self.keys
        return (k[4 * i], k[4 * i + 1], k[4 * i + 2], k[4 * i + 3])

    def same_walk(self, paths: list[str], keys: list[int]) -> bool:
        """Did a walk find exactly these files with exactly these stats, in this order?"""
        if isinstance(self.keys, array.array):
            try:
                if array.array("q", keys) != self.keys:
                    return False
            except OverflowError:
                return False
        elif self.keys != keys:
            return False
        if self._paths is None:
            if "\0".join(paths).encode("utf-8", "surrogateescape") != self.packed:
                return False
            self._paths = paths  # (equal: no decoding needed)
            return True
        return self._paths == paths

    def entries(self) -> dict[str, tuple[Stat, str]]:
        return {p: (self.key(i), self.blob(i)) for i, p in enumerate(self.paths)}


@dataclass
class StatCache:
    """The stat cache of one checkout, as last recorded (`snapshot`; None when there is none). Entries
    that cannot be trusted (smudged, or not older than the cache file) come without their blob id."""

    path: Path
    root: str
    snapshot: Snapshot | None = None
    discarded: str = ""  # why a cache on disk was not used ('' when it was, or there was none)

    @classmethod
    def load(cls, path: Path, root: Path) -> "StatCache":
        """The cache at `path`, or an empty one when there is none or it is damaged (with the reason)."""
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
                own_mtime = os.fstat(fh.fileno()).st_mtime_ns
        except FileNotFoundError:
            return cls(path, str(root))
        except OSError as exc:
            return cls(path, str(root), discarded=f"unreadable ({exc.strerror})")
        if own_mtime < time.time_ns() - USED_NS:  # its use, for `flowscan gc` (see mark_used)
            mark_used(path, 0)
        try:
            head, _, body = raw.partition(b"\n")
            meta = json.loads(head)
            if isinstance(meta, dict) and isinstance(meta.get("version"), int) and meta["version"] < VERSION:
                return cls(path, str(root))  # an older flowscan's: rewritten after this walk (no warning)
            if (not isinstance(meta, dict) or meta.get("version") != VERSION or meta.get("root") != str(root)
                    or meta.get("blake2b") != hashlib.blake2b(body, digest_size=20).hexdigest()):
                raise ValueError("checksum, version or root differ")
            n, (a, b) = meta["count"], meta["sizes"]
            packed = body[:a]
            keys: Sequence[int]
            if meta["keys"] == "q":
                keys = array.array("q")
                keys.frombytes(body[a:a + b])
                if sys.byteorder != "little":
                    keys.byteswap()
            else:
                keys = [int(v) for v in body[a:a + b].split()]
            blobs = body[a + b:].decode("ascii")
            count = packed.count(b"\0") + 1 if packed else 0
            if count != n or len(keys) != 4 * n or len(blobs) != 40 * n:
                raise ValueError("lengths differ")
            snap = Snapshot(None, keys, blobs, str(meta["digest"]), packed=packed)
            # git's rule: an entry not older than the cache file may have changed unseen
            if meta["smudged"] or meta["newest"] >= own_mtime:
                snap.blobs = "".join(
                    SMUDGED if keys[4 * i + 1] >= own_mtime or keys[4 * i + 2] >= own_mtime
                    else blobs[40 * i:40 * i + 40] for i in range(n))
                snap.digest = ""
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
            return cls(path, str(root), discarded=f"damaged ({exc})" if str(exc) else "damaged")
        return cls(path, str(root), snap)

    def save(self, entries: dict[str, tuple[Stat, str]], started_ns: int, digest: str = "") -> None:
        """Record `entries` (path -> (stat, blob id or ''), in walk order), taken by a walk that started
        at `started_ns`; `digest`: the whole listing's."""
        keys = [v for key, _ in entries.values() for v in key]
        self.write(Snapshot(list(entries), keys, "".join(b or SMUDGED for _, b in entries.values()), digest),
                   started_ns)

    def write(self, snap: Snapshot, started_ns: int) -> None:
        """Record the snapshot of a walk that started at `started_ns`; racy entries without their blob."""
        n, keys = len(snap.paths), snap.keys
        limit = started_ns - RACY_NS
        blobs = snap.blobs
        racy = [i for i in range(n) if keys[4 * i + 1] >= limit or keys[4 * i + 2] >= limit]
        if racy:
            chunks = [blobs[40 * i:40 * i + 40] for i in range(n)]
            for i in racy:
                chunks[i] = SMUDGED
            blobs = "".join(chunks)
        packed = snap.packed if snap.packed is not None else "\0".join(snap.paths).encode("utf-8", "surrogateescape")
        try:
            arr = array.array("q", keys)
            if sys.byteorder != "little":
                arr.byteswap()
            kind, kbytes = "q", arr.tobytes()
        except OverflowError:  # (an inode number past 2**63: rare filesystems)
            kind, kbytes = "text", " ".join(map(str, keys)).encode()
        body = packed + kbytes + blobs.encode("ascii")
        newest = max(max(keys[1::4]), max(keys[2::4])) if n else 0
        head = json.dumps({"version": VERSION, "root": self.root, "count": n,
                           "sizes": [len(packed), len(kbytes)], "keys": kind, "digest": snap.digest,
                           "smudged": blobs.count(SMUDGED), "newest": newest,
                           "blake2b": hashlib.blake2b(body, digest_size=20).hexdigest()}).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, head + b"\n" + body)


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
