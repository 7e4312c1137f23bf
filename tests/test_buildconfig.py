"""Build configuration on the fixture trees: which files Kbuild / meson build, #if conditions for a
configuration, definitions from files that are not built never chosen, --config-file overrides."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flowscan.buildconfig.cexpr import evaluate
from flowscan.buildconfig.load import for_tree
from flowscan.buildconfig.values import Values, parse_assignments
from flowscan.errors import FlowscanError
from flowscan.sources.buildfiles import BuildFiles
from flowscan.sources.refs import Source
from flowscan.sources.trees import DirTree
from flowscan.workspace import load
from tests.helpers import one_line_error, run

LINUX = "linux-arm64-defconfig"
QEMU = "qemu-aarch64-softmmu-kvm"


@pytest.fixture
def q(capsys, tmp_path):
    def call(*args):
        return run(capsys, "-q", "--cache-dir", str(tmp_path / "cache"), *args)
    return call


def _cfg(root: Path, name: str, user: Path | None = None):
    cfg, note = for_tree(BuildFiles(DirTree(root)), name, user, None)
    assert cfg is not None, note
    return cfg, note


# -- #if conditions ----------------------------------------------------------------------------------
LINUX_VALUES = Values({"CONFIG_EFI": "y", "CONFIG_ARM64": "y", "CONFIG_ARM64_VA_BITS": "48",
                       "CONFIG_FOO": "m"}, complete_prefix="CONFIG_")


@pytest.mark.parametrize("text,want", [
    ("CONFIG_EFI", "true"), ("!CONFIG_EFI", "false"), ("CONFIG_X86", "false"), ("!CONFIG_X86", "true"),
    ("defined(CONFIG_X86) || defined(CONFIG_ARM64)", "true"), ("CONFIG_ARM64_VA_BITS >= 52", "false"),
    ("IS_ENABLED(CONFIG_FOO)", "true"), ("IS_BUILTIN(CONFIG_FOO)", "false"), ("IS_MODULE(CONFIG_FOO)", "true"),
    ("CONFIG_FOO", "false"),  # =m: autoconf.h defines CONFIG_FOO_MODULE, not CONFIG_FOO
    ("__ASSEMBLY__", "unknown"), ("!__ASSEMBLY__ && CONFIG_X86", "false"), ("__KERNEL__ || CONFIG_EFI", "true"),
    ("!(CONFIG_X86 || CONFIG_EFI)", "false"), ("__has_include(<x.h>)", "unknown"), ("CONFIG_EFI &&", "unknown"),
])
def test_if_conditions_three_valued(text, want):
    assert evaluate(text, LINUX_VALUES.value, LINUX_VALUES.defined) == want


def test_qemu_values_are_not_complete():
    vals = Values({"CONFIG_KVM": "y", "CONFIG_USER_ONLY": "n"})
    assert evaluate("!CONFIG_USER_ONLY", vals.value, vals.defined) == "true"
    assert evaluate("CONFIG_KVM", vals.value, vals.defined) == "true"
    assert evaluate("CONFIG_SOME_HOST_FEATURE", vals.value, vals.defined) == "unknown"


def test_assignment_files():
    got = parse_assignments('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="str"\n\n# comment\nCONFIG_D=0x10\n')
    assert got == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": "str", "CONFIG_D": "0x10"}
    with pytest.raises(FlowscanError, match=r"x.mak:2: not a KEY=VALUE line"):
        parse_assignments("CONFIG_A=y\nwhat is this\n", "x.mak")


# -- Linux: Kbuild + kconfiglib ---------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v6.1", "v6.12"])
def test_kbuild_files_for_defconfig(version):
    root = Path(__file__).resolve().parent.parent / "fixtures" / "linux" / version
    cfg, note = _cfg(root, LINUX)
    assert "resolved with kconfiglib from 4 Kconfig files" in note
    # kconfiglib: the defconfig's assignments, a select (ARM64 -> ARM_PSCI_FW), a default (HOTPLUG_CPU)
    assert [cfg.values.get(s) for s in ("CONFIG_KVM", "CONFIG_EFI", "CONFIG_ARM_PSCI_FW", "CONFIG_HOTPLUG_CPU",
                                        "CONFIG_ARM_PSCI_CHECKER", "CONFIG_X86")] == ["y", "y", "y", "y", "n", "n"]
    assert {p: cfg.status(p) for p in (
        "kernel/reboot.c", "arch/arm64/kernel/process.c", "arch/arm64/kvm/psci.c",  # kvm-y composite
        "drivers/firmware/psci/psci.c", "drivers/firmware/efi/reboot.c",
        "drivers/firmware/psci/psci_checker.c",  # obj-$(CONFIG_ARM_PSCI_CHECKER), off
        "arch/x86/kernel/reboot.c",  # another architecture's directory
        "virt/kvm/kvm_main.c",  # virt/kvm/ is named, the file is not: unknown
        "include/linux/efi.h")} == {
        "kernel/reboot.c": "built", "arch/arm64/kernel/process.c": "built", "arch/arm64/kvm/psci.c": "built",
        "drivers/firmware/psci/psci.c": "built", "drivers/firmware/efi/reboot.c": "built",
        "drivers/firmware/psci/psci_checker.c": "not built", "arch/x86/kernel/reboot.c": "not built",
        "virt/kvm/kvm_main.c": "unknown", "include/linux/efi.h": "unknown"}
    assert cfg.condition("CONFIG_HOTPLUG_CPU") == "true"
    assert cfg.condition("!CONFIG_EFI") == "false"


def test_user_dot_config_replaces_the_defconfig(linux_new, tmp_path):
    dot = tmp_path / ".config"
    dot.write_text("CONFIG_ARM64=y\n# CONFIG_KVM is not set\nCONFIG_ARM_PSCI_FW=y\n")
    cfg, note = _cfg(linux_new, LINUX, dot)
    assert str(dot) in note
    assert cfg.status("drivers/firmware/efi/reboot.c") == "not built"  # obj-$(CONFIG_EFI) += efi/
    assert cfg.status("arch/arm64/kvm/arm.c") == "not built"  # obj-$(CONFIG_KVM) += kvm/
    assert cfg.condition("!CONFIG_EFI") == "true"


def test_resolved_defconfig_is_cached_by_kconfig_blobs(fixture_repos, tmp_path):
    from flowscan.sources.clones import open_tree

    tree = open_tree(Source(role="", repo=str(fixture_repos["linux"]), ref="v6.12"), tmp_path)
    cfg, _ = for_tree(BuildFiles(tree), LINUX, None, tmp_path)
    cached = [p for p in (tmp_path / "buildconfig").glob("*.json") if not p.name.startswith("memo-")]
    assert len(cached) == 1
    data = json.loads(cached[0].read_text())
    assert data["values"]["CONFIG_ARM_PSCI_FW"] == "y" and "CONFIG_ARM_PSCI_CHECKER" not in data["values"]
    data["values"]["CONFIG_ARM_PSCI_CHECKER"] = "y"  # the second reading comes from the cache
    cached[0].write_text(json.dumps(data))
    again, _ = for_tree(BuildFiles(tree), LINUX, None, tmp_path)
    assert again.status("drivers/firmware/psci/psci_checker.c") == "built"
    assert cfg.status("drivers/firmware/psci/psci_checker.c") == "not built"


def _memo_run(tree, tmp_path, monkeypatch, user=None):
    """for_tree as a new process would run it: the memo left by the previous run, saved at exit."""
    from flowscan.buildconfig import memo

    saved = []
    monkeypatch.setattr(memo.atexit, "register", saved.append)
    cfg, note = for_tree(BuildFiles(tree), LINUX, user, tmp_path)
    statuses = {p: cfg.status(p) for p in ("arch/arm64/kvm/arm.c", "drivers/firmware/efi/reboot.c",
                                           "arch/x86/kernel/reboot.c")}
    for save in saved:
        save()
    return note, statuses, cfg.condition("CONFIG_EFI")


def test_evaluated_configuration_is_kept_per_commit(fixture_repos, tmp_path, monkeypatch):
    """The second run answers from the memo, Kbuild not evaluated at all; a status the memo lacks is
    evaluated then and kept; a damaged memo is ignored; another user file is another memo."""
    from flowscan.buildconfig import load as loadmod
    from flowscan.sources.clones import open_tree

    tree = open_tree(Source(role="", repo=str(fixture_repos["linux"]), ref="v6.12"), tmp_path)
    first = _memo_run(tree, tmp_path, monkeypatch)
    assert first[1] == {"arch/arm64/kvm/arm.c": "built", "drivers/firmware/efi/reboot.c": "built",
                        "arch/x86/kernel/reboot.c": "not built"}
    memos = list((tmp_path / "buildconfig").glob("memo-*.json"))
    assert len(memos) == 1 and "arch/x86/kernel/reboot.c" in memos[0].read_text()
    evaluated = []
    real = loadmod._evaluate
    monkeypatch.setattr(loadmod, "_evaluate", lambda *a: evaluated.append(a) or real(*a))
    assert _memo_run(tree, tmp_path, monkeypatch) == first and not evaluated
    cfg, _ = for_tree(BuildFiles(tree), LINUX, None, tmp_path)
    assert cfg.status("kernel/reboot.c") == "built" and len(evaluated) == 1  # a miss: evaluated once
    memos[0].write_text('{"version": "bm-1", "outcome": {"name": 1}')  # torn
    assert _memo_run(tree, tmp_path, monkeypatch) == first and len(evaluated) == 2
    dot = tmp_path / ".config"
    dot.write_text("CONFIG_ARM64=y\n# CONFIG_KVM is not set\n")
    note, statuses, efi = _memo_run(tree, tmp_path, monkeypatch, dot)
    assert str(dot) in note and statuses["arch/arm64/kvm/arm.c"] == "not built" and efi == "false"
    assert len(list((tmp_path / "buildconfig").glob("memo-*.json"))) == 2


def test_not_built_never_supplies_a_definition(linux_new, tmp_path):
    """Without --prefer, machine_restart has two global definitions; arch/x86 is not built for arm64."""
    plain = load(Source(role="", src=str(linux_new)), cache_dir=tmp_path).graph
    built = load(Source(role="", src=str(linux_new)), cache_dir=tmp_path, build=LINUX).graph
    assert [d.path for d in plain.lookup("machine_restart", "kernel/reboot.c")] == [
        "arch/arm64/kernel/process.c", "arch/x86/kernel/reboot.c"]
    assert [d.path for d in built.lookup("machine_restart", "kernel/reboot.c")] == ["arch/arm64/kernel/process.c"]
    assert [e.callee_path for e in built.callees(built.def_at("machine_restart", "arch/arm64/kernel/process.c"))
            if e.callee == "efi_reboot"] == ["drivers/firmware/efi/reboot.c"]


def test_header_branch_chosen_by_the_configuration(linux_new, tmp_path):
    """With EFI off, drivers/firmware/efi is not built and the !CONFIG_EFI inline in efi.h is the one."""
    dot = tmp_path / "noefi.config"
    dot.write_text("CONFIG_ARM64=y\nCONFIG_ARM_PSCI_FW=y\n")
    g = load(Source(role="", src=str(linux_new)), cache_dir=tmp_path, config_file=dot).graph
    edges = [e for e in g.callees(g.def_at("machine_restart", "arch/arm64/kernel/process.c"))
             if e.callee == "efi_reboot"]
    assert [(e.callee_path, e.line) for e in edges] == [("include/linux/efi.h", 53)]


# -- QEMU: meson source sets ------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v7.2.0", "v10.0.0"])
def test_meson_source_sets(version):
    root = Path(__file__).resolve().parent.parent / "fixtures" / "qemu" / version
    cfg, note = _cfg(root, QEMU)
    assert "device symbols unknown" in note
    assert {p: cfg.status(p) for p in (
        "target/arm/kvm.c", "target/arm/kvm-stub.c", "target/arm/cpu.c", "accel/kvm/kvm-all.c",
        "hw/core/resettable.c", "hw/intc/arm_gicv3_kvm.c", "hw/misc/fake_led.c")} == {
        "target/arm/kvm.c": "built", "target/arm/kvm-stub.c": "not built", "target/arm/cpu.c": "built",
        "accel/kvm/kvm-all.c": "built",  # kvm_ss, added to specific_ss when CONFIG_KVM
        "hw/core/resettable.c": "built",
        "hw/intc/arm_gicv3_kvm.c": "unknown",  # CONFIG_ARM_GIC_KVM: no device configuration here
        "hw/misc/fake_led.c": "unknown"}  # no meson.build names it


def test_meson_without_kvm(qemu_new, tmp_path):
    mak = tmp_path / "config-host.mak"
    mak.write_text("CONFIG_KVM=n\n")
    cfg, note = _cfg(qemu_new, QEMU, mak)
    assert "laid over the profile" in note
    assert (cfg.status("target/arm/kvm.c"), cfg.status("target/arm/kvm-stub.c"),
            cfg.status("accel/kvm/kvm-all.c")) == ("not built", "built", "not built")


def test_no_build_files_no_configuration(tmp_path):
    (tmp_path / "a.c").write_text("int f(void) { return 0; }\n")
    cfg, note = for_tree(BuildFiles(DirTree(tmp_path)), QEMU, None, None)
    assert cfg is None and note.endswith("no meson.build files: every file counted as built, "
                                         "#if conditions not evaluated")
    cfg, note = for_tree(BuildFiles(DirTree(tmp_path)), LINUX, None, None)
    assert cfg is None and "no Kbuild files" in note


# -- the CLI ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("version,caller,line", [("v7.2.0", "arm_cpu_reset", 49),
                                                 ("v10.0.0", "arm_cpu_reset_hold", 51)])
def test_stub_marked_and_never_chosen(q, version, caller, line):
    root = Path(__file__).resolve().parent.parent / "fixtures" / "qemu" / version
    code, out, _ = q("defs", "kvm_arm_reset_vcpu", "--src", str(root), "--build-config", QEMU)
    assert code == 0
    assert out.splitlines() == ["target/arm/kvm-stub.c:17: void kvm_arm_reset_vcpu(ARMCPU *cpu)  (not built)",
                                "target/arm/kvm.c:45: void kvm_arm_reset_vcpu(ARMCPU *cpu)"]
    code, out, _ = q("callees", caller, "--src", str(root), "--build-config", QEMU)
    assert f"target/arm/cpu.c:{line}: {caller} -> kvm_arm_reset_vcpu (target/arm/kvm.c)  [direct]  " \
           "[#if !CONFIG_USER_ONLY (true); if (kvm_enabled())]" in out.splitlines()
    assert "kvm-stub.c" not in out
    code, out, _ = q("defs", "kvm_arm_reset_vcpu", "--src", str(root), "--format", "json", "--build-config", QEMU)
    assert [(d["path"], d["build"]) for d in json.loads(out)] == [("target/arm/kvm-stub.c", "not built"),
                                                                   ("target/arm/kvm.c", "built")]


def _trace(q, *extra, code_wanted=0):
    code, out, err = q("trace", "--format", "json", *extra)
    assert code == code_wanted, err
    return json.loads(out)


def _hop(result, hop_id):
    return next(h for h in result["hops"] if h["id"] == hop_id)


def test_trace_uses_the_specs_configurations(q):
    res = _trace(q)
    builds = {s["role"]: s["build"] for s in res["sources"]}
    assert builds["guest"].startswith("Linux arm64 defconfig: arch/arm64/configs/defconfig resolved with kconfiglib")
    assert builds["vmm"].startswith("QEMU aarch64-softmmu, KVM and TCG")
    hop = _hop(res, "arm_cpu_reset_hold->kvm_arm_reset_vcpu")
    assert (hop["status"], hop["to_path"], hop["conditions"]) == (
        "verified", "target/arm/kvm.c", ["#if !CONFIG_USER_ONLY", "if (kvm_enabled())"])
    assert hop["steps"][0]["condition_values"] == ["true"]
    site = hop["sites"][0]
    assert site["conditions"][0] == {"text": "#if !CONFIG_USER_ONLY", "value": True,
                                     "why": "build configuration: QEMU aarch64-softmmu, KVM and TCG"}
    code, out, _ = q("trace")
    assert "#if !CONFIG_USER_ONLY (true); if (kvm_enabled())" in out
    assert "    build: QEMU aarch64-softmmu, KVM and TCG" in out


def test_config_file_per_role(q, tmp_path):
    mak = tmp_path / "nokvm.mak"
    mak.write_text("CONFIG_KVM=n\n")
    res = _trace(q, "--config-file", f"vmm={mak}", code_wanted=1)  # without KVM, QEMU's KVM hops fail
    assert _hop(res, "arm_cpu_reset_hold->kvm_arm_reset_vcpu")["to_path"] == "target/arm/kvm-stub.c"
    assert _hop(res, "kvm_vcpu_thread_fn->kvm_cpu_exec")["status"] == "missing"  # accel/kvm is not built
    assert str(mak) in {s["role"]: s["build"] for s in res["sources"]}["vmm"]


def test_tree_without_build_files_behaves_as_before(q, qemu_new, tmp_path):
    bare = tmp_path / "qemu"
    shutil.copytree(qemu_new, bare, ignore=shutil.ignore_patterns("meson.build", "kvm-stub.c"))
    res = _trace(q, "--vmm-src", str(bare), "--guest-src", str(Path(qemu_new).parent.parent / "linux" / "v6.12"))
    vmm = {s["role"]: s["build"] for s in res["sources"]}["vmm"]
    assert vmm == f"{bare}: no meson.build files: every file counted as built, #if conditions not evaluated"
    hop = _hop(res, "arm_cpu_reset_hold->kvm_arm_reset_vcpu")
    assert hop["to_path"] == "target/arm/kvm.c" and hop["steps"][0]["condition_values"] == []
    assert hop["sites"][0]["conditions"][0] == {"text": "#if !CONFIG_USER_ONLY", "value": None,
                                                "why": "no build configuration"}


def test_diff_has_no_phantom_move_to_the_stub(q, fixture_repos):
    code, out, err = q("diff", "--format", "json", "--guest-repo", str(fixture_repos["linux"]),
                       "--host-repo", str(fixture_repos["linux"]), "--vmm-repo", str(fixture_repos["qemu"]),
                       "--from", "guest=v6.12,host=v6.12,vmm=v7.2.0", "--to", "guest=v6.12,host=v6.12,vmm=v10.0.0")
    assert code in (0, 1), err
    data = json.loads(out)
    assert not [i for i in data["items"] if "kvm-stub" in json.dumps(i)]
    assert _hop(data["new"], "arm_cpu_reset_hold->kvm_arm_reset_vcpu")["to_path"] == "target/arm/kvm.c"
    old = [h for h in data["old"]["hops"] if h["matched_to"] == "kvm_arm_reset_vcpu"]
    assert [h["to_path"] for h in old] == ["target/arm/kvm.c"]


@pytest.mark.parametrize("args,msg", [
    (["trace", "--config-file", "vmm"], "--config-file vmm: expected ROLE=PATH"),
    (["trace", "--config-file", "cpu=x.mak"], "--config-file cpu=x.mak: unknown role 'cpu'"),
    (["trace", "--config-file", "vmm=/nonexistent/x.mak"], "--config-file vmm=/nonexistent/x.mak: no such file"),
    (["defs", "f", "--src", ".", "--build-config", "nope"], "unknown build configuration 'nope'"),
])
def test_bad_configuration_input(q, args, msg):
    code, _, err = q(*args)
    assert code == 2
    assert msg in one_line_error(err)


def test_bad_config_file_line(q, tmp_path):
    bad = tmp_path / "bad.mak"
    bad.write_text("CONFIG_KVM=y\nnot a line\n")
    code, _, err = q("trace", "--config-file", f"vmm={bad}")
    assert code == 2
    assert f"{bad}:2: not a KEY=VALUE line" in one_line_error(err)


def test_spec_names_an_unknown_configuration(q, tmp_path):
    spec = Path(__file__).resolve().parent.parent / "queries" / "flows" / "arm64-reboot.toml"
    text = spec.read_text().replace('config = "qemu-aarch64-softmmu-kvm"', 'config = "qemu-nope"')
    user = tmp_path / "f.toml"
    user.write_text(text)
    code, _, err = q("trace", "--flow-file", str(user))
    assert code == 2
    assert "roles.vmm.config: unknown build configuration 'qemu-nope'" in one_line_error(err)
