"""Flow specs and hop-by-hop verification on the fixture trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowscan.errors import FlowscanError
from flowscan.graph.callgraph import Graph
from flowscan.flow.spec import find_flow, load_flow
from flowscan.flow.verify import verify
from tests.test_graph import graph_of

ROOT = Path(__file__).resolve().parent.parent


def run_flow(spec_path: Path, linux: Path, qemu: Path):
    spec = load_flow(spec_path)
    lg = graph_of(linux, prefer=spec.prefer.get("guest", ()))
    return verify(spec, {"guest": lg, "host": lg, "vmm": graph_of(qemu, prefer=spec.prefer.get("vmm", ()))})


@pytest.fixture(scope="module")
def new(linux_new, qemu_new):
    return run_flow(find_flow("arm64-reboot"), linux_new, qemu_new)


@pytest.fixture(scope="module")
def old(linux_old, qemu_old):
    return run_flow(find_flow("arm64-reboot"), linux_old, qemu_old)


def hop(result, hop_id):
    return next(h for h in result.hops if h.id == hop_id)


def test_every_hop_verified_on_the_newer_fixtures(new):
    statuses = {h.id: h.status for h in new.hops}
    assert statuses.pop("efi_reboot->efi.reset_system") == "unverifiable"
    assert statuses.pop("qemu_system_reset->mc->reset") == "unverifiable"
    assert set(statuses.values()) == {"verified"}
    assert len(new.hops) == 81 and new.ok


def test_evidence_of_direct_and_indirect_hops(new):
    h = hop(new, "reboot->kernel_restart")
    assert (h.resolution, h.evidence[0].path, h.evidence[0].line, h.conditions) == (
        "direct", "kernel/reboot.c", 153, ["case LINUX_REBOOT_CMD_RESTART"])
    h = hop(new, "do_kernel_restart->psci_sys_reset")
    assert h.resolution == "notifier"
    assert [(e.path, e.line, e.what) for e in h.evidence] == [
        ("kernel/reboot.c", 76, "call"), ("drivers/firmware/psci/psci.c", 108, "registration")]
    h = hop(new, "handle_trap_exceptions->handle_hvc")
    # stored at [ESR_ELx_EC_HVC32] (:72) and [ESR_ELx_EC_HVC64] (:74); the flow's slot selects the second
    assert (h.resolution, h.steps[0].via, h.steps[0].store_line, h.steps[0].fanout, h.width) == (
        "table", "exit_handle_fn", 74, 1, 1)
    h = hop(new, "kvm_arm_gicv3_reset_hold->arm_gicv3_common_reset_hold")
    assert (h.resolution, h.evidence[0].line, h.evidence[1].path, h.evidence[1].line) == (
        "qom-parent", 73, "hw/intc/arm_gicv3_common.c", 64)


def test_conditions_put_the_call_on_the_path(new):
    h = hop(new, "kvm_cpu_exec->qemu_system_reset_request")
    assert "case KVM_EXIT_SYSTEM_EVENT" in h.conditions and "case KVM_SYSTEM_EVENT_RESET" in h.conditions
    # the call a default reboot takes (reboot_mode = REBOOT_COLD): the else branch, SYSTEM_RESET
    h = hop(new, "psci_sys_reset->__invoke_psci_fn_hvc")
    assert h.conditions == ["if (!((reboot_mode == REBOOT_WARM || reboot_mode == REBOOT_SOFT) && "
                            "psci_system_reset2_supported))"]


def test_every_call_site_with_its_default(new, old):
    h = hop(new, "psci_sys_reset->__invoke_psci_fn_hvc")
    assert [(s.line, s.default_taken, s.chosen) for s in h.sites] == [(73, False, False), (75, True, True)]
    assert h.default_taken is True and h.evidence[0].line == 75
    first = h.sites[0].conditions[0]
    assert (first.value, first.why) == (False, "reboot_mode = REBOOT_COLD")
    assert h.sites[0].callee == "__invoke_psci_fn_hvc|__invoke_psci_fn_smc"
    h = hop(old, "reboot->kernel_restart")
    assert [(s.line, s.default_taken, [c.text for c in s.conditions]) for s in h.sites] == [
        (109, True, ["case LINUX_REBOOT_CMD_RESTART"]), (125, False, ["case LINUX_REBOOT_CMD_RESTART2"])]
    h = hop(new, "machine_restart->efi_reboot")  # a run-time test: said so, not guessed
    assert h.default_taken is None and h.sites[0].conditions[0].why.startswith("not decided statically: efi_enabled(")


def test_reach_hop_reports_the_path(new):
    h = hop(new, "do_cpu_reset->arm_cpu_reset_hold")
    assert [s.callee for s in h.steps] == ["cpu_reset", "device_cold_reset", "resettable_reset",
                                           "resettable_assert_reset", "resettable_phase_hold", "arm_cpu_reset_hold"]
    assert [s.kind for s in h.steps][-1] == "registration"


def test_cpu_reset_route_through_the_legacy_reset_handler(new, old):
    """The CPU is reset by the handler arm_load_kernel registers (hw/arm/boot.c), and its hold phase is the
    one of its own type: not the dispatch to every hold phase in scope."""
    h = hop(new, "cpu:reset-handler")
    assert [(s.caller, s.callee, s.kind) for s in h.steps][-2:] == [
        ("resettable_phase_hold", "legacy_reset_hold", "field"), ("legacy_reset_hold", "do_cpu_reset", "registration")]
    assert (h.steps[-1].store_path, h.steps[-1].store_line) == ("hw/arm/boot.c", 29)
    assert h.wide and h.width == 9  # resettable_phase_hold's rc->phases.hold: every hold phase in scope
    h = hop(old, "cpu:reset-handler")
    assert [(s.caller, s.callee, s.kind, s.line) for s in h.steps] == [
        ("qemu_devices_reset", "do_cpu_reset", "registration", 49)]  # the reset_handlers walk
    for res, last in ((new, "arm_cpu_reset_hold"), (old, "arm_cpu_reset")):
        h = hop(res, "do_cpu_reset->arm_cpu_reset_hold")
        st = h.steps[-1]
        assert (st.callee, st.fanout, st.obj_type) == (last, 1, "arm-cpu") and not h.wide and h.width == 1
        assert "arm_cpu_class_init" in st.reason
    assert hop(new, "cpu:qemu_register_reset").evidence[0].path == "hw/arm/boot.c"


def test_wide_dispatch_is_flagged_and_the_threshold_is_data(new, linux_new, qemu_new, tmp_path):
    h = hop(new, "resettable_reset->kvm_arm_gicv3_reset_hold")
    assert (h.status, h.wide, h.width, h.narrower) == ("verified", True, 9, [])
    text = (ROOT / "queries" / "flows" / "arm64-reboot.toml").read_text()
    spec = tmp_path / "wider.toml"
    spec.write_text('wide_fanout = 20\n' + text)
    h = hop(run_flow(spec, linux_new, qemu_new), "resettable_reset->kvm_arm_gicv3_reset_hold")
    assert (h.wide, h.width) == (False, 9)


def test_handoffs_and_flags(new):
    h = hop(new, "kvm-exit:SYSTEM_EVENT_RESET")
    assert h.status == "verified"
    got = {(e.role, e.function, e.what, e.constant, e.target, e.side) for e in h.evidence}
    assert ("host", "kvm_prepare_system_event", "assign", "KVM_EXIT_SYSTEM_EVENT", "run.exit_reason",
            "producer") in got
    assert ("vmm", "kvm_cpu_exec", "case", "KVM_SYSTEM_EVENT_RESET", "run->system_event.type", "consumer") in got
    assert h.constants == ["KVM_EXIT_SYSTEM_EVENT", "KVM_SYSTEM_EVENT_RESET"]
    h = hop(new, "flag:reset_requested")
    assert [(e.what, e.function) for e in h.evidence][0] == ("write", "qemu_system_reset_request")
    assert h.evidence[-1].what == "read" and h.evidence[-1].function == "qemu_reset_requested"


def test_registrations(new, old):
    h = hop(new, "kvm_arm_gicv3_class_init:hold")
    assert (h.status, h.api, h.matched_to, h.evidence[0].path, h.evidence[0].line) == (
        "verified", "resettable_class_set_parent_phases", "kvm_arm_gicv3_reset_hold", "hw/intc/arm_gicv3_kvm.c", 116)
    h = hop(old, "kvm_arm_gicv3_class_init:hold")
    assert (h.status, h.api, h.matched_to, h.evidence[0].line) == (
        "verified", "device_class_set_parent_reset", "kvm_arm_gicv3_reset", 113)


def test_older_fixtures_miss_system_reset2_with_candidates(old):
    missing = {h.id: h for h in old.hops if h.status in ("missing", "skipped-optional")}
    assert sorted(missing) == ["handle_smc->kvm_smccc_call_handler", "kvm_psci_1_x_call->kvm_psci_system_reset2",
                               "kvm_psci_system_reset2->kvm_prepare_system_event", "psci:SYSTEM_RESET2"]
    assert missing["handle_smc->kvm_smccc_call_handler"].status == "skipped-optional"
    h = missing["kvm_psci_1_x_call->kvm_psci_system_reset2"]
    assert h.candidates[0] == "kvm_psci_system_reset (similar name)"
    assert h.note == "kvm_psci_system_reset2 not called from kvm_psci_1_x_call"
    h = missing["psci:SYSTEM_RESET2"]
    assert "not consumed by kvm_psci_1_x_call" in h.note
    assert h.candidates and h.candidates[0].startswith("kvm_psci_1_x_call tests: ")
    assert not old.ok


def test_renamed_callee_is_a_likely_rename_candidate(linux_new, qemu_new, tmp_path):
    spec = tmp_path / "f.toml"
    spec.write_text('name = "t"\n[[stage]]\nid = "h"\nrole = "host"\n'
                    '[[stage.hop]]\nfrom = "handle_hvc"\nto = "kvm_hvc_call_handler"\n')
    res = run_flow(spec, linux_new, qemu_new)
    (h,) = res.hops
    assert h.status == "missing"
    assert h.candidates[0] == "kvm_smccc_call_handler (called by handle_hvc now: likely rename)"


def test_user_flow_without_python(linux_new, qemu_new):
    res = run_flow(ROOT / "docs" / "examples" / "arm64-shutdown.toml", linux_new, qemu_new)
    assert [h.status for h in res.hops] == ["verified"] * len(res.hops)
    assert hop(res, "kvm_cpu_exec->qemu_system_shutdown_request").evidence[0].line == 138


@pytest.mark.parametrize("text,msg", [
    ('name = "x"\n[[stage]]\nid = "s"\nrole = "guest"\n\n[[stage.hop]]\nfrom = "a"\n', r"f\.toml:6: .*'to' is a required property"),
    ('name = "x"\n[[stage]]\nid = "s"\nrole = "moon"\n[[stage.hop]]\nfrom = "a"\nto = "b"\n', r"f\.toml:2: stage.0.role: 'moon' is not one of"),
    ('name = "x"\n[[stage]]\nid = "s"\nrole = "guest"\n[[stage.hop]]\nkind = "reach"\nfrom = "a"\nto = "b"\n', r"f\.toml:5: a reach hop needs `within`"),
    ('name = "x"\nstage = 3\n', r"f\.toml: stage: 3 is not of type 'array'"),
    ('name = [', r"f\.toml: invalid TOML"),
    ('name = "x"\n[[stage]]\nid = "s"\nrole = "guest"\n[[stage.hop]]\nfrom = "a"\nto = "b"\n[[stage.hop]]\nfrom = "a"\nto = "b"\n',
     r"f\.toml:8: duplicate hop id 'a->b'"),
])
def test_spec_errors_name_file_line_and_problem(tmp_path, text, msg):
    p = tmp_path / "f.toml"
    p.write_text(text)
    with pytest.raises(FlowscanError, match=msg):
        load_flow(p)


def test_unknown_role_source_is_unverifiable(linux_new):
    spec = load_flow(find_flow("arm64-reboot"))
    g = graph_of(linux_new)
    res = verify(spec, {"guest": g, "host": g})
    h = hop(res, "kvm_vcpu_thread_fn->kvm_cpu_exec")
    assert (h.status, h.note) == ("unverifiable", "no source configured for role 'vmm'")


def test_graph_type_is_shared(linux_new):
    assert isinstance(graph_of(linux_new), Graph)


def test_outputs_list_every_site_and_say_wide(new):
    from flowscan.report import html, junit, markdown, text

    table = text.trace_table(new).splitlines()
    row = next(l for l in table if "psci_sys_reset" in l and "__invoke_psci_fn_hvc" in l)
    assert "drivers/firmware/psci/psci.c:75 (+1 site)" in row
    assert any("resettable_reset" in l and "kvm_arm_gicv3_reset_hold" in l and "verified (wide: 9)" in l
               for l in table)
    md = markdown.trace_markdown(new)
    assert "drivers/firmware/psci/psci.c:73 -> __invoke_psci_fn_hvc\\|__invoke_psci_fn_smc: not taken by default" in md
    assert "psci.c:75 (shown)" in md and "✅ verified (wide: 9)" in md
    assert "resettable_phase_hold -> arm_cpu_reset_hold [registration: phases.hold]: fan-out 1, type arm-cpu" in md
    page = html.html_page(new, "<svg></svg>")
    assert "verified (wide: 9)" in page and "call sites:<br>drivers/firmware/psci/psci.c:73" in page
    junit = junit.junit_xml(new)
    assert "site: drivers/firmware/psci/psci.c:75 (shown) -&gt; " in junit or "site: drivers/firmware/psci/psci.c:75 (shown) -> " in junit
