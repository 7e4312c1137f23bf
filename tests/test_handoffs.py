"""Handoffs both ways across the ioctl boundary, the guest's hvc, and drift on every step of the path
(fixtures: fixtures/README.md "Planted drifts" L15, Q30-Q34 and the files they name)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from flowscan.extract.parse import extract_file
from flowscan.flow.drift import diff_results
from flowscan.flow.results import FlowResult
from flowscan.flow.spec import find_flow
from flowscan.report.hops import evidence_text
from tests.test_verify import hop, run_flow

F = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture(scope="module")
def pair():
    old = run_flow(find_flow("arm64-reboot"), F / "linux" / "v6.1", F / "qemu" / "v7.2.0")
    new = run_flow(find_flow("arm64-reboot"), F / "linux" / "v6.12", F / "qemu" / "v10.0.0")
    return old, new


def _ev(h):
    return [(e.role, f"{e.path}:{e.line}", e.what, evidence_text(e)) for e in h.evidence]


# -- assembly facts ----------------------------------------------------------------------------------
def test_asm_functions_and_trapping_instructions():
    path = "arch/arm64/kernel/smccc-call.S"
    ff = extract_file((F / "linux" / "v6.12" / path).read_bytes(), path)
    assert [(f.name, f.line, f.end_line, f.params) for f in ff.functions] == [
        ("__arm_smccc_smc", 22, 24, ""), ("__arm_smccc_hvc", 30, 32, ""), ("arm_smccc_1_2_hvc", 36, 41, "")]
    # through the SMCCC macro (`\instr #0` with instr=hvc), and written out directly
    assert [(c.name, c.kind, c.function, c.line, c.target) for c in ff.constants] == [
        ("smc", "insn", "__arm_smccc_smc", 23, "smc #0 (SMCCC)"),
        ("hvc", "insn", "__arm_smccc_hvc", 31, "hvc #0 (SMCCC)"),
        ("hvc", "insn", "arm_smccc_1_2_hvc", 38, "hvc #0")]


def test_function_pointer_typedefs_and_digests():
    path = "include/hw/resettable.h"
    ff = extract_file((F / "qemu" / "v10.0.0" / path).read_bytes(), path)
    hold = [t for t in ff.typedefs if t.name == "ResettableHoldPhase"]
    assert [(t.line, t.params, t.return_type) for t in hold] == [(28, "(Object *obj, ResetType type)", "void")]
    # the same text at another line has the same digest; a changed body does not
    a = extract_file(b"int f(int x)\n{\n\treturn x; /* one */\n}\n", "a.c").functions[0]
    b = extract_file(b"\n\n\nint f(int x)\n{\n    return x;   /* two */\n}\n", "a.c").functions[0]
    c = extract_file(b"int f(int x)\n{\n\treturn x + 1;\n}\n", "a.c").functions[0]
    assert a.line != b.line and a.digest == b.digest != c.digest


# -- handoffs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 1])
def test_vmm_ioctls_cross_into_the_kernel(pair, which):
    res = pair[which]
    q = "target/arm/kvm.c"
    assert _ev(hop(res, "ioctl:KVM_RUN")) == [
        ("vmm", "accel/kvm/kvm-all.c:113", "call-arg", "kvm_cpu_exec: KVM_RUN (call-arg kvm_vcpu_ioctl)"),
        ("host", "virt/kvm/kvm_main.c:69", "case", "kvm_vcpu_ioctl: case KVM_RUN")]
    init = hop(res, "ioctl:KVM_ARM_VCPU_INIT")
    assert init.status == "verified" and _ev(init) == [
        ("vmm", f"{q}:24", "call-arg", "kvm_arm_vcpu_init: KVM_ARM_VCPU_INIT (call-arg kvm_vcpu_ioctl)"),
        ("host", f"arch/arm64/kvm/arm.c:{(134, 146)[which]}", "case", "kvm_arch_vcpu_ioctl: case KVM_ARM_VCPU_INIT")]
    run = hop(res, "kvm_vcpu_ioctl->kvm_arch_vcpu_ioctl_run")
    assert (run.role, run.status, run.steps[0].path, run.steps[0].line, run.conditions) == \
        ("host", "verified", "virt/kvm/kvm_main.c", 73, ["case KVM_RUN"])
    reset = hop(res, "kvm_arch_vcpu_ioctl_vcpu_init->kvm_reset_vcpu")
    assert [(s.caller, s.callee) for s in reset.steps] == [
        ("kvm_arch_vcpu_ioctl_vcpu_init", "kvm_vcpu_set_target"), ("kvm_vcpu_set_target", "kvm_reset_vcpu")]
    assert (reset.to_path, reset.to_line) == ("arch/arm64/kvm/reset.c", 14)


def test_its_reset_reaches_the_attribute_dispatch(pair):
    its = hop(pair[1], "ioctl:ITS_CTRL_RESET")
    assert its.status == "verified"
    host = [e for e in _ev(its) if e[0] == "host"]
    assert host == [("host", "arch/arm64/kvm/vgic/vgic-its.c:77", "case", "vgic_its_set_attr: case KVM_DEV_ARM_VGIC_GRP_CTRL"),
                    ("host", "arch/arm64/kvm/vgic/vgic-its.c:56", "case", "vgic_its_ctrl: case KVM_DEV_ARM_ITS_CTRL_RESET")]
    assert {e[1] for e in _ev(its) if e[0] == "vmm"} == {"hw/intc/arm_gicv3_its_kvm.c:49", "hw/intc/arm_gicv3_its_kvm.c:51"}
    assert hop(pair[1], "vgic_its_ctrl->vgic_its_reset").steps[0].line == 57


def test_guest_hvc_is_consumed_by_the_host_exit_handler(pair):
    for res, line in zip(pair, (66, 74)):
        h = hop(res, "trap:HVC64")
        assert (h.status, h.role, h.to_role) == ("verified", "guest", "host")
        assert _ev(h) == [
            ("guest", "arch/arm64/kernel/smccc-call.S:31", "insn", "__arm_smccc_hvc: hvc #0 (SMCCC)"),
            ("host", f"arch/arm64/kvm/handle_exit.c:{line}", "slot", "arm_exit_handlers[ESR_ELx_EC_HVC64] = handle_hvc")]


def test_missing_trap_names_what_is_absent(pair):
    from flowscan.flow.spec import Hop, Instruction
    from flowscan.flow.verify import verify  # noqa: F401 (the hop verifier is reached through verify)
    from flowscan.flow import verify as v
    from tests.test_graph import graph_of
    g = graph_of(F / "linux" / "v6.12")
    h = Hop(id="t", stage="s", kind="handoff", role="guest", frm=("__arm_smccc_smc",), to=("handle_hvc",),
            to_role="host", instructions=(Instruction(("hvc",), ("ESR_ELx_EC_SMC64",)),))
    res = v._verify_hop(h, {"guest": g, "host": g})
    assert res.status == "missing"
    assert res.note == "no hvc instruction in __arm_smccc_smc; handle_hvc is not stored at [ESR_ELx_EC_SMC64]"


# -- drift on every step -----------------------------------------------------------------------------
def test_every_function_on_the_path_is_in_the_context(pair):
    old, new = pair
    fns = new.context["functions"]
    assert fns["vmm:typedef:ResettableHoldPhase"]["path"] == "include/hw/resettable.h"
    assert fns["vmm:typedef:ResettableHoldPhase"]["params"] == "(Object *obj, ResetType type)"
    for key in ("vmm:cpu_common_class_init", "vmm:arm_gicv3_common_class_init", "vmm:resettable_phase_hold",
                "host:kvm_vcpu_set_target", "guest:__arm_smccc_hvc", "host:vgic_its_ctrl"):
        assert key in fns, key
    assert old.context["functions"]["vmm:kvm_arch_put_registers"]["path"] == "target/arm/kvm64.c"


def test_identical_bodies_that_moved_lines_are_unchanged_not_drift(pair):
    report = diff_results(*pair)
    # vgic-its.c gained a helper at the top in v6.12: every function below it moved 8 lines, same text
    old_f, new_f = pair[0].context["functions"], pair[1].context["functions"]
    for fn in ("vgic_its_reset", "vgic_its_ctrl", "vgic_its_set_attr"):
        key = f"host:{fn}"
        assert new_f[key]["line"] == old_f[key]["line"] + 8 and key in report.unchanged
    assert not [i for i in report.items if "vgic" in i.subject + i.detail]


def test_grouped_mechanical_change_and_typedef_change(pair):
    old, new = pair
    items = {(i.kind, i.subject): i for i in diff_results(old, new).items}
    const = items[("signature-changed", "7 functions: void* -> const void*")]
    assert const.detail.startswith(
        "one change in every one of them (arm_cpu_class_init target/arm/cpu.c:83; arm_gicv3_common_class_init "
        "hw/intc/arm_gicv3_common.c:59; cpu_common_class_init hw/core/cpu-common.c:66; gicv3_its_common_class_init "
        "hw/intc/arm_gicv3_its_common.c:40; kvm_accel_ops_class_init accel/kvm/kvm-accel-ops.c:76; "
        "kvm_arm_gicv3_class_init hw/intc/arm_gicv3_kvm.c:105; kvm_arm_its_class_init hw/intc/arm_gicv3_its_kvm.c:67)")
    # a callback typedef on both paths that changes its parameters is drift of its own
    changed = FlowResult.from_json(copy.deepcopy(new.to_json()))
    changed.context["functions"]["vmm:typedef:ResettableHoldPhase"]["params"] = "(Object *obj, ResetType type, int x)"
    sig = [i for i in diff_results(new, changed).items]
    assert [(i.kind, i.subject, i.detail) for i in sig] == [
        ("signature-changed", "typedef ResettableHoldPhase(Object *obj, ResetType type, int x)",
         "was typedef ResettableHoldPhase(Object *obj, ResetType type)")]


def test_rename_and_move_within_the_caller(pair):
    items = {(i.kind, i.subject): i for i in diff_results(*pair).items}
    ren = items[("renamed", "qemu_wait_io_event -> qemu_process_cpu_events")]
    assert ren.severity == "changed" and ren.hop == "kvm_vcpu_thread_fn->qemu_wait_io_event"
    order = items[("path-changed", "kvm_vcpu_thread_fn: qemu_process_cpu_events now before kvm_cpu_exec")]
    assert order.detail == ("was: kvm_cpu_exec at line 38, then qemu_wait_io_event at line 43; "
                            "now: qemu_process_cpu_events at line 37, then kvm_cpu_exec at line 39")
    assert (order.old.line, order.new.line) == (43, 37)
    cond = items[("path-changed", "kvm_arm_gicv3_reset_hold -> arm_gicv3_common_reset_hold: under other conditions")]
    assert cond.detail == "was: unconditional; now: if (kgc->parent_phases.hold)"


def test_tables_show_both_sides_of_a_handoff(pair):
    from flowscan.report.hops import where_text
    new = pair[1]
    assert where_text(hop(new, "ioctl:KVM_RUN")) == "accel/kvm/kvm-all.c:113 -> virt/kvm/kvm_main.c:69"
    assert where_text(hop(new, "trap:HVC64")) == \
        "arch/arm64/kernel/smccc-call.S:31 -> arch/arm64/kvm/handle_exit.c:74"
    assert where_text(hop(new, "kvm_vcpu_ioctl->kvm_arch_vcpu_ioctl_run")) == "virt/kvm/kvm_main.c:73"
