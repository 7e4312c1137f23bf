"""The x86-reboot flow on the fixture trees: dispatch macros to the vendor ops, I/O ports narrowed to the
handler registered at that port, literal port numbers as handoff constants."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import pytest

from flowscan.extract.parse import extract_file
from flowscan.flow.spec import find_flow, load_flow
from flowscan.graph.callgraph import address_key, param_name, region_key, split_params
from tests.test_graph import graph_of
from tests.test_verify import hop, run_flow

UNVERIFIABLE = {"efi_reboot->efi.reset_system", "outb->handle_io", "idt_invalidate->handle_triple_fault"}


@pytest.fixture(scope="module")
def new(linux_new, qemu_new):
    return run_flow(find_flow("x86-reboot"), linux_new, qemu_new)


@pytest.fixture(scope="module")
def old(linux_old, qemu_old):
    return run_flow(find_flow("x86-reboot"), linux_old, qemu_old)


@pytest.mark.parametrize("which", ["new", "old"])
def test_every_hop_verified_or_explained(which, request):
    result = request.getfixturevalue(which)
    statuses = {h.id: h.status for h in result.hops}
    assert {i for i, s in statuses.items() if s == "unverifiable"} == UNVERIFIABLE
    assert statuses.pop("vt_handle_exit->vmx_handle_exit") == "skipped-optional"  # no TDX wrapper in the fixtures
    assert statuses.pop("native_machine_restart->do_kernel_restart") == "skipped-optional"  # (v7.x only)
    assert {s for i, s in statuses.items() if i not in UNVERIFIABLE} == {"verified"}
    assert len(result.hops) == 59 and result.ok


@pytest.mark.parametrize("which,store", [("new", ("arch/x86/kvm/vmx/main.c", 10)),
                                         ("old", ("arch/x86/kvm/vmx/vmx.c", 65))])
def test_dispatch_macro_resolves_to_both_vendors(which, store, request):
    """kvm_x86_call(handle_exit) (v6.12) and static_call(kvm_x86_handle_exit) (v6.1) -> kvm_x86_ops member."""
    result = request.getfixturevalue(which)
    vmx, svm = hop(result, "vmx:handle_exit"), hop(result, "svm:handle_exit")
    for h in (vmx, svm):
        s = h.steps[0]
        assert (h.resolution, s.via, s.fanout, s.path, s.line) == (
            "ops-call", "kvm_x86_ops.handle_exit", 2, "arch/x86/kvm/x86.c", 88)
    assert (vmx.steps[0].store_path, vmx.steps[0].store_line) == store
    assert (svm.steps[0].store_path, svm.steps[0].store_line) == ("arch/x86/kvm/svm/svm.c", 62)


def test_exit_handler_tables(new):
    """The hop's `slot` (the exit reason the instruction raises) narrows the table to its slot."""
    h = hop(new, "__vmx_handle_exit->handle_io")
    assert (h.resolution, h.steps[0].via, h.steps[0].store_line, h.steps[0].fanout, h.width) == (
        "table", "kvm_vmx_exit_handlers", 38, 1, 1)
    assert h.steps[0].reason == ("slot [EXIT_REASON_IO_INSTRUCTION] of kvm_vmx_exit_handlers "
                                 "(arch/x86/kvm/vmx/vmx.c:38), the slot the flow selects (the table holds 3 targets)")
    h = hop(new, "svm_invoke_exit_handler->shutdown_interception")
    assert (h.resolution, h.steps[0].via, h.steps[0].fanout) == ("table", "svm_exit_handlers", 1)


def test_a_slot_the_table_does_not_hold_there_is_missing(tmp_path, linux_new, qemu_new):
    """handle_io sits at [EXIT_REASON_IO_INSTRUCTION]; a flow that says the triple-fault slot calls it fails,
    naming the slot it is stored at."""
    text = find_flow("x86-reboot").read_text()
    assert text.count('to = "handle_io"\nslot = "EXIT_REASON_IO_INSTRUCTION"') == 1
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('to = "handle_io"\nslot = "EXIT_REASON_IO_INSTRUCTION"',
                                'to = "handle_io"\nslot = "EXIT_REASON_TRIPLE_FAULT"'))
    result = run_flow(bad, linux_new, qemu_new)
    h = hop(result, "__vmx_handle_exit->handle_io")
    assert (h.status, h.note) == ("missing", "handle_io is stored at [EXIT_REASON_IO_INSTRUCTION] of "
                                             "kvm_vmx_exit_handlers, not at [EXIT_REASON_TRIPLE_FAULT]")


def test_port_write_narrowed_to_the_registered_handler(new):
    h = hop(new, "pio-write:0x64")
    assert (h.resolution, h.steps[0].fanout, h.evidence[0].path, h.evidence[0].line) == (
        "field", 4, "system/memory.c", 20)  # mr->ops->write: every MemoryRegionOps write in scope
    regions = [(e.what, e.path, e.line, e.function) for e in h.evidence if e.what.startswith("region")]
    assert regions == [("region-map", "hw/input/pckbd.c", 82, "i8042_realizefn"),
                       ("region-ops", "hw/input/pckbd.c", 73, "")]
    assert "address 0x64: 1 of 4 targets (kbd_write_command)" in h.conditions
    h = hop(new, "pio-write:0xcf9:piix")
    assert [(e.what, e.path, e.line) for e in h.evidence if e.what.startswith("region")] == [
        ("region-map", "hw/isa/piix.c", 37), ("region-ops", "hw/isa/piix.c", 36)]
    assert "address PIIX_RCR_IOPORT: 2 of 4 targets (ich9_rst_cnt_write, rcr_write)" in h.conditions


def test_a_handler_at_another_port_is_missing(tmp_path, linux_new, qemu_new):
    spec = tmp_path / "port.toml"
    spec.write_text('name = "port"\n[[stage]]\nid = "s"\nrole = "vmm"\n[[stage.hop]]\n'
                    'from = "memory_region_write_accessor"\nto = "kbd_write_command"\naddress = ["0x60"]\n')
    h = run_flow(spec, linux_new, qemu_new).hops[0]
    assert h.status == "missing"
    assert h.note == "0x60: mapped to kbd_write_data (i8042_data_ops), not kbd_write_command"
    assert h.candidates == ["kbd_write_data (mapped at 0x60)"]
    # the same port spelled in decimal is the same port
    spec.write_text(spec.read_text().replace('"0x60"', '"100"'))
    assert run_flow(spec, linux_new, qemu_new).hops[0].status == "verified"


def test_port_numbers_are_handoff_constants(new):
    h = hop(new, "pio:0x64")
    assert [(e.role, e.path, e.line, e.function) for e in h.evidence] == [
        ("guest", "arch/x86/kernel/reboot.c", 44, "native_machine_emergency_restart"),
        ("vmm", "hw/input/pckbd.c", 82, "i8042_realizefn")]
    h = hop(new, "pio:0xcf9")
    assert [(e.path, e.line, e.function) for e in h.evidence] == [
        ("arch/x86/kernel/reboot.c", 70, "native_machine_emergency_restart"),
        ("arch/x86/kernel/reboot.c", 71, "native_machine_emergency_restart"),
        ("hw/isa/lpc_ich9.c", 38, "ich9_lpc_realize"), ("hw/isa/piix.c", 37, "pci_piix_realize")]


def test_reboot_type_methods_and_their_conditions(new):
    got = {i: (hop(new, i).evidence[0].line, hop(new, i).conditions) for i in
           ("acpi:acpi_reboot", "kbd:outb", "efi:efi_reboot", "cf9:outb", "triple:idt_invalidate")}
    assert got == {"acpi:acpi_reboot": (37, ["case BOOT_ACPI"]), "kbd:outb": (44, ["case BOOT_KBD"]),
                   "efi:efi_reboot": (55, ["case BOOT_EFI"]),
                   "cf9:outb": (70, ["case BOOT_CF9_SAFE", "if (port_cf9_safe)"]),
                   "triple:idt_invalidate": (77, ["case BOOT_TRIPLE"])}


def test_callers_through_the_dispatch_macro(linux_new):
    g = graph_of(linux_new, prefer=("arch/x86",))
    assert [(e.caller, e.kind, e.line) for e in g.callers("svm_handle_exit")] == [
        ("vcpu_enter_guest", "ops-call", 88)]


def test_function_pointer_table_declarators():
    ff = extract_file(b"static int (*const tab[])(struct kvm_vcpu *v) = { [A] = f, };\n"
                      b"static int (*plain[])(void) = { [B] = g };\n", "t.c")
    assert [(s.function, s.variable, s.index) for s in ff.stores] == [("f", "tab", "A"), ("g", "plain", "B")]


def test_parameters_with_function_pointer_types():
    params = split_params("(hwaddr a, MemTxResult (*access_fn)(MemoryRegion *mr, hwaddr a), void (*const cb)(void),"
                          " int v[4])")
    assert [param_name(p) for p in params] == ["a", "access_fn", "cb", "v"]


def test_address_and_region_keys():
    assert address_key("0x64") == address_key("0X64") == address_key("100") == address_key("0x64u") == "100"
    assert address_key("ICH9_RST_CNT_IOPORT") == "ICH9_RST_CNT_IOPORT"
    assert region_key("isa_s->io + 1") == region_key("s->io+1") == "io+1"
    assert region_key("&lpc->rst_cnt_mem") == "rst_cnt_mem"


def test_spec_rejects_a_bad_address(tmp_path):
    from flowscan.errors import FlowscanError
    spec = tmp_path / "bad.toml"
    spec.write_text('name = "bad"\n[[stage]]\nid = "s"\nrole = "vmm"\n[[stage.hop]]\nfrom = "a"\nto = "b"\n'
                    'address = 100\n')
    with pytest.raises(FlowscanError, match=r"bad.toml:5: stage.0.hop.0.address"):
        load_flow(spec)


def test_flow_is_listed():
    assert Path(find_flow("x86-reboot")).name == "x86-reboot.toml"


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium")
@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz `dot`")
def test_x86_report_in_headless_chromium(tmp_path, new):
    """The HTML report of x86-reboot renders: the script ran, every hop has its table row, the region
    evidence of the port hops is on the page, and a screenshot is not blank."""
    from flowscan.report import diagram as render
    from flowscan.report import html as html_report
    from flowscan.report import painter
    from tests.test_report import _chromium, _console_messages

    page = tmp_path / "x86.html"
    page.write_text(html_report.html_page(new, painter.svg_text(painter.flow_graph(new))), encoding="utf-8")
    target = render.node_id("vmm", "kbd_write_command")
    dom = _chromium(["--dump-dom", f"{page.as_uri()}#select={target}"], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_messages(dom.stderr) == []
    html = dom.stdout
    assert 'data-ready="1"' in html and "<svg" in html and f'id="{target}"' in html
    rows = re.findall(r'<tr class="hop(?: hl)?" id="([^"]+)"', html)
    assert sorted(rows) == sorted(render.hop_class(h.id) for h in new.hops)
    highlighted = set(re.findall(r'<tr class="hop hl" id="([^"]+)"', html))
    assert highlighted == {render.hop_class(i) for i in ("pio-write:0x64", "kbd:reset_request")}
    assert "x86-64 guest reboot under KVM and QEMU" in html
    assert "hw/input/pckbd.c:82" in html  # where port 0x64 is mapped (isa_register_ioport)
    shot = tmp_path / "x86.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1600,1000", page.as_uri()], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1600, 1000)
    assert len(data) > 50_000, "screenshot looks blank"
