"""What a scan did: its own module, so that a question answered from an index built earlier reports
counts without importing the builder (its pools and workers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ScanStats:
    files: int = 0  # files in scope
    parsed: int = 0  # extracted in this run
    reused: int = 0  # taken from the cache
    skipped: int = 0  # binary, too large, or the extractor failed on them
    seconds: float = 0.0
    indexed: bool = False  # answered from an existing index: nothing was read at all
    kept: int = 0  # an update of a checkout's index: files whose rows stayed as they were
