"""flowscan.render: the Graphviz diagrams of a flow and of a drift, checked on the DOT and on real SVG."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import graphviz
import pytest

from flowscan.report import diagram
from flowscan.report import links
from flowscan.report import palette
from flowscan.report import painter
from flowscan.errors import FlowscanError
from flowscan.flow.results import DriftItem, DriftReport, Evidence, FlowResult, HopResult, SourceInfo, StageInfo, Step

DATA = Path(__file__).resolve().parent / "data"
SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")

GREEN, RED, GREY, YELLOW = (palette.STATUS_COLOURS[s][0] for s in
                            ("verified", "missing", "unverifiable", "skipped-optional"))


# -- inputs ----------------------------------------------------------------------------------------
def small_flow() -> FlowResult:
    """Every hop kind and status, built by hand; names with characters Graphviz and HTML care about."""
    g, h, v = "guest", "host", "vmm"
    return FlowResult(
        flow="mini", title="mini <reboot> & co",
        sources=[SourceInfo(g, "linux", "v6.12", "a" * 40, url_template="https://l/{path}?h={ref}#n{line}"),
                 SourceInfo(h, "linux", "v6.12", "a" * 40),
                 SourceInfo(v, "qemu", "v10.0.0", "b" * 40, url_template="https://q/{commit}/{path}#L{line}")],
        stages=[StageInfo("guest", "guest: reboot", g), StageInfo("host", "host: KVM", h),
                StageInfo("vmm", "QEMU", v), StageInfo("regs", "registrations", v)],
        hops=[
            HopResult("reboot->kernel_restart", "guest", "call", g, "reboot", "kernel_restart", "verified",
                      matched_from="reboot", matched_to="kernel_restart", resolution="direct",
                      steps=[Step("reboot", "kernel_restart", "direct", "kernel/reboot.c", 153,
                                  callee_path="kernel/reboot.c", cases=["LINUX_REBOOT_CMD_RESTART"])],
                      to_path="kernel/reboot.c", to_line=90, conditions=["case LINUX_REBOOT_CMD_RESTART"]),
            HopResult("kernel_restart->psci_sys_reset", "guest", "reach", g, "kernel_restart", "psci_sys_reset",
                      "verified", matched_from="kernel_restart", matched_to="psci_sys_reset",
                      resolution="notifier",
                      steps=[Step("kernel_restart", "machine_restart", "direct", "kernel/reboot.c", 99),
                             Step("machine_restart", "do_kernel_restart", "direct", "arch/arm64/kernel/process.c",
                                  56),
                             Step("do_kernel_restart", "atomic_notifier_call_chain", "direct", "kernel/reboot.c",
                                  76),
                             Step("atomic_notifier_call_chain", "psci_sys_reset", "notifier", "kernel/notifier.c",
                                  80, via="restart_handler_list", store_path="drivers/firmware/psci/psci.c",
                                  store_line=108, callee_path="drivers/firmware/psci/psci.c")],
                      to_path="drivers/firmware/psci/psci.c", to_line=67),
            HopResult("efi_reboot->efi.reset_system", "guest", "unverifiable", g, "efi_reboot", "efi.reset_system",
                      "unverifiable", note="firmware",
                      evidence=[Evidence(g, "drivers/firmware/efi/reboot.c", 40, "efi_reboot", "unresolved",
                                         callee="efi.reset_system", how="field")]),
            HopResult("psci:SYSTEM_RESET", "host", "handoff", g, "psci_sys_reset", "kvm_psci_0_2_call", "verified",
                      to_role=h, matched_from="psci_sys_reset", matched_to="kvm_psci_0_2_call",
                      resolution="constant", conditions=["case PSCI_0_2_FN_SYSTEM_RESET"],
                      constants=["PSCI_0_2_FN_SYSTEM_RESET"],
                      evidence=[Evidence(g, "drivers/firmware/psci/psci.c", 81, "psci_sys_reset", "call-arg",
                                         constant="PSCI_0_2_FN_SYSTEM_RESET", target="invoke_psci_fn",
                                         side="producer"),
                                Evidence(h, "arch/arm64/kvm/psci.c", 84, "kvm_psci_0_2_call", "case",
                                         constant="PSCI_0_2_FN_SYSTEM_RESET", side="consumer")]),
            HopResult("kvm_psci_0_2_call->kvm_psci_system_reset", "host", "call", h, "kvm_psci_0_2_call",
                      "kvm_psci_system_reset", "missing", matched_from="kvm_psci_0_2_call",
                      candidates=["kvm_psci_system_reset2 (similar name)"], note="not called"),
            HopResult("flag:reset_requested", "vmm", "flag", v, "qemu_system_reset_request",
                      "main_loop_should_exit", "verified", matched_from="qemu_system_reset_request",
                      matched_to="main_loop_should_exit", resolution="flag", flag="reset_requested",
                      evidence=[Evidence(v, "system/runstate.c", 75, "qemu_system_reset_request", "write",
                                         flag="reset_requested")]),
            HopResult("qemu_system_reset->cpu_synchronize_all_states", "vmm", "call", v, "qemu_system_reset",
                      "cpu_synchronize_all_states", "skipped-optional", optional=True),
            HopResult("resettable_phase_hold->arm_cpu_reset_hold", "vmm", "call", v, "resettable_phase_hold",
                      "arm_cpu_reset_hold", "verified", matched_from="resettable_phase_hold",
                      matched_to="arm_cpu_reset_hold", resolution="registration",
                      steps=[Step("resettable_phase_hold", "arm_cpu_reset_hold", "registration",
                                  "hw/core/resettable.c", 170, via="phases.hold", store_path="target/arm/cpu.c",
                                  store_line=2705, fanout=5, callee_path="target/arm/cpu.c")],
                      to_path="target/arm/cpu.c", to_line=560),
            HopResult("kvm_arm_gicv3_reset_hold->arm_gicv3_common_reset_hold", "vmm", "call", v,
                      "kvm_arm_gicv3_reset_hold", "arm_gicv3_common_reset_hold", "verified",
                      matched_from="kvm_arm_gicv3_reset_hold", matched_to="arm_gicv3_common_reset_hold",
                      steps=[Step("kvm_arm_gicv3_reset_hold", "arm_gicv3_common_reset_hold", "qom-parent",
                                  "hw/intc/arm_gicv3_kvm.c", 655, via="arm-gicv3-common.phases.hold")]),
            HopResult("arm_cpu_class_init:hold", "regs", "registration", v, "arm_cpu_class_init",
                      "arm_cpu_reset_hold", "verified", matched_from="arm_cpu_class_init",
                      matched_to="arm_cpu_reset_hold", api="resettable_class_set_parent_phases",
                      field="phases.hold",
                      evidence=[Evidence(v, "target/arm/cpu.c", 2705, "arm_cpu_class_init", "registration",
                                         callee="arm_cpu_reset_hold", api="resettable_class_set_parent_phases",
                                         field="phases.hold")]),
            HopResult("odd:hop", "extra", "call", v, "a&b", "c<d>", "verified", matched_from="a&b",
                      matched_to="c<d>", steps=[Step("a&b", "c<d>", "direct", "x.c", 1)]),
        ])


def svg_of(graph: graphviz.Digraph) -> ET.Element:
    return ET.fromstring(painter.svg_text(graph))


def groups(root: ET.Element, cls: str) -> dict[str, ET.Element]:
    return {g.get("id"): g for g in root.iter(f"{SVG}g") if cls in (g.get("class") or "").split()}


def shape_colours(g: ET.Element) -> tuple[str, str]:
    shape = next(e for e in g.iter() if e.tag in (f"{SVG}path", f"{SVG}polygon", f"{SVG}ellipse"))
    return shape.get("stroke"), shape.get("fill")


def tooltip(g: ET.Element) -> str:
    return next((a.get(f"{XLINK}title") for a in g.iter(f"{SVG}a") if a.get(f"{XLINK}title")), "")


def href(g: ET.Element) -> str:
    return next((a.get(f"{XLINK}href") for a in g.iter(f"{SVG}a") if a.get(f"{XLINK}href")), "")


def texts(g: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in g.iter(f"{SVG}text")]


def hop_edges(edges: dict[str, ET.Element], hop_id: str) -> list[ET.Element]:
    cls = diagram.hop_class(hop_id)
    return [g for g in edges.values() if cls in g.get("class", "").split()]


def node_for(result: FlowResult, role: str, name: str) -> str:
    return diagram.node_id(role, name)


# -- DOT ---------------------------------------------------------------------------------------------
def test_dot_is_byte_identical_across_runs_and_round_trips(sample, old_sample, drift_sample):
    a = painter.flow_graph(sample).source
    b = painter.flow_graph(FlowResult.from_json(json.loads(sample.dumps()))).source
    assert a == b
    assert painter.flow_graph(sample, collapse=True).source == painter.flow_graph(sample, collapse=True).source
    d1 = painter.drift_graph(drift_sample, sample, old_sample).source
    d2 = painter.drift_graph(DriftReport.from_json(json.loads(drift_sample.dumps())), sample, old_sample).source
    assert d1 == d2
    assert "Generated" not in a and not re.search(r"20\d\d-\d\d-\d\d", a)


def test_node_ids_are_colon_free_and_stable(sample):
    dot = painter.flow_graph(sample).source
    ids = re.findall(r"^\t+([^\s\[]+) \[", dot, re.M)
    assert ids and all(re.fullmatch(r"[A-Za-z0-9_]+", i) for i in ids), [i for i in ids if ":" in i][:5]
    assert diagram.node_id("vmm", "efi.reset_system") == diagram.node_id("vmm", "efi.reset_system")
    assert ":" not in diagram.node_id("host", "a:b") and ":" not in diagram.handoff_node_id("psci:SYSTEM_RESET2")
    assert diagram.node_id("vmm", "a.b") != diagram.node_id("vmm", "a_b")
    # every hop's endpoints are nodes
    for h in sample.hops:
        if h.kind in ("call", "reach") and h.steps:
            assert f"\t{diagram.node_id(h.role, h.steps[-1].callee)} [" in dot, h.id


def test_one_cluster_per_stage_in_flow_order(sample):
    dot = painter.flow_graph(sample).source
    clusters = re.findall(r"subgraph (cluster_\d\d_\w+) \{", dot)
    assert clusters == [f"cluster_{i:02d}_{s.id}" for i, s in enumerate(sample.stages)]


def test_edge_styles_by_kind(sample):
    dot = painter.flow_graph(sample).source
    lines = dot.splitlines()

    def edge_line(tail: str, head: str) -> str:
        """The edge tail -> head; an edge up to an earlier stage is written head -> tail with dir=back."""
        hits = [l for l in lines if f"\t{tail} -> {head} [" in l]
        hits += [l for l in lines if f"\t{head} -> {tail} [" in l and "dir=back" in l]
        assert hits, (tail, head)
        return hits[0]

    n = lambda role, name: diagram.node_id(role, name)  # noqa: E731
    assert "style=solid" in edge_line(n("guest", "reboot"), n("guest", "kernel_restart"))
    table = edge_line(n("host", "handle_trap_exceptions"), n("host", "handle_hvc"))
    assert "style=dashed" in table and "table: exit_handle_fn" in table
    qom = edge_line(n("vmm", "kvm_arm_gicv3_reset"), n("vmm", "arm_gicv3_common_reset"))
    assert "style=dashed" in qom and "qom-parent: arm-gicv3-common.reset" in qom
    notifier = edge_line(n("guest", "do_kernel_restart"), n("guest", "psci_sys_reset"))
    assert "notifier: restart_handler_list" in notifier
    handoff = edge_line(diagram.handoff_node_id("kvm-exit:SYSTEM_EVENT_RESET"), n("vmm", "kvm_cpu_exec"))
    assert "style=bold" in handoff and "penwidth=2.6" in handoff
    hnode = [l for l in lines if f"\t{diagram.handoff_node_id('kvm-exit:SYSTEM_EVENT_RESET')} [" in l][0]
    assert "KVM_EXIT_SYSTEM_EVENT" in hnode and "KVM_SYSTEM_EVENT_RESET" in hnode and "shape=cds" in hnode
    flag = edge_line(n("vmm", "qemu_system_reset_request"), n("vmm", "main_loop_should_exit"))
    assert "style=dotted" in flag and "flag: reset_requested" in flag
    reg = edge_line(n("vmm", "arm_cpu_class_init"), n("vmm", "arm_cpu_reset"))
    # drawn downwards from the callback (the registrations stage comes last) with the arrow reversed
    assert f"\t{n('vmm', 'arm_cpu_reset')} -> {n('vmm', 'arm_cpu_class_init')} [" in reg
    assert "registers reset" in reg and "dir=back" in reg and "arrowtail=onormal" in reg
    note = [l for l in lines if f"\t{n('vmm', 'arm_cpu_class_init')} [" in l][0]
    assert "shape=note" in note and "device_class_set_parent_reset" in note
    missing = edge_line(n("vmm", "kvm_arm_reset_vcpu"), n("vmm", "write_kvmstate_to_list"))
    assert f'color="{RED}"' in missing and "missing" in missing


def test_registration_hop_from_hand_built_flow():
    dot = painter.flow_graph(small_flow()).source
    ci, cb = diagram.node_id('vmm', 'arm_cpu_class_init'), diagram.node_id('vmm', 'arm_cpu_reset_hold')
    lines = dot.splitlines()
    line = [l for l in lines if f"{ci} -> {cb}" in l or (f"{cb} -> {ci}" in l and "dir=back" in l)][0]
    assert "registers hold" in line
    assert "resettable_class_set_parent_phases" in [l for l in lines if f"\t\t{ci} [" in l][0]
    reg = [l for l in dot.splitlines() if "registration: phases.hold" in l]
    assert reg and "style=dashed" in reg[0]


def test_collapse_folds_reach_chains(sample):
    full = painter.flow_graph(sample).source
    folded = painter.flow_graph(sample, collapse=True).source
    hidden = diagram.node_id("vmm", "resettable_phase_hold")  # only ever an intermediate step of reach hops
    assert f"\t\t{hidden} [" in full and f"\t\t{hidden} [" not in folded
    assert "+2 calls (1 indirect)" in folded
    assert "folded chain" in folded and "folded chain" not in full
    # a hand-built 4-step reach keeps its first and last step
    small = painter.flow_graph(small_flow(), collapse=True).source
    assert "+2 calls" in small
    assert f"\t\t{diagram.node_id('guest', 'machine_restart')} [" in small
    assert f"\t\t{diagram.node_id('guest', 'do_kernel_restart')} [" not in small


def test_url_templates_argument_and_source_fallback(sample):
    dot = painter.flow_graph(sample).source
    assert ("https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git/tree/kernel/reboot.c?h=v6.12#n90"
            in dot)
    assert "https://gitlab.com/qemu-project/qemu/-/blob/v8.1.0/target/arm/cpu.c#L29" in dot
    custom = painter.flow_graph(sample, url_templates={"guest": "https://x/{commit}/{path}?a=1&b={line}"}).source
    assert f"https://x/{sample.sources[0].commit}/kernel/reboot.c?a=1&amp;b=90" in custom
    assert "https://gitlab.com/qemu-project/qemu/-/blob/" in custom  # roles not overridden keep their own
    assert links.source_url("https://h/{path}#L{line}", "a/b.c", 7) == "https://h/a/b.c#L7"
    assert links.source_url("", "a/b.c", 7) == ""


def test_hand_built_flow_renders_every_kind():
    flow = small_flow()
    dot = painter.flow_graph(flow).source
    assert "cluster_04_extra" in dot  # a stage named only by a hop still gets its column
    assert "c&lt;d&gt;" in dot and "a&amp;b" in dot  # HTML-like labels are escaped
    assert "mini &lt;reboot&gt; &amp; co" in dot
    assert diagram.handoff_node_id("psci:SYSTEM_RESET") in dot
    assert "https://q/" + "b" * 40 + "/target/arm/cpu.c#L560" in dot


# -- SVG ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flow_svg(sample) -> ET.Element:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz `dot` is not installed")
    return svg_of(painter.flow_graph(sample))


@needs_dot
def test_svg_clusters_titles_and_top_to_bottom_order(sample, flow_svg):
    clusters = list(groups(flow_svg, "cluster").values())
    assert len(clusters) == len(sample.stages)
    spans = []
    for st, g in zip(sample.stages, clusters):
        assert any(st.title in t for t in texts(g)), st.title
        path = next(g.iter(f"{SVG}path"))
        ys = [float(y) for y in re.findall(r"-?\d+(?:\.\d+)?,(-?\d+(?:\.\d+)?)", path.get("d"))]
        spans.append((min(ys), max(ys)))
    for (_top, bottom), (top, _bottom) in zip(spans, spans[1:]):
        assert bottom <= top, "stages must be stacked top to bottom in flow order, without overlapping"


@needs_dot
def test_svg_every_hop_has_its_nodes_with_labels(sample, flow_svg):
    nodes = groups(flow_svg, "node")
    for h in sample.hops:
        if h.kind == "handoff":
            g = nodes[diagram.handoff_node_id(h.id)]
            assert any("SYSTEM" in t for t in texts(g)), h.id
            continue
        to = h.steps[-1].callee if (h.steps and h.kind != "flag") else (h.matched_to or h.to)
        role = h.to_role or h.role
        g = nodes[diagram.node_id(role, to)]
        assert to in texts(g)[0].replace(" | ", "|"), (h.id, texts(g))
        frm = h.steps[0].caller if h.steps and h.kind != "flag" else (h.matched_from or h.frm)
        assert diagram.node_id(h.role, frm) in nodes, h.id
    # label shows file:line of the definition
    assert "kernel/reboot.c:90" in texts(nodes[diagram.node_id("guest", "kernel_restart")])


@needs_dot
def test_svg_status_colours_on_nodes_and_edges(sample, flow_svg):
    nodes, edges = groups(flow_svg, "node"), groups(flow_svg, "edge")
    expect = {("vmm", "write_kvmstate_to_list"): palette.STATUS_COLOURS["missing"],
              ("guest", "efi.reset_system"): palette.STATUS_COLOURS["unverifiable"],
              ("vmm", "cpu_synchronize_all_states"): palette.STATUS_COLOURS["skipped-optional"],
              ("guest", "kernel_restart"): palette.STATUS_COLOURS["verified"]}
    for (role, name), colours in expect.items():
        assert shape_colours(nodes[diagram.node_id(role, name)]) == colours, name
    for hop_id, colour in (("kvm_arm_reset_vcpu->write_kvmstate_to_list", RED),
                           ("efi_reboot->efi.reset_system", GREY),
                           ("qemu_system_reset->cpu_synchronize_all_states", YELLOW),
                           ("reboot->kernel_restart", GREEN)):
        es = hop_edges(edges, hop_id)
        assert es, hop_id
        assert all(next(e.iter(f"{SVG}path")).get("stroke") == colour for e in es), hop_id
    flag = hop_edges(edges, "flag:reset_requested")
    assert any(next(e.iter(f"{SVG}path")).get("stroke-dasharray") == "1,5" for e in flag)
    table = hop_edges(edges, "handle_trap_exceptions->handle_hvc")
    assert next(table[0].iter(f"{SVG}path")).get("stroke-dasharray") == "5,2"


@needs_dot
def test_svg_tooltips_and_links_carry_evidence(sample, flow_svg):
    nodes, edges = groups(flow_svg, "node"), groups(flow_svg, "edge")
    tip = tooltip(nodes[diagram.node_id("guest", "kernel_restart")])
    assert "defined at kernel/reboot.c:90" in tip and "case LINUX_REBOOT_CMD_RESTART" in tip
    assert href(nodes[diagram.node_id("guest", "kernel_restart")]).endswith("kernel/reboot.c?h=v6.12#n90")
    e = hop_edges(edges, "reboot->kernel_restart")[0]
    assert "call at kernel/reboot.c:153 (direct)" in tooltip(e)
    assert href(e).endswith("#n153")
    e = hop_edges(edges, "handle_trap_exceptions->handle_hvc")[0]
    t = tooltip(e)
    assert "table: exit_handle_fn" in t and "stored at arch/arm64/kvm/handle_exit.c:72" in t
    assert "resolves to 4 targets" in t
    missing = tooltip(nodes[diagram.node_id("vmm", "write_kvmstate_to_list")])
    assert "candidates: write_list_to_kvmstate" in missing
    for g in list(nodes.values()) + list(edges.values()):
        if "flow-node" in g.get("class", "") or "flow-edge" in g.get("class", ""):
            assert tooltip(g), g.get("id")


@needs_dot
def test_svg_legend(flow_svg):
    words = " ".join("".join(t.itertext()) for t in flow_svg.iter(f"{SVG}text"))
    for w in ("Legend", "direct call", "indirect call", "handoff across roles", "flag set / polled",
              "registers a callback", "verified", "missing", "unverifiable", "skipped-optional"):
        assert w in words, w


@needs_dot
def test_drift_svg_colours_per_item_kind(sample, old_sample, drift_sample):
    root = svg_of(painter.drift_graph(drift_sample, sample, old_sample))
    nodes, edges = groups(root, "node"), groups(root, "edge")
    renamed = nodes[diagram.node_id("host", "kvm_smccc_call_handler")]
    assert shape_colours(renamed) == palette.DRIFT_COLOURS["renamed"]
    assert "was kvm_hvc_call_handler" in texts(renamed)
    assert shape_colours(nodes[diagram.node_id("host", "kvm_prepare_system_event")]) == \
        palette.DRIFT_COLOURS["signature-changed"]
    assert shape_colours(nodes[diagram.node_id("host", "kvm_psci_system_reset2")]) == \
        palette.DRIFT_COLOURS["newly-verified"]
    broken = nodes[diagram.node_id("vmm", "write_kvmstate_to_list")]  # renamed, severity broken
    assert shape_colours(broken) == palette.DRIFT_COLOURS["broken"]
    assert "now write_list_to_kvmstate?" in texts(broken)
    moved = nodes[diagram.node_id("vmm", "qemu_system_reset")]  # file move, attached by path
    assert shape_colours(moved) == palette.DRIFT_COLOURS["moved"]
    assert "moved from softmmu/runstate.c" in texts(moved)
    assert shape_colours(nodes[diagram.node_id("guest", "kernel_restart")]) == palette.UNCHANGED
    e = hop_edges(edges, "handle_hvc->kvm_smccc_call_handler")[0]
    assert next(e.iter(f"{SVG}path")).get("stroke") == palette.DRIFT_COLOURS["renamed"][0]
    assert "drift renamed (changed)" in tooltip(e)
    words = " ".join("".join(t.itertext()) for t in root.iter(f"{SVG}text"))
    assert "unchanged" in words and "renamed" in words


def test_drift_graph_lists_items_on_no_hop(sample, drift_sample):
    extra = DriftItem("calls-added", "info", "", "main", "vmm", "nosuch_function_anywhere", "x")
    report = DriftReport(flow=drift_sample.flow, items=list(drift_sample.items) + [extra])
    dot = painter.drift_graph(report, sample).source
    assert "drift outside the flow" in dot and "nosuch_function_anywhere" in dot


# -- writing -----------------------------------------------------------------------------------------
@needs_dot
def test_write_formats(tmp_path, sample):
    graph = painter.flow_graph(small_flow())
    magic = {".svg": b"<?xml", ".png": b"\x89PNG", ".pdf": b"%PDF", ".dot": b"digraph"}
    for suffix, head in magic.items():
        out = tmp_path / f"flow{suffix}"
        painter.write(graph, out)
        assert out.read_bytes().startswith(head), suffix
    ET.fromstring((tmp_path / "flow.svg").read_bytes())  # well-formed, even with '&' in links
    with pytest.raises(FlowscanError, match="unknown output format"):
        painter.write(graph, tmp_path / "flow.gif")
    with pytest.raises(FlowscanError, match="html_page"):
        painter.write(graph, tmp_path / "flow.html")


def test_missing_dot_dot_still_works_other_formats_say_how_to_install(tmp_path, monkeypatch, sample):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert not painter.dot_available()
    graph = painter.flow_graph(sample)
    painter.write(graph, tmp_path / "flow.dot")
    assert (tmp_path / "flow.dot").read_text() == graph.source
    for suffix in (".svg", ".png", ".pdf"):
        with pytest.raises(FlowscanError) as exc:
            painter.write(graph, tmp_path / f"flow{suffix}")
        message = str(exc.value)
        assert "\n" not in message
        assert "apt-get install graphviz" in message and "brew install graphviz" in message
        assert not (tmp_path / f"flow{suffix}").exists()
    with pytest.raises(FlowscanError, match="apt-get install graphviz"):
        painter.svg_text(graph)


def test_graphviz_backend_failure_is_reported_as_install_hint(tmp_path, monkeypatch, sample):
    """`dot` on PATH but the graphviz package cannot run it (e.g. removed meanwhile)."""
    monkeypatch.setattr(painter, "dot_available", lambda: True)

    def boom(*args, **kwargs):
        raise graphviz.ExecutableNotFound(["dot"])

    monkeypatch.setattr(graphviz.Digraph, "pipe", boom)
    with pytest.raises(FlowscanError, match="brew install graphviz"):
        painter.write(painter.flow_graph(sample), tmp_path / "x.svg")
