"""Symbol table and call graph over many FileFacts, with indirect-call resolution.

Edges are computed lazily per call site (and memoised): a question about one function touches only the
calls it needs, which keeps warm queries on whole trees fast. Every edge says how it was resolved and
carries the location of the store (initializer, assignment, registration) that justifies it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import re

from flowscan.extract.facts import CallSite, ConstantUse, FileFacts, FunctionDef, GlobalRef, MacroDef, PointerStore
from flowscan.graph.qom import QomIndex, TypeNode
from flowscan.index.store import Index, build_in_memory
from flowscan.extract.registrations import Registration, chain_name
from flowscan.extract.apis import Registry, default_registry
from flowscan.graph.expansion import Macros, Truth, assumed
from flowscan.buildconfig.cexpr import FALSE, combine
from flowscan.buildconfig.model import NOT_BUILT, STUB, UNDECIDED, BuildConfig

DIRECT = "direct"
MACRO = "macro"  # through a #define: the edge's store is the #define's file:line
INLINE = "inline"  # called in the body of an __always_inline callee, which the compiler sees through
COMPILED = (DIRECT, MACRO, INLINE)  # what a compiler emits as a direct call ("--direct-only")
NARROWABLE = ("field", "registration")  # class dispatches, which a QOM type on the route narrows
MAX_REACH = 3000  # functions reach_back follows at most (beyond, a route search walks forward only)
PRUNE_DEPTH = 6  # route searches this deep that follow more than FORWARD_BUDGET functions walk back
FORWARD_BUDGET = 16  # from their target first
WALK_SITES = 4  # call sites and edges reach_back looks at per function of its limit
NARROWING_BUDGET = 2_000  # functions a search for a narrower route follows when walking back cannot prune it
# (from qemu_system_reset on whole QEMU, 20,000 of them took 350 s and 10 GB)
MAX_INLINE_DEPTH = 8
_WS = re.compile(r"\s+")
_CAST = re.compile(r"([A-Z][A-Z0-9_]*)\s*\(")
_MACRO_CALL = re.compile(r"([A-Za-z_]\w*)\s*\(\s*([A-Za-z_]\w*)\s*\)$")


@dataclass(frozen=True)
class Edge:
    caller: str
    caller_path: str
    callee: str
    callee_path: str  # '' when the callee has no definition in the scanned scope
    kind: str  # direct | field | registration | qom-parent | table | type | variable | argument | notifier
    path: str  # call site
    line: int
    via: str = ""  # field path, variable, table or chain the call went through
    store_path: str = ""  # the store that justifies an indirect edge
    store_line: int = 0
    fanout: int = 1  # how many targets the call site resolved to
    cases: tuple[str, ...] = ()
    ifs: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    reason: str = ""  # why this target was kept (which store, registration, slot or type)
    obj_type: str = ""  # the QOM type a class dispatch was narrowed to ('' when not narrowed)
    # the table slots the target is stored at, each (designator, store path, store line):
    # `arm_exit_handlers[ESR_ELx_EC_HVC32]` and `[ESR_ELx_EC_HVC64]` both hold handle_hvc
    slots: tuple[tuple[str, str, int], ...] = ()
    # Each of `conditions` evaluated for the build configuration: "true", "false" or "unknown"
    # (empty when the tree has no configuration).
    condition_values: tuple[str, ...] = ()

    @property
    def indirect(self) -> bool:
        return self.kind not in COMPILED

    def to_json(self) -> dict:
        out = {"caller": self.caller, "caller_path": self.caller_path, "callee": self.callee,
               "callee_path": self.callee_path, "kind": self.kind, "path": self.path, "line": self.line}
        if self.kind != DIRECT:
            out.update(via=self.via, store_path=self.store_path, store_line=self.store_line,
                       fanout=self.fanout, reason=self.reason)
            if self.obj_type:
                out["obj_type"] = self.obj_type
        if self.cases:
            out["cases"] = list(self.cases)
        if self.ifs:
            out["ifs"] = list(self.ifs)
        if self.conditions:
            out["conditions"] = list(self.conditions)
        if self.condition_values:
            out["condition_values"] = list(self.condition_values)
        return out


# Types that say nothing about which function a pointer holds (`void (*fn)(void)` declares `fn` as
# "void"): never resolve through them.
_PRIMITIVE = frozenset("""void int char short long unsigned signed bool _Bool float double size_t ssize_t
u8 u16 u32 u64 s8 s16 s32 s64 __u8 __u16 __u32 __u64 __s32 __s64 uint8_t uint16_t uint32_t uint64_t int8_t
int16_t int32_t int64_t uintptr_t intptr_t gboolean gpointer hwaddr vaddr""".split())


def _reason(kind: str, via: str, store) -> str:
    """Why an indirect target was kept, in words (the store's location is in the edge beside it)."""
    if store is None or kind in COMPILED or not isinstance(store, (PointerStore, Registration)):
        return ""  # direct, or through a macro/inline body (the #define is the edge's store)
    where = f"{store.path}:{store.line}"
    if isinstance(store, Registration):
        return f"registered on {store.chain or via} by {store.api} in {store.function or 'file scope'} ({where})"
    fn = store.in_function or "file scope"
    if store.kind == "registration":
        return f"registered with {store.variable} in {fn} ({where})"
    if store.index:
        return f"slot [{store.index}] of {store.variable or via} ({where})"
    if store.kind == "initializer":
        return f"initializer {store.variable}.{store.field or via} = {store.function} ({where})"
    if store.kind == "return":
        return f"returned by {fn} ({where})"
    target = store.field or store.variable or via
    return f"assigned to {target} in {fn} ({where})"


class _OverBudget(Exception):
    pass


def route_width(edges: Sequence[Edge]) -> int:
    """The widest dispatch on a route: the largest fan-out of its indirect steps (1 when all direct)."""
    return max((e.fanout for e in edges if e.kind not in COMPILED), default=1)


def narrowing_note(cut: int) -> str:
    """What a route whose narrowing search gave up (Graph.route_cut) must say."""
    return f"a narrower route was not ruled out: the search for one stopped after {cut:,} functions"


def _narrow_first(e: Edge) -> tuple:
    """The order a path search follows a function's calls: direct calls and narrow dispatches first, then by
    line, so that of two routes equally wide and long the one whose other steps are narrower is found
    (`if (mc->reset) mc->reset(...); else qemu_devices_reset(...)`: the direct call, not 1 of 11)."""
    return (1 if e.kind in COMPILED else e.fanout, e.line, e.callee, e.callee_path)


def _last(field: str) -> str:
    return field.rsplit(".", 1)[-1]


def _suffix_match(a: str, b: str) -> bool:
    """Field paths match when one is a component-wise suffix of the other (`phases.hold` ~ `hold`)."""
    if a == b:
        return True
    pa, pb = a.split("."), b.split(".")
    n = min(len(pa), len(pb))
    return pa[-n:] == pb[-n:]


@dataclass(frozen=True)
class RegionHandler:
    """The function an ops table's member holds, for an ops table mapped at an address: the three
    sites that decide it (where the region is mapped, where it gets its ops, where the ops are set)."""

    function: str
    function_path: str
    ops: str  # the ops table variable (`i8042_cmd_ops`)
    address: str  # as spelled at the map site (`0x64`, `ICH9_RST_CNT_IOPORT`)
    map_api: str
    map_path: str
    map_line: int
    map_function: str
    ops_api: str
    ops_path: str
    ops_line: int
    store_path: str
    store_line: int


def address_key(text: str) -> str:
    """`0x64`, `0X64`, `100`, `0x64u` -> one spelling; names stay as written."""
    t = text.strip().rstrip("uUlL") if text.strip()[:1].isdigit() else text.strip()
    try:
        return str(int(t, 0))
    except ValueError:
        return t


def region_key(text: str) -> str:
    """The region argument without its base variable (`&isa_s->io[1]`, `isa_s->io + 1` -> `io+1`, `io[1]`):
    the binding and the mapping of one region are often in different functions of one file."""
    t = _WS.sub("", text.lstrip("&"))
    m = re.match(r"[A-Za-z_]\w*(?:->|\.)", t)
    return t[m.end():] if m else t


def split_params(params: str) -> list[str]:
    """`(int a, void (*fn)(int, int), char *b)` -> its three parameters (commas inside parentheses kept)."""
    text = params.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    out, depth, cur = [], 0, []
    for ch in text:
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        depth += (ch == "(") - (ch == ")")
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def param_name(param: str) -> str:
    """The name a parameter declares: `MemTxResult (*access_fn)(MemoryRegion *mr, ...)` -> access_fn."""
    m = re.match(r"[^(]*\(\s*\*\s*(?:const\s+)?([A-Za-z_]\w*)", param)
    if m:
        return m.group(1)
    words = re.findall(r"[A-Za-z_]\w*", param.split("[", 1)[0])
    return words[-1] if words else ""


class Graph:
    """The call graph of one tree and scope, read from its index (see flowscan.index)."""

    def __init__(self, facts: Sequence[FileFacts] | Index, registry: Registry | None = None,
                 prefer: Sequence[str] = (), truth: Truth | None = None, build: BuildConfig | None = None):
        self.registry = registry or default_registry()
        self.build = build  # which files and #if branches are compiled (None: every one counts)
        self.prefer = tuple(p.rstrip("/") + "/" for p in prefer)
        self.route_cut = 0  # (see route())
        self.ix = facts if isinstance(facts, Index) else build_in_memory(facts, self.registry)
        if truth is None and build is not None:  # macro alternatives narrowed by the configuration too
            truth = build.truth
        self.macros = Macros(self.ix, self.prefer, truth)
        self._memo: dict[int, list[Edge]] = {}
        self._typed_memo: dict[tuple[int, str], list[Edge]] = {}
        self._qom: QomIndex | None = None

    @property
    def partial(self) -> bool:
        """Read from the files a question needs (flowscan.cold), not all."""
        return self.ix.partial

    @property
    def qom(self) -> QomIndex:
        if self._qom is None:
            self._qom = QomIndex(*self.ix.qom_rows(), ask=self.ix.ask)
        return self._qom

    @property
    def registrations(self) -> list[Registration]:
        return self.ix.registrations()

    def def_names(self) -> list[str]:
        return self.ix.def_names()

    # -- symbols -----------------------------------------------------------------------------------
    def definitions(self, name: str) -> list[FunctionDef]:
        return sorted(self.ix.defs(name), key=lambda d: (d.path, d.line))

    def def_status(self, d: FunctionDef) -> str:
        """built, not built, stub or unknown: the file's status for the build configuration, and not
        built when the definition's own #if conditions are false."""
        if self.build is None:
            return UNDECIDED
        st = self.build.status(d.path)
        if st != NOT_BUILT and d.conditions and combine(list(self.build.conditions(d.conditions))) == FALSE:
            return NOT_BUILT
        return st

    def built(self, defs: Sequence[FunctionDef]) -> list[FunctionDef]:
        """The definitions a build of the configuration compiles: never one from a file that is not
        built; a stub (QEMU's stub_ss) only when nothing else defines the name."""
        if self.build is None or not defs:
            return list(defs)
        status = [(d, self.def_status(d)) for d in defs]
        keep = [d for d, st in status if st not in (NOT_BUILT, STUB)]
        return keep or [d for d, st in status if st == STUB]

    def store_built(self, path: str, conditions: Sequence[str] = ()) -> bool:
        """Is a store or registration at `path` (under these #if conditions) compiled? Unknown = yes."""
        if self.build is None:
            return True
        if self.build.status(path) == NOT_BUILT:
            return False
        return not conditions or combine(list(self.build.conditions(conditions))) != FALSE

    def preferred(self, defs: Sequence[FunctionDef]) -> list[FunctionDef]:
        """Narrow alternatives (one per architecture) to the preferred architecture when one matches."""
        if len(defs) < 2 or not self.prefer:
            return list(defs)
        keep = [d for d in defs if d.path.startswith(self.prefer)]
        return keep or list(defs)

    def lookup(self, name: str, from_path: str) -> list[FunctionDef]:
        """Definitions a direct call from `from_path` can reach: same-file static first, then globals."""
        same = self.built([d for d in self.ix.defs(name, ask=False) if d.path == from_path])
        if same:  # decided by this file alone (a cold question needs no other file for it)
            return same[:1]
        defs = self.built(self.ix.defs(name))
        if not defs:
            return []
        glob = [d for d in defs if not d.static]
        if glob:
            return self.preferred(sorted(glob, key=lambda d: (d.path, d.line)))
        headers = [d for d in defs if d.path.endswith(".h")]
        return self.preferred(sorted(headers, key=lambda d: (d.path, d.line)))

    def def_at(self, name: str, path: str) -> FunctionDef | None:
        for d in self.ix.defs(name, ask=False):  # (`path` is a file the index has)
            if d.path == path:
                return d
        return None

    # -- forward -----------------------------------------------------------------------------------
    def calls_of(self, fn: FunctionDef) -> list[CallSite]:
        return self.ix.calls_in(fn.name, fn.path, fn.line, fn.end_line)

    def callees(self, fn: FunctionDef, direct_only: bool = False, inline: bool = False,
                obj_type: str = "") -> list[Edge]:
        """What `fn` calls. `direct_only`: what the compiler emits as direct calls (through macros
        too). `inline`: also, as `inline` edges, what the bodies of its __always_inline callees call.
        `obj_type` (a QOM type known for the object on the route): class dispatches resolve to what that
        type and its subtypes set, not to every store of the field."""
        out: list[Edge] = []
        for call in self.calls_of(fn):
            edges = self.resolve_typed(call, obj_type) if obj_type and call.kind == "field" else self.resolve(call)
            for e in edges:
                if not direct_only or e.kind in COMPILED:
                    out.append(e)
        if inline:
            out.extend(self._through_inline(fn, out))
        return out

    def _through_inline(self, fn: FunctionDef, edges: list[Edge]) -> list[Edge]:
        out: list[Edge] = []
        seen = {(fn.name, fn.path)}
        todo = [(e, e, 0) for e in edges if e.kind in COMPILED]
        while todo:
            outer, e, depth = todo.pop(0)
            d = self.def_at(e.callee, e.callee_path) if e.callee_path else None
            if d is None or d.inline != "always" or (d.name, d.path) in seen or depth >= MAX_INLINE_DEPTH:
                continue
            seen.add((d.name, d.path))
            chain = f"{outer.via}>{d.name}" if outer.kind == INLINE else d.name
            for inner in self.callees(d, direct_only=True):
                via = replace(outer, callee=inner.callee, callee_path=inner.callee_path, kind=INLINE, via=chain,
                              store_path=inner.path, store_line=inner.line, fanout=1,
                              conditions=outer.conditions + tuple(c for c in inner.conditions
                                                                  if c not in outer.conditions))
                out.append(via)
                todo.append((via, inner, depth + 1))
        return out

    # -- QOM types narrowing class dispatch ---------------------------------------------------------
    def resolve_typed(self, call: CallSite, obj_type: str) -> list[Edge]:
        key = (id(call), obj_type)
        hit = self._typed_memo.get(key)
        if hit is None:
            hit = self._typed_memo[key] = self._resolve_typed(call, obj_type)
        return hit

    def _resolve_typed(self, call: CallSite, obj_type: str) -> list[Edge]:
        """Keep the targets the type can hold: the setter it inherits (nearest class_init on its chain),
        what its subtypes set, and stores in helpers (`device_class_set_legacy_reset`) that a class_init
        of those types calls. Not a class dispatch (some target stored outside any function, or no
        target set by a class_init): unchanged."""
        edges = self.resolve(call)
        if not edges or any(e.kind == "qom-parent" for e in edges):
            return edges  # already exact
        node = self.qom.find(obj_type)
        if node is None:
            return edges
        stores = {(s.path, s.line, s.function): s for s in self.ix.stores_where("last", _last(call.callee))}
        of_edge = {}
        for e in edges:
            st = stores.get((e.store_path, e.store_line, e.callee))
            if st is None or not st.in_function:
                return edges
            of_edge[id(e)] = st
        if not any(self.qom.class_types(st.in_function) for st in of_edge.values()):
            return edges
        wanted: dict[tuple[str, int], tuple[str, TypeNode]] = {}  # store -> (class_init, type)
        setter = self.inherited_setter(node, call.callee)
        if setter is not None:
            wanted[(setter[0].path, setter[0].line)] = (setter[1].class_init, setter[1])
        family = [node, *self.qom.ancestors(node)]
        subs = self.qom.descendants(node)
        for sub in subs:
            for st in self.class_setters(sub.class_init, call.callee) if sub.class_init else ():
                wanted.setdefault((st.path, st.line), (sub.class_init, sub))
        helpers: dict[str, tuple[str, TypeNode]] = {}
        for t in family + subs:
            for d in self.definitions(t.class_init) if t.class_init else ():
                for c in self.calls_of(d):
                    if c.kind == DIRECT:
                        helpers.setdefault(c.callee, (t.class_init, t))
        out = []
        for e in edges:
            st = of_edge[id(e)]
            why = wanted.get((st.path, st.line)) or (helpers.get(st.in_function)
                                                     if not self.qom.class_types(st.in_function) else None)
            if why is None:
                continue
            ci, owner = why
            how = f"set in {ci}" if ci == st.in_function else f"set by {st.in_function}, called from {ci}"
            out.append(replace(e, obj_type=node.name,
                               reason=f"{call.callee} of type {node.name}: {how} of {owner.name} "
                                      f"({st.path}:{st.line})"))
        return [replace(e, fanout=len(out)) for e in out]

    def registered_type(self, fn: str) -> str:
        """The QOM type of the object `fn` is registered with, when every registration of it that names an
        object (`qemu_register_reset(do_cpu_reset, ARM_CPU(cs))`) casts it to the same type; else ''."""
        found = set()
        for reg in self.ix.regs_by_callback(fn):
            api = self.registry.fields.get(reg.api)
            if api is None or api.object_arg < 0:
                continue
            for site in self.ix.calls_to(reg.api, DIRECT, ask=False):
                if site.path == reg.path and site.line == reg.line and api.object_arg < len(site.args):
                    found.add(self.cast_type(site.args[api.object_arg]))
        return found.pop() if len(found) == 1 else ""

    def cast_type(self, expr: str) -> str:
        """`ARM_CPU(cs)` -> "arm-cpu": a QOM checker macro names its type TYPE_<CHECKER>."""
        m = _CAST.match(expr.strip())
        if not m:
            return ""
        node = self.qom.find("TYPE_" + m.group(1))
        return node.name if node is not None else ""

    def _edge_type(self, e: Edge, obj_type: str) -> str:
        """The object type known after following `e`: a callback registered with a typed object starts
        that type; callbacks handed to another function (child_foreach) act on other objects."""
        if e.kind in ("registration", "field") and e.store_path:
            t = self.registered_type(e.callee)
            if t:
                return t
        if e.kind in ("argument", "notifier", "spawn"):
            return ""
        return obj_type

    def resolve(self, call: CallSite) -> list[Edge]:
        key = id(call)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._resolve(call)
            self._memo[key] = hit
        return hit

    def _edge(self, call: CallSite, callee: str, callee_path: str, kind: str, via: str = "",
              store: PointerStore | Registration | None = None, fanout: int = 1) -> Edge:
        return Edge(caller=call.caller, caller_path=call.path, callee=callee, callee_path=callee_path,
                    kind=kind, path=call.path, line=call.line, via=via,
                    store_path=store.path if store is not None else "",
                    store_line=store.line if store is not None else 0, fanout=fanout, cases=call.cases,
                    ifs=call.ifs, conditions=call.conditions, args=call.args, reason=_reason(kind, via, store),
                    condition_values=self.build.conditions(call.conditions)
                    if self.build is not None and call.conditions else ())

    def _through_macro(self, call: CallSite, has_function: bool) -> list[Edge]:
        """`arm_smccc_hvc(...)` -> `__arm_smccc_hvc` [macro]: the functions the macro's expansion calls,
        per #if alternative of the #defines; the macro itself (callee with no path) only where no
        function stands behind it."""
        alts = self.macros.call(call.callee, call.args, call.path)
        if not alts:
            return []
        pairs: dict[tuple[str, str], tuple] = {}
        for alt in alts:
            for name in alt.calls:
                if name == call.callee and has_function:
                    continue  # `#define f(x) f(x, 0)`: the function is already an edge of its own
                for d in self.lookup(name, call.path) or [None]:
                    pairs.setdefault((name, d.path if d is not None else ""), (alt, d))
        if not pairs:
            if has_function:
                return []
            shown: dict[tuple[str, int], Edge] = {}  # one per #define (per #if branch), with its conditions
            for alt in alts:
                conds = tuple(c for c in alt.macro.conditions if c not in call.conditions and assumed(c) is not True)
                shown.setdefault((alt.macro.path, alt.macro.line), replace(
                    self._edge(call, call.callee, "", MACRO, call.callee, alt.macro, len(alts)),
                    conditions=call.conditions + conds))
            return list(shown.values())
        out = []
        for (name, path), (alt, _d) in pairs.items():
            e = self._edge(call, name, path, MACRO, ">".join(alt.chain), alt.macro, len(pairs))
            extra = tuple(c for c in alt.conditions if c not in call.conditions and assumed(c) is not True)
            out.append(replace(e, conditions=call.conditions + extra))
        return out

    def _resolve(self, call: CallSite) -> list[Edge]:
        if call.kind == DIRECT:
            out = [self._edge(call, d.name, d.path, DIRECT) for d in self.lookup(call.callee, call.path)]
            out += self._through_macro(call, bool(out))
            if not out:
                out = [self._edge(call, call.callee, "", DIRECT)]
            spawn_arg = self.registry.spawn.get(call.callee)
            if spawn_arg is not None and spawn_arg < len(call.args):
                target = call.args[spawn_arg].lstrip("&").strip()
                for d in self.lookup(target, call.path) if target.isidentifier() else ():
                    out.append(self._edge(call, d.name, d.path, "spawn", call.callee))
            chain_arg = self.registry.dispatch.get(call.callee)
            if chain_arg is not None and chain_arg < len(call.args):
                chain = chain_name(call.args[chain_arg])
                targets = self.ix.notifier_callbacks(chain)
                targets = [(fn, reg) for fn, reg in targets if self.store_built(reg.path)]
                for fn, reg in targets:
                    for d in self.lookup(fn, reg.path):
                        out.append(self._edge(call, d.name, d.path, "notifier", chain, reg, len(targets)))
            return out
        if call.kind == "field":
            return self._resolve_field(call)
        if call.kind == "variable":
            return self._resolve_variable(call)
        return self._resolve_ops_call(call)

    def _stores_to_edges(self, call: CallSite, stores: Iterable[PointerStore], kind_of, via: str) -> list[Edge]:
        pairs = []
        slots: dict[tuple[str, str], list[tuple[str, str, int]]] = {}  # a target in several table slots: all
        for s in sorted(stores, key=lambda s: (s.path, s.line, s.function)):
            if not self.store_built(s.path, s.conditions):
                continue
            for d in self.lookup(s.function, s.path):
                at = slots.get((d.name, d.path))
                if at is not None:
                    if s.index:
                        at.append((s.index, s.path, s.line))
                    continue
                slots[(d.name, d.path)] = [(s.index, s.path, s.line)] if s.index else []
                pairs.append((d, s))
        return [replace(self._edge(call, d.name, d.path, kind_of(s), via, s, len(pairs)),
                        slots=tuple(slots[(d.name, d.path)])) for d, s in pairs]

    def _resolve_field(self, call: CallSite) -> list[Edge]:
        parent = self._resolve_qom_parent(call)
        if parent:
            return parent
        candidates = []
        call_owner = self.owner_type(call.base_type, call.callee)
        for s in self.ix.stores_where("last", _last(call.callee)):
            if not s.field:
                continue
            if not _suffix_match(s.field, call.callee):
                continue
            if call_owner:
                store_owner = self.owner_type(s.var_type, s.field)
                if store_owner and call_owner not in store_owner.split("|"):
                    continue  # a member of the same name in an unrelated struct type
            candidates.append(s)
        return self._stores_to_edges(
            call, candidates, lambda s: "registration" if s.kind == "registration" else "field", call.callee)

    def ops_member(self, callee: str) -> tuple[str, str] | None:
        """`static_call(kvm_x86_handle_exit)` -> ("kvm_x86_ops", "handle_exit") by the [[ops_call]] rows."""
        m = _MACRO_CALL.match(callee)
        if m is None:
            return None
        for row in self.registry.ops_calls.get(m.group(1), ()):
            if m.group(2).startswith(row.prefix) and len(m.group(2)) > len(row.prefix):
                return row.owner, m.group(2)[len(row.prefix):]
        return None

    def _resolve_ops_call(self, call: CallSite) -> list[Edge]:
        """A dispatch macro (`kvm_x86_call(handle_exit)(vcpu)`): the functions stored in that member of
        the ops struct's initializers (`vmx_x86_ops`, `svm_x86_ops`), each an alternative."""
        found = self.ops_member(call.callee) if call.kind == "other" else None
        if found is None:
            return []
        owner, member = found
        stores = [s for s in self.ix.stores_where("last", member)
                  if s.field and _last(s.field) == member and self.owner_type(s.var_type, s.field) == owner]
        return self._stores_to_edges(call, stores, lambda s: "ops-call", f"{owner}.{member}")

    def ops_call_sites(self, store: PointerStore) -> list[CallSite]:
        """Dispatch-macro call sites that can reach the function of `store` (for callers())."""
        out: list[CallSite] = []
        member = _last(store.field)
        for macro, rows in sorted(self.registry.ops_calls.items()):
            for row in rows:
                if self.owner_type(store.var_type, store.field) == row.owner:
                    self.ix.ask("name", macro)
                    out.extend(self.ix.calls_to(f"{macro}({row.prefix}{member})", "other", ask=False))
        return out

    def region_handlers(self, member: str, addresses: Sequence[str]) -> list[RegionHandler]:
        """The functions in `member` of the ops tables whose region is mapped at one of `addresses`, by
        the [[region_ops]]/[[region_map]] APIs (`memory_region_init_io` + `isa_register_ioport`)."""
        wanted = {address_key(a) for a in addresses}
        out: dict[tuple[str, str], RegionHandler] = {}
        for map_api, mapper in sorted(self.registry.region_maps.items()):
            for site in self.ix.calls_to(map_api, DIRECT):
                if max(mapper.region_arg, mapper.address_arg) >= len(site.args) \
                        or address_key(site.args[mapper.address_arg]) not in wanted:
                    continue
                region = region_key(site.args[mapper.region_arg])
                for ops_api, binder in sorted(self.registry.region_ops.items()):
                    for init in self.ix.calls_to(ops_api, DIRECT):
                        if init.path != site.path or max(binder.region_arg, binder.ops_arg) >= len(init.args) \
                                or region_key(init.args[binder.region_arg]) != region:
                            continue
                        ops = init.args[binder.ops_arg].lstrip("&").strip()
                        stores = [s for s in self.ix.stores_where("variable", ops)
                                  if s.field and _last(s.field) == member]
                        stores = [s for s in stores if s.path == init.path] or stores
                        for s in stores:
                            for d in self.lookup(s.function, s.path):
                                out.setdefault((d.name, d.path), RegionHandler(
                                    d.name, d.path, ops, site.args[mapper.address_arg], map_api, site.path,
                                    site.line, site.caller, ops_api, init.path, init.line, s.path, s.line))
        return sorted(out.values(), key=lambda h: (h.function_path, h.function))

    def _defined(self, stores: list[PointerStore]) -> list[PointerStore]:
        """Stores of names some file defines (the whole index has no others; a partial one may, until
        the definition's file is read)."""
        if not self.partial:
            return stores
        return [s for s in stores if self.ix.defs(s.function, ask=False) or self.ix.defs(s.function)]

    def _typed_stores(self, var_type: str) -> list[PointerStore]:
        """Stores into variables or table slots of a function-pointer type (`exit_handle_fn`)."""
        return [s for s in self.ix.stores_where("var_type", var_type) if not s.field or s.index]

    def owner_type(self, base_type: str, field_path: str) -> str:
        """The struct that holds the last member of `base->a.b.c`: follow member types from the base's
        type (`perf_event` + `pmu.read` -> `pmu`); '' when some step is unknown."""
        if not base_type:
            return ""
        t = base_type
        for comp in field_path.split(".")[:-1]:
            t = self.ix.member_type(t, comp)
            if not t:
                return ""
        return t

    def _resolve_variable(self, call: CallSite) -> list[Edge]:
        name = call.callee
        stores = [s for s in self.ix.stores_where("variable", name) if not s.field]
        stores = self._defined(stores)
        if call.local:  # a local or parameter: only what this function assigns to it
            chosen = [s for s in stores if s.path == call.path and s.in_function == call.caller]
        else:  # file-scope: this file's assignments, else any file's (a global)
            chosen = [s for s in stores if s.path == call.path] or [s for s in stores if s.kind != "return"]
        if chosen:
            return self._stores_to_edges(
                call, chosen, lambda s: "table" if s.index else "variable", name)
        arg_edges = self._resolve_argument(call)
        if arg_edges:
            return arg_edges
        if call.var_type and call.var_type not in _PRIMITIVE:
            typed = self._typed_stores(call.var_type)
            return self._stores_to_edges(call, typed, lambda s: "table" if s.index else "type",
                                         call.var_type)
        return []

    def _resolve_argument(self, call: CallSite) -> list[Edge]:
        """A call through a parameter: the functions that callers pass in that position."""
        fn = self.def_at(call.caller, call.path)
        if fn is None:
            return []
        params = split_params(fn.params)
        index = next((i for i, p in enumerate(params) if param_name(p) == call.callee), -1)
        if index < 0:
            return []
        pairs = []
        for site in self.ix.calls_to(fn.name, DIRECT):
            if index >= len(site.args):
                continue
            arg = site.args[index].lstrip("&").strip()
            if not arg.isidentifier():
                continue
            for d in self.lookup(arg, site.path):
                pairs.append((d, site))
        seen = set()
        out = []
        for d, site in pairs:
            if (d.name, d.path) in seen:
                continue
            seen.add((d.name, d.path))
            e = self._edge(call, d.name, d.path, "argument", call.callee, None, 0)
            out.append(replace(e, store_path=site.path, store_line=site.line,
                               reason=f"passed by {site.caller} ({site.path}:{site.line})"))
        return [replace(e, fanout=len(out)) for e in out]

    # -- QOM parents -------------------------------------------------------------------------------
    def _resolve_qom_parent(self, call: CallSite) -> list[Edge]:
        """`kgc->parent_phases.hold(obj, type)` -> the hold phase the parent type set, exactly."""
        path = call.callee
        regs = [r for r in self.ix.regs_by_callback(call.caller) if r.kind == "field" and r.parent_path]
        if not regs:
            regs = [r for r in self.ix.regs_in_file(call.path) if r.kind == "field" and r.parent_path]
        out: list[Edge] = []
        for reg in regs:
            if path == reg.parent_path:
                sub = ""
            elif path.startswith(reg.parent_path + "."):
                sub = path[len(reg.parent_path) + 1:]
            else:
                continue
            field = dict(reg.parent_fields).get(sub)
            if field is None:
                continue
            for node in self.qom.class_types(reg.function):
                setter = self.inherited_setter(node, field, start_at_parent=True)
                if setter is None:
                    continue
                store, owner = setter
                for d in self.lookup(store.function, store.path):
                    e = self._edge(call, d.name, d.path, "qom-parent", f"{owner.name}.{field}", store)
                    out.append(replace(e, reason=f"{field} of the parent type {owner.name}, set in "
                                                 f"{owner.class_init} ({store.path}:{store.line})"))
        uniq = {(e.callee, e.callee_path): e for e in out}
        return [replace(e, fanout=len(uniq)) for e in uniq.values()]

    def class_setters(self, class_init: str, field: str) -> list[PointerStore]:
        return [s for s in self._defined(self.ix.stores_where("in_function", class_init))
                if s.field and _suffix_match(s.field, field) and s.field.count(".") == field.count(".")]

    def inherited_setter(self, node: TypeNode, field: str,
                         start_at_parent: bool = False) -> tuple[PointerStore, TypeNode] | None:
        chain = self.qom.ancestors(node) if start_at_parent else [node, *self.qom.ancestors(node)]
        for t in chain:
            found = self.class_setters(t.class_init, field) if t.class_init else []
            if found:
                return sorted(found, key=lambda s: (s.line, s.kind))[-1], t
        return None

    # -- backward ----------------------------------------------------------------------------------
    def callers(self, name: str, direct_only: bool = False) -> list[Edge]:
        sites: list[CallSite] = list(self.ix.calls_to(name, DIRECT))
        if not direct_only:
            for s in self.ix.stores_where("function", name):
                if s.field:  # by last member: also finds parent-phase calls (`parent_phases.hold`)
                    sites.extend(self.ix.field_calls(_last(s.field)))
                    for reg in self.ix.regs_with_parent(  # ... and calls of a kept parent (`parent_reset`)
                            [a.api for a in self.registry.fields.values() if a.parent_arg >= 0]):
                        if any(_suffix_match(s.field, f) and s.field.count(".") == f.count(".")
                               for _, f in reg.parent_fields):
                            sites.extend(self.ix.field_calls(_last(reg.parent_path)))
                    if self.registry.ops_calls and s.var_type:
                        sites.extend(self.ops_call_sites(s))
                elif s.variable:
                    sites.extend(self.ix.calls_to(s.variable, "variable"))
                if s.var_type and s.var_type not in _PRIMITIVE:
                    sites.extend(self.ix.var_calls_typed(s.var_type))
            chains = {reg.chain for reg in self.ix.regs_by_callback(name) if reg.kind == "notifier"}
            for chain in sorted(chains):  # dispatches of its chains spell the chain (a cold question's lead)
                self.ix.ask("chain", chain)
            if chains:
                for api in self.registry.dispatch:
                    sites.extend(self.ix.calls_to(api, DIRECT, ask=False))
            for api in self.registry.spawn:  # threads and work items started on it: those sites spell it
                sites.extend(c for c in self.ix.calls_to(api, DIRECT, ask=False)
                             if any(a.lstrip("&").strip() == name for a in c.args))
            for fn_name in self.ix.arg_callees(name):  # calls through the parameters it is passed to
                for fn in self.ix.defs(fn_name):
                    sites.extend(c for c in self.calls_of(fn) if c.kind == "variable" and c.local)
        out = []
        seen = set()
        for site in sites:
            if id(site) in seen:
                continue
            seen.add(id(site))
            for e in self.resolve(site):
                if e.callee == name and (not direct_only or e.kind in COMPILED):
                    out.append(e)
        return sorted(set(out), key=lambda e: (e.path, e.line, e.caller, e.kind))

    # -- paths -------------------------------------------------------------------------------------
    def reach_back(self, dst: str, max_depth: int, direct_only: bool = False,
                   max_fanout: int = 0, limit: int = MAX_REACH) -> dict[str, int] | None:
        """name -> the fewest calls from it to `dst` (at most `max_depth`), walking backwards: callers,
        and the call sites of #defines whose body spells the name. A lower bound of the forward distance
        (a dispatch that a QOM type may narrow counts at any width), so a forward search may skip the
        functions not in it; None when more than `limit` functions can reach `dst`, or finding them takes
        more than WALK_SITES times as many call sites."""
        dist = {dst: 0}
        frontier = [dst]
        left = [limit * WALK_SITES]
        step = min(100, max(1, limit // 16))  # names walked back before the next look at the limit:
        for depth in range(1, max_depth + 1):  # (a cold question asks for no more than it must)
            if not frontier:
                break
            nxt: list[str] = []
            for i in range(0, len(frontier), step):
                try:
                    edges = self._reverse(frontier[i:i + step], direct_only, left)
                except _OverBudget:
                    return None
                for e in edges:
                    if e.caller and e.caller not in dist and (
                            not max_fanout or e.kind in COMPILED or e.fanout <= max_fanout or e.kind in NARROWABLE):
                        dist[e.caller] = depth
                        nxt.append(e.caller)
                if len(dist) > limit:
                    return None
            frontier = sorted(nxt)
        return dist

    def _reverse(self, names: Sequence[str], direct_only: bool, left: list[int]) -> list[Edge]:
        """The edges into `names`: callers(), and calls of the macros (and macros of macros) spelling them.
        `left`: how many more edges and macro call sites to look at (then _OverBudget)."""
        out = [e for name in names for e in self.callers(name, direct_only)]
        left[0] -= len(out)
        if left[0] < 0:
            raise _OverBudget()
        spelled = self.ix.macros_spelling(names)
        for name in names:
            macros, todo = set(), sorted(spelled.get(name, ()))
            while todo and len(macros) <= MAX_REACH:
                macros.update(todo)
                more = self.ix.macros_spelling(todo)
                todo = sorted({m for ms in more.values() for m in ms} - macros)
            for macro in sorted(macros):
                sites = self.ix.calls_to(macro, DIRECT)
                left[0] -= len(sites)  # (each expanded: `BUG()` in thousands of functions)
                if left[0] < 0:
                    raise _OverBudget()
                for site in sites:
                    out.extend(e for e in self.resolve(site)
                               if e.callee == name and (not direct_only or e.kind in COMPILED))
        return out

    def path(self, src: str, dst: str, max_depth: int = 12, direct_only: bool = False,
             avoid: Sequence[str] = (), max_fanout: int = 0,
             reach: dict[str, int] | None = None, budget: int = 0) -> list[Edge] | None:
        """Shortest call path from any definition of `src` to `dst` (BFS, each function's calls followed
        direct and narrow first, then by line: _narrow_first),
        through no dispatch wider than `max_fanout` (0: any). The QOM type of the object a callback is
        registered with travels along the path and narrows class dispatches (see `callees`). `reach`
        (from reach_back): a function is followed only when it can still reach `dst` in the calls left,
        which gives the same path without walking the functions that cannot. `budget`: _OverBudget
        after following that many functions."""
        starts = self.preferred(self.built(self.definitions(src)))
        if not starts:
            return None
        if src == dst:
            return []
        start_type = self.registered_type(src)
        Key = tuple[str, str, str]
        frontier = deque((d, start_type, 0) for d in starts)
        parent: dict[Key, tuple[Edge, Key] | None] = {(d.name, d.path, start_type): None for d in starts}
        blocked = set(avoid)
        while frontier:
            fn, obj_type, depth = frontier.popleft()
            if depth >= max_depth or (reach is not None and reach.get(fn.name, max_depth + 1) > max_depth - depth):
                continue
            if budget:
                budget -= 1
                if not budget:
                    raise _OverBudget()
            here = (fn.name, fn.path, obj_type)
            for e in sorted(self.callees(fn, direct_only, obj_type=obj_type), key=_narrow_first):
                if max_fanout and e.kind not in COMPILED and e.fanout > max_fanout:
                    continue
                nxt_type = self._edge_type(e, obj_type)
                key = (e.callee, e.callee_path, nxt_type)
                if key in parent or e.callee in blocked:
                    continue
                parent[key] = (e, here)
                if e.callee == dst:
                    out = []
                    cur = parent[key]
                    while cur is not None:
                        out.append(cur[0])
                        cur = parent[cur[1]]
                    return list(reversed(out))
                if e.callee_path:
                    nxt = self.def_at(e.callee, e.callee_path)
                    if nxt is not None:
                        frontier.append((nxt, nxt_type, depth + 1))
        return None

    def route(self, src: str, dst: str, max_depth: int = 12, direct_only: bool = False) -> list[Edge] | None:
        """The path whose widest dispatch is narrowest, then the shortest: a route through one store of a
        field beats one through a dispatch to every hold phase in scope, even when it is longer.
        `route_cut` is then the number of functions after which a search for a narrower route gave up
        (0: none did, the route is the narrowest)."""
        best = self.path(src, dst, max_depth, direct_only)
        self.route_cut = 0
        while best is not None and route_width(best) > 1:
            # Proving that no narrower route exists walks everything `src` reaches (6,000 functions of
            # Linux from handle_trap_exceptions); what can reach `dst` through narrow steps is few.
            # A search that ends within FORWARD_BUDGET functions is taken as it is.
            fanout = route_width(best) - 1
            # On a partial index (a cold question) a short walk back comes first: each function a forward
            # search follows asks for the files of its callees and their macros (27 exit handlers and
            # their macros, 4,000 files of Linux), while few functions may reach `dst` narrowly.
            reach = self.reach_back(dst, max_depth, direct_only, fanout, limit=FORWARD_BUDGET) \
                if self.partial and max_depth >= PRUNE_DEPTH else None
            if reach is None:
                try:
                    narrower = self.path(src, dst, max_depth, direct_only, max_fanout=fanout,
                                         budget=FORWARD_BUDGET if max_depth >= PRUNE_DEPTH else 0)
                except _OverBudget:
                    reach = self.reach_back(dst, max_depth, direct_only, fanout)
                    if reach is None:
                        try:  # (unpruned: everything `src` reaches, once per QOM type it carries)
                            narrower = self.path(src, dst, max_depth, direct_only, max_fanout=fanout,
                                                 budget=NARROWING_BUDGET)
                        except _OverBudget:
                            self.route_cut = NARROWING_BUDGET
                            break
            if reach is not None:
                if src not in reach:
                    break
                narrower = self.path(src, dst, max_depth, direct_only, max_fanout=fanout, reach=reach)
            if narrower is None:
                break
            best = narrower
        return best

    # -- constants and flags (handoffs across roles and threads) -----------------------------------
    def constant_uses(self, name: str) -> list[ConstantUse]:
        return self.ix.constant_uses(_WS.sub(" ", name.strip()))

    def constants_in(self, function: str) -> list[ConstantUse]:
        return self.ix.constant_uses(function, column="function")

    def expanded_constants(self, function: str) -> list[tuple[ConstantUse, str, MacroDef, tuple[str, ...]]]:
        """Constants `function` writes through a macro (`PSCI_FN_NATIVE(0_2, CPU_ON)`), each with the
        name it comes to on one #if alternative, the #define, and the conditions of that alternative."""
        out = []
        for u in self.constants_in(function):
            if "(" not in u.name and not u.name.isidentifier():
                continue
            for name, ex in self.macros.constant(u.name, u.path):
                if name != u.name:
                    out.append((u, name, ex.macros[0], tuple(c for c in ex.conditions if assumed(c) is not True)))
        return out

    def global_refs(self, name: str) -> list[GlobalRef]:
        return self.ix.global_refs("name", name)

    def globals_in(self, function: str) -> list[GlobalRef]:
        return self.ix.global_refs("function", function)
