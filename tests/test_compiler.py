"""flowscan's direct callees against the compiler's, on the reboot-path objects of Linux v6.12.8 (arm64 defconfig).

gcc's `-fcallgraph-info` writes, per object, the functions it emitted and the calls each makes after
preprocessing (macros expanded) and after inlining `__always_inline` bodies (with every other inlining
turned off, so a `static inline` function stays a call). `flowscan callees --direct-only` must find at
least 95% of those calls; a macro may be shown as a callee only where no function stands behind it; and
the `#if` branches flowscan records around the objects' functions must agree with what was compiled.

Needs the Linux tree (../shared/realtrees/get-real-trees), Debian's `gcc-aarch64-linux-gnu`, make, bc,
bison, flex and libssl-dev (.ci/run installs them). The build output is cached by commit, compiler and
flags under $FLOWSCAN_KBUILD_CACHE (default: $XDG_CACHE_HOME/flowscan-kbuild), so only the first run
builds (about 30 s for `make defconfig prepare` and the twelve objects on two cores).

Run: `FLOWSCAN_REQUIRE_REALTREES=1 pytest -m compiler -s` (with -s, the figures and differences are printed).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from flowscan.extract.parse import extract_file
from flowscan.sources.refs import Source
from flowscan.workspace import load

pytestmark = pytest.mark.compiler

TREES = Path(os.environ.get("FLOWSCAN_REALTREES",
                            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flowscan-realtrees" / "git"))
LINUX = TREES / "linux"
TAG = "v6.12.8"
CROSS = "aarch64-linux-gnu-"
OBJECTS = ("kernel/reboot.o", "drivers/firmware/psci/psci.o", "arch/arm64/kernel/process.o",
           "arch/arm64/kernel/psci.o", "arch/arm64/kernel/smp.o", "arch/arm64/kvm/handle_exit.o",
           "arch/arm64/kvm/hypercalls.o", "arch/arm64/kvm/psci.o", "arch/arm64/kvm/arm.o",
           "arch/arm64/kvm/reset.o", "kernel/notifier.o", "kernel/cpu.o")
KCFLAGS = ("-fcallgraph-info -fno-inline -fno-early-inlining -fno-inline-small-functions -fno-inline-functions "
           "-fno-inline-functions-called-once")
# What flowscan reads: the objects' directories and every header they can include.
SCOPES = ("include", "arch/arm64", "kernel", "drivers/firmware/psci", "virt/kvm")
THRESHOLD = 0.95
# SYSCALL_DEFINE4(reboot, ...) is flowscan's `reboot` and gcc's __do_sys_reboot (the body), wrapped by
# __se_sys_reboot and __arm64_sys_reboot, which the macro generates.
_SYSCALL_BODY = re.compile(r"^__do_(?:compat_)?sys_")
_SYSCALL_WRAPPER = re.compile(r"^__(?:se|arm64)_(?:compat_)?sys_")
_CLONE = re.compile(r"\.(?:isra|constprop|part|cold|lto_priv|localalias)(?:\.\d+)?")


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        _missing(f"{tool} not installed (.ci/run installs it)")


def _missing(why: str) -> None:
    if os.environ.get("FLOWSCAN_REQUIRE_REALTREES"):
        pytest.fail(why)
    pytest.skip(why)


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(LINUX), *args], capture_output=True, text=True, check=True).stdout


# ------------------------------------------------------------------------------------------ the build
@pytest.fixture(scope="module")
def kbuild() -> Path:
    """The objects' .ci files and the .config, built once per (commit, compiler, flags) and cached."""
    for tool in (CROSS + "gcc", "make", "bc", "bison", "flex", "tar"):
        _need(tool)
    if subprocess.run(["git", "-C", str(LINUX), "rev-parse", "-q", "--verify", f"refs/tags/{TAG}"],
                      capture_output=True).returncode:
        _missing(f"real tree {LINUX}@{TAG} missing: run ../shared/realtrees/get-real-trees")
    commit = _git("rev-parse", f"{TAG}^{{commit}}").strip()
    gcc = subprocess.run([CROSS + "gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    key = hashlib.sha256("\n".join([commit, gcc, KCFLAGS, *OBJECTS]).encode()).hexdigest()[:16]
    root = Path(os.environ.get("FLOWSCAN_KBUILD_CACHE") or
                Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flowscan-kbuild")
    out = root / key
    if (out / "done.json").exists():
        return out
    with tempfile.TemporaryDirectory(prefix="flowscan-kbuild-") as tmp:
        src, obj = Path(tmp) / "src", Path(tmp) / "obj"
        src.mkdir()
        started = time.monotonic()
        archive = subprocess.Popen(["git", "-C", str(LINUX), "archive", commit], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(src)], stdin=archive.stdout, check=True)
        if archive.wait():
            pytest.fail("git archive failed")
        checked_out = time.monotonic()
        make = ["make", "-s", f"-j{os.cpu_count() or 2}", "ARCH=arm64", f"CROSS_COMPILE={CROSS}", f"O={obj}"]
        subprocess.run([*make, "defconfig", "prepare"], cwd=src, check=True, capture_output=True)
        prepared = time.monotonic()
        subprocess.run([*make, f"KCFLAGS={KCFLAGS}", *OBJECTS], cwd=src, check=True, capture_output=True)
        built = time.monotonic()
        staging = root / f".{key}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        for o in OBJECTS:
            ci = (obj / o).with_suffix(".ci")
            dest = staging / Path(o).with_suffix(".ci")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(ci.read_text().replace(str(src) + "/", ""))
        shutil.copy(obj / ".config", staging / ".config")
        (staging / "done.json").write_text(json.dumps({
            "commit": commit, "gcc": gcc, "seconds": {"checkout": round(checked_out - started, 1),
                                                      "defconfig+prepare": round(prepared - checked_out, 1),
                                                      "objects": round(built - prepared, 1)}}, indent=1))
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    return out


# ------------------------------------------------------------------------------------------ gcc's graph
_NODE = re.compile(r'^node: \{ title: "([^"]*)" label: "([^"\\]*)\\n([^"]*)"( shape : ellipse)? \}', re.M)
_EDGE = re.compile(r'^edge: \{ sourcename: "([^"]*)" targetname: "([^"]*)"', re.M)


def _bare(name: str) -> str:
    return _CLONE.sub("", name)


def compiler_graph(build: Path) -> tuple[dict[tuple[str, str], set[str]], dict[str, set[tuple[str, int]]]]:
    """{(function, file it is defined in): its direct callees} over every object, and per source file the
    functions emitted from it (name, line of the name). Calls through pointers (`__indirect_call`) and what the compiler adds on
    its own (`<built-in>`: __stack_chk_fail, memcpy for struct copies) are left out."""
    calls: dict[tuple[str, str], set[str]] = {}
    emitted: dict[str, set[str]] = {}
    for o in OBJECTS:
        text = (build / o).with_suffix(".ci").read_text()
        nodes: dict[str, tuple[str, str, bool]] = {}
        for title, name, where, ext in _NODE.findall(text):
            nodes[title] = (_bare(name), where.rsplit(":", 2)[0], bool(ext))
        for title, (name, path, ext) in nodes.items():
            if not ext:
                calls.setdefault((name, path), set())
        for _title, name, where, ext in _NODE.findall(text):
            if not ext:
                path, line, _col = where.rsplit(":", 2)
                emitted.setdefault(path, set()).add((_bare(name), int(line)))
        for src, dst in _EDGE.findall(text):
            if src not in nodes or dst not in nodes or nodes[src][2]:
                continue
            name, path, ext = nodes[dst]
            if dst == "__indirect_call" or path == "<built-in>":
                continue
            if (name, path) != nodes[src][:2]:
                calls[nodes[src][:2]].add(name)
    return calls, emitted


# ------------------------------------------------------------------------------------------ .config oracle
def config_truth(config: Path):
    """What the built .config says of one `#if` condition: True, False, or None when it names something
    that is not a CONFIG_ symbol (the test's referee; flowscan is not given it)."""
    values: dict[str, str] = {}
    for line in config.read_text().splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            values[k] = v.strip('"')

    def sym(name: str) -> str:
        v = values.get(name)
        if v in (None, "n"):
            return "0"
        if v in ("y", "m"):
            return "1"
        return v if re.fullmatch(r"-?(?:0x[0-9a-fA-F]+|\d+)", v) else "1"

    def truth(cond: str) -> bool | None:
        expr = re.sub(r"\bdefined\s*\(\s*(\w+)\s*\)|\bdefined\s+(\w+)",
                      lambda m: "1" if (m.group(1) or m.group(2)) in values or
                      (m.group(1) or m.group(2)) == "__KERNEL__" else "0", cond)
        expr = re.sub(r"\b(?:IS_ENABLED|IS_BUILTIN|IS_REACHABLE)\s*\(\s*(\w+)\s*\)", lambda m: sym(m.group(1)), expr)
        expr = re.sub(r"\bIS_MODULE\s*\(\s*(\w+)\s*\)", lambda m: "1" if values.get(m.group(1)) == "m" else "0", expr)
        expr = re.sub(r"\bCONFIG_\w+", lambda m: sym(m.group()), expr)
        expr = re.sub(r"\b__ASSEMBLY__\b", "0", expr)
        expr = re.sub(r"\b(?:__KERNEL__|__aarch64__|__GNUC__|__LP64__)\b", "1", expr)
        expr = re.sub(r"(\d+)[uUlL]+\b", r"\1", expr)
        if re.search(r"[A-Za-z_]", expr.replace("and", "").replace("or", "")):
            return None
        expr = expr.replace("&&", " and ").replace("||", " or ")
        expr = re.sub(r"!(?!=)", " not ", expr)
        try:
            return bool(eval(expr, {"__builtins__": {}}, {}))  # only digits and operators are left
        except Exception:
            return None

    return truth


# ------------------------------------------------------------------------------------------ the test
def test_flowscan_direct_callees_against_the_compiler(kbuild, tmp_path_factory, capsys):
    calls, emitted = compiler_graph(kbuild)
    truth = config_truth(kbuild / ".config")
    cache = Path(os.environ.get("FLOWSCAN_COMPILER_CACHE") or tmp_path_factory.mktemp("flowscan-cache"))
    graph = load(Source(role="", repo=str(LINUX), ref=TAG), SCOPES, cache_dir=cache,
                 prefer=("arch/arm64",)).graph

    total = found = 0
    misses: list[str] = []
    macro_callees: list[str] = []
    wrong_macros: list[str] = []
    for (name, path), want in sorted(calls.items()):
        if _SYSCALL_WRAPPER.match(name):
            continue  # SYSCALL_DEFINEn's generated wrappers: no body in the source
        d = graph.def_at(_SYSCALL_BODY.sub("", name), path)
        edges = graph.callees(d, direct_only=True, inline=True) if d is not None else []
        got = {e.callee for e in edges}
        total += len(want)
        found += len(want & got)
        misses.extend(f"{path}: {name} -> {c}" for c in sorted(want - got))
        for e in edges:
            if e.kind == "macro" and not e.callee_path and e.via == e.callee:  # a macro shown as a callee
                macro_callees.append(f"{e.path}:{e.line} {e.callee}")
                behind = [c for alt in graph.macros.call(e.callee, e.args, e.path) for c in alt.calls]
                if behind or e.callee in want:
                    wrong_macros.append(f"{e.path}:{e.line} {e.callee} (calls {behind})")
            elif e.kind == "direct" and not e.callee_path and graph.macros.call(e.callee, e.args, e.path):
                wrong_macros.append(f"{e.path}:{e.line} {e.callee} is a macro shown as a function")

    # #if branches: flowscan's conditions around each function of the objects' .c files, read with the
    # .config, against what the compiler emitted from those files.
    disagree: list[str] = []
    decided = 0
    for o in OBJECTS:
        src = o[:-2] + ".c"
        facts = extract_file(_git("show", f"{TAG}:{src}").encode(), src)
        for fn in facts.functions:
            t = all(truth(c) for c in fn.conditions) if fn.conditions and \
                all(truth(c) is not None for c in fn.conditions) else (None if fn.conditions else True)
            if t is None:
                continue
            decided += 1
            out = (fn.name, fn.line) in emitted.get(src, set())
            if out and not t:
                disagree.append(f"{src}:{fn.line} {fn.name}: compiled, flowscan marks #if {fn.conditions} not taken")
            elif not out and t and not fn.static and not fn.inline and fn.conditions:
                disagree.append(f"{src}:{fn.line} {fn.name}: not compiled, flowscan marks #if {fn.conditions} taken")

    share = found / total if total else 0.0
    report = {"functions": len(calls), "compiler_callees": total, "found": found, "share": round(share, 4),
              "misses": misses, "macro_callees": macro_callees, "wrong_macros": wrong_macros,
              "branches_decided": decided, "branch_disagreements": disagree,
              "build": json.loads((kbuild / "done.json").read_text())}
    (kbuild / "comparison.json").write_text(json.dumps(report, indent=1))
    with capsys.disabled():
        print(f"\ncompiler check: {found} of {total} direct callees ({share:.1%}) over {len(calls)} functions; "
              f"{len(misses)} missed, {len(macro_callees)} macros shown as callees, {decided} functions' #if "
              f"branches decided, {len(disagree)} disagreements (details: {kbuild / 'comparison.json'})")
        for m in misses:
            print("  missed:", m)
    assert total > 500 and len(calls) > 300  # the build really happened
    assert share >= THRESHOLD, f"{found}/{total}"
    assert wrong_macros == []
    assert disagree == []
    assert decided > 300


def test_the_compiler_sees_arm_smccc_hvc_as_flowscan_does(kbuild):
    calls, _ = compiler_graph(kbuild)
    assert calls[("__invoke_psci_fn_hvc", "drivers/firmware/psci/psci.c")] == {"__arm_smccc_hvc"}
    assert calls[("__invoke_psci_fn_smc", "drivers/firmware/psci/psci.c")] == {"__arm_smccc_smc"}
