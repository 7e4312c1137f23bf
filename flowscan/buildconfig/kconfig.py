"""A Linux configuration resolved from a defconfig with Kconfig's defaults, by kconfiglib.

kconfiglib (PyPI) implements Kconfig in Python: it reads the tree's Kconfig files, applies the
defconfig's assignments and computes every other symbol from its defaults, `select`s and dependencies,
as `make ARCH=arm64 defconfig` does. The Kconfig files are written to a scratch directory first (a git
tree has no checkout), with the rewrites of queries/build/kbuild.toml: syntax newer than kconfiglib 14.1
(`modules`, `transitional`) and the toolchain probes, which are answered as if the target's toolchain
(GCC 12.2, binutils 2.40) supported every option, so no cross compiler is needed and every machine
gets the same configuration. The result is cached by the Kconfig files' blob ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from flowscan.errors import FlowscanError
from flowscan.fileio import atomic_write_text, mark_used
from flowscan.sources.buildfiles import BuildFiles

_KCONFIG = re.compile(r"(?:^|/)Kconfig[^/]*$")
CACHE_VERSION = "kc-1"


def _needed(path: str) -> bool:
    return bool(_KCONFIG.search(path)) or path == "scripts/Kconfig.include"


def _rewriter(rules: list[dict]):
    compiled = [(re.compile(r["file"]), re.compile(r["pattern"], re.M), r["replace"]) for r in rules]

    def rewrite(path: str, text: str) -> str:
        for file_re, pat, rep in compiled:
            if file_re.search(path):
                text = pat.sub(rep, text)
        return text
    return rewrite


@contextmanager
def _environ(values: dict[str, str]):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cache_key(files: BuildFiles, arch: str, defconfig: str, rules: list[dict]) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}\0{arch}\0{defconfig}\0{json.dumps(rules, sort_keys=True)}".encode())
    for p, e in sorted(files.entries.items()):
        if _needed(p) or p == defconfig:
            h.update(f"{p}\0{e.blob or ''}\n".encode())
    return h.hexdigest()[:32]


def resolve(files: BuildFiles, arch: str, defconfig: str, rules: list[dict],
            cache_dir: Path | None) -> tuple[dict[str, str], str]:
    """(CONFIG_ values that are not 'n', a note saying how they were obtained)."""
    if not files.has("Kconfig"):
        raise FlowscanError(f"{files.tree.label}: no top-level Kconfig file")
    if not files.has(defconfig):
        raise FlowscanError(f"{files.tree.label}: no {defconfig}")
    key = cache_key(files, arch, defconfig, rules) if all(e.blob for e in files.entries.values()) else ""
    path = cache_dir / "buildconfig" / f"{key}.json" if (cache_dir and key) else None
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text())
            mark_used(path)
            return data["values"], data["note"]
        except (OSError, ValueError, KeyError):
            pass
    try:
        import kconfiglib
    except ImportError:
        raise FlowscanError("kconfiglib is needed to resolve a defconfig (pip install kconfiglib), "
                            "or give a .config with --config-file") from None
    shm = Path("/dev/shm")  # (memory: ~1,800 small files written and removed)
    scratch = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="flowscan-kconfig-", dir=scratch) as tmp:
        root = Path(tmp)
        count = files.materialize(root, lambda p: _needed(p) or p == defconfig, _rewriter(rules))
        _scripts(files, root)
        env = {"srctree": str(root), "ARCH": arch, "SRCARCH": arch, "KERNELVERSION": "flowscan",
               "CC": "gcc", "LD": "ld", "HOSTCC": "gcc", "HOSTCXX": "g++", "RUSTC": "rustc",
               "BINDGEN": "bindgen", "CLANG_FLAGS": "", "CC_VERSION_TEXT": "gcc (flowscan) 12.2.0"}
        cwd = os.getcwd()
        try:
            with _environ(env):
                os.chdir(root)
                kc = kconfiglib.Kconfig("Kconfig", warn=False)
                kc.load_config(defconfig)
        except (kconfiglib.KconfigError, OSError, UnicodeDecodeError) as exc:
            raise FlowscanError(f"{files.tree.label}: cannot resolve {defconfig} with kconfiglib: "
                                f"{str(exc).splitlines()[0][:200]}") from None
        finally:
            os.chdir(cwd)
        values = {f"CONFIG_{s.name}": s.str_value for s in kc.unique_defined_syms
                  if s.str_value not in ("n", "") and s.orig_type}
        missed = _not_honoured(kc, root / defconfig)
    note = (f"{defconfig} resolved with kconfiglib from {count} Kconfig files: {len(values)} symbols set"
            + (f"; {len(missed)} defconfig lines not honoured ({', '.join(missed[:5])}"
               f"{', ...' if len(missed) > 5 else ''})" if missed else ""))
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"values": values, "note": note}, sort_keys=True) + "\n")
        except OSError:
            pass
    return values, note


_SCRIPT = re.compile(r"^scripts/[^/]+\.sh$")


def _scripts(files: BuildFiles, root: Path) -> None:
    """The shell scripts Kconfig runs through $(shell,...) (pahole-version.sh, ...), executable."""
    for entry, data in files.tree.read(files.tree.named(_SCRIPT)):
        out = root / entry.path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        out.chmod(0o755)


def _not_honoured(kc, defconfig: Path) -> list[str]:
    """defconfig assignments whose symbol came out different (a dependency the defconfig cannot meet)."""
    out = []
    for line in defconfig.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$", line.strip())
        m_off = re.match(r"^# CONFIG_([A-Za-z0-9_]+) is not set$", line.strip())
        name, want = (m.group(1), m.group(2).strip('"')) if m else (m_off.group(1), "n") if m_off else ("", "")
        if not name:
            continue
        sym = kc.syms.get(name)
        if sym is None or sym.str_value != want:
            out.append(name)
    return sorted(out)
