"""Call graph resolution on the fixture trees: one test per resolution kind, including the negative one."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowscan.extract.parse import extract_file
from flowscan.graph.callgraph import Graph
from flowscan.extract.apis import load_registry


from flowscan.sources.refs import C_SUFFIXES


def graph_of(root: Path, prefer=("arch/arm64", "target/arm")) -> Graph:
    facts = [extract_file(p.read_bytes(), p.relative_to(root).as_posix())
             for p in sorted(root.rglob("*")) if p.name.endswith(C_SUFFIXES)]
    return Graph(facts, prefer=prefer)


@pytest.fixture(scope="module")
def lnx(linux_new):
    return graph_of(linux_new)


@pytest.fixture(scope="module")
def qemu(qemu_new):
    return graph_of(qemu_new)


@pytest.fixture(scope="module")
def qemu7(qemu_old):
    return graph_of(qemu_old)


def hops(path):
    return [(e.caller, e.callee, e.kind, f"{e.path}:{e.line}", f"{e.store_path}:{e.store_line}") for e in path]


def test_direct_and_arch_alternatives(lnx):
    assert [d.path for d in lnx.definitions("machine_restart")] == [
        "arch/arm64/kernel/process.c", "arch/x86/kernel/reboot.c"]
    assert hops(lnx.path("reboot", "do_kernel_restart")) == [
        ("reboot", "kernel_restart", "direct", "kernel/reboot.c:153", ":0"),
        ("kernel_restart", "machine_restart", "direct", "kernel/reboot.c:99", ":0"),
        ("machine_restart", "do_kernel_restart", "direct", "arch/arm64/kernel/process.c:56", ":0")]
    # the x86 definition stays an alternative when no architecture is preferred
    assert [d.path for d in lnx.lookup("machine_restart", "kernel/reboot.c")] == ["arch/arm64/kernel/process.c"]
    unpreferred = Graph(lnx.ix, prefer=())
    assert [d.path for d in unpreferred.lookup("machine_restart", "kernel/reboot.c")] == [
        "arch/arm64/kernel/process.c", "arch/x86/kernel/reboot.c"]


def test_notifier_chain(lnx):
    assert hops(lnx.path("do_kernel_restart", "psci_sys_reset")) == [
        ("do_kernel_restart", "psci_sys_reset", "notifier", "kernel/reboot.c:76",
         "drivers/firmware/psci/psci.c:108")]


def test_table_through_typedef(lnx):
    (e,) = lnx.path("handle_trap_exceptions", "handle_hvc")
    assert (e.kind, e.via, e.line, e.store_line, e.fanout) == ("table", "exit_handle_fn", 101, 72, 4)


def test_variable_assigned_at_probe_time(lnx):
    targets = {(e.callee, e.kind, e.store_line) for d in lnx.definitions("psci_sys_reset")
               for e in lnx.callees(d) if e.indirect}
    assert targets == {("__invoke_psci_fn_hvc", "variable", 57), ("__invoke_psci_fn_smc", "variable", 60)}


def test_registration_field_call(qemu):
    path = qemu.path("resettable_reset", "arm_cpu_reset_hold")
    assert hops(path)[-1] == ("resettable_phase_hold", "arm_cpu_reset_hold", "registration",
                              "hw/core/resettable.c:71", "target/arm/cpu.c:92")


def test_qom_parent_resolves_to_exactly_the_parent_hold(qemu):
    (e,) = qemu.path("kvm_arm_gicv3_reset_hold", "arm_gicv3_common_reset_hold")
    assert (e.kind, e.via, e.store_path, e.store_line) == (
        "qom-parent", "arm-gicv3-common.phases.hold", "hw/intc/arm_gicv3_common.c", 64)
    parents = [x for d in qemu.definitions("kvm_arm_gicv3_reset_hold") for x in qemu.callees(d)
               if x.kind == "qom-parent"]
    assert [x.callee for x in parents] == ["arm_gicv3_common_reset_hold"]  # not every hold in the tree


def test_qom_parent_old_style_parent_reset(qemu7):
    edges = [x for d in qemu7.definitions("kvm_arm_gicv3_reset") for x in qemu7.callees(d)
             if x.kind == "qom-parent"]
    assert [(x.callee, x.via, x.store_line) for x in edges] == [
        ("arm_gicv3_common_reset", "arm-gicv3-common.reset", 63)]


def test_type_resolution_of_a_returned_function(qemu7):
    path = qemu7.path("resettable_phase_hold", "device_transitional_reset")
    assert hops(path) == [("resettable_phase_hold", "device_transitional_reset", "type",
                           "hw/core/resettable.c:77", "hw/core/qdev.c:45")]


def test_spawned_thread(qemu):
    assert hops(qemu.path("kvm_start_vcpu_thread", "kvm_vcpu_thread_fn")) == [
        ("kvm_start_vcpu_thread", "kvm_vcpu_thread_fn", "spawn", "accel/kvm/kvm-accel-ops.c:62", ":0")]


def test_unrelated_struct_field_of_same_name_is_not_an_edge(qemu):
    # `ops->reset(opaque)` through `const struct timer_ops *ops` resolves to the timer_ops initializer only,
    # never to the DeviceClass/MachineClass `reset` stores
    edges = [e for d in qemu.definitions("fake_timer_backend_reset") for e in qemu.callees(d) if e.kind == "field"]
    assert [(e.callee, e.store_line) for e in edges] == [("fake_timer_ops_reset", 50)]
    # and the DeviceClass `reset` call in MachineClass's caller does not reach the timer ops
    assert all(e.callee != "fake_timer_ops_reset" for e in qemu.callers("fake_timer_ops_reset")
               if e.caller != "fake_timer_backend_reset")


def test_callers_through_indirect_edges(qemu):
    got = {(e.caller, e.kind) for e in qemu.callers("cpu_common_reset_hold")}
    assert got == {("resettable_phase_hold", "field"), ("arm_cpu_reset_hold", "qom-parent")}


def test_direct_only_hides_indirect_edges(lnx):
    assert lnx.path("do_kernel_restart", "psci_sys_reset", direct_only=True) is None


def test_registration_api_is_data(tmp_path):
    src = (b"static void timer_fire(FakeTimerState *s) { s->tick(s); }\n"
           b"static void my_tick(FakeTimerState *s) { }\n"
           b"static void timer_init(FakeTimerState *s) { fake_timer_set_ops(s, my_tick); }\n")
    facts = [extract_file(src, "timer.c")]
    assert Graph(facts).path("timer_fire", "my_tick") is None  # unknown API: no edge
    extra = tmp_path / "more.toml"
    extra.write_text('[[field]]\napi = "fake_timer_set_ops"\nowner = "FakeTimerState"\n'
                     'stores = [{ arg = 1, field = "tick", phase = "tick" }]\n')
    reg = load_registry((extra,))
    assert "fake_timer_set_ops" in reg.fields and "resettable_class_set_parent_phases" in reg.fields
    (e,) = Graph(facts, registry=reg).path("timer_fire", "my_tick")
    assert (e.kind, e.via, e.store_line) == ("registration", "tick", 3)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[field]]\napi = "x"\n')
    from flowscan.errors import FlowscanError
    with pytest.raises(FlowscanError, match="bad.toml: field/0: 'owner' is a required property"):
        load_registry((bad,))


def test_builtin_registration_table_is_valid():
    """Loading skips validating the built-in table (jsonschema costs a warm query a fifth): check it here."""
    import tomllib

    from flowscan.extract.apis import builtin_table, validate_table
    validate_table(tomllib.loads(builtin_table().read_text()), builtin_table())
    broken = {"field": [{"api": "x"}]}
    from flowscan.errors import FlowscanError
    with pytest.raises(FlowscanError, match="'owner' is a required property"):
        validate_table(broken, builtin_table())


# -- dispatch width: the route through the narrowest widest dispatch ----------------------------------
def test_route_prefers_the_narrowest_widest_dispatch(tmp_path):
    """A direct route of three calls beats a two-call one through a table of ten handlers."""
    handlers = "\n".join(f"static void h{i}(void) {{ }}" for i in range(9))
    slots = ", ".join(f"[{i}] = h{i}" for i in range(9))
    (tmp_path / "a.c").write_text(f"""{handlers}
static void target(void) {{ }}
typedef void (*handler_fn)(void);
static handler_fn table[] = {{ {slots}, [9] = target }};
static void dispatch(int n) {{ handler_fn fn = table[n]; fn(); }}
static void step2(void) {{ target(); }}
static void step1(void) {{ step2(); }}
void start(int n) {{ dispatch(n); step1(); }}
""")
    g = graph_of(tmp_path)
    assert [e.callee for e in g.path("start", "target")] == ["dispatch", "target"]
    wide = g.path("start", "target")[-1]
    assert (wide.kind, wide.fanout, wide.reason) == ("table", 10, "slot [9] of table (a.c:12)")
    assert [(e.callee, e.kind) for e in g.route("start", "target")] == [
        ("step1", "direct"), ("step2", "direct"), ("target", "direct")]
    assert g.route("start", "target", max_depth=2)[-1].fanout == 10  # the narrow one is too long


def test_class_dispatch_narrowed_by_the_registered_type(qemu):
    """do_cpu_reset is registered with ARM_CPU(cs): rc->phases.hold on its route is arm-cpu's hold phase."""
    assert qemu.registered_type("do_cpu_reset") == "arm-cpu"
    path = qemu.route("do_cpu_reset", "arm_cpu_reset_hold", max_depth=8)
    last = path[-1]
    assert (last.caller, last.kind, last.fanout, last.obj_type) == (
        "resettable_phase_hold", "registration", 1, "arm-cpu")
    untyped = qemu.path("resettable_reset", "arm_cpu_reset_hold")[-1]
    assert untyped.fanout == 9 and untyped.obj_type == ""
