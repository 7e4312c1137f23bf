"""The seed's whole path on real releases: QEMU's ioctls cross into KVM, the guest's hvc reaches the host's
exit handler, and drift on every step (issue 13). Every line below was checked by reading the files at
that tag (git show TAG:PATH)."""

from __future__ import annotations

import pytest

from tests.test_realtrees import LINUX, QEMU, _diff, _have, _trace, cache, fs  # noqa: F401 (fixtures)

pytestmark = pytest.mark.realtrees

# (linux, qemu) -> KVM_RUN (kvm_cpu_exec, kernel kvm_vcpu_ioctl case, its call of kvm_arch_vcpu_ioctl_run),
# KVM_ARM_VCPU_INIT (kvm_arm_vcpu_init, kvm_arch_vcpu_ioctl case), kvm_vcpu_set_target -> kvm_reset_vcpu
# (call line, definition line in arch/arm64/kvm/reset.c), the arm_exit_handlers[ESR_ELx_EC_HVC64] slot
COMBOS = {
    ("v6.1.176", "v7.2.0"): dict(run=(2850, 4102, 4122), init=(53, 1331), reset=(1207, 252), slot=210),
    ("v6.12.8", "v10.0.13"): dict(run=(3146, 4454, 4475), init=(83, 1676), reset=(1541, 193), slot=305),
    ("v7.2.8", "v10.2.2"): dict(run=(3191, 4441, 4470), init=(84, 1846), reset=(1712, 190), slot=388),
}


def _loc(ev):
    return (ev["role"], ev["path"], ev["line"])


@pytest.mark.parametrize("linux_ref,qemu_ref", list(COMBOS))
def test_trace_crosses_into_the_kernel_and_back(fs, linux_ref, qemu_ref):  # noqa: F811
    if not (_have(LINUX, linux_ref) and _have(QEMU, qemu_ref)):
        pytest.skip(f"{linux_ref}/{qemu_ref} not built")
    want = COMBOS[(linux_ref, qemu_ref)]
    _code, res = _trace(fs, linux_ref, qemu_ref)
    hops = {h["id"]: h for h in res["hops"]}
    prod, cons, call = want["run"]
    assert [_loc(e) for e in hops["ioctl:KVM_RUN"]["evidence"]] == [
        ("vmm", "accel/kvm/kvm-all.c", prod), ("host", "virt/kvm/kvm_main.c", cons)]
    run = hops["kvm_vcpu_ioctl->kvm_arch_vcpu_ioctl_run"]
    assert (run["status"], run["steps"][0]["path"], run["steps"][0]["line"], run["to_path"]) == \
        ("verified", "virt/kvm/kvm_main.c", call, "arch/arm64/kvm/arm.c")
    assert "case KVM_RUN" in run["conditions"]
    prod, cons = want["init"]
    init = hops["ioctl:KVM_ARM_VCPU_INIT"]
    assert init["status"] == "verified" and [_loc(e) for e in init["evidence"]] == [
        ("vmm", "target/arm/kvm.c", prod), ("host", "arch/arm64/kvm/arm.c", cons)]
    assert hops["kvm_arch_vcpu_ioctl->kvm_arch_vcpu_ioctl_vcpu_init"]["status"] == "verified"
    reset = hops["kvm_arch_vcpu_ioctl_vcpu_init->kvm_reset_vcpu"]
    assert [s["callee"] for s in reset["steps"]] == ["kvm_vcpu_set_target", "kvm_reset_vcpu"]
    assert (reset["steps"][-1]["line"], reset["to_path"], reset["to_line"]) == \
        (want["reset"][0], "arch/arm64/kvm/reset.c", want["reset"][1])
    assert [_loc(e) for e in hops["trap:HVC64"]["evidence"]] == [
        ("guest", "arch/arm64/kernel/smccc-call.S", 43), ("host", "arch/arm64/kvm/handle_exit.c", want["slot"])]
    assert hops["ioctl:ITS_CTRL_RESET"]["status"] == "verified"
    assert hops["vgic_its_ctrl->vgic_its_reset"]["status"] == "verified"


def test_diff_qemu_10_0_to_10_2(fs):  # noqa: F811
    if not _have(QEMU, "v10.2.2"):
        pytest.skip("v10.2.2 not built")
    _code, rep = _diff(fs, "v6.12.8", "v10.0.13", "v6.12.8", "v10.2.2")
    items = {(i["kind"], i["subject"]): i for i in rep["items"]}
    ren = items[("renamed", "qemu_wait_io_event -> qemu_process_cpu_events")]
    assert (ren["severity"], ren["old"]["path"], ren["old"]["line"], ren["new"]["line"]) == \
        ("changed", "system/cpus.c", 454, 462)
    order = items[("path-changed", "kvm_vcpu_thread_fn: qemu_process_cpu_events now before kvm_cpu_exec")]
    assert (order["old"]["line"], order["new"]["line"]) == (56, 50)  # accel/kvm/kvm-accel-ops.c
    const = items[("signature-changed", "8 functions: void* -> const void*")]
    for fn in ("arm_cpu_class_init target/arm/cpu.c:2372", "kvm_arm_gicv3_class_init hw/intc/arm_gicv3_kvm.c:951",
               "kvm_arm_its_class_init hw/intc/arm_gicv3_its_kvm.c:242", "cpu_common_class_init hw/core/cpu-common.c:369",
               "arm_gicv3_common_class_init hw/intc/arm_gicv3_common.c:628",
               "gicv3_its_common_class_init hw/intc/arm_gicv3_its_common.c:138"):
        assert fn in const["detail"]
    assert ("signature-changed", "kvm_arch_put_registers(CPUState *cs, KvmPutState level, Error **errp)") in items
    assert ("path-changed", "do_kvm_cpu_synchronize_post_reset -> kvm_arch_put_registers") in items
    # v10.2.2 also defines kvm_arm_reset_vcpu in target/arm/kvm-stub.c (built only without KVM): until
    # build configuration excludes unbuilt stubs, that stub is the one phantom move; nothing else moved.
    moved = sorted(s for k, s in items if k == "moved")
    assert moved in ([], ["target/arm/kvm.c -> target/arm/kvm-stub.c"])
    assert not [i for i in rep["items"] if i["severity"] == "broken"]
    # identical text, other lines: never reported
    for fn in ("vmm:main_loop_should_exit", "vmm:qemu_system_reset", "vmm:kvm_cpu_synchronize_state",
               "vmm:resettable_phase_hold", "vmm:typedef:ResettableHoldPhase"):
        assert fn in rep["unchanged"]


def test_diff_qemu_7_2_to_10_0_every_step(fs):  # noqa: F811
    _code, rep = _diff(fs, "v6.12.8", "v7.2.0", "v6.12.8", "v10.0.13")
    items = {(i["kind"], i["subject"]): i for i in rep["items"]}
    moved = items[("moved", "target/arm/kvm64.c -> target/arm/kvm.c")]
    assert moved["detail"] == "functions: kvm_arch_get_registers, kvm_arch_put_registers"
    sig = items[("signature-changed", "2 functions: + Error**")]
    assert "kvm_arch_get_registers target/arm/kvm.c:2243" in sig["detail"]
    assert "kvm_arch_put_registers target/arm/kvm.c:2059" in sig["detail"]
    assert ("renamed", "cpu_common_reset -> cpu_common_reset_hold") in items
    assert ("renamed", "cpu_class_init -> cpu_common_class_init") in items  # the parent behind acc->parent_*
    for ci in ("cpu_common_class_init", "arm_gicv3_common_class_init", "gicv3_its_common_class_init"):
        assert items[("registration-changed", ci)]["detail"].startswith("removed: assignment reset=")
    grouped = items[("signature-changed", "6 functions: DeviceState* -> Object*, ResetType")]
    assert "cpu_common_reset_hold hw/core/cpu-common.c:115" in grouped["detail"]
    assert ("signature-changed", "kvm_vcpu_ioctl(CPUState *cpu, unsigned long type, ...)") in items
    assert set(rep["unchanged"]) >= {"vmm:main_loop_wait", "vmm:kvm_device_access", "vmm:resettable_reset"}


def test_diff_linux_releases(fs):  # noqa: F811
    _code, rep = _diff(fs, "v6.1.176", "v10.0.13", "v6.12.8", "v10.0.13")
    changed = sorted((i["kind"], i["subject"]) for i in rep["items"] if i["severity"] != "info")
    assert changed == [("renamed", "kvm_hvc_call_handler -> kvm_smccc_call_handler"),
                       ("signature-changed", "void kvm_reset_vcpu(struct kvm_vcpu *vcpu)")]
    assert {"host:vgic_its_ctrl", "host:kvm_psci_1_x_call", "guest:psci_sys_reset"} <= set(rep["unchanged"])
    if not _have(LINUX, "v7.2.8"):
        return
    _code, rep = _diff(fs, "v6.12.8", "v10.0.13", "v7.2.8", "v10.0.13")
    changed = [(i["kind"], i["subject"], i["detail"]) for i in rep["items"] if i["severity"] != "info"]
    assert changed == [("path-changed", "kvm_psci_call -> kvm_psci_1_x_call: under other conditions",
                        "was: case KVM_ARM_PSCI_1_1; now: case KVM_ARM_PSCI_1_3")]
