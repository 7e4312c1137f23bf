"""The x86-reboot flow on the real Linux and QEMU releases.

Every file:line below was checked by reading the real files at that tag (git show TAG:PATH); the text
of the line is in the comment next to it. Run with `pytest -m realtrees -k x86`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_realtrees import LINUX, QEMU, cache  # noqa: F401 (fixture: skips without the trees)

pytestmark = pytest.mark.realtrees

ROOT = Path(__file__).resolve().parent.parent
COMBOS = {"v6.1.176": "v7.2.0", "v6.12.8": "v10.0.13", "v7.2.8": "v10.2.2"}
UNVERIFIABLE = {"efi_reboot->efi.reset_system", "outb->handle_io", "idt_invalidate->handle_triple_fault"}


@pytest.fixture(scope="module")
def results(cache):  # noqa: F811
    """One trace per release combination (the CLI as a subprocess, JSON output), shared by the tests."""
    out = {}
    for linux, qemu in COMBOS.items():
        p = subprocess.run([sys.executable, "-m", "flowscan", "-q", "--cache-dir", str(cache), "trace", "x86-reboot",
                            "--guest-repo", str(LINUX), "--guest", linux, "--host-repo", str(LINUX),
                            "--host", linux, "--vmm-repo", str(QEMU), "--vmm", qemu, "--format", "json"],
                           capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert "Traceback" not in p.stderr
        out[linux] = (p.returncode, json.loads(p.stdout))
    return out


def hop(result, hop_id):
    return next(h for h in result["hops"] if h["id"] == hop_id)


def where(result, hop_id, what=None):
    return [(e["path"], e["line"]) for e in hop(result, hop_id)["evidence"] if what is None or e["what"] == what]


@pytest.mark.parametrize("linux", list(COMBOS))
def test_every_hop_verified_or_explained(results, linux):
    code, r = results[linux]
    assert code == 0
    statuses = {h["id"]: h["status"] for h in r["hops"]}
    assert {i for i, s in statuses.items() if s == "unverifiable"} == UNVERIFIABLE
    vt = statuses.pop("vt_handle_exit->vmx_handle_exit")
    assert vt == ("verified" if linux == "v7.2.8" else "skipped-optional")  # vt_x86_ops wraps VMX and TDX
    chain = statuses.pop("native_machine_restart->do_kernel_restart")  # v7.2.8: do_kernel_restart(command);
    assert chain == ("verified" if linux == "v7.2.8" else "skipped-optional")
    assert {s for i, s in statuses.items() if i not in UNVERIFIABLE} == {"verified"}
    assert len(r["hops"]) == 59
    if linux == "v7.2.8":
        assert where(r, "native_machine_restart->do_kernel_restart") == [("arch/x86/kernel/reboot.c", 734)]


# guest: reboot_type methods in native_machine_emergency_restart (arch/x86/kernel/reboot.c)
GUEST = {
    "v6.1.176": {"acpi:acpi_reboot": 610, "kbd:outb": 620, "efi:efi_reboot": 632, "bios:machine_real_restart": 637,
                 "cf9:outb": 651, "triple:idt_invalidate": 661},
    "v6.12.8": {"acpi:acpi_reboot": 657, "kbd:outb": 667, "efi:efi_reboot": 679, "bios:machine_real_restart": 684,
                "cf9:outb": 698, "triple:idt_invalidate": 708},
    "v7.2.8": {"acpi:acpi_reboot": 609, "kbd:outb": 619, "efi:efi_reboot": 631, "bios:machine_real_restart": 636,
               "cf9:outb": 650, "triple:idt_invalidate": 660},
}


@pytest.mark.parametrize("linux", list(COMBOS))
def test_reboot_type_methods(results, linux):
    _, r = results[linux]
    for hop_id, line in GUEST[linux].items():  # acpi_reboot(); / outb(0xfe, 0x64); / efi_reboot(reboot_mode, NULL);
        assert where(r, hop_id, "call") == [("arch/x86/kernel/reboot.c", line)], hop_id  # machine_real_restart(
        #  MRR_BIOS); / outb(cf9|2, 0xcf9); / idt_invalidate();
    assert hop(r, "cf9:outb")["conditions"] == ["case BOOT_CF9_SAFE", "if (port_cf9_safe)"]
    assert hop(r, "kbd:outb")["conditions"] == ["case BOOT_KBD"]
    # drivers/acpi/osl.c: `outb(value, port);` under `if (width <= 8)`
    assert where(r, "acpi:outb", "call") == [("drivers/acpi/osl.c", {"v6.1.176": 672, "v6.12.8": 669,
                                                                       "v7.2.8": 707}[linux])]


@pytest.mark.parametrize("linux,store,call", [
    ("v6.1.176", ("arch/x86/kvm/vmx/vmx.c", 8242), 11020),   # r = static_call(kvm_x86_handle_exit)(vcpu, ...)
    ("v6.12.8", ("arch/x86/kvm/vmx/main.c", 77), 11096),     # r = kvm_x86_call(handle_exit)(vcpu, ...)
    ("v7.2.8", ("arch/x86/kvm/vmx/main.c", 944), 11094),     # .handle_exit = vt_op(handle_exit),
])
def test_handle_exit_dispatch_to_both_vendors(results, linux, store, call):
    _, r = results[linux]
    vmx, svm = hop(r, "vmx:handle_exit"), hop(r, "svm:handle_exit")
    for h in (vmx, svm):
        s = h["steps"][0]
        assert (s["kind"], s["via"], s["fanout"], s["path"], s["line"]) == (
            "ops-call", "kvm_x86_ops.handle_exit", 2, "arch/x86/kvm/x86.c", call)
    assert (vmx["steps"][0]["store_path"], vmx["steps"][0]["store_line"]) == store
    assert vmx["matched_to"] == ("vt_handle_exit" if linux == "v7.2.8" else "vmx_handle_exit")
    # .handle_exit = svm_handle_exit,
    assert svm["steps"][0]["store_line"] == {"v6.1.176": 4880, "v6.12.8": 5050, "v7.2.8": 5403}[linux]


@pytest.mark.parametrize("linux,vmx,svm", [
    # return kvm_vmx_exit_handlers[exit_handler_index](vcpu); [EXIT_REASON_IO_INSTRUCTION] = handle_io,
    ("v6.1.176", (6537, 6054, 6052, 39), (3421, 3234, 3237, 46)),
    ("v6.12.8", (6607, 6107, 6105, 39), (3514, 3325, 3328, 45)),
    ("v7.2.8", (6847, 6322, 6320, 42), (3664, 3382, 3385, 46)),
])
def test_exit_handler_tables(results, linux, vmx, svm):
    _, r = results[linux]
    for (call, io, shut, fan), (io_id, shut_id), path, table in (
            (vmx, ("__vmx_handle_exit->handle_io", "__vmx_handle_exit->handle_triple_fault"),
             "arch/x86/kvm/vmx/vmx.c", "kvm_vmx_exit_handlers"),
            (svm, ("svm_invoke_exit_handler->io_interception", "svm_invoke_exit_handler->shutdown_interception"),
             "arch/x86/kvm/svm/svm.c", "svm_exit_handlers")):
        for hop_id, store in ((io_id, io), (shut_id, shut)):
            h = hop(r, hop_id)
            s = h["steps"][0]
            # the hop's slot (the exit reason) narrows the table of `fan` handlers to the one at that slot
            assert (s["kind"], s["via"], s["fanout"], s["path"], s["line"], s["store_line"], h["width"]) == (
                "table", table, 1, path, call, store, 1), hop_id
            assert s["reason"].endswith(f"the slot the flow selects (the table holds {fan} targets)"), hop_id


@pytest.mark.parametrize("linux,io,vmx,svm,case_io,case_shut", [
    # vcpu->run->exit_reason = KVM_EXIT_IO; / KVM_EXIT_SHUTDOWN (vmx handle_triple_fault, svm shutdown_interception)
    ("v6.1.176", 7847, 5299, 2140, 2887, 2911),
    ("v6.12.8", 8174, 5383, 2228, 3185, 3206),
    ("v7.2.8", 7973, 5564, 2179, 3237, 3258),
])
def test_exits_to_qemu(results, linux, io, vmx, svm, case_io, case_shut):
    _, r = results[linux]
    assert where(r, "kvm-exit:IO") == [("arch/x86/kvm/x86.c", io), ("accel/kvm/kvm-all.c", case_io)]
    assert where(r, "kvm-exit:SHUTDOWN") == [("arch/x86/kvm/svm/svm.c", svm), ("arch/x86/kvm/vmx/vmx.c", vmx),
                                             ("accel/kvm/kvm-all.c", case_shut)]


PORTS = {  # (mr->ops->write line, fan-out, {hop: (store, region-map, region-ops)})
    "v6.1.176": ("softmmu/memory.c", 493, 15, {
        "pio-write:0x64": (("hw/input/pckbd.c", 807), ("hw/input/pckbd.c", 885), ("hw/input/pckbd.c", 847)),
        "pio-write:0xcf9:ich9": (("hw/isa/lpc_ich9.c", 652), ("hw/isa/lpc_ich9.c", 719), ("hw/isa/lpc_ich9.c", 717)),
        "pio-write:0xcf9:piix": (("hw/isa/piix3.c", 290), ("hw/isa/piix3.c", 311), ("hw/isa/piix3.c", 309))}),
    "v6.12.8": ("system/memory.c", 497, 14, {
        "pio-write:0x64": (("hw/input/pckbd.c", 801), ("hw/input/pckbd.c", 879), ("hw/input/pckbd.c", 841)),
        "pio-write:0xcf9:ich9": (("hw/isa/lpc_ich9.c", 674), ("hw/isa/lpc_ich9.c", 745), ("hw/isa/lpc_ich9.c", 743)),
        "pio-write:0xcf9:piix": (("hw/isa/piix.c", 289), ("hw/isa/piix.c", 313), ("hw/isa/piix.c", 311))}),
    "v7.2.8": ("system/memory.c", 491, 14, {
        "pio-write:0x64": (("hw/input/pckbd.c", 801), ("hw/input/pckbd.c", 879), ("hw/input/pckbd.c", 841)),
        "pio-write:0xcf9:ich9": (("hw/isa/lpc_ich9.c", 678), ("hw/isa/lpc_ich9.c", 749), ("hw/isa/lpc_ich9.c", 747)),
        "pio-write:0xcf9:piix": (("hw/isa/piix.c", 289), ("hw/isa/piix.c", 313), ("hw/isa/piix.c", 311))}),
}


@pytest.mark.parametrize("linux", list(COMBOS))
def test_port_writes_resolve_to_the_handler_mapped_at_the_port(results, linux):
    """`mr->ops->write(...)` fans out to every MemoryRegionOps write in scope; the port narrows it to the
    table registered there: .write = kbd_write_command; isa_register_ioport(isadev, isa_s->io + 1, 0x64);
    memory_region_init_io(isa_s->io + 1, obj, &i8042_cmd_ops, ...); ICH9_RST_CNT_IOPORT / PIIX_RCR_IOPORT."""
    _, r = results[linux]
    path, line, fanout, hops = PORTS[linux]
    for hop_id, (store, mapped, ops) in hops.items():
        s = hop(r, hop_id)["steps"][0]
        assert (s["kind"], s["via"], s["fanout"], s["path"], s["line"]) == ("field", "ops.write", fanout, path, line)
        assert (s["store_path"], s["store_line"]) == store
        assert where(r, hop_id, "region-map") == [mapped]
        assert where(r, hop_id, "region-ops") == [ops]
    narrowed = [c for c in hop(r, "pio-write:0x64")["conditions"] if c.startswith("address")]
    assert narrowed == [f"address 0x64: 1 of {fanout} targets (kbd_write_command)"]
    at_cf9 = [c for c in hop(r, "pio-write:0xcf9:ich9")["conditions"] if c.startswith("address")]
    # v7.2.0 still has hw/isa/piix4.c (MIPS Malta's PIIX4), also mapped at PIIX_RCR_IOPORT
    extra = ", piix4_rcr_write" if linux == "v6.1.176" else ""
    n = 3 if extra else 2
    assert at_cf9 == [f"address ICH9_RST_CNT_IOPORT: {n} of {fanout} targets (ich9_rst_cnt_write, rcr_write{extra})"]


@pytest.mark.parametrize("linux,kbd,cf9,qkbd,ich9,piix", [
    # outb(0xfe, 0x64); / isa_register_ioport(isadev, isa_s->io + 1, 0x64); / inb(0xcf9), outb(cf9|2, 0xcf9);
    ("v6.1.176", 620, (650, 651), 885, ("hw/isa/lpc_ich9.c", 719), ("hw/isa/piix3.c", 311)),
    ("v6.12.8", 667, (697, 698), 879, ("hw/isa/lpc_ich9.c", 745), ("hw/isa/piix.c", 313)),
    ("v7.2.8", 619, (649, 650), 879, ("hw/isa/lpc_ich9.c", 749), ("hw/isa/piix.c", 313)),
])
def test_port_numbers_hand_off_to_the_device_that_maps_them(results, linux, kbd, cf9, qkbd, ich9, piix):
    _, r = results[linux]
    assert where(r, "pio:0x64") == [("arch/x86/kernel/reboot.c", kbd), ("hw/input/pckbd.c", qkbd)]
    assert where(r, "pio:0xcf9") == [("arch/x86/kernel/reboot.c", cf9[0]), ("arch/x86/kernel/reboot.c", cf9[1]),
                                     ich9, piix]


@pytest.mark.parametrize("linux,kbd,ich9,piix,shut", [
    # qemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET); in kbd_write_command (case KBD_CCMD_RESET),
    # ich9_rst_cnt_write / rcr_write (if (val & 4)), kvm_cpu_exec (case KVM_EXIT_SHUTDOWN)
    ("v6.1.176", 387, 637, ("hw/isa/piix3.c", 275), 2913),
    ("v6.12.8", 387, 659, ("hw/isa/piix.c", 274), 3207),
    ("v7.2.8", 387, 663, ("hw/isa/piix.c", 274), 3259),
])
def test_reset_requests(results, linux, kbd, ich9, piix, shut):
    _, r = results[linux]
    assert where(r, "kbd:reset_request", "call") == [("hw/input/pckbd.c", kbd)]
    assert hop(r, "kbd:reset_request")["conditions"] == ["case KBD_CCMD_RESET"]
    assert where(r, "ich9:reset_request", "call") == [("hw/isa/lpc_ich9.c", ich9)]
    assert where(r, "piix:reset_request", "call") == [piix]
    assert where(r, "shutdown:reset_request", "call") == [("accel/kvm/kvm-all.c", shut)]
