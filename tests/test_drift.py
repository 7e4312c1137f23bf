"""Drift between the two fixture versions: exactly the planted drifts on the flow's path, each classified."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowscan.flow.drift import diff_results, fails
from flowscan.flow.results import FlowResult
from flowscan.flow.spec import find_flow
from tests.test_verify import run_flow

F = Path(__file__).resolve().parent.parent / "fixtures"

# (kind, subject, old file:line, new file:line); fixtures/README.md "Planted drifts" names each (L*, Q*).
EXPECTED = [
    ("path-changed", "do_cpu_reset -> arm_cpu_reset_hold|arm_cpu_reset", "hw/core/resettable.c:77", "hw/core/resettable.c:71"),  # Q9
    ("path-changed", "qemu_devices_reset -> do_cpu_reset", "hw/core/reset.c:49", "hw/core/reset.c:118"),  # Q10 (reset_handlers -> LegacyReset hold phase)
    ("path-changed", "resettable_reset -> kvm_arm_gicv3_reset_hold|kvm_arm_gicv3_reset", "hw/core/resettable.c:77", "hw/core/resettable.c:71"),  # Q9
    ("path-changed", "resettable_reset -> kvm_arm_its_reset_hold|kvm_arm_its_reset", "hw/core/resettable.c:77", "hw/core/resettable.c:71"),  # Q9
    ("renamed", "arm_cpu_reset -> arm_cpu_reset_hold", "target/arm/cpu.c:29", "target/arm/cpu.c:29"),  # Q13
    ("renamed", "arm_gicv3_common_reset -> arm_gicv3_common_reset_hold", "hw/intc/arm_gicv3_common.c:30", "hw/intc/arm_gicv3_common.c:30"),  # Q26
    ("renamed", "gicv3_its_common_reset -> gicv3_its_common_reset_hold", "hw/intc/arm_gicv3_its_common.c:22", "hw/intc/arm_gicv3_its_common.c:22"),  # Q27
    ("renamed", "kvm_arm_gicv3_reset -> kvm_arm_gicv3_reset_hold", "hw/intc/arm_gicv3_kvm.c:67", "hw/intc/arm_gicv3_kvm.c:67"),  # Q16
    ("renamed", "kvm_arm_its_reset -> kvm_arm_its_reset_hold", "hw/intc/arm_gicv3_its_kvm.c:39", "hw/intc/arm_gicv3_its_kvm.c:39"),  # Q19
    ("signature-changed", "arm_cpu_reset_hold(Object *obj, ResetType type)", "target/arm/cpu.c:29", "target/arm/cpu.c:29"),  # Q13
    ("signature-changed", "arm_gicv3_common_reset_hold(Object *obj, ResetType type)", "hw/intc/arm_gicv3_common.c:30", "hw/intc/arm_gicv3_common.c:30"),  # Q26
    ("signature-changed", "gicv3_its_common_reset_hold(Object *obj, ResetType type)", "hw/intc/arm_gicv3_its_common.c:22", "hw/intc/arm_gicv3_its_common.c:22"),  # Q27
    ("signature-changed", "kvm_arm_gicv3_reset_hold(Object *obj, ResetType type)", "hw/intc/arm_gicv3_kvm.c:67", "hw/intc/arm_gicv3_kvm.c:67"),  # Q16
    ("signature-changed", "kvm_arm_its_reset_hold(Object *obj, ResetType type)", "hw/intc/arm_gicv3_its_kvm.c:39", "hw/intc/arm_gicv3_its_kvm.c:39"),  # Q19
    ("renamed", "kvm_hvc_call_handler -> kvm_smccc_call_handler", "arch/arm64/kvm/hypercalls.c:27", "arch/arm64/kvm/hypercalls.c:41"),  # L1
    ("signature-changed", "kvm_prepare_system_event(struct kvm_vcpu *vcpu, u32 type, u64 flags)", "arch/arm64/kvm/psci.c:17", "arch/arm64/kvm/psci.c:17"),  # L7
    ("path-changed", "qemu_devices_reset -> resettable_reset", "hw/core/reset.c:49", "hw/core/reset.c:118"),  # Q10
    ("signature-changed", "qemu_devices_reset(ResetType type)", "hw/core/reset.c:43", "hw/core/reset.c:115"),  # Q6
    ("registration-api-changed", "arm_cpu_class_init: device_class_set_parent_reset -> resettable_class_set_parent_phases", "target/arm/cpu.c:89", "target/arm/cpu.c:92"),  # Q14
    ("registration-api-changed", "kvm_arm_gicv3_class_init: device_class_set_parent_reset -> resettable_class_set_parent_phases", "hw/intc/arm_gicv3_kvm.c:113", "hw/intc/arm_gicv3_kvm.c:116"),  # Q17
    ("registration-api-changed", "kvm_arm_its_class_init: device_class_set_parent_reset -> resettable_class_set_parent_phases", "hw/intc/arm_gicv3_its_kvm.c:73", "hw/intc/arm_gicv3_its_kvm.c:76"),  # Q20
    ("moved", "softmmu/cpus.c -> system/cpus.c", "softmmu/cpus.c:0", "system/cpus.c:0"),  # Q2
    ("moved", "softmmu/runstate.c -> system/runstate.c", "softmmu/runstate.c:0", "system/runstate.c:0"),  # Q1
    ("calls-removed", "resettable_assert_reset", "", ""),
    ("calls-added", "reboot", "", ""),  # L13 (kernel_can_power_off)
    ("calls-added", "handle_smc", "", ""),  # L5
    ("calls-added", "kvm_psci_1_x_call", "", ""),  # L6
    ("calls-added", "kvm_smccc_call_handler", "", ""),  # L4 (kvm_smccc_get_action)
    ("calls-removed", "handle_smc", "", ""),  # L5 (kvm_inject_undefined)
    ("newly-verified", "handle_smc -> kvm_smccc_call_handler|kvm_hvc_call_handler", "", "arch/arm64/kvm/handle_exit.c:44"),  # L5
    ("newly-verified", "kvm_psci_1_x_call -> kvm_psci_system_reset2", "", "arch/arm64/kvm/psci.c:124"),  # L6
    ("newly-verified", "kvm_psci_system_reset2 -> kvm_prepare_system_event", "", "arch/arm64/kvm/psci.c:49"),  # L6
    ("calls-added", "qemu_devices_reset", "", ""),  # Q10
    ("newly-verified", "psci_sys_reset -> kvm_psci_1_x_call", "", "drivers/firmware/psci/psci.c:73"),  # L6
    ("calls-added", "kvm_cpu_exec", "", ""),  # bql_lock
    ("calls-added", "kvm_vcpu_thread_fn", "", ""),
    ("calls-removed", "kvm_cpu_exec", "", ""),  # qemu_mutex_lock_iothread
    ("calls-removed", "kvm_vcpu_thread_fn", "", ""),
]


@pytest.fixture(scope="module")
def results():
    old = run_flow(find_flow("arm64-reboot"), F / "linux" / "v6.1", F / "qemu" / "v7.2.0")
    new = run_flow(find_flow("arm64-reboot"), F / "linux" / "v6.12", F / "qemu" / "v10.0.0")
    return old, new


def _loc(ev):
    return f"{ev.path}:{ev.line}" if ev else ""


def test_fixture_drift_is_exactly_the_planted_list(results):
    report = diff_results(*results)
    got = [(i.kind, i.subject, _loc(i.old), _loc(i.new)) for i in report.items]
    assert got == EXPECTED


def test_details_and_confidence(results):
    items = {(i.kind, i.subject): i for i in diff_results(*results).items}
    ren = items[("renamed", "kvm_hvc_call_handler -> kvm_smccc_call_handler")]
    assert ren.severity == "changed" and 0.8 <= ren.confidence < 1.0 and ren.stage == "host"
    assert items[("calls-added", "kvm_smccc_call_handler")].detail == \
        "now also calls kvm_prepare_hypercall_exit, kvm_smccc_get_action"
    assert items[("moved", "softmmu/runstate.c -> system/runstate.c")].detail == (
        "functions: main_loop_should_exit, qemu_main_loop, qemu_reset_requested, qemu_system_reset, "
        "qemu_system_reset_request")
    assert items[("signature-changed", "kvm_prepare_system_event(struct kvm_vcpu *vcpu, u32 type, u64 flags)")] \
        .detail == "was kvm_prepare_system_event(struct kvm_vcpu *vcpu, u32 type)"


def test_no_drift_against_itself_and_line_shifts_are_not_drift(results):
    _old, new = results
    assert diff_results(new, new).items == []
    shifted = FlowResult.from_json(new.to_json())
    for h in shifted.hops:
        for e in h.evidence:
            e.line += 7
        for s in h.steps:
            s.line += 7
        h.to_line += 7
    assert diff_results(new, shifted).items == []


def test_broken_hop_and_fail_on(results):
    old, new = results
    report = diff_results(new, old)  # going backwards: SYSTEM_RESET2 disappears
    broken = [(i.kind, i.subject) for i in report.items if i.severity == "broken"]
    assert broken == [("broken", "kvm_psci_1_x_call -> kvm_psci_system_reset2"),
                      ("broken", "kvm_psci_system_reset2 -> kvm_prepare_system_event"),
                      ("broken", "psci_sys_reset -> kvm_psci_1_x_call")]
    assert fails(report, "broken") and fails(report, "changed") and fails(report, "any")
    forward = diff_results(old, new)
    assert not fails(forward, "broken") and fails(forward, "changed")
