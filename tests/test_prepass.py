"""Tests for flowscan.prepass: byte/offset preservation (property tests) and parse behaviour."""

from __future__ import annotations

import pytest
import tree_sitter_c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tree_sitter import Language, Parser

from flowscan.extract import macros as pp
from flowscan.extract.conditionals import flatten_conditionals
from flowscan.extract.macros import macro_tables
from flowscan.extract.prepass import prepass

LANG = Language(tree_sitter_c.language())
PARSER = Parser(LANG)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def newlines(b: bytes) -> list[int]:
    return [i for i, c in enumerate(b) if c == 10]


def check_shape(src: bytes, out: bytes) -> None:
    assert isinstance(out, bytes)
    assert len(out) == len(src)
    assert newlines(out) == newlines(src)


def parse(src: bytes):
    return PARSER.parse(src)


def walk(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def func_name(fd) -> str | None:
    d = fd.child_by_field_name("declarator")
    while d is not None and d.type != "function_declarator":
        d = d.child_by_field_name("declarator")
    if d is None:
        return None
    n = d.child_by_field_name("declarator")
    while n is not None and n.type in ("parenthesized_declarator", "pointer_declarator",
                                       "attributed_declarator"):
        n = n.child_by_field_name("declarator") or (n.named_children[0] if n.named_children else None)
    return n.text.decode() if n is not None and n.type == "identifier" else None


def definitions(src: bytes) -> list[tuple[str | None, int, bool]]:
    """(name, 1-based line, has_error) of every function_definition, in document order."""
    tree = parse(src)
    return [(func_name(n), n.start_point[0] + 1, n.has_error)
            for n in walk(tree.root_node) if n.type == "function_definition"]


def calls_in(src: bytes, fname: str) -> list[str]:
    tree = parse(src)
    for n in walk(tree.root_node):
        if n.type == "function_definition" and func_name(n) == fname:
            return [c.child_by_field_name("function").text.decode()
                    for c in walk(n) if c.type == "call_expression"]
    raise AssertionError(f"no definition of {fname}")


def clean_defs(src: bytes) -> dict[str, int]:
    out = prepass(src)
    check_shape(src, out)
    defs = definitions(out)
    assert all(not err for _, _, err in defs), defs
    return {name: line for name, line, _ in defs}


# ---------------------------------------------------------------------------------------------
# property tests: same length, same newline offsets, never raises
# ---------------------------------------------------------------------------------------------
FRAGMENTS = [
    "/*", "*/", "//", "/* c */", "// c\n", '"', "'", '"s"', "'c'", '"\\"', "'\\''", "\\", "\\\n",
    "\n", "\r\n", " ", "\t", "(", ")", "{", "}", ";", ",", "*", "#", "#define X ", "#if 0\n",
    "#ifdef A\n", "#ifndef B\n", "#else\n", "#elif 1\n", "#endif\n", "#include <a.h>\n",
    "__init", "__user", "__printf(1, 2)", "__printf(", "G_NORETURN", "G_GNUC_PRINTF(1,", "notrace",
    "list_for_each_entry(p, h, m)", "for_each_possible_cpu(", "QTAILQ_FOREACH", "while_each_thread(",
    "SYSCALL_DEFINE3(", "SYSCALL_DEFINE0(x)", "SYSCALL_DEFINE2(foo, int, a, long, b)",
    "COMPAT_SYSCALL_DEFINE1(", "struct foo", "container_of(p, struct foo, m)", "min_t(int, a, b)",
    "case 1 ... 3:", "...", "offsetof(S, a.b[1])", "asm volatile(X(1) : : )", "asm(\"r0\")",
    "static DECLARE_WORK(a, b);", "52_BIT", "=,", "&=,", "x", "foo", "int", "void", "\x00", "\xff",
    "é", "scoped_guard(m)", "WITH_QEMU_LOCK_GUARD()",
]

frag_text = st.lists(st.sampled_from(FRAGMENTS), max_size=60).map(lambda xs: "".join(xs).encode())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_prepass_arbitrary_bytes(data):
    check_shape(data, prepass(data))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_flatten_arbitrary_bytes(data):
    check_shape(data, flatten_conditionals(data))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frag_text)
def test_prepass_c_fragments(data):
    out = prepass(data)
    check_shape(data, out)
    check_shape(data, flatten_conditionals(out))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frag_text)
def test_flatten_c_fragments(data):
    check_shape(data, flatten_conditionals(data))


def test_edge_inputs():
    for data in (b"", b"\n", b"/*", b"//", b'"', b"'", b"#", b"#if", b"\\", b"#define X \\",
                 b"SYSCALL_DEFINE1(", b"__printf(((((", b"list_for_each(", b"\x00" * 10,
                 b"#" * 1000, b"(" * 5000, b"/*" + b"x" * 10000, b"a #" * 500 + b"\n#endif",
                 b"case " + b"." * 1000, b"SYSCALL_DEFINE99999999999999999999(a)"):
        check_shape(data, prepass(data))
        check_shape(data, flatten_conditionals(data))
    for bad in ("text", None, 5):
        with pytest.raises(TypeError):
            prepass(bad)  # type: ignore[arg-type]
    assert prepass(bytearray(b"int __init x;")) == b"int        x;"
    assert prepass(memoryview(b"int __init x;")) == b"int        x;"


# ---------------------------------------------------------------------------------------------
# comments, strings, directives
# ---------------------------------------------------------------------------------------------
def test_comments_blanked_strings_kept():
    src = (b'char *s = "/* not a comment */ // nor this";\n'
           b"char c = '\"'; /* comment\n spanning */ int x; // tail \\\n continued\n"
           b"char *t = \"__init in a string\";\n")
    out = prepass(src)
    check_shape(src, out)
    assert b'"/* not a comment */ // nor this"' in out
    assert b"'\"'" in out
    assert b"/* comment" not in out and b"spanning" not in out and b"tail" not in out
    assert b"continued" not in out  # a // comment continues after a backslash-newline
    assert b'"__init in a string"' in out


def test_unterminated_things_do_not_raise():
    for src in (b"int a; /* never closed\n int b;", b'char *s = "open\nint x;', b"char c = 'x",
                b"#define A /* open"):
        check_shape(src, prepass(src))
        check_shape(src, flatten_conditionals(src))


def test_directive_lines_untouched_except_comments():
    src = (b"#define NOTRACE notrace /* attr */\n"
           b"#define ITER(x) list_for_each(x) {\n"
           b"  #  define __init_x __init // hm\n"
           b"int __init f(void) { return 0; }\n")
    out = prepass(src)
    check_shape(src, out)
    lines = out.split(b"\n")
    assert lines[0].rstrip() == b"#define NOTRACE notrace"
    assert lines[1] == b"#define ITER(x) list_for_each(x) {"
    assert lines[2].rstrip() == b"  #  define __init_x __init"
    assert clean_defs(src) == {"f": 4}


def test_comment_inside_multiline_define_does_not_rename_next_function():
    src = (b"#define FOO(x)\t\t\t\\\n"
           b"\tdo {\t/* keep going */\t\\\n"
           b"\t\tbar(x);\t\t\\\n"
           b"\t} while (0)\n"
           b"\n"
           b"static int real_function(int a)\n"
           b"{\n"
           b"\treturn a;\n"
           b"}\n")
    assert clean_defs(src) == {"real_function": 6}


# ---------------------------------------------------------------------------------------------
# annotations
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header,name", [
    (b"static int __init foo(void)", "foo"),
    (b"void __noreturn bar(void)", "bar"),
    (b"static void __maybe_unused baz(void)", "baz"),
    (b"G_NORETURN void qux(void)", "qux"),
    (b"static void __cold __weak notrace noinline slow(void)", "slow"),
    (b"asmlinkage __visible void __sched schedule_it(void)", "schedule_it"),
    (b"static int coroutine_fn qemu_co_thing(void *opaque)", "qemu_co_thing"),
    (b"int QEMU_WARN_UNUSED_RESULT TSA_NO_TSA checked(void)", "checked"),
    (b"static void __iomem *map_it(void __user *p, int __percpu *q)", "map_it"),
    (b"static noinstr void __nocfi entry(void)", "entry"),
    (b"static int f_locked(struct s *s) __must_hold(&s->lock)", "f_locked"),
    (b"void g_locked(void) __acquires(l) __releases(l)", "g_locked"),
    (b"int tsa_fn(void) TSA_REQUIRES(mutex)", "tsa_fn"),
])
def test_annotated_definitions(header, name):
    src = header + b"\n{\n\treturn 0;\n}\n"
    assert clean_defs(src) == {name: 1}


def test_function_like_annotation_does_not_swallow_next_function():
    src = (b"__printf(1, 2) void logit(const char *fmt, ...);\n"
           b"G_GNUC_PRINTF(2, 3) void qlog(int lvl, const char *fmt, ...);\n"
           b"static int next_one(int a)\n"
           b"{\n"
           b"\treturn a + 1;\n"
           b"}\n")
    out = prepass(src)
    check_shape(src, out)
    assert b"__printf" not in out and b"(1, 2)" not in out
    assert clean_defs(src) == {"next_one": 3}
    decls = [n for n in walk(parse(out).root_node) if n.type == "declaration"]
    assert [func_name(d) for d in decls] == ["logit", "qlog"]


def test_annotation_names_are_whole_identifiers_only():
    src = b"int __initcall_x; int my__init; int __init_or_not; void __user_copy(void);\n"
    assert prepass(src) == src


def test_bare_function_like_name_left_alone():
    src = b"int __section = 1;\n"
    assert prepass(src) == src


# ---------------------------------------------------------------------------------------------
# iterators
# ---------------------------------------------------------------------------------------------
def test_list_for_each_entry_in_function():
    src = (b"static void walk(struct list_head *h)\n"
           b"{\n"
           b"\tstruct item *p;\n"
           b"\n"
           b"\tlist_for_each_entry(p, h, list) {\n"
           b"\t\tf(p);\n"
           b"\t}\n"
           b"}\n")
    assert clean_defs(src) == {"walk": 1}
    out = prepass(src)
    assert b"while              (p, h, list) {" in out
    assert calls_in(out, "walk") == ["f"]


@pytest.mark.parametrize("loop", [
    b"hlist_for_each_entry_safe(pos, n, head, member) {\n\t\tg(pos);\n\t}",
    b"for_each_possible_cpu(cpu)\n\t\tg(cpu);",
    b"kvm_for_each_vcpu(i, vcpu, kvm) {\n\t\tg(vcpu);\n\t}",
    b"QTAILQ_FOREACH(re, &h, entry) {\n\t\tg(re);\n\t}",
    b"QTAILQ_FOREACH_SAFE(re, &h, entry, next) {\n\t\tg(re);\n\t}",
    b"QLIST_FOREACH(re, &h, entry)\n\t\tg(re);",
    b"CPU_FOREACH(cpu) {\n\t\tg(cpu);\n\t}",
    b"scoped_guard(spinlock_irqsave, &lock) {\n\t\tg(1);\n\t}",
    b"WITH_RCU_READ_LOCK_GUARD() {\n\t\tg(1);\n\t}",
    b"if (x)\n\t\tlist_for_each_entry(p, h, m)\n\t\t\tg(p);",
    b"do_each_thread(t, p) {\n\t\tg(p);\n\t} while_each_thread(t, p);",
    b"list_for_each(a, b)\n\t\tlist_for_each(c, d) {\n\t\t\tg(c);\n\t\t}",
])
def test_iterator_forms(loop):
    src = b"void fn(void)\n{\n\t" + loop + b"\n\treturn;\n}\n"
    assert clean_defs(src) == {"fn": 1}
    assert "g" in calls_in(prepass(src), "fn")


def test_iterator_named_functions_are_not_loops():
    src = (b"int fn(struct device *dev)\n{\n"
           b"\tdevice_for_each_child(dev, NULL, cb);\n"
           b"\treturn bus_for_each_dev(&bus, NULL, NULL, cb);\n"
           b"}\n")
    out = prepass(src)
    assert out == src
    assert calls_in(out, "fn") == ["device_for_each_child", "bus_for_each_dev"]


def test_iterator_not_rewritten_inside_define():
    src = b"#define my_each(p) list_for_each(p, &h) {\n"
    assert prepass(src) == src


# ---------------------------------------------------------------------------------------------
# SYSCALL_DEFINE
# ---------------------------------------------------------------------------------------------
def test_syscall_define4_reboot():
    src = (b"/* header */\n"
           b"SYSCALL_DEFINE4(reboot, int, magic1, int, magic2, unsigned int, cmd,\n"
           b"\t\tvoid __user *, arg)\n"
           b"{\n"
           b"\tdo_it(cmd);\n"
           b"\treturn 0;\n"
           b"}\n")
    out = prepass(src)
    assert clean_defs(src) == {"reboot": 2}
    assert calls_in(out, "reboot") == ["do_it"]
    fd = next(n for n in walk(parse(out).root_node) if n.type == "function_definition")
    params = [p.text.decode() for p in walk(fd) if p.type == "parameter_declaration"]
    assert [" ".join(p.split()) for p in params] == ["int magic1", "int magic2", "unsigned int cmd",
                                                     "void * arg"]
    # the name keeps its byte offset
    assert out.index(b"reboot") == src.index(b"reboot")


def test_syscall_define0_and_compat():
    src = (b"SYSCALL_DEFINE0(getpid)\n{\n\treturn 1;\n}\n\n"
           b"COMPAT_SYSCALL_DEFINE2(settimeofday, struct old_timeval32 __user *, tv,\n"
           b"\t\t       struct timezone __user *, tz)\n{\n\treturn 0;\n}\n"
           b"SYSCALL_DEFINE1(\n\tclose, unsigned int, fd)\n{\n\treturn 0;\n}\n")
    assert clean_defs(src) == {"getpid": 1, "settimeofday": 6, "close": 11}


def test_syscall_with_wrong_arity_left_alone():
    src = b"SYSCALL_DEFINE2(odd, int, a)\n{\n}\n"
    assert prepass(src) == src


# ---------------------------------------------------------------------------------------------
# C-grammar gaps handled on the side
# ---------------------------------------------------------------------------------------------
def test_type_arguments_and_case_ranges():
    src = (b"static int f(struct list_head *l, va_list ap)\n{\n"
           b"\tstruct foo *x = container_of(l, struct foo, node);\n"
           b"\tunsigned long y = min_t(unsigned long, 1, 2) + max_t(int, 3, 4);\n"
           b"\tchar *s = va_arg(ap, char *);\n"
           b"\tsize_t o = offsetof(struct foo, a.b[2]);\n"
           b"\tswitch (y) {\n\tcase 1 ... 3:\n\t\tbreak;\n\t}\n"
           b"\treturn g(x, s, o);\n}\n")
    assert clean_defs(src) == {"f": 1}
    assert calls_in(prepass(src), "f") == ["container_of", "min_t", "max_t", "va_arg", "g"]


def test_sizeof_and_casts_untouched():
    src = b"int f(void) { return sizeof(struct foo) + (int)(long)(struct bar *)p; }\n"
    assert prepass(src) == src
    src2 = b"int proto(struct foo *, unsigned long);\n"
    assert prepass(src2) == src2


def test_asm_with_macro_template_and_asm_label():
    src = (b"static inline void f(void)\n{\n"
           b"\tregister long x0 asm(\"x0\") = 0;\n"
           b"\tasm volatile(ALTERNATIVE(\"nop\", \"dmb ish\", CAP)\n"
           b"\t\t     : : \"r\" (x0) : \"memory\");\n"
           b"\th();\n}\n")
    assert clean_defs(src) == {"f": 1}
    assert calls_in(prepass(src), "f") == ["h"]


# ---------------------------------------------------------------------------------------------
# flatten_conditionals
# ---------------------------------------------------------------------------------------------
def test_flatten_alternative_headers():
    src = b"#ifdef A\nint f(void) {\n#else\nint g(void) {\n#endif\n return 0; }\n"
    out = flatten_conditionals(src)
    check_shape(src, out)
    defs = definitions(out)
    assert defs == [("f", 2, False)]
    assert b"#" not in out and b"g(void)" not in out


def test_flatten_nesting_continuations_and_if0():
    src = (b"#if defined(A) && \\\n    defined(B)\n"
           b"int a(void) { return 1; }\n"
           b"# if X\nint b(void) { return 2; }\n# elif Y\nint c(void) { return 3; }\n# endif\n"
           b"#else\nint d(void) { return 4; }\n#endif\n"
           b"#if 0\nint dead(void) { return 5; }\n#elif 0\nint dead2(void) { return 6; }\n"
           b"#else\nint live(void) { return 7; }\n#endif\n"
           b"/* #if comment */\n#define KEEP 1\n")
    out = flatten_conditionals(src)
    check_shape(src, out)
    assert [n for n, _, _ in definitions(out)] == ["a", "b", "live"]
    assert b"#define KEEP 1" in out and b"/* #if comment */" in out


def test_flatten_unbalanced():
    for src in (b"#endif\nint x;\n#else\n", b"#if A\nint x;\n", b"#else\n#elif\n"):
        check_shape(src, flatten_conditionals(src))
    assert flatten_conditionals(b"#if A\nint x;\n") == b"     \nint x;\n"


def test_flatten_after_prepass():
    src = (b"#ifdef CONFIG_X\nstatic int __init setup(void)\n#else\nstatic int setup_alt(void)\n"
           b"#endif\n{\n\treturn 0;\n}\n")
    out = flatten_conditionals(prepass(src))
    check_shape(src, out)
    assert definitions(out) == [("setup", 2, False)]


# ---------------------------------------------------------------------------------------------
# macro tables as data
# ---------------------------------------------------------------------------------------------
def test_tables_loaded_from_toml():
    t = macro_tables()
    assert "__init" in t.annotations and "G_NORETURN" in t.annotations
    assert "__printf" in t.annotations_with_args
    assert "*for_each*" in t.iterator_patterns
    assert "SYSCALL_DEFINE" in t.syscall_defines
    assert macro_tables() is t  # cached


def test_extra_tables_from_env(tmp_path, monkeypatch):
    extra = tmp_path / "extra.toml"
    extra.write_text('[annotations]\nnames = ["MY_ATTR"]\nremove = ["__init"]\n'
                     '[annotations_with_args]\nnames = ["MY_FMT"]\n'
                     '[iterators]\npatterns = ["my_walk_*"]\n'
                     '[syscall_defines]\nnames = ["MYSYS_DEFINE"]\n')
    src = (b"MY_FMT(1, 2) int __init MY_ATTR f(void)\n{\n\tmy_walk_all(x) {\n\t\tg(x);\n\t}\n"
           b"\treturn 0;\n}\nMYSYS_DEFINE1(h, int, a)\n{\n\treturn a;\n}\n")
    monkeypatch.setenv(pp.ENV_VAR, str(extra))
    out = prepass(src)
    check_shape(src, out)
    assert b"__init" in out and b"MY_ATTR" not in out and b"MY_FMT" not in out
    assert b"while      (x)" in out
    assert b"long          h( int  a)" in out
    monkeypatch.delenv(pp.ENV_VAR)
    assert b"MY_ATTR" in prepass(src)


def test_missing_extra_table_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(pp.ENV_VAR, str(tmp_path / "nope.toml"))
    with pytest.raises(FileNotFoundError):
        prepass(b"int x;")


def test_keyword_and_name_macros():
    src = (b"STATIC int\nxfs_thing(int a)\n{\n\treturn a;\n}\n"
           b"uint32_t HELPER(vfp_adds)(uint32_t a, void *fpst)\n{\n\treturn a;\n}\n"
           b"BPF_CALL_2(bpf_map_lookup_elem, struct bpf_map *, map, void *, key)\n{\n"
           b"\treturn lookup(map, key);\n}\n"
           b'SEC("tc")\nint prog(struct __sk_buff *skb)\n{\n\treturn 0;\n}\n')
    out = prepass(src)
    assert clean_defs(src) == {"xfs_thing": 1, "helper_vfp_adds": 6, "bpf_map_lookup_elem": 10,
                               "prog": 15}
    assert out.startswith(b"static int\n")
    fd = next(n for n in walk(parse(out).root_node) if n.type == "function_definition")
    assert any(c.type == "storage_class_specifier" for c in fd.children)
    assert calls_in(out, "bpf_map_lookup_elem") == ["lookup"]


def test_more_grammar_gaps():
    src = (b"static DECLARE_WORK(work, work_fn);\n"
           b"static DEFINE_MUTEX(lock);\n"
           b"int f(struct kvm_vcpu *vcpu, u64 val)\n{\n"
           b"\t__vcpu_rmw_sys_reg(vcpu, PMCR_EL0, |=, val);\n"
           b"\tif (kvm_has_feat(vcpu->kvm, ID_AA64MMFR0_EL1, TGRAN16, 52_BIT))\n"
           b"\t\tinvoke_psci_fn(PSCI_FN_NATIVE(1_1, SYSTEM_RESET2), 0, 0, 0);\n"
           b"\tswitch (val) {\n\tcase IRQBASE\n\t\t... IRQBASE + 3:\n\t\tbreak;\n\t}\n"
           b"\tdo {\n\t\tg();\n\t} while_each_thread(a, b);\n"
           b"\tasm volatile(\"ldr %0, %1\" : __imm(x) : \"r\"(val) : __clobber_all);\n"
           b"\treturn 0;\n}\n")
    out = prepass(src)
    assert clean_defs(src) == {"f": 3}
    assert out.startswith(b"       DECLARE_WORK(work, work_fn);\nstatic DEFINE_MUTEX(lock);\n")
    assert calls_in(out, "f") == ["__vcpu_rmw_sys_reg", "kvm_has_feat", "invoke_psci_fn",
                                  "PSCI_FN_NATIVE", "g"]


def test_object_annotation_name_used_as_a_function():
    # skiboot names a function __malloc; the kernel uses __malloc as an attribute.
    src = (b"void *__malloc(size_t n, const char *loc)\n{\n\treturn alloc(n);\n}\n"
           b"void *f(void)\n{\n\treturn __malloc(1, \"x\");\n}\n"
           b"void __noreturn (*exit_fn)(void);\n")
    out = prepass(src)
    assert clean_defs(src) == {"__malloc": 1, "f": 5}
    assert calls_in(out, "f") == ["__malloc"]
    assert b"void            (*exit_fn)(void);" in out


def test_extra_tables_remove_map_entries(tmp_path, monkeypatch):
    extra = tmp_path / "extra.toml"
    extra.write_text('[keyword_macros]\nremove = ["STATIC"]\n'
                     '[name_macros.map]\nMYHELPER = "my_"\n')
    monkeypatch.setenv(pp.ENV_VAR, str(extra))
    out = prepass(b"STATIC int x;\nint MYHELPER(f)(void) { return 0; }\n")
    assert out == b"STATIC int x;\nint my_f       (void) { return 0; }\n"
