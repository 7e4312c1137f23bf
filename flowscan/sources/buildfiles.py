"""The build configuration files of a tree: Kbuild/Makefile, Kconfig, meson.build and QEMU's .mak files.

Listed once per tree (one `ls-tree`), read on demand and kept (a partial clone fetches every build file's
blob in one request at the first read: evaluating a configuration reads hundreds of them, one by one);
`materialize` writes a chosen subset to a directory for tools that read files from disk (kconfiglib).
Evaluating them is flowscan.buildconfig's job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable

from flowscan.sources.refs import FileEntry
from flowscan.sources.tree import Tree

BUILD_FILE = re.compile(r"(?:^|/)(?:Makefile|Kbuild|meson\.build|Kconfig[^/]*|[^/]+\.mak|defconfig)$")


class BuildFiles:
    """Build configuration files of one tree (`paths`), with their text on demand."""

    def __init__(self, tree: Tree):
        self.tree = tree
        self._entries: dict[str, FileEntry] | None = None
        self._text: dict[str, str | None] = {}
        self._fetched = False

    @property
    def entries(self) -> dict[str, FileEntry]:
        if self._entries is None:
            self._entries = {e.path: e for e in self.tree.named(BUILD_FILE)}
        return self._entries

    def has(self, path: str) -> bool:
        return path in self.entries

    def text(self, path: str) -> str | None:
        """The file's text, or None when the tree has no such build file."""
        if path not in self._text:
            if path not in self.entries:
                self._text[path] = None
            else:
                if not self._fetched:
                    self.tree.prefetch(self.entries.values())
                    self._fetched = True
                (_entry, data), = self.tree.read([self.entries[path]])
                self._text[path] = data.decode("utf-8", "replace")
        return self._text[path]

    def materialize(self, dest: Path, keep: Callable[[str], bool],
                    rewrite: Callable[[str, str], str] = lambda path, text: text) -> int:
        """Write the build files for which `keep(path)` holds under `dest` (text passed through
        `rewrite`); the number written."""
        chosen = [e for p, e in self.entries.items() if keep(p)]
        written = 0
        for entry, data in self._read(chosen):
            out = dest / entry.path
            out.parent.mkdir(parents=True, exist_ok=True)
            text = data.decode("utf-8", "replace")
            self._text.setdefault(entry.path, text)
            out.write_text(rewrite(entry.path, text), encoding="utf-8")
            written += 1
        return written

    def _read(self, entries: Iterable[FileEntry]):
        # The listing already has every blob id: one bulk read, not an ls-tree and a read per file.
        yield from self.tree.read(list(entries))
