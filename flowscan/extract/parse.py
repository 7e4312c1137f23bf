"""Bytes of one C file -> FileFacts.

Pure and deterministic (no I/O, no global state besides compiled queries), so results can be cached by
blob id and computed in worker processes. The tree-sitter queries in queries/c/*.scm say *what* to find;
this module only classifies the captures and attaches context (enclosing function, case labels, if
conditions, preprocessor conditions).
"""

from __future__ import annotations

import bisect
import re
import functools
import operator
from functools import cache

import tree_sitter_c
from tree_sitter import Language, Node, Parser, Query, QueryCursor

from flowscan.extract.facts import CallSite, ConstantUse, FieldDecl, FileFacts, FunctionDef, GlobalRef, MacroDef, PointerStore, QomType, TypedefDecl
from flowscan.extract.asm import ASM_SUFFIXES, extract_asm
from flowscan.extract.conditionals import flatten_conditionals
from flowscan.extract.lexer import digest
from flowscan.extract.prepass import prepass
from flowscan.extract.conditionals import ConditionMap
from flowscan.extract.context import Lineage, contexts
from flowscan.resources import query_text

MAX_FILE_BYTES = 4 * 1024 * 1024
QUERY_FILES = ("definitions", "declarations", "calls", "initializers", "assignments", "cases", "types",
               "structs", "typedefs", "loops", "context")
_UPPER = re.compile(r"[A-Z_][A-Z0-9_]*\Z")
_NOT_STORED = frozenset({"NULL", "true", "false", "nullptr", "NOTIFY_DONE", "NOTIFY_OK"})
_WS = re.compile(r"\s+")
_QUALIFIERS = re.compile(r"\b(?:const|volatile|struct|union|enum|static|extern|inline|unsigned|signed|"
                         r"__\w+)\b")
_ARG_MAX = 96


@cache
def _language() -> Language:
    return Language(tree_sitter_c.language())


@cache
def _query() -> tuple[Query, tuple[str, ...]]:
    """One query made of every .scm file, so a file is traversed once; pattern index -> file name."""
    lang = _language()
    sources, owner = [], []
    for name in QUERY_FILES:
        text = query_text(f"{name}.scm")
        count = Query(lang, text).pattern_count
        sources.append(text)
        owner.extend([name] * count)
    return Query(lang, "\n".join(sources)), tuple(owner)


_PARSER: Parser | None = None


def _parser() -> Parser:
    global _PARSER
    if _PARSER is None:
        _PARSER = Parser(_language())
    return _PARSER


def _text(node: Node) -> str:
    return node.text.decode("utf-8", "replace")


def _norm(text: str, limit: int = 0) -> str:
    out = " ".join(text.split())  # = _WS.sub(" ", text).strip(): both split on str.isspace(), 4x faster
    return out[:limit] if limit and len(out) > limit else out


@functools.lru_cache(maxsize=4096)
def type_name(text: str) -> str:
    """`const struct kvm_vcpu` -> `kvm_vcpu`: the bare type name used to compare types."""
    words = _QUALIFIERS.sub(" ", text).split()
    return words[-1] if words else _norm(text)


def _declared_name(decl: Node | None) -> str:
    """The variable a declarator declares: `handlers[]`, `*p`, and the function-pointer tables
    `(*kvm_vmx_exit_handlers[])(struct kvm_vcpu *)` / `(*const svm_exit_handlers[])(...)`."""
    while decl is not None and decl.type != "identifier":
        if decl.type in ("array_declarator", "pointer_declarator", "function_declarator"):
            decl = decl.child_by_field_name("declarator")
        elif decl.type == "parenthesized_declarator":
            decl = next((c for c in decl.named_children if c.type != "type_qualifier"), None)
        else:
            break
    return _text(decl) if decl is not None else ""


def field_path(node: Node) -> tuple[str, str]:
    """`rc->phases.hold` -> ("rc", "phases.hold"); the base is the innermost non-field expression."""
    parts = []
    while node.type == "field_expression":
        field = node.child_by_field_name("field")
        parts.append(_text(field) if field is not None else "?")
        node = node.child_by_field_name("argument")
        if node is None:
            return "", ".".join(reversed(parts))
        while node.type in ("parenthesized_expression", "pointer_expression", "cast_expression") and \
                node.named_child_count:
            node = node.named_children[-1]
    return _norm(_text(node), 60), ".".join(reversed(parts))


def field_path_text(text: str) -> tuple[str, str]:
    """`kgc->parent_phases` -> ("kgc", "parent_phases"): the same split as field_path, from text."""
    parts = re.split(r"->|\.", _WS.sub("", text).strip("()"))
    return parts[0], ".".join(parts[1:])


class _Scopes:
    """Function ranges and declared names, to find a node's enclosing function and a name's type."""

    def __init__(self, functions: list[tuple[int, int, str, Node]]):
        self.functions = functions
        self.starts = [f[0] for f in functions]
        self.locals: list[dict[str, str]] = [dict() for _ in functions]
        self.file_vars: dict[str, str] = {}

    def index(self, byte: int) -> int:
        i = bisect.bisect_right(self.starts, byte) - 1
        if i >= 0 and byte < self.functions[i][1]:
            return i
        return -1

    def type_of(self, fidx: int, name: str) -> str:
        if fidx >= 0 and name in self.locals[fidx]:
            return self.locals[fidx][name]
        return self.file_vars.get(name, "")

    def is_local(self, fidx: int, name: str) -> bool:
        return fidx >= 0 and name in self.locals[fidx]


def _top_level_errors(root: Node, data: bytes) -> list[tuple[int, int]]:
    """Top-level ERROR nodes, and definitions with errors that contain `#if` groups (`#ifdef` around
    `} else {` is the largest remaining category): the regions a flattened re-parse may repair."""
    spans = []
    stack = list(root.children)
    while stack:
        n = stack.pop()
        if n.type == "ERROR":
            spans.append((n.start_byte, n.end_byte))
        elif n.type.startswith("preproc_"):
            stack.extend(n.children)
        elif n.type == "function_definition" and n.has_error and b"#if" in data[n.start_byte:n.end_byte]:
            spans.append((n.start_byte, n.end_byte))
    return sorted(spans)


def _count_errors(root: Node) -> int:
    if not root.has_error:
        return 0
    count = 0
    cursor = root.walk()
    visited_children = False
    while True:
        node = cursor.node
        if not visited_children:
            if node.is_error or node.is_missing:
                count += 1
                visited_children = True
                continue
            if node.has_error and cursor.goto_first_child():
                continue
            visited_children = True
        if cursor.goto_next_sibling():
            visited_children = False
        elif not cursor.goto_parent():
            break
    return count


class _Collector:
    """Collects facts from one parse tree; `keep(byte)` decides which positions this parse owns."""

    def __init__(self, path: str, data: bytes, root: Node, conds: ConditionMap, keep, orig: bytes,
                 ranges: list[tuple[int, int]] | None = None):
        self.path = path
        self.data = data
        self.orig = orig  # the file as written: argument texts and conditions are shown from it
        self.root = root
        self.conds = conds
        self.keep = keep
        self.facts = FileFacts(path=path)
        self.lineage = Lineage(root)
        self.ranges = ranges  # byte ranges holding every node `keep` accepts (None: the whole tree)

    def run(self) -> FileFacts:
        query, owner = _query()
        by_kind: dict[str, list[dict[str, list[Node]]]] = {name: [] for name in QUERY_FILES}
        into = [by_kind[name].append for name in owner]  # pattern index -> its kind's list (in match order)
        for lo, hi in self.ranges or [(0, self.root.end_byte)]:
            cursor = QueryCursor(query)
            if self.ranges is not None:
                cursor.set_byte_range(lo, hi)
            for pattern, caps in cursor.matches(self.root):
                into[pattern](caps)
        self._functions(by_kind["definitions"])
        self._declarations(by_kind["declarations"])
        ctx = by_kind["context"]
        self.contexts = contexts(
            [c["call"][0] for c in by_kind["calls"]] + [c["loop"][0] for c in by_kind["loops"]],
            [c["if"][0] for c in ctx if "if" in c], [c["case"][0] for c in ctx if "case" in c],
            [c["function"][0] for c in ctx if "function" in c], self.lineage, _norm)
        self._calls(by_kind["calls"])
        self._iterators(by_kind["loops"])
        self.facts.calls.sort(key=lambda c: c.line)  # (stable: the iterators after a line's other calls)
        self._initializers(by_kind["initializers"])
        self._assignments(by_kind["assignments"])
        self._cases(by_kind["cases"])
        self._types(by_kind["types"])
        self._members(by_kind["structs"])
        self._typedefs(by_kind["typedefs"])
        self._globals()
        return self.facts

    # -- definitions -------------------------------------------------------------------------------
    def _functions(self, matches) -> None:
        seen = set()
        funcs = []
        for caps in matches:
            node = caps["def"][0]
            if node.start_byte in seen or not self.keep(node.start_byte):
                continue
            seen.add(node.start_byte)
            funcs.append((node.start_byte, node.end_byte, _text(caps["name"][0]), node, caps))
        funcs.sort(key=lambda f: f[0])
        self.scopes = _Scopes([(s, e, n, node) for s, e, n, node, _ in funcs])
        for _, _, name, node, caps in funcs:
            name_node = caps["name"][0]
            line = name_node.start_point.row + 1
            static = any(c.type == "storage_class_specifier" and c.text == b"static" for c in node.children)
            rtype = node.child_by_field_name("type")
            stars = 0
            decl = node.child_by_field_name("declarator")
            while decl is not None and decl.type == "pointer_declarator":
                stars += 1
                decl = decl.child_by_field_name("declarator")
            specs = self.orig[node.start_byte:name_node.start_byte]
            inline = "always" if _ALWAYS_INLINE.search(specs) else "inline" if _INLINE.search(specs) else ""
            self.facts.functions.append(FunctionDef(
                name=name, path=self.path, line=line, end_line=node.end_point.row + 1,
                params=_norm(_text(caps["params"][0]), 300), static=static,
                return_type=(_norm(_text(rtype), 80) if rtype is not None else "") + "*" * stars,
                conditions=self.conds.at(line), inline=inline,
                digest=digest(self.data[node.start_byte:node.end_byte])))

    def _declarations(self, matches) -> None:
        for caps in matches:
            name_node = caps["name"][0]
            tname = type_name(_text(caps["type"][0]))
            fidx = self.scopes.index(name_node.start_byte)
            if fidx >= 0:
                self.scopes.locals[fidx].setdefault(_text(name_node), tname)
            elif self.keep(name_node.start_byte):
                self.scopes.file_vars.setdefault(_text(name_node), tname)

    # -- calls -------------------------------------------------------------------------------------
    def _calls(self, matches) -> None:
        scopes = self.scopes
        for caps in matches:
            call = caps["call"][0]
            if not self.keep(call.start_byte):
                continue
            bol = self.data.rfind(b"\n", 0, call.start_byte) + 1
            if self.data[bol:call.start_byte].lstrip()[:1] == b"#":
                continue  # `#if IS_ENABLED(CONFIG_X)`: a preprocessor condition, not a call
            fn = caps["fn"][0]
            fidx = scopes.index(call.start_byte)
            caller = scopes.functions[fidx][2] if fidx >= 0 else ""
            kind, callee, base, base_type, var_type = self._classify(fn, fidx)
            local = kind == "variable" and scopes.is_local(fidx, callee)
            if not callee:
                continue
            args = tuple(_norm(self.orig[a.start_byte:a.end_byte].decode("utf-8", "replace"), _ARG_MAX)
                         for a in caps["args"][0].named_children if a.type != "comment")
            constants = tuple(a for a in args if a not in _NOT_STORED and _UPPER.match(a) or
                              (a[:1].isupper() and "(" in a and _UPPER.match(a.split("(", 1)[0])))
            line = call.start_point.row + 1
            cases, ifs = self.contexts[(call.start_byte, call.end_byte)]
            self.facts.calls.append(CallSite(
                caller=caller, callee=callee, kind=kind, path=self.path, line=line, args=args,
                constants=constants, base=base, base_type=base_type, var_type=var_type, cases=cases,
                ifs=ifs, conditions=self.conds.at(line), local=local))

    def _iterators(self, matches) -> None:
        """`for_each_possible_cpu(cpu) {` (a `while` after the pre-pass): a call of the iterator macro,
        whose expansion calls what the compiler sees (cpumask_next, _find_next_bit)."""
        scopes = self.scopes
        for caps in matches:
            loop = caps["loop"][0]
            if not self.keep(loop.start_byte):
                continue
            m = _LOOP_NAME.match(self.orig, loop.start_byte)
            if m is None or m.group() in (b"while", b"for"):
                continue
            args: list[str] = []
            if "cond" in caps:
                stack = [caps["cond"][0]]
                while stack:  # `(a, b, c)`: a comma expression nests to the left
                    node = stack.pop()
                    if node.type == "parenthesized_expression" and node.named_child_count == 1 and not args \
                            and node is caps["cond"][0]:
                        stack.append(node.named_children[0])
                    elif node.type == "comma_expression":
                        stack.append(node.child_by_field_name("right"))
                        stack.append(node.child_by_field_name("left"))
                    elif node is not None:
                        args.append(_norm(self.orig[node.start_byte:node.end_byte].decode("utf-8", "replace"),
                                          _ARG_MAX))
            fidx = scopes.index(loop.start_byte)
            if fidx < 0:
                continue
            line = loop.start_point.row + 1
            cases, ifs = self.contexts[(loop.start_byte, loop.end_byte)]
            self.facts.calls.append(CallSite(
                caller=scopes.functions[fidx][2], callee=m.group().decode(), kind="direct", path=self.path,
                line=line, args=tuple(args), cases=cases, ifs=ifs, conditions=self.conds.at(line)))

    def _classify(self, fn: Node, fidx: int) -> tuple[str, str, str, str, str]:
        while fn.type == "parenthesized_expression" and fn.named_child_count == 1:
            fn = fn.named_children[0]
        if fn.type == "pointer_expression" and fn.named_child_count:
            fn = fn.named_children[-1]
        if fn.type == "identifier":
            name = _text(fn)
            if self.scopes.is_local(fidx, name) or name in self.scopes.file_vars:
                return "variable", name, "", "", self.scopes.type_of(fidx, name)
            return "direct", name, "", "", ""
        if fn.type == "field_expression":
            base, path = field_path(fn)
            btype = self.scopes.type_of(fidx, base) if base.isidentifier() else ""
            return "field", path, base, btype, ""
        if fn.type == "subscript_expression":
            arr = fn.child_by_field_name("argument")
            if arr is not None and arr.type == "identifier":
                name = _text(arr)
                return "variable", name, "", "", self.scopes.type_of(fidx, name)
            if arr is not None and arr.type == "field_expression":
                base, path = field_path(arr)
                return "field", path, base, self.scopes.type_of(fidx, base), ""
        return "other", _norm(_text(fn), 80), "", "", ""

    # -- stores ------------------------------------------------------------------------------------
    def _initializers(self, matches) -> None:
        for caps in matches:
            value = _text(caps["value"][0])
            pair = caps["pair"][0]
            if _UPPER.match(value) or value in _NOT_STORED or not self.keep(pair.start_byte):
                continue
            if "var" in caps:  # `T (*var)(...) = fn;`: a plain variable holding fn
                fields, index, variable, vtype = "", "", _text(caps["var"][0]), ""
            else:
                fields, index, variable, vtype = self._designators(pair)
            fidx = self.scopes.index(pair.start_byte)
            if fidx >= 0 and self.scopes.is_local(fidx, value):
                continue
            line = caps["value"][0].start_point.row + 1
            self.facts.stores.append(PointerStore(
                function=value, kind="initializer", path=self.path, line=line, field=fields, index=index,
                variable=variable, var_type=vtype,
                in_function=self.scopes.functions[fidx][2] if fidx >= 0 else "",
                conditions=self.conds.at(line)))

    def _designators(self, pair: Node) -> tuple[str, str, str, str]:
        fields: list[str] = []
        index = ""
        chain = [*self.lineage.of(pair), pair]
        for at in range(len(chain) - 1, 0, -1):
            node = chain[at]
            if node.type == "initializer_pair":
                for d in reversed(node.children_by_field_name("designator")):
                    if d.type == "field_designator":
                        fields.append(_text(d).lstrip(".").strip())
                    elif not index:
                        index = _norm(_text(d).strip("[]"), 60)
            elif node.type == "init_declarator":
                var = _declared_name(node.child_by_field_name("declarator"))
                dtype = chain[at - 1].child_by_field_name("type")
                return ".".join(reversed(fields)), index, var, type_name(_text(dtype)) if dtype else ""
            elif node.type not in ("initializer_list",):
                break
        return ".".join(reversed(fields)), index, "", ""

    def _assignments(self, matches) -> None:
        scopes = self.scopes
        for caps in matches:
            vnode = caps["value"][0]
            value = _text(vnode)
            anchor = caps.get("assign", caps.get("return"))[0]
            if value in _NOT_STORED or not self.keep(anchor.start_byte):
                continue
            fidx = scopes.index(anchor.start_byte)
            if scopes.is_local(fidx, value):
                continue
            line = vnode.start_point.row + 1
            caller = scopes.functions[fidx][2] if fidx >= 0 else ""
            if "return" in caps:
                if fidx < 0 or _UPPER.match(value):
                    continue
                rtype = self.facts.functions[fidx].return_type  # same order as scopes.functions
                self.facts.stores.append(PointerStore(
                    function=value, kind="return", path=self.path, line=line, variable=caller,
                    var_type=type_name(rtype.rstrip("*")), in_function=caller,
                    conditions=self.conds.at(line)))
                continue
            lhs = caps["lhs"][0]
            if lhs.type == "field_expression":
                base, path = field_path(lhs)
            elif lhs.type == "identifier":
                base, path = _text(lhs), ""
            else:
                continue
            if _UPPER.match(value):
                self.facts.constants.append(ConstantUse(
                    name=value, kind="assign", target=path or base, function=caller, path=self.path,
                    line=line))
                continue
            btype = scopes.type_of(fidx, base) if base.isidentifier() else ""
            self.facts.stores.append(PointerStore(
                function=value, kind="assignment", path=self.path, line=line, field=path, variable=base,
                var_type=btype, in_function=caller, conditions=self.conds.at(line)))

    def _cases(self, matches) -> None:
        for caps in matches:
            case = caps["case"][0]
            if not self.keep(case.start_byte):
                continue
            value = _norm(_text(caps["value"][0]), 80)
            chain = self.lineage.of(case)
            switch = chain[-2] if len(chain) > 1 else None
            target = ""
            if switch is not None and switch.type == "switch_statement":
                cond = switch.child_by_field_name("condition")
                target = _norm(_text(cond), 80).strip("()").strip() if cond is not None else ""
            fidx = self.scopes.index(case.start_byte)
            self.facts.constants.append(ConstantUse(
                name=value, kind="case", target=target,
                function=self.scopes.functions[fidx][2] if fidx >= 0 else "", path=self.path,
                line=case.start_point.row + 1))

    # -- QOM, macros, globals ---------------------------------------------------------------------
    def _types(self, matches) -> None:
        for caps in matches:
            lst = caps["list"][0]
            if not self.keep(lst.start_byte):
                continue
            var = _text(caps["var"][0]).split("[")[0].strip()
            lists = [c for c in lst.named_children if c.type == "initializer_list"] or [lst]
            for one in lists:
                vals: dict[str, str] = {}
                for pair in one.named_children:
                    if pair.type != "initializer_pair":
                        continue
                    des = pair.child_by_field_name("designator")
                    val = pair.child_by_field_name("value")
                    if des is not None and val is not None and des.type == "field_designator":
                        vals[_text(des).lstrip(".").strip()] = _norm(_text(val), 120)
                if "name" not in vals:
                    continue
                self.facts.types.append(QomType(
                    variable=var, name=vals["name"], parent=vals.get("parent", ""),
                    class_init=vals.get("class_init", ""), instance_init=vals.get("instance_init", ""),
                    path=self.path, line=one.start_point.row + 1))

    def _members(self, matches) -> None:
        for caps in matches:
            fnode = caps["field"][0]
            if self.keep(fnode.start_byte):
                self.facts.members.append(FieldDecl(
                    struct=_text(caps["struct"][0]), field=_text(fnode), type=type_name(_text(caps["type"][0])),
                    path=self.path, line=fnode.start_point.row + 1))

    def _typedefs(self, matches) -> None:
        for caps in matches:
            name = caps["name"][0]
            if self.keep(name.start_byte):
                self.facts.typedefs.append(TypedefDecl(
                    name=_text(name), params=_norm(_text(caps["params"][0]), 300),
                    return_type=_norm(_text(caps["rtype"][0]), 80), path=self.path, line=name.start_point.row + 1))

    def _globals(self) -> None:
        # Only the file's variables are searched for (each with bytes.find, the loop stays in C) rather
        # than every word of every body (3+ characters, not a field after `.` or `->`), keeping theirs.
        names = [n for n in self.scopes.file_vars if len(n) > 2 and _IDENT_NAME.match(n.encode())]
        if not names or not self.scopes.functions:
            return
        data = self.data
        found: list[tuple[int, int, str]] = []  # (start, end, name) of each whole-word use
        for name in names:
            word = name.encode()
            at = data.find(word)
            while at >= 0:
                end = at + len(word)
                if (not at or data[at - 1] not in _BEFORE_WORD) and (end == len(data) or data[end] not in _WORD_BYTES):
                    found.append((at, end, name))
                at = data.find(word, end)
        if not found:
            return
        found.sort()
        starts = [f[0] for f in found]
        last_pos, last_line = 0, 1
        for fidx, (start, end, fname, node) in enumerate(self.scopes.functions):
            body = node.child_by_field_name("body")
            if body is None:
                continue
            seen = set()
            local = self.scopes.locals[fidx]
            for i in range(bisect.bisect_left(starts, body.start_byte), len(found)):
                at, stop, name = found[i]
                if stop > body.end_byte:
                    break
                if name in local:
                    continue
                write = bool(_WRITE_AFTER.match(data, stop) or _INCDEC_BEFORE.search(data, max(0, at - 4), at))
                if (name, write) in seen:
                    continue
                seen.add((name, write))
                last_line += data.count(b"\n", last_pos, at)
                last_pos = at
                self.facts.globals.append(GlobalRef(name=name, function=fname, write=write,
                                                    path=self.path, line=last_line))


_LOOP_NAME = re.compile(rb"[A-Za-z_$][\w$]*")
_ALWAYS_INLINE = re.compile(rb"\b(?:__always_inline|QEMU_ALWAYS_INLINE|G_ALWAYS_INLINE)\b|always_inline")
_INLINE = re.compile(rb"\b(?:inline|__inline__|__inline)\b")
# A #define and its logical line (continuations joined): name, parameters when function-like, body.
_DEFINE = re.compile(rb"^[ \t]*#[ \t]*define[ \t]+([A-Za-z_$][\w$]*)(\([^)\n]*\))?((?:[^\n\\]|\\.|\\\n)*)",
                     re.M | re.S)
_DEF_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_NUMBERS = re.compile(r"\b(?:0[xX][0-9a-fA-F]+|[0-9][\w.]*)")
MAX_MACRO_BODY = 2000


def scan_macros(data: bytes, path: str, conds: ConditionMap) -> list[MacroDef]:
    """Every #define that can decide a call or a name: function-like ones, and object-like ones whose
    value names something (see MacroDef)."""
    if b"define" not in data:
        return []
    out = []
    newlines, pos = 0, 0
    for m in _DEFINE.finditer(data):
        raw = m.group(3)
        if len(raw) > MAX_MACRO_BODY:
            continue
        body = _DEF_COMMENT.sub(" ", raw.decode("utf-8", "replace").replace("\\\n", " "))
        body = _WS.sub(" ", body).strip()
        params = m.group(2)
        if params is None and body and not re.search(r"[A-Za-z_\"]", _NUMBERS.sub("", body)):
            continue  # a number: never decides a call or a name (empty ones do: `#define __kernel`)
        newlines += data.count(b"\n", pos, m.start())
        pos = m.start()
        line = newlines + 1
        out.append(MacroDef(name=m.group(1).decode(), value=body, path=path, line=line,
                            params=_WS.sub("", params.decode("utf-8", "replace")) if params else "",
                            conditions=conds.at(line)))
    return out


_IDENT_NAME = re.compile(rb"[A-Za-z_]\w{2,}\Z")
_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_BEFORE_WORD = _WORD_BYTES | frozenset(b".>")
_WRITE_AFTER = re.compile(rb"[ \t]*(?:[-+*/|&^]?=(?!=)|\+\+|--)")
_INCDEC_BEFORE = re.compile(rb"(?:\+\+|--)[ \t]*\Z")


def extract_file(data: bytes, path: str) -> FileFacts:
    """Extract the facts of one file; never raises on odd input (binary, huge, broken C)."""
    if len(data) > MAX_FILE_BYTES:
        return FileFacts(path=path, skipped="too large")
    if b"\0" in data[:8192]:
        return FileFacts(path=path, skipped="binary")
    if path.endswith(ASM_SUFFIXES):
        return extract_asm(data, path)
    clean = prepass(data)
    conds = ConditionMap(data)
    root = _parser().parse(clean).root_node
    errors = _top_level_errors(root, data) if root.has_error else []
    if not errors or b"#if" not in data:
        facts = _Collector(path, clean, root, conds, lambda b: True, data).run()
        facts.parse_errors = _count_errors(root)
        facts.macros = scan_macros(data, path, conds)
        return facts
    # Broken top-level structure, usually #if around alternative headers or braces: re-parse with each
    # #if group flattened to its first branch and take that parse's facts inside the broken regions.
    flat = flatten_conditionals(clean)
    root2 = _parser().parse(flat).root_node
    spans = _widen(errors, root)
    starts = [s for s, _ in spans]

    def inside(byte: int) -> bool:
        i = bisect.bisect_right(starts, byte) - 1
        return i >= 0 and byte < spans[i][1]

    first = _Collector(path, clean, root, conds, lambda b: not inside(b), data).run()
    second = _Collector(path, flat, root2, conds, inside, data, _owned_ranges(spans, root2)).run()
    merged = FileFacts(path=path)
    for name in ("functions", "calls", "stores", "types", "constants", "globals", "macros", "members", "typedefs"):
        getattr(merged, name).extend(_by_line(getattr(first, name) + getattr(second, name)))
    merged.parse_errors = min(_count_errors(root), _count_errors(root2))
    merged.macros = scan_macros(data, path, conds)
    return merged


def _owned_ranges(spans: list[tuple[int, int]], root: Node) -> list[tuple[int, int]]:
    """The extents of the top-level items of `root` that touch `spans`, touching ones merged: every
    node in a span lies in one of them with its whole function, and no match crosses from one to the
    next, so querying these ranges alone finds the second parse's facts (a fraction of the file)."""
    out: list[tuple[int, int]] = []
    i = 0
    for c in root.children:
        s, e = c.start_byte, c.end_byte
        while i < len(spans) and spans[i][1] <= s:
            i += 1
        if i == len(spans):
            break
        if not (spans[i][0] < max(e, s + 1)):
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _by_line(rows: list) -> list:
    """Sorted by (line, repr): repr only breaks ties, so it is taken only of rows that share a line."""
    rows.sort(key=_LINE)
    i, n = 0, len(rows)
    while i < n:
        j = i + 1
        while j < n and rows[j].line == rows[i].line:
            j += 1
        if j - i > 1:
            rows[i:j] = sorted(rows[i:j], key=repr)
        i = j
    return rows


_LINE = operator.attrgetter("line")


def _widen(errors: list[tuple[int, int]], root: Node) -> list[tuple[int, int]]:
    """Grow ERROR spans to whole top-level items they touch, then merge overlaps."""
    spans = []
    tops = []
    stack = list(root.children)
    while stack:
        n = stack.pop()
        if n.type.startswith("preproc_") and n.type not in ("preproc_def", "preproc_function_def",
                                                              "preproc_include", "preproc_call"):
            stack.extend(n.children)
        else:
            tops.append((n.start_byte, n.end_byte))
    tops.sort()
    for s, e in errors:
        for ts, te in tops:
            if te > s - 1 and ts < e + 1:
                s, e = min(s, ts), max(e, te)
        spans.append((s, e))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged
