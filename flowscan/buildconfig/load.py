"""From a configuration name (a profile in queries/build/) and an optional user file to a BuildConfig.

Profiles: `linux-arm64-defconfig` (Kbuild, the defconfig resolved with kconfiglib) and
`qemu-aarch64-softmmu-kvm` (meson source sets, accelerator and target symbols, default devices).
A user's file replaces the resolved values (a Linux .config) or is laid over the profile's (a QEMU
config-host.mak / config-devices.mak / KEY=y list). A tree without the profile's build files gets no
configuration (None) and a note: flowscan then behaves as it does without one.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from flowscan.buildconfig.model import BuildConfig
from flowscan.buildconfig.values import Values, parse_assignments
from flowscan.buildconfig import memo
from flowscan.errors import FlowscanError
from flowscan.resources import queries_dir
from flowscan.sources.buildfiles import BuildFiles


def profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted((queries_dir() / "build").glob("*.toml")) if p.stem != "kbuild"}


def profile(name: str) -> dict:
    known = profiles()
    if name not in known:
        raise FlowscanError(f"unknown build configuration '{name}' (known: {', '.join(known) or 'none'})")
    with open(known[name], "rb") as fh:
        return tomllib.load(fh)


def _patterns() -> dict:
    with open(queries_dir() / "build" / "kbuild.toml", "rb") as fh:
        return tomllib.load(fh)


def guess_profile(files: BuildFiles) -> str:
    """The default profile for a tree given only a user's file: meson.build -> QEMU, Kbuild -> Linux."""
    if files.has("meson.build"):
        return "qemu-aarch64-softmmu-kvm"
    if files.has("Kbuild") or files.has("Makefile"):
        return "linux-arm64-defconfig"
    return ""


def read_user_file(path: Path) -> dict[str, str]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise FlowscanError(f"cannot read configuration file {path}: {exc.strerror or exc}") from None
    return parse_assignments(text, str(path))


def for_tree(files: BuildFiles, name: str, user_file: Path | None = None,
             cache_dir: Path | None = None) -> tuple[BuildConfig | None, str]:
    """(the configuration, a one-line note for outputs). None when the tree has no build files of the
    profile's kind: every file then counts as built and #if conditions are not evaluated. Kept per
    commit in `cache_dir` (flowscan.buildconfig.memo)."""
    prof = profile(name)  # (an unknown name is an error before any memo is looked for)
    path = memo.memo_path(cache_dir, files.tree.commit, files.tree.label, name, user_file)
    return memo.through(path, lambda: _evaluate(files, name, prof, user_file, cache_dir))


def _evaluate(files: BuildFiles, name: str, prof: dict, user_file: Path | None,
              cache_dir: Path | None) -> tuple[BuildConfig | None, str]:
    # (the evaluators are imported here: a question answered from a memo, or without a configuration,
    # never needs them)
    from flowscan.buildconfig import kconfig
    from flowscan.buildconfig.kbuild import Kbuild
    from flowscan.buildconfig.meson import Meson
    from flowscan.buildconfig.minikconf import resolve_devices

    kind = prof.get("kind")
    title = prof.get("title", name)
    user = read_user_file(user_file) if user_file else None
    label = files.tree.label
    if kind == "kbuild":
        kb = Kbuild(files, Values(), prof.get("arch", ""), _patterns())
        if not kb.has_files:
            return None, f"{label}: no Kbuild files: every file counted as built, #if conditions not evaluated"
        if user is not None:
            values = {k: v for k, v in user.items() if v != "n"}
            note = f"{user_file} ({len(values)} symbols set)"
            title = f"{user_file}"
        else:
            if not (files.has("Kconfig") and files.has(prof["defconfig"])):
                return None, (f"{label}: no Kconfig or {prof['defconfig']}: every file counted as built, "
                              f"#if conditions not evaluated")
            values, note = kconfig.resolve(files, prof.get("arch", ""), prof["defconfig"],
                                           _patterns().get("kconfig_rewrite", []), cache_dir)
        kb.values = Values(values, complete_prefix="CONFIG_")
        cfg = BuildConfig(name=name, title=title, values=kb.values,
                          file_status=lambda p: (kb.file_status(p), False), notes=[note])
        return cfg, f"{title}: {note}"
    if kind == "meson":
        values = {k: str(v) for k, v in prof.get("values", {}).items()}
        notes = []
        if files.has(prof.get("devices", "")):
            devices, dnote = resolve_devices(files, prof)
            values.update(devices)
            notes.append(dnote)
        else:
            notes.append(f"no {prof.get('devices') or 'device configuration'}: device symbols unknown (kept)")
        if user is not None:
            values.update(user)
            notes.append(f"{user_file} laid over the profile ({len(user)} symbols)")
        vals = Values(values)
        ms = Meson(files, vals, prof)
        if not ms.has_files:
            return None, f"{label}: no meson.build files: every file counted as built, #if conditions not evaluated"
        cfg = BuildConfig(name=name, title=title, values=vals, file_status=ms.file_status, notes=notes)
        return cfg, f"{title}" + (f": {'; '.join(notes)}" if notes else "")
    raise FlowscanError(f"build configuration '{name}': unknown kind '{kind}' (expected kbuild or meson)")
