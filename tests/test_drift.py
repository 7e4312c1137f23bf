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
    ('registration-changed', 'arm_gicv3_common_class_init', '', ''),  # Q26: the parent behind a qom-parent call
    ('registration-changed', 'cpu_common_class_init', '', ''),  # Q25
    ('registration-changed', 'gicv3_its_common_class_init', '', ''),  # Q27
    ('path-changed', 'arm_cpu_reset_hold -> cpu_common_reset_hold: under other conditions', 'target/arm/cpu.c:36', 'target/arm/cpu.c:37'),  # Q30 (new parent hop)
    ('path-changed', 'do_cpu_reset -> arm_cpu_reset_hold|arm_cpu_reset', 'hw/core/resettable.c:77', 'hw/core/resettable.c:71'),  # Q9
    ('path-changed', 'kvm_arm_gicv3_reset_hold -> arm_gicv3_common_reset_hold: under other conditions', 'hw/intc/arm_gicv3_kvm.c:72', 'hw/intc/arm_gicv3_kvm.c:73'),  # Q18
    ('path-changed', 'qemu_devices_reset -> do_cpu_reset', 'hw/core/reset.c:49', 'hw/core/reset.c:118'),  # Q10
    ('path-changed', 'resettable_reset -> kvm_arm_gicv3_reset_hold|kvm_arm_gicv3_reset', 'hw/core/resettable.c:77', 'hw/core/resettable.c:71'),  # Q9
    ('path-changed', 'resettable_reset -> kvm_arm_its_reset_hold|kvm_arm_its_reset', 'hw/core/resettable.c:77', 'hw/core/resettable.c:71'),  # Q9
    ('renamed', 'arm_cpu_reset -> arm_cpu_reset_hold', 'target/arm/cpu.c:29', 'target/arm/cpu.c:29'),  # Q13
    ('renamed', 'arm_gicv3_common_reset -> arm_gicv3_common_reset_hold', 'hw/intc/arm_gicv3_common.c:30', 'hw/intc/arm_gicv3_common.c:30'),  # Q26
    ('renamed', 'cpu_common_reset -> cpu_common_reset_hold', 'hw/core/cpu-common.c:32', 'hw/core/cpu-common.c:32'),  # Q25
    ('renamed', 'gicv3_its_common_reset -> gicv3_its_common_reset_hold', 'hw/intc/arm_gicv3_its_common.c:22', 'hw/intc/arm_gicv3_its_common.c:22'),  # Q27
    ('renamed', 'kvm_arm_gicv3_reset -> kvm_arm_gicv3_reset_hold', 'hw/intc/arm_gicv3_kvm.c:67', 'hw/intc/arm_gicv3_kvm.c:67'),  # Q16
    ('renamed', 'kvm_arm_its_reset -> kvm_arm_its_reset_hold', 'hw/intc/arm_gicv3_its_kvm.c:39', 'hw/intc/arm_gicv3_its_kvm.c:39'),  # Q19
    ('signature-changed', '6 functions: DeviceState* -> Object*, ResetType', 'target/arm/cpu.c:29', 'target/arm/cpu.c:29'),  # Q13 Q16 Q19 Q25-Q27: one grouped item
    ('renamed', 'kvm_hvc_call_handler -> kvm_smccc_call_handler', 'arch/arm64/kvm/hypercalls.c:27', 'arch/arm64/kvm/hypercalls.c:41'),  # L1
    ('signature-changed', 'kvm_prepare_system_event(struct kvm_vcpu *vcpu, u32 type, u64 flags)', 'arch/arm64/kvm/psci.c:17', 'arch/arm64/kvm/psci.c:17'),  # L7
    ('path-changed', 'kvm_arm_its_reset_hold -> gicv3_its_common_reset_hold: under other conditions', 'hw/intc/arm_gicv3_its_kvm.c:45', 'hw/intc/arm_gicv3_its_kvm.c:46'),  # Q21
    ('signature-changed', 'void kvm_reset_vcpu(struct kvm_vcpu *vcpu)', 'arch/arm64/kvm/reset.c:14', 'arch/arm64/kvm/reset.c:14'),  # L15
    ('moved', 'softmmu/main.c -> system/main.c', 'softmmu/main.c:0', 'system/main.c:0'),  # Q31
    ('moved', 'softmmu/runstate.c -> system/runstate.c', 'softmmu/runstate.c:0', 'system/runstate.c:0'),  # Q1
    ('moved', 'softmmu/vl.c -> system/vl.c', 'softmmu/vl.c:0', 'system/vl.c:0'),  # Q31
    ('moved', 'target/arm/kvm64.c -> target/arm/kvm.c', 'target/arm/kvm64.c:0', 'target/arm/kvm.c:0'),  # Q33
    ('path-changed', 'main -> qemu_default_main: under other conditions', 'softmmu/main.c:26', 'system/main.c:32'),  # Q31
    ('path-changed', 'main -> qemu_main_loop', 'softmmu/main.c:26', 'system/main.c:32'),  # Q31
    ('path-changed', 'qemu_devices_reset -> resettable_reset', 'hw/core/reset.c:49', 'hw/core/reset.c:118'),  # Q10
    ('signature-changed', '2 functions: + Error**', 'target/arm/kvm64.c:23', 'target/arm/kvm.c:103'),  # Q33
    ('signature-changed', 'qemu_devices_reset(ResetType type)', 'hw/core/reset.c:43', 'hw/core/reset.c:115'),  # Q6
    ('signature-changed', 'void* qemu_default_main(void *opaque)', 'softmmu/main.c:11', 'system/main.c:12'),  # Q31
    ('registration-api-changed', 'arm_cpu_class_init: device_class_set_parent_reset -> resettable_class_set_parent_phases', 'target/arm/cpu.c:89', 'target/arm/cpu.c:92'),  # Q14
    ('registration-api-changed', 'kvm_arm_gicv3_class_init: device_class_set_parent_reset -> resettable_class_set_parent_phases', 'hw/intc/arm_gicv3_kvm.c:113', 'hw/intc/arm_gicv3_kvm.c:116'),  # Q17
    ('registration-api-changed', 'kvm_arm_its_class_init: device_class_set_parent_reset -> resettable_class_set_parent_phases', 'hw/intc/arm_gicv3_its_kvm.c:73', 'hw/intc/arm_gicv3_its_kvm.c:76'),  # Q20
    ('signature-changed', '7 functions: void* -> const void*', 'target/arm/cpu.c:81', 'target/arm/cpu.c:83'),  # Q34: one grouped item
    ('moved', 'softmmu/cpus.c -> system/cpus.c', 'softmmu/cpus.c:0', 'system/cpus.c:0'),  # Q2
    ('path-changed', 'kvm_vcpu_thread_fn: qemu_process_cpu_events now before kvm_cpu_exec', 'accel/kvm/kvm-accel-ops.c:43', 'accel/kvm/kvm-accel-ops.c:37'),  # Q32
    ('renamed', 'qemu_wait_io_event -> qemu_process_cpu_events', 'softmmu/cpus.c:123', 'system/cpus.c:123'),  # Q32
    ('calls-removed', 'resettable_assert_reset', '', ''),
    ('calls-added', 'reboot', '', ''),
    ('calls-added', 'handle_smc', '', ''),
    ('calls-added', 'kvm_psci_1_x_call', '', ''),
    ('calls-added', 'kvm_smccc_call_handler', '', ''),
    ('calls-removed', 'handle_smc', '', ''),
    ('newly-verified', 'handle_smc -> kvm_smccc_call_handler|kvm_hvc_call_handler', '', 'arch/arm64/kvm/handle_exit.c:44'),
    ('newly-verified', 'kvm_psci_1_x_call -> kvm_psci_system_reset2', '', 'arch/arm64/kvm/psci.c:124'),
    ('newly-verified', 'kvm_psci_system_reset2 -> kvm_prepare_system_event', '', 'arch/arm64/kvm/psci.c:49'),
    ('calls-added', 'kvm_reset_vcpu', '', ''),
    ('calls-added', 'kvm_vcpu_set_target', '', ''),
    ('calls-added', 'main', '', ''),
    ('calls-added', 'qemu_default_main', '', ''),
    ('calls-added', 'qemu_devices_reset', '', ''),
    ('newly-verified', 'psci_sys_reset -> kvm_psci_1_x_call', '', 'drivers/firmware/psci/psci.c:73'),
    ('calls-added', 'kvm_cpu_exec', '', ''),
    ('calls-added', 'kvm_vcpu_thread_fn', '', ''),
    ('calls-removed', 'kvm_cpu_exec', '', ''),
    ('calls-removed', 'kvm_vcpu_thread_fn', '', ''),
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
