"""Macro expansion where it decides a call or a constant: the expander, the graph's macro and inline edges,
and a handoff constant written through a token-pasting macro (fixture trees and small in-memory files)."""

from __future__ import annotations

import pytest

from flowscan.extract.cpp import expand
from flowscan.extract.facts import MacroDef
from flowscan.extract.parse import extract_file
from flowscan.flow.spec import find_flow, load_flow
from flowscan.flow.verify import verify
from flowscan.graph.callgraph import Graph
from tests.test_graph import graph_of


def _table(*defs: tuple[str, str, str, tuple[str, ...]]):
    rows: dict[str, list[MacroDef]] = {}
    for i, (name, params, value, conds) in enumerate(defs):
        rows.setdefault(name, []).append(MacroDef(name, value, "m.h", i + 1, params, conds))
    return lambda n: rows.get(n, [])


# -- the expander --------------------------------------------------------------------------------
def test_token_pasting_gives_one_name_per_if_alternative():
    lookup = _table(("NATIVE", "(version,name)", "PSCI_##version##_FN64_##name", ("CONFIG_64BIT",)),
                    ("NATIVE", "(version,name)", "PSCI_##version##_FN_##name", ("!CONFIG_64BIT",)))
    got = [(x.name(), x.conditions, x.macros[0].line) for x in expand("NATIVE", ["0_2", "CPU_ON"], lookup)]
    assert got == [("PSCI_0_2_FN64_CPU_ON", ("CONFIG_64BIT",), 1), ("PSCI_0_2_FN_CPU_ON", ("!CONFIG_64BIT",), 2)]


def test_variadic_stringize_and_gnu_comma():
    lookup = _table(("hvc", "(...)", "__hvc(__VA_ARGS__, NULL)", ()),
                    ("show", "(x)", "puts(#x)", ()),
                    ("logf", "(fmt,...)", "do_log(fmt, ##__VA_ARGS__)", ()))
    assert expand("hvc", ["a", "b"], lookup)[0].text == "__hvc(a, b, NULL)"
    assert expand("show", ["a + b"], lookup)[0].text == 'puts("a + b")'
    assert expand("logf", ['"x"'], lookup)[0].text == 'do_log("x")'
    assert expand("logf", ['"x"', "1"], lookup)[0].text == 'do_log("x", 1)'


def test_a_function_passed_by_name_into_nested_macros_is_called():
    # pr_emerg -> printk -> wrap(_emit, ...): the function the outer macro names is what gets called.
    lookup = _table(("pr_emerg", "(fmt,...)", "printk(fmt, ##__VA_ARGS__)", ()),
                    ("printk", "(fmt,...)", "wrap(_emit, fmt, ##__VA_ARGS__)", ()),
                    ("wrap", "(_f,_fmt,...)", "({ index_emit(_fmt); _f(_fmt, ##__VA_ARGS__); })", ()))
    ex = expand("pr_emerg", ['"boom %d"', "get(x)"], lookup)[0]
    # get(x) is written in the arguments: a call site of its own, not one the macro makes.
    assert ex.calls() == ["index_emit", "_emit"]
    assert [m.name for m in ex.macros] == ["pr_emerg", "printk", "wrap"]


def test_recursive_macro_stops_at_its_own_name():
    lookup = _table(("f", "(x)", "f(x, 0)", ()), ("g", "", "g + 1", ()))
    assert expand("f", ["a"], lookup)[0].text == "f(a, 0)"
    assert expand("g", None, lookup)[0].text == "g + 1"


# -- the graph, on the fixture tree ---------------------------------------------------------------
@pytest.fixture(scope="module")
def lnx(linux_new):
    return graph_of(linux_new)


def test_call_through_a_macro_is_an_edge_to_the_function_behind_it(lnx):
    (fn,) = lnx.definitions("__invoke_psci_fn_hvc")
    got = [(e.callee, e.callee_path, e.kind, e.via, e.store_path, e.store_line, e.line)
           for e in lnx.callees(fn, direct_only=True)]
    # __arm_smccc_hvc is assembly (defined by SYM_FUNC_START in smccc-call.S); the macro is not a callee.
    assert got == [("__arm_smccc_hvc", "arch/arm64/kernel/smccc-call.S", "macro", "arm_smccc_hvc", "include/linux/arm-smccc.h", 28,
                    34)]


def test_macro_with_no_function_behind_it_is_shown_with_each_define(lnx):
    (fn,) = lnx.definitions("psci_sys_reset")
    macro = sorted((e.callee, e.kind, e.store_line, e.conditions) for e in lnx.callees(fn) if e.kind == "macro")
    assert macro == [("PSCI_FN_NATIVE", "macro", 17, ("CONFIG_64BIT",)),
                     ("PSCI_FN_NATIVE", "macro", 19, ("!CONFIG_64BIT",))]


def test_constants_written_through_a_macro(lnx):
    got = sorted((u.line, name, m.line, conds) for u, name, m, conds in lnx.expanded_constants("psci_sys_reset"))
    assert got == [(73, "PSCI_1_1_FN64_SYSTEM_RESET2", 17, ("CONFIG_64BIT",)),
                   (73, "PSCI_1_1_FN_SYSTEM_RESET2", 19, ("!CONFIG_64BIT",))]


def test_handoff_constant_built_by_token_pasting_verifies(lnx):
    spec = load_flow(find_flow("arm64-reboot"))
    result = verify(spec, {"guest": lnx, "host": lnx})
    (hop,) = [h for h in result.hops if h.id == "psci:SYSTEM_RESET2"]
    assert hop.status == "verified"
    assert ("macro", "drivers/firmware/psci/psci.c", 17) in [(e.what, e.path, e.line) for e in hop.evidence]
    assert "#if CONFIG_64BIT" in hop.conditions
    (hvc,) = [h for h in result.hops if h.frm == "__invoke_psci_fn_hvc"]
    assert (hvc.status, hvc.matched_to, hvc.resolution) == ("verified", "__arm_smccc_hvc", "macro")


def test_a_macro_spelled_constant_is_not_needed_in_the_flow():
    names = [n for h in load_flow(find_flow("arm64-reboot")).hops for c in h.constants for n in c.names]
    assert "PSCI_1_1_FN64_SYSTEM_RESET2" in names and not any("PSCI_FN_NATIVE" in n for n in names)


# -- __always_inline bodies -----------------------------------------------------------------------
HEADER = b"""
#define raw_lock(l) _raw_lock(l)
static __always_inline void lock(int *l)
{
	raw_lock(l);
}
static inline void plain(int *l)
{
	helper(l);
}
"""
SOURCE = b"""
void _raw_lock(int *l) { }
void helper(int *l) { }
void user(int *l)
{
	lock(l);
	plain(l);
}
"""


def test_always_inline_bodies_are_seen_through_and_plain_inline_ones_are_not():
    g = Graph([extract_file(HEADER, "include/lock.h"), extract_file(SOURCE, "kernel/user.c")])
    assert [(d.name, d.inline) for d in g.definitions("lock") + g.definitions("plain")] == \
        [("lock", "always"), ("plain", "inline")]
    (user,) = g.definitions("user")
    got = sorted((e.callee, e.kind, e.via, e.line, e.store_path, e.store_line)
                 for e in g.callees(user, direct_only=True, inline=True))
    assert got == [("_raw_lock", "inline", "lock", 6, "include/lock.h", 5),
                   ("lock", "direct", "", 6, "", 0), ("plain", "direct", "", 7, "", 0)]
    assert {e.callee for e in g.callees(user, direct_only=True)} == {"lock", "plain"}


# -- iterator macros and macros that stand in for a function only in some builds ----------------
ITER_H = b"""
#define for_each_item(i, m) for ((i) = -1; (i) = next_item((i), (m)), (i) < 8;)
#ifdef CONFIG_INLINE_TAKE
#define take(l) __take(l)
#endif
"""
ITER_C = b"""
int next_item(int i, int *m) { return i + 1; }
void take(int *l) { }
void walk(int *m)
{
	int i;

	for_each_item(i, m) {
		take(m);
	}
}
"""


def test_iterator_loops_are_calls_of_their_macro_and_a_conditional_macro_keeps_its_function():
    facts = [extract_file(ITER_H, "include/items.h"), extract_file(ITER_C, "lib/walk.c")]
    assert [(c.callee, c.line, c.args) for c in facts[1].calls] == \
        [("for_each_item", 8, ("i", "m")), ("take", 9, ("m",))]
    g = Graph(facts)
    (walk,) = g.definitions("walk")
    got = sorted((e.callee, e.callee_path, e.kind) for e in g.callees(walk, direct_only=True))
    # take() is the function without CONFIG_INLINE_TAKE, __take() with it: both are shown.
    assert got == [("__take", "", "macro"), ("next_item", "lib/walk.c", "macro"), ("take", "lib/walk.c", "direct")]
    (e,) = [e for e in g.callees(walk) if e.callee == "__take"]
    assert (e.store_path, e.store_line, e.conditions) == ("include/items.h", 4, ("CONFIG_INLINE_TAKE",))
