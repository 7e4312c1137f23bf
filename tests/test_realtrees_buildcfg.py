"""Build configuration on the real trees: what arm64 defconfig and qemu-system-aarch64 with KVM build.

Every expectation was checked by reading the real files at the tag: target/arm/meson.build (v10.0.13:
`arm_ss.add(when: 'CONFIG_KVM', if_true: files('hyp_gdbstub.c', 'kvm.c'), if_false: files('kvm-stub.c'))`;
v10.2.2: kvm.c in arm_system_ss `when: 'CONFIG_KVM'`, kvm-stub.c in arm_common_system_ss
`if_false`), target/arm/kvm-stub.c:108 (v10.2.2, g_assert_not_reached), Linux kernel/reboot.c
(`#ifdef CONFIG_KEXEC_CORE` / `#ifdef CONFIG_HIBERNATION` around kernel_kexec() :787 and hibernate()
:793 in the reboot syscall, `#ifdef CONFIG_X86` around force_show), drivers/firmware/psci/Makefile
(`obj-$(CONFIG_ARM_PSCI_CHECKER) += psci_checker.o`), arch/arm64/configs/defconfig (CONFIG_KEXEC=y,
CONFIG_HIBERNATION=y, no PSCI checker).
"""

from __future__ import annotations

import json

import pytest

from flowscan.buildconfig.load import for_tree
from flowscan.sources.buildfiles import BuildFiles
from flowscan.sources.clones import open_tree
from flowscan.sources.refs import Source
from flowscan.workspace import load
from tests.test_realtrees import LINUX, QEMU, cache, fs, linux, qemu  # noqa: F401 (fixtures)

pytestmark = pytest.mark.realtrees

KVM = ("--build-config", "qemu-aarch64-softmmu-kvm")
DEFCONFIG = ("--build-config", "linux-arm64-defconfig")


@pytest.mark.parametrize("tag,stub_line,real_line", [("v10.0.13", None, 989), ("v10.2.2", 108, 1044)])
def test_kvm_arm_reset_vcpu_never_the_stub(fs, tag, stub_line, real_line):
    code, out, _ = fs("defs", "kvm_arm_reset_vcpu", *qemu(tag), "--scope", "target/arm", *KVM)
    assert code == 0
    want = [f"target/arm/kvm.c:{real_line}: void kvm_arm_reset_vcpu(ARMCPU *cpu)"]
    if stub_line:
        want.insert(0, f"target/arm/kvm-stub.c:{stub_line}: void kvm_arm_reset_vcpu(ARMCPU *cpu)  (not built)")
    assert out.splitlines() == want
    code, out, _ = fs("callees", "arm_cpu_reset_hold", *qemu(tag), "--scope", "target/arm", *KVM)
    lines = [l for l in out.splitlines() if "-> kvm_arm_reset_vcpu " in l]
    assert len(lines) == 1 and "(target/arm/kvm.c)" in lines[0] and "#if !CONFIG_USER_ONLY (true)" in lines[0]


def test_qemu_source_sets_for_aarch64_kvm(cache):
    for tag in ("v10.0.13", "v10.2.2"):
        tree = open_tree(Source(role="", repo=str(QEMU), ref=tag), cache)
        cfg, note = for_tree(BuildFiles(tree), "qemu-aarch64-softmmu-kvm", None, cache)
        assert "configs/devices/aarch64-softmmu/default.mak resolved over" in note
        got = {p: cfg.status(p) for p in ("target/arm/kvm.c", "target/arm/kvm-stub.c", "accel/kvm/kvm-all.c",
                                          "accel/stubs/kvm-stub.c", "hw/intc/arm_gicv3_kvm.c", "hw/arm/virt.c",
                                          "hw/intc/apic.c", "target/i386/kvm/kvm.c", "linux-user/main.c",
                                          "target/arm/tcg-stubs.c", "stubs/cpu-get-clock.c")}
        assert got == {"target/arm/kvm.c": "built", "target/arm/kvm-stub.c": "not built",
                       "accel/kvm/kvm-all.c": "built", "accel/stubs/kvm-stub.c": "not built",
                       "hw/intc/arm_gicv3_kvm.c": "built",  # ARM_VIRT selects ARM_GIC, which selects ARM_GIC_KVM
                       "hw/arm/virt.c": "built", "hw/intc/apic.c": "not built",  # CONFIG_APIC: x86 only
                       "target/i386/kvm/kvm.c": "not built", "linux-user/main.c": "not built",
                       "target/arm/tcg-stubs.c": "not built",  # TCG is on: the else branch of its if
                       "stubs/cpu-get-clock.c": "stub"}, tag
        tree.close()


def test_diff_shows_no_phantom_move(fs):
    code, out, err = fs("diff", "--format", "json", "--guest-repo", str(LINUX), "--host-repo", str(LINUX),
                        "--vmm-repo", str(QEMU), "--from", "guest=v6.12.8,host=v6.12.8,vmm=v10.0.13",
                        "--to", "guest=v6.12.8,host=v6.12.8,vmm=v10.2.2")
    assert code in (0, 1), err
    data = json.loads(out)
    assert not [i for i in data["items"] if "kvm-stub" in json.dumps(i)]
    for side in ("old", "new"):
        hops = [h for h in data[side]["hops"] if h["matched_to"] == "kvm_arm_reset_vcpu"]
        assert hops and {h["to_path"] for h in hops} == {"target/arm/kvm.c"}, side


def test_linux_defconfig_if_conditions_on_the_reboot_syscall(fs):
    code, out, _ = fs("callees", "reboot", *linux("v6.12.8"), "--scope", "kernel", *DEFCONFIG)
    assert code == 0
    lines = out.splitlines()
    assert any(l.startswith("kernel/reboot.c:787: reboot -> kernel_kexec ") and "#if CONFIG_KEXEC_CORE (true)" in l
               for l in lines), out
    assert any(l.startswith("kernel/reboot.c:793: reboot -> hibernate ") and "#if CONFIG_HIBERNATION (true)" in l
               for l in lines), out
    code, out, _ = fs("defs", "force_show", *linux("v6.12.8"), "--scope", "kernel/reboot.c", *DEFCONFIG)
    assert "[#if CONFIG_SYSFS (true) && CONFIG_X86 (false)]  (not built)" in out


def test_linux_files_not_built_under_defconfig(cache):
    tree = open_tree(Source(role="", repo=str(LINUX), ref="v6.12.8"), cache)
    cfg, note = for_tree(BuildFiles(tree), "linux-arm64-defconfig", None, cache)
    assert "resolved with kconfiglib" in note
    assert [cfg.values.get(s) for s in ("CONFIG_KVM", "CONFIG_EFI", "CONFIG_ARM_PSCI_FW", "CONFIG_KEXEC_CORE",
                                        "CONFIG_ARM_PSCI_CHECKER", "CONFIG_X86")] == ["y", "y", "y", "y", "n", "n"]
    assert {p: cfg.status(p) for p in ("kernel/reboot.c", "drivers/firmware/psci/psci.c", "arch/arm64/kvm/psci.c",
                                       "arch/arm64/kernel/process.c", "drivers/firmware/efi/reboot.c",
                                       "drivers/firmware/psci/psci_checker.c", "arch/x86/kernel/reboot.c",
                                       "arch/arm/kernel/reboot.c")} == {
        "kernel/reboot.c": "built", "drivers/firmware/psci/psci.c": "built", "arch/arm64/kvm/psci.c": "built",
        "arch/arm64/kernel/process.c": "built", "drivers/firmware/efi/reboot.c": "built",
        "drivers/firmware/psci/psci_checker.c": "not built", "arch/x86/kernel/reboot.c": "not built",
        "arch/arm/kernel/reboot.c": "not built"}
    tree.close()


def test_a_file_not_built_never_supplies_a_definition(cache):
    """machine_restart is defined once per architecture; without --prefer only the configuration picks."""
    scopes = ["kernel/reboot.c", "arch/arm64/kernel/process.c", "arch/x86/kernel/reboot.c",
              "arch/arm/kernel/reboot.c"]
    src = Source(role="", repo=str(LINUX), ref="v6.12.8")
    plain = load(src, scopes, cache_dir=cache).graph
    built = load(src, scopes, cache_dir=cache, build="linux-arm64-defconfig").graph
    assert [d.path for d in plain.lookup("machine_restart", "kernel/reboot.c")] == [
        "arch/arm/kernel/reboot.c", "arch/arm64/kernel/process.c", "arch/x86/kernel/reboot.c"]
    assert [d.path for d in built.lookup("machine_restart", "kernel/reboot.c")] == ["arch/arm64/kernel/process.c"]
