"""The route a booted arm64 KVM guest takes, on real releases: every call site of a hop with the one a
default reboot takes, and the CPU reset through the legacy reset handler with each dispatch's width.

Every expected line was checked by reading the real files at that tag:
- drivers/firmware/psci/psci.c psci_sys_reset: `if ((reboot_mode == REBOOT_WARM || reboot_mode == REBOOT_SOFT)
  && psci_system_reset2_supported)` -> invoke_psci_fn(PSCI_FN_NATIVE(1_1, SYSTEM_RESET2)), else
  invoke_psci_fn(PSCI_0_2_FN_SYSTEM_RESET); reboot_mode is a zero-initialised global on arm64 (kernel/reboot.c:
  DEFAULT_REBOOT_MODE is empty unless CONFIG_ARM) and REBOOT_COLD = 0 (include/linux/reboot.h).
- kernel/reboot.c SYSCALL_DEFINE4(reboot): kernel_restart(NULL) under case LINUX_REBOOT_CMD_RESTART and
  kernel_restart(buffer) under case LINUX_REBOOT_CMD_RESTART2.
- QEMU hw/arm/boot.c arm_load_kernel: qemu_register_reset(do_cpu_reset, ARM_CPU(cs)) per CPU ("CPU objects
  (unlike devices) are not automatically reset on system reset"); do_cpu_reset -> cpu_reset
  (hw/core/cpu-common.c) -> device_cold_reset (hw/core/qdev.c) -> resettable_reset(OBJECT(dev)).
- v7.2.0 hw/core/reset.c: qemu_devices_reset walks reset_handlers, `re->func(re->opaque)` at :84;
  v10.x: qemu_register_reset wraps the handler in a LegacyReset whose hold phase legacy_reset_hold
  (set at :92) calls `lr->func(lr->opaque)` at :76, reached from qemu_devices_reset -> resettable_reset(root
  container) -> resettable_phase_hold's `rc->phases.hold(obj, type)` (hw/core/resettable.c:162).
"""

from __future__ import annotations

import pytest

from tests.test_realtrees import LINUX, QEMU, _have, _trace, fs, cache  # noqa: F401 (fixtures)

pytestmark = pytest.mark.realtrees

COMBOS = [("v6.1.176", "v7.2.0"), ("v6.12.8", "v10.0.13"), ("v7.2.8", "v10.2.2")]
PSCI_SITES = {"v6.1.176": (317, 319), "v6.12.8": (318, 320), "v7.2.8": (319, 321)}
RESTART_SITES = {"v6.1.176": (738, 766), "v6.12.8": (754, 782), "v7.2.8": (768, 796)}
BOOT_C = {"v7.2.0": 1268, "v10.0.13": 1223, "v10.2.2": 1192}
# Hold phases (7.2: dc->reset) the phase dispatch reaches in the flow's QEMU scope, counted by reading every
# resettable_class_set_parent_phases / phases.hold / dc->reset store there and keeping the files the
# aarch64-softmmu build compiles (7.2's aarch64 default config still builds every 32-bit Arm board, hence
# aspeed/bcm2835/omap/...; PPC xics, LoongArch extioi/ipi/pic, x86 apic/ioapic/i8259, s390 flic are not built).
# Without the build configuration the same scope gives 40 / 12 / 17.
HOLD_WIDTH = {"v7.2.0": 22, "v10.0.13": 11, "v10.2.2": 11}


@pytest.fixture(scope="module")
def traces(cache):  # noqa: F811
    return {}


def _hops(fs, traces, linux_ref, qemu_ref):  # noqa: F811
    if not (_have(LINUX, linux_ref) and _have(QEMU, qemu_ref)):
        pytest.skip(f"{linux_ref}/{qemu_ref} not built")
    key = (linux_ref, qemu_ref)
    if key not in traces:
        _code, res = _trace(fs, linux_ref, qemu_ref)
        traces[key] = {h["id"]: h for h in res["hops"]}
    return traces[key]


@pytest.mark.parametrize("linux_ref,qemu_ref", COMBOS)
def test_both_psci_call_sites_and_the_one_a_default_reboot_takes(fs, traces, linux_ref, qemu_ref):  # noqa: F811
    h = _hops(fs, traces, linux_ref, qemu_ref)["psci_sys_reset->__invoke_psci_fn_hvc"]
    warm, cold = PSCI_SITES[linux_ref]
    got = [(s["path"], s["line"], s["default_taken"], s["chosen"]) for s in h["sites"]]
    assert got == [("drivers/firmware/psci/psci.c", warm, False, False),
                   ("drivers/firmware/psci/psci.c", cold, True, True)]
    assert h["default_taken"] is True and h["steps"][0]["line"] == cold
    (c_warm,), (c_cold,) = (s["conditions"] for s in h["sites"])
    assert c_warm["text"] == ("if ((reboot_mode == REBOOT_WARM || reboot_mode == REBOOT_SOFT) && "
                              "psci_system_reset2_supported)")
    assert (c_warm["value"], c_warm["why"]) == (False, "reboot_mode = REBOOT_COLD")
    assert (c_cold["value"], c_cold["text"].startswith("if (!((reboot_mode")) == (True, True)


@pytest.mark.parametrize("linux_ref,qemu_ref", COMBOS)
def test_both_kernel_restart_call_sites_in_reboot(fs, traces, linux_ref, qemu_ref):  # noqa: F811
    h = _hops(fs, traces, linux_ref, qemu_ref)["reboot->kernel_restart"]
    restart, restart2 = RESTART_SITES[linux_ref]
    assert [(s["line"], [c["text"] for c in s["conditions"]], s["default_taken"]) for s in h["sites"]] == [
        (restart, ["case LINUX_REBOOT_CMD_RESTART"], True), (restart2, ["case LINUX_REBOOT_CMD_RESTART2"], False)]
    assert all(s["path"] == "kernel/reboot.c" for s in h["sites"])


@pytest.mark.parametrize("linux_ref,qemu_ref", COMBOS[1:])
def test_cpu_reset_through_legacy_reset_hold_on_qemu_10(fs, traces, linux_ref, qemu_ref):  # noqa: F811
    hops = _hops(fs, traces, linux_ref, qemu_ref)
    h = hops["cpu:reset-handler"]
    assert [(s["caller"], s["callee"], s["kind"]) for s in h["steps"]] == [
        ("qemu_devices_reset", "resettable_reset", "direct"),
        ("resettable_reset", "resettable_assert_reset", "direct"),
        ("resettable_assert_reset", "resettable_phase_hold", "direct"),
        ("resettable_phase_hold", "legacy_reset_hold", "field"),
        ("legacy_reset_hold", "do_cpu_reset", "registration")]
    hold, func = h["steps"][3], h["steps"][4]
    assert (hold["path"], hold["line"], hold["store_path"], hold["store_line"]) == (
        "hw/core/resettable.c", 162, "hw/core/reset.c", 92)
    assert (func["path"], func["line"], func["store_path"], func["store_line"]) == (
        "hw/core/reset.c", 76, "hw/arm/boot.c", BOOT_C[qemu_ref])
    assert func["reason"] == f"registered with qemu_register_reset in arm_load_kernel (hw/arm/boot.c:{BOOT_C[qemu_ref]})"
    # honest width: the root container's hold dispatch reaches every hold phase built for aarch64 in scope
    assert h["wide"] and h["width"] == hold["fanout"] == HOLD_WIDTH[qemu_ref]
    reg = hops["cpu:qemu_register_reset"]
    assert (reg["status"], reg["evidence"][0]["path"], reg["evidence"][0]["line"]) == (
        "verified", "hw/arm/boot.c", BOOT_C[qemu_ref])
    h = hops["do_cpu_reset->arm_cpu_reset_hold"]
    assert [s["callee"] for s in h["steps"]] == ["cpu_reset", "device_cold_reset", "resettable_reset",
                                                 "resettable_assert_reset", "resettable_phase_hold",
                                                 "arm_cpu_reset_hold"]
    last = h["steps"][-1]
    assert (last["path"], last["line"], last["fanout"], last["obj_type"]) == ("hw/core/resettable.c", 162, 1, "arm-cpu")
    assert (last["store_path"], last["store_line"]) == (
        "target/arm/cpu.c", {"v10.0.13": 2707, "v10.2.2": 2384}[qemu_ref])
    assert not h["wide"] and h["width"] == 1


def test_cpu_reset_through_reset_handlers_on_qemu_72(fs, traces):  # noqa: F811
    hops = _hops(fs, traces, "v6.1.176", "v7.2.0")
    h = hops["cpu:reset-handler"]
    assert [(s["caller"], s["callee"], s["kind"], s["path"], s["line"], s["store_path"], s["store_line"])
            for s in h["steps"]] == [("qemu_devices_reset", "do_cpu_reset", "registration", "hw/core/reset.c", 84,
                                      "hw/arm/boot.c", 1268)]
    h = hops["do_cpu_reset->arm_cpu_reset_hold"]
    assert [s["callee"] for s in h["steps"]][-3:] == ["resettable_phase_hold", "device_transitional_reset",
                                                      "arm_cpu_reset"]
    last = h["steps"][-1]
    assert (last["kind"], last["fanout"], last["obj_type"], last["store_path"], last["store_line"]) == (
        "registration", 1, "arm-cpu", "target/arm/cpu.c", 2218)  # dc->reset of arm-cpu, not of 40 devices


@pytest.mark.parametrize("linux_ref,qemu_ref", COMBOS)
def test_gic_hold_phases_are_reached_only_through_the_wide_dispatch(fs, traces, linux_ref, qemu_ref):  # noqa: F811
    """GICv3 and ITS are sysbus children: their hold phases come from the generic phase dispatch, whose
    fan-out is every hold phase (7.2: every dc->reset) in scope that the aarch64-softmmu build compiles;
    no narrower route exists statically."""
    width = HOLD_WIDTH[qemu_ref]
    hops = _hops(fs, traces, linux_ref, qemu_ref)
    for hid in ("resettable_reset->kvm_arm_gicv3_reset_hold", "resettable_reset->kvm_arm_its_reset_hold"):
        h = hops[hid]
        assert (h["status"], h["wide"], h["width"], h["narrower"]) == ("verified", True, width, [])


# arch/arm64/kvm/handle_exit.c arm_exit_handlers: handle_hvc at [ESR_ELx_EC_HVC32] and [ESR_ELx_EC_HVC64],
# handle_smc at [ESR_ELx_EC_SMC64]; handle_trap_exceptions calls `exit_handler(vcpu)` from kvm_get_exit_handler.
EXIT_SLOTS = {"v6.1.176": (210, 211, 16), "v6.12.8": (305, 306, 18), "v7.2.8": (388, 389, 21)}


@pytest.mark.parametrize("linux_ref,qemu_ref", COMBOS)
def test_exit_handler_table_narrowed_to_the_exception_class(fs, traces, linux_ref, qemu_ref):  # noqa: F811
    """The guest's `hvc #0` raises ESR_ELx_EC_HVC64: of the table's handlers only the one at that slot runs."""
    hops = _hops(fs, traces, linux_ref, qemu_ref)
    hvc, smc, table = EXIT_SLOTS[linux_ref]
    for hid, slot, line in (("handle_trap_exceptions->handle_hvc", "ESR_ELx_EC_HVC64", hvc),
                            ("handle_trap_exceptions->handle_smc", "ESR_ELx_EC_SMC64", smc)):
        h = hops[hid]
        (s,) = h["steps"]
        assert (h["status"], h["wide"], h["width"], s["kind"], s["fanout"], s["store_path"], s["store_line"]) == (
            "verified", False, 1, "table", 1, "arch/arm64/kvm/handle_exit.c", line), hid
        assert s["reason"] == (f"slot [{slot}] of arm_exit_handlers (arch/arm64/kvm/handle_exit.c:{line}), the "
                               f"slot the flow selects (the table holds {table} targets)"), hid

