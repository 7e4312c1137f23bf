"""Extraction of facts from one file: definitions, calls with context, stores, QOM types, constants."""

from __future__ import annotations

from flowscan.extract.parse import extract_file
from flowscan.extract.facts import FileFacts


def facts(src: str, path: str = "x.c") -> FileFacts:
    return extract_file(src.encode(), path)


def names(ff: FileFacts) -> list[str]:
    return [f.name for f in ff.functions]


def test_syscall_define_defines_the_syscall():
    ff = facts("#include <x.h>\n\nSYSCALL_DEFINE4(reboot, int, magic1, int, magic2, unsigned int, cmd,\n"
               "\t\tvoid __user *, arg)\n{\n\tswitch (cmd) {\n\tcase LINUX_REBOOT_CMD_RESTART:\n"
               "\t\tkernel_restart(NULL);\n\t\tbreak;\n\t}\n\treturn 0;\n}\n")
    assert names(ff) == ["reboot"]
    assert ff.functions[0].line == 3 and ff.functions[0].end_line == 12
    call = next(c for c in ff.calls if c.callee == "kernel_restart")
    assert (call.caller, call.line, call.cases) == ("reboot", 8, ("LINUX_REBOOT_CMD_RESTART",))


def test_annotations_do_not_hide_or_rename_definitions():
    src = ("static int __init psci_init(void) { return 0; }\n"
           "void __noreturn die_now(void) { for (;;); }\n"
           "static void __maybe_unused spare(void) { }\n"
           "G_NORETURN void qemu_abort(void) { abort(); }\n"
           "extern __printf(1, 2) void note(const char *fmt, ...);\n"
           "void kernel_restart_prepare(char *cmd) { note(\"x\"); }\n"
           "asmlinkage __visible void notrace __sched do_it(void) { }\n"
           "static void __attribute__((unused)) attr_fn(int a) { }\n"
           "int coroutine_fn co_fn(void *opaque) { return 1; }\n")
    ff = facts(src)
    assert names(ff) == ["psci_init", "die_now", "spare", "qemu_abort", "kernel_restart_prepare", "do_it",
                         "attr_fn", "co_fn"]
    assert [f.line for f in ff.functions] == [1, 2, 3, 4, 6, 7, 8, 9]
    assert ff.functions[0].static and not ff.functions[1].static


def test_preprocessor_conditions_of_definitions_and_calls():
    src = ("#ifndef _X_H\n#define _X_H\n"
           "#ifdef CONFIG_EFI\n"
           "void efi_reboot(int mode, const char *u)\n{\n\tefi_call(mode);\n}\n"
           "#else\n"
           "static inline void efi_reboot(int mode, const char *u) {}\n"
           "#endif\n"
           "void f(void)\n{\n#if IS_ENABLED(CONFIG_ARM64)\n\tarm_only();\n#endif\n\tboth();\n}\n"
           "#endif\n")
    ff = facts(src)
    defs = [(f.name, f.line, f.conditions) for f in ff.functions]
    assert defs == [("efi_reboot", 4, ("CONFIG_EFI",)), ("efi_reboot", 9, ("!CONFIG_EFI",)),
                    ("f", 11, ())]
    calls = {c.callee: c.conditions for c in ff.calls}
    assert calls == {"efi_call": ("CONFIG_EFI",), "arm_only": ("IS_ENABLED(CONFIG_ARM64)",), "both": ()}


def test_iterator_macros_keep_the_function_and_its_calls():
    src = ("static int walk(struct list_head *head)\n{\n\tstruct item *p;\n"
           "\tlist_for_each_entry(p, head, list) {\n\t\tvisit(p);\n\t}\n"
           "\tQTAILQ_FOREACH(p, head, entry) {\n\t\tp->fn(p->opaque);\n\t}\n\treturn 0;\n}\n"
           "int after(void) { return 1; }\n")
    ff = facts(src)
    assert names(ff) == ["walk", "after"]
    assert [(c.caller, c.callee, c.kind, c.line) for c in ff.calls if c.callee in ("visit", "fn")] == [
        ("walk", "visit", "direct", 5), ("walk", "fn", "field", 8)]


def test_non_utf8_binary_and_huge_input():
    ff = extract_file(b"int f(void) { g(\"\xff\xfe\"); return 0; }\n", "a.c")
    assert names(ff) == ["f"] and ff.calls[0].callee == "g"
    assert extract_file(b"\x7fELF\x00\x00\x01", "b.c").skipped == "binary"
    assert extract_file(b"x" * (5 * 1024 * 1024), "c.c").skipped == "too large"
    assert extract_file(b"", "d.c").functions == []


def test_call_kinds_and_context():
    src = ("typedef int (*exit_handle_fn)(struct kvm_vcpu *);\n"
           "static int handle_trap(struct kvm_vcpu *vcpu, Object *obj)\n{\n"
           "\tResettableClass *rc = RESETTABLE_GET_CLASS(obj);\n"
           "\texit_handle_fn exit_handler;\n"
           "\texit_handler = get(vcpu);\n"
           "\tif (rc->phases.hold) {\n\t\trc->phases.hold(obj, RESET_TYPE_COLD);\n\t} else {\n"
           "\t\texit_handler(vcpu);\n\t}\n"
           "\ttable[3](vcpu);\n"
           "\treturn 0;\n}\n")
    ff = facts(src)
    calls = {c.callee: c for c in ff.calls}
    hold = calls["phases.hold"]
    assert (hold.kind, hold.base, hold.base_type, hold.ifs, hold.constants) == (
        "field", "rc", "ResettableClass", ("rc->phases.hold",), ("RESET_TYPE_COLD",))
    var = calls["exit_handler"]
    assert (var.kind, var.var_type, var.ifs) == ("variable", "exit_handle_fn", ("!(rc->phases.hold)",))
    assert calls["get"].kind == "direct"


def test_stores_types_constants_macros_and_globals():
    src = ("#define TYPE_KVM_ARM_GICV3 \"kvm-arm-gicv3\"\n"
           "static ShutdownCause reset_requested;\n"
           "static exit_handle_fn arm_exit_handlers[] = {\n"
           "\t[0 ... ESR_ELx_EC_MAX] = kvm_handle_unknown_ec,\n\t[ESR_ELx_EC_HVC64] = handle_hvc,\n};\n"
           "static struct notifier_block nb = { .notifier_call = psci_sys_reset, .priority = 129, };\n"
           "static void cls_init(ObjectClass *oc, void *data)\n{\n"
           "\tResettableClass *rc = RESETTABLE_CLASS(oc);\n\trc->phases.hold = &my_hold;\n}\n"
           "static const TypeInfo info = {\n\t.name = TYPE_KVM_ARM_GICV3,\n\t.parent = TYPE_ARM_GICV3_COMMON,\n"
           "\t.class_init = cls_init,\n};\n"
           "void prep(struct kvm_vcpu *vcpu)\n{\n\tvcpu->run->exit_reason = KVM_EXIT_SYSTEM_EVENT;\n}\n"
           "void req(int reason)\n{\n\treset_requested = reason;\n}\n"
           "int polled(void)\n{\n\tint r = reset_requested;\n\treturn r;\n}\n")
    ff = facts(src)
    stores = {(s.function, s.kind, s.field, s.index, s.variable, s.var_type, s.line) for s in ff.stores}
    assert ("handle_hvc", "initializer", "", "ESR_ELx_EC_HVC64", "arm_exit_handlers", "exit_handle_fn", 5) in stores
    assert ("kvm_handle_unknown_ec", "initializer", "", "0 ... ESR_ELx_EC_MAX", "arm_exit_handlers",
            "exit_handle_fn", 4) in stores
    assert ("psci_sys_reset", "initializer", "notifier_call", "", "nb", "notifier_block", 7) in stores
    assert ("my_hold", "assignment", "phases.hold", "", "rc", "ResettableClass", 11) in stores
    assert [(t.name, t.parent, t.class_init, t.line) for t in ff.types] == [
        ("TYPE_KVM_ARM_GICV3", "TYPE_ARM_GICV3_COMMON", "cls_init", 13)]
    assert [(m.name, m.value) for m in ff.macros] == [("TYPE_KVM_ARM_GICV3", '"kvm-arm-gicv3"')]
    assert ("KVM_EXIT_SYSTEM_EVENT", "assign", "run.exit_reason", "prep", 20) in {
        (c.name, c.kind, c.target, c.function, c.line) for c in ff.constants}
    assert {(g.name, g.function, g.write, g.line) for g in ff.globals} == {
        ("reset_requested", "req", True, 24), ("reset_requested", "polled", False, 28)}


def test_case_labels_with_fall_through_and_nested_switch():
    src = ("int exec(struct kvm_run *run)\n{\n\tswitch (run->exit_reason) {\n"
           "\tcase KVM_EXIT_SYSTEM_EVENT:\n\t\tswitch (run->system_event.type) {\n"
           "\t\tcase KVM_SYSTEM_EVENT_SHUTDOWN:\n\t\tcase KVM_SYSTEM_EVENT_RESET:\n"
           "\t\t\tqemu_system_reset_request(SHUTDOWN_CAUSE_GUEST_RESET);\n\t\t\tbreak;\n\t\t}\n"
           "\t\tbreak;\n\t}\n\treturn 0;\n}\n")
    ff = facts(src)
    call = next(c for c in ff.calls if c.callee == "qemu_system_reset_request")
    assert call.cases == ("KVM_EXIT_SYSTEM_EVENT", "KVM_SYSTEM_EVENT_SHUTDOWN|KVM_SYSTEM_EVENT_RESET")
    cases = {(c.name, c.target) for c in ff.constants if c.kind == "case"}
    assert ("KVM_EXIT_SYSTEM_EVENT", "run->exit_reason") in cases
    assert ("KVM_SYSTEM_EVENT_RESET", "run->system_event.type") in cases


def test_facts_json_round_trip(linux_new):
    data = (linux_new / "kernel" / "reboot.c").read_bytes()
    ff = extract_file(data, "kernel/reboot.c")
    assert FileFacts.loads(ff.dumps()) == ff
    assert ff.dumps() == extract_file(data, "kernel/reboot.c").dumps()  # deterministic


def test_fixture_printf_prototype_does_not_swallow_functions(linux_new):
    ff = extract_file((linux_new / "kernel" / "reboot.c").read_bytes(), "kernel/reboot.c")
    assert {"reboot", "kernel_restart", "kernel_restart_prepare", "register_restart_handler",
            "do_kernel_restart"} <= set(names(ff))
