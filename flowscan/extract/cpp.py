"""C preprocessor macro expansion over text, as far as it decides a call or a constant.

`expand("arm_smccc_hvc", ["a0", "a1"], lookup)` -> `__arm_smccc_hvc(a0, a1, NULL)`: the standard
algorithm (Prosser's, with a hide set per token) including `#` stringizing, `##` pasting, `__VA_ARGS__`,
named variadics and GNU's `, ## __VA_ARGS__`. A macro defined more than once (one definition per `#if`
branch) gives one expansion per alternative, each with the conditions of the definitions it chose, so a
caller that knows the configuration can pick and one that does not can show them all.

Each token remembers whether it was written in the arguments of the expanded call: a call written there
(`WRITE_ONCE(x, f(y))`) is already a call site of its own and is not counted again as one the macro makes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from flowscan.extract.facts import MacroDef

MAX_STEPS = 30000  # tokens processed per expansion (a huge one, like hweight64 of a constant, stops here)
MAX_ALTERNATIVES = 48  # combinations of multiply-defined macros tried per expansion ...
TOTAL_STEPS = 120000  # ... within this many tokens processed over all of them
UNDEFINED = "\0"  # MacroDef.params of the alternative "not defined here" (see Expander.definition)

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<id>[A-Za-z_$][\w$]*)
  | (?P<num>\.?[0-9](?:[eEpP][+-]|[\w.$])*)
  | (?P<str>[LuU8]*"(?:[^"\\\n]|\\.)*"?)
  | (?P<chr>[LuU8]*'(?:[^'\\\n]|\\.)*'?)
  | (?P<punct>\#\#|\.\.\.|->|<<=|>>=|[-+*/%&|^<>=!]=|\+\+|--|&&|\|\||<<|>>|[^\s])
""", re.X | re.S)

# Words that look like calls but are not (keywords, operators, compiler built-ins).
NOT_CALLS = frozenset("""if while for switch return sizeof typeof __typeof__ __typeof _Alignof alignof
__alignof__ _Generic _Static_assert static_assert asm __asm__ __asm volatile __volatile__ __attribute__
__attribute __extension__ do else case default goto break continue defined __has_attribute
__has_builtin __has_include __auto_type _Pragma __label__ __real__ __imag__ offsetof""".split())
BUILTIN_PREFIXES = ("__builtin_", "__sync_", "__atomic_")
KEYWORDS = frozenset("if else while for do switch case default return goto break continue sizeof".split())
# Never a macro of the tree: C's reserved words and the compiler's predefined names. Looking them up would
# send a cold question to every definition line of the tree (`void`, `const` start most of them).
NEVER_MACROS = NOT_CALLS | frozenset("""void char short int long float double signed unsigned _Bool const
restrict __restrict static extern inline __inline __inline__ register auto struct union enum typedef
__FILE__ __LINE__ __func__ __FUNCTION__ __PRETTY_FUNCTION__ __COUNTER__ __DATE__ __TIME__""".split())


@dataclass(frozen=True)
class Tok:
    text: str
    kind: str  # id | num | str | chr | punct
    hide: frozenset = frozenset()
    arg: bool = False  # written in the arguments of the expanded call
    space: bool = False  # whitespace before it


@dataclass(frozen=True)
class Expansion:
    """One alternative expansion: its tokens, the definitions it used (outermost first), their conditions."""

    tokens: tuple[Tok, ...]
    macros: tuple[MacroDef, ...]
    conditions: tuple[str, ...]

    @property
    def text(self) -> str:
        return render(self.tokens)

    def calls(self, ignore: Callable[[str], bool] = lambda name: False) -> list[str]:
        """Names called in the expansion (an identifier before `(`) that the macro itself writes."""
        out: list[str] = []
        toks = self.tokens
        skip_to = -1
        for i, t in enumerate(toks[:-1]):
            if i < skip_to:
                continue
            if t.text in ("__attribute__", "__attribute") and toks[i + 1].text == "(":
                skip_to = _close(toks, i + 1)  # attribute names are no calls: __aligned__(4)
                continue
            if t.kind != "id" or toks[i + 1].text != "(" or t.text in NOT_CALLS \
                    or t.text.startswith(BUILTIN_PREFIXES) or ignore(t.text):
                continue
            if t.arg and toks[i + 1].arg:
                continue  # `f(y)` written in an argument: a call site of its own
            if i and toks[i - 1].text in (".", "->"):
                continue  # a member called through a pointer
            if t.text not in out:
                out.append(t.text)
        return out

    def name(self) -> str:
        """The single identifier the expansion comes to (`PSCI_0_2_FN64_CPU_ON`), '' if it is more."""
        toks = [t for t in self.tokens if t.text not in "()"]
        return toks[0].text if len(toks) == 1 and toks[0].kind == "id" else ""


def _close(toks: Sequence[Tok], i: int) -> int:
    """The index after the parenthesis that closes the one at `i`."""
    depth = 0
    for k in range(i, len(toks)):
        if toks[k].text == "(":
            depth += 1
        elif toks[k].text == ")":
            depth -= 1
            if depth == 0:
                return k + 1
    return len(toks)


def tokenize(text: str, arg: bool = False) -> list[Tok]:
    out: list[Tok] = []
    space = False
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            space = True
            continue
        out.append(Tok(m.group(), kind, arg=arg, space=space))
        space = False
    return out


def render(tokens: Iterable[Tok]) -> str:
    parts = []
    for t in tokens:
        if parts and t.space:
            parts.append(" ")
        parts.append(t.text)
    return "".join(parts)


def params_of(params: str) -> tuple[list[str], str]:
    """`(fmt, ...)` -> (["fmt"], "__VA_ARGS__"); `(x, args...)` -> (["x"], "args"); `()` -> ([], '')."""
    inner = params.strip()[1:-1].strip()
    names = [p.strip() for p in inner.split(",")] if inner else []
    var = ""
    if names and names[-1].endswith("..."):
        last = names.pop()[:-3].strip()
        var = last or "__VA_ARGS__"
    return names, var


class Expander:
    """Expands with one definition per name, as `choose` picks; records the names that had several."""

    def __init__(self, lookup: Callable[[str], Sequence[MacroDef]], choose: dict[str, int]):
        self.lookup = lookup
        self.choose = choose
        self.multi: list[str] = []
        self.used: list[MacroDef] = []
        self.steps = 0
        self.exhausted = False

    def definition(self, name: str) -> MacroDef | None:
        defs = self.lookup(name)
        if not defs:
            return None
        if len(defs) > 1 and name not in self.multi:
            self.multi.append(name)
        d = defs[min(self.choose.get(name, 0), len(defs) - 1)]
        if d.params == UNDEFINED:
            return None  # the alternative where no #define of the name is seen (a function stands instead)
        if d not in self.used:
            self.used.append(d)
        return d

    def expand(self, tokens: list[Tok]) -> list[Tok]:
        out: list[Tok] = []
        todo = list(reversed(tokens))  # a stack: the next token is last
        while todo:
            self.steps += 1
            if self.steps > MAX_STEPS:  # out of budget: the rest stays as written (names, not expanded)
                self.exhausted = True
                out.extend(reversed(todo))
                break
            t = todo.pop()
            if t.kind != "id" or t.text in t.hide or t.text in KEYWORDS:
                out.append(t)  # (`#define if(...)` for branch profiling: a keyword stays one)
                continue
            if t.text == "__COUNTER__" or t.text == "__LINE__":
                out.append(Tok("0", "num", t.hide, t.arg, t.space))
                continue
            d = self.definition(t.text)
            if d is None:
                out.append(t)
                continue
            if not d.params:  # object-like
                body = self.subst(tokenize(d.value), [], [], "", [], t.hide | {t.text})
                todo.extend(reversed(self.respace(body, t)))
                continue
            j = len(todo) - 1
            if j < 0 or todo[j].text != "(":
                out.append(t)  # a function-like macro's name without arguments
                continue
            actuals, close = self.collect(todo)
            if actuals is None:
                out.append(t)
                continue
            names, var = params_of(d.params)
            body = self.subst(tokenize(d.value), names, actuals, var, [], (t.hide & close.hide) | {t.text})
            todo.extend(reversed(self.respace(body, t)))
        return out

    @staticmethod
    def respace(body: list[Tok], at: Tok) -> list[Tok]:
        if body:
            b = body[0]
            body[0] = Tok(b.text, b.kind, b.hide, b.arg, at.space)
        return body

    @staticmethod
    def collect(todo: list[Tok]) -> tuple[list[list[Tok]] | None, Tok | None]:
        """Pop `( a, b, ... )` off the stack: the actual arguments, unexpanded, and the closing paren."""
        depth = 0
        args: list[list[Tok]] = [[]]
        k = len(todo) - 1
        while k >= 0:
            t = todo[k]
            if t.text == "(":
                depth += 1
                if depth > 1:
                    args[-1].append(t)
            elif t.text == ")":
                depth -= 1
                if depth == 0:
                    del todo[k:]
                    if args == [[]]:
                        args = []
                    return args, t
                args[-1].append(t)
            elif t.text == "," and depth == 1:
                args.append([])
            else:
                args[-1].append(t)
            k -= 1
        return None, None

    def subst(self, body: list[Tok], names: list[str], actuals: list[list[Tok]], var: str,
              _out: list[Tok], hide: frozenset) -> list[Tok]:
        params = {n: i for i, n in enumerate(names)}
        if var:
            params[var] = len(names)
            fixed, rest = actuals[:len(names)], actuals[len(names):]
            joined: list[Tok] = []
            for i, a in enumerate(rest):
                if i:
                    joined.append(Tok(",", "punct", arg=True))
                    if a:
                        a = [Tok(a[0].text, a[0].kind, a[0].hide, a[0].arg, True), *a[1:]]
                joined.extend(a)
            actuals = fixed + [joined]

        def actual(name: str) -> list[Tok]:
            i = params[name]
            return list(actuals[i]) if i < len(actuals) else []

        expanded: dict[str, list[Tok]] = {}  # each argument is expanded once, however often it is used

        def expanded_actual(name: str) -> list[Tok]:
            if name not in expanded:
                expanded[name] = self.expand(actual(name))
            return list(expanded[name])

        out: list[Tok] = []
        i = 0
        n = len(body)
        while i < n:
            t = body[i]
            nxt = body[i + 1] if i + 1 < n else None
            if t.text == "#" and nxt is not None and nxt.text in params:  # stringize
                out.append(Tok('"' + render(actual(nxt.text)).replace("\\", "\\\\").replace('"', '\\"') + '"',
                               "str", space=t.space))
                i += 2
                continue
            if t.text == "##" and nxt is not None:
                rhs = actual(nxt.text) if nxt.text in params else [nxt]
                if nxt.text == var and out and out[-1].text == "," and not rhs:
                    out.pop()  # GNU `, ## __VA_ARGS__` with no variadic arguments
                elif out and rhs:
                    left = out.pop()
                    glued = tokenize(left.text + rhs[0].text)
                    if len(glued) == 1:
                        g = glued[0]
                        out.append(Tok(g.text, g.kind, space=left.space))
                    else:
                        out.extend([left, rhs[0]])
                    out.extend(rhs[1:])
                elif rhs:
                    out.extend(rhs)
                i += 2
                continue
            if t.kind == "id" and t.text in params:
                if nxt is not None and nxt.text == "##":
                    toks = actual(t.text)  # an operand of ## is not expanded first
                else:
                    toks = expanded_actual(t.text)
                if toks:
                    toks[0] = Tok(toks[0].text, toks[0].kind, toks[0].hide, toks[0].arg, t.space)
                out.extend(toks)
                i += 1
                continue
            out.append(t)
            i += 1
        return [Tok(t.text, t.kind, t.hide | hide, t.arg, t.space) for t in out]


def expand(name: str, args: Sequence[str] | None, lookup: Callable[[str], Sequence[MacroDef]]) -> list[Expansion]:
    """Every alternative expansion of `name(args...)` (or of `name` alone when `args` is None)."""
    toks = [Tok(name, "id")]
    if args is not None:
        toks.append(Tok("(", "punct"))
        for i, a in enumerate(args):
            if i:
                toks.append(Tok(",", "punct"))
            toks.extend(tokenize(" " + a if i else a, arg=True))
        toks.append(Tok(")", "punct"))
    results: list[Expansion] = []
    seen: set[tuple] = set()
    todo: list[dict[str, int]] = [{}]
    tried: set[tuple] = set()
    spent = 0
    while todo and len(tried) < MAX_ALTERNATIVES and spent < TOTAL_STEPS:
        choose = todo.pop(0)
        key = tuple(sorted(choose.items()))
        if key in tried:
            continue
        tried.add(key)
        ex = Expander(lookup, choose)
        try:
            out = ex.expand(list(toks))
        except RecursionError:
            continue
        finally:
            spent += ex.steps
        # Names with several definitions met on this run, and not yet fixed: branch on each.
        for m in ex.multi:
            if m not in choose:
                for k in range(1, len(lookup(m))):
                    todo.append({**choose, m: k})
        conds: list[str] = []
        for d in ex.used:
            for c in d.conditions:
                if c not in conds:
                    conds.append(c)
        if _contradicts(conds):
            continue  # definitions of two names chosen under opposite conditions: no build sees this
        ident = (render(out), tuple(conds))
        if ident in seen:
            continue
        seen.add(ident)
        results.append(Expansion(tuple(out), tuple(ex.used), tuple(conds)))
    return results


def _contradicts(conds: list[str]) -> bool:
    have = set(conds)
    for c in conds:
        if c.startswith("!"):
            inner = c[1:]
            if inner in have or (inner.startswith("(") and inner.endswith(")") and inner[1:-1] in have):
                return True
    return False


def ignorer(globs: Iterable[str]) -> Callable[[str], bool]:
    """A test for call names an expansion never really makes (`__compiletime_assert_*`)."""
    pats = [re.compile("".join(r"[\w$]*" if c == "*" else re.escape(c) for c in g) + r"\Z") for g in globs]
    return lambda name: any(p.match(name) for p in pats)


__all__ = ["Expansion", "Tok", "expand", "ignorer", "params_of", "render", "tokenize", "NOT_CALLS",
           "BUILTIN_PREFIXES", "UNDEFINED"]
