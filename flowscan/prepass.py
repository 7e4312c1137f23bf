"""Byte-preserving pre-pass that makes kernel/QEMU C parse with tree-sitter-c.

Both public functions return bytes of the same length as their input, with every ``b"\\n"`` at
the same offset, so line numbers, columns and byte offsets in the rewritten text are those of
the original file.  Replacements are spaces, or shorter text padded with spaces; the names of
functions, callees and arguments stay at their original offsets (a ``SYSCALL_DEFINE0`` name is
the one exception: it moves left within its line).  Neither function raises on any bytes.

``prepass(data)`` -- everything outside comments, literals and preprocessor directive lines:

1. comments are blanked (also inside directives; never inside string or char literals);
2. annotation macros are blanked as whole identifiers: object-like ones (``__init``, ``__user``,
   ``notrace``, ``G_NORETURN``, ``coroutine_fn``, ...) and function-like ones together with their
   balanced parentheses (``__printf(1, 2)``, ``__must_hold(&l)``, ``G_GNUC_PRINTF(1, 2)``);
3. iterator macros that start a statement and are followed by a loop body
   (``list_for_each_entry(p, h, m) {``, ``for_each_possible_cpu(c) stmt;``,
   ``QTAILQ_FOREACH(...) {``, ``scoped_guard(...) {``) get ``while`` in place of their name
   (``for(;;)`` when the argument list is empty); ``} while_each_thread(g, t);`` closers too;
4. ``SYSCALL_DEFINEn(name, t1, a1, ...)`` (and ``COMPAT_SYSCALL_DEFINEn`` & co) becomes
   ``long name(t1 a1, ...)`` in place; ``SYSCALL_DEFINE0(name)`` becomes ``long name(void)``;
5. C-grammar gaps: a type passed to a macro (``container_of(p, struct foo, m)``,
   ``min_t(unsigned long, a, b)``, ``va_arg(ap, char *)``) is turned into an identifier-like
   argument; ``case A ... B:`` becomes ``case A ?: B:``; ``offsetof(T, a.b[i])`` gets a one-word
   member; an ``asm`` template built with macros becomes blank string literals; asm labels
   (``register long x0 asm("x0")``) are blanked; ``static DECLARE_WORK(w, fn);`` loses ``static``;
   pasted tokens ``52_BIT`` / ``1_1`` and operator arguments ``|=,`` become identifiers.

``flatten_conditionals(data)`` keeps one branch of every ``#if``/``#ifdef``/``#ifndef`` group
(the first one, except that a literal ``#if 0``/``#elif 0`` branch is passed over for the next)
and blanks the other branches and every conditional directive line (nesting and backslash
continuations handled).  Meant for a second parse of files whose first parse has top-level
ERROR nodes; apply it to the output of ``prepass``.

The macro tables are data: ``queries/c/macros.toml``, merged with the TOML files named in the
environment variable ``FLOWSCAN_MACROS`` (``os.pathsep``-separated; same sections, lists are
added, ``remove`` lists take names out).  They are loaded and compiled once per process.

Speed: one compiled regex walks each file, skipping ordinary code at C speed (each identifier is
checked against a trie of all macro names in a negative lookahead) and stopping only at
directives, comments, macro names and the few built-in words; Python runs per such token and
per rewrite candidate.  Infix iterator globs (``*for_each*``) are found by literal searches.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["prepass", "flatten_conditionals", "macro_tables", "MacroTables"]

ENV_VAR = "FLOWSCAN_MACROS"

# Translation table: every byte becomes a space except "\n" and "\r" (line structure is kept).
_BLANK = bytes(c if c in (10, 13) else 32 for c in range(256))

# ---------------------------------------------------------------------------------------------
# Lexical scanner (strings, chars, comments, directive lines)
# ---------------------------------------------------------------------------------------------
_ESC = rb"\\(?:\r\n|[\s\S])?"
_STR = rb'"(?:[^"\\\n]++|' + _ESC + rb')*+"?'
_CHR = rb"'(?:[^'\\\n]++|" + _ESC + rb")*+'?"
_BLOCK = rb"/\*(?:[^*]++|\*(?!/))*+(?:\*/)?"
_LINE = rb"//(?:[^\n\\]++|" + _ESC + rb")*+"
# A directive body runs to the first newline that is not escaped and not inside a block comment.
_DIR_BODY = (rb"(?:[^\n\\/\"']++|" + _ESC + rb"|" + _BLOCK + rb"|" + _LINE + rb"|" + _STR
             + rb"|" + _CHR + rb"|/)*+")
# Lexical tokens: a directive ('#' to the end of its logical line; the caller checks that the
# '#' starts its line), a comment, a string or a char literal.  A match is never empty.
_DIRECTIVE = rb"\#" + _DIR_BODY
_LEX = re.compile(_DIRECTIVE + rb"|" + _BLOCK + rb"|" + _LINE + rb"|" + _STR + rb"|" + _CHR)
_COMMENT_IN_DIR = re.compile(_BLOCK + rb"|" + _LINE + rb"|" + _STR + rb"|" + _CHR)

_SLASH = 47

_IDCHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
_WS = b" \t\r\n\f\v"
_ID_TAIL = re.compile(rb"[\w$]*")
_IDENT = re.compile(rb"[A-Za-z_$][\w$]*")
_OPEN_PAREN = re.compile(rb"[ \t\r\n\f\v]*\(")
# Tokens for bracket matching in `masked` (where string and char literals are still present).
_PAREN_TOK = re.compile(rb"[(),;{}:]|" + _STR + rb"|" + _CHR)
_ASM_TOK = re.compile(_STR + rb"|" + _CHR + rb"|[A-Za-z_$][\w$]*|[^ \t\r\n\f\v]")
_MAX_ARGS = 8192  # bytes searched for a closing parenthesis
_MAX_BACK = 2048  # bytes searched backwards for an opening parenthesis

# Candidate kinds.
(_OBJ, _FUNC, _ITER, _SYS, _TARGS, _TYPEKW, _RANGE, _OFFSETOF, _ASM, _CLOSER, _STATIC,
 _NUMBER, _KEYWORD, _PASTE) = range(1, 15)  # all truthy

# Words handled by built-in rules for C-grammar gaps (not macro data), each with a regex tail
# that must follow for the word to be a candidate at all.
_C_WORD = rb"[A-Za-z_$][\w$]*+"
_TYPEKW_TAIL = rb"(?=[ \t\r\n]++" + _C_WORD + rb"(?:[ \t\r\n]*+\*)*+[ \t\r\n]*+[,)])"
_BUILTIN_WORDS: dict[bytes, tuple[int, bytes]] = {
    b"struct": (_TYPEKW, _TYPEKW_TAIL), b"union": (_TYPEKW, _TYPEKW_TAIL),
    b"enum": (_TYPEKW, _TYPEKW_TAIL),
    b"offsetof": (_OFFSETOF, rb"(?![\w$])"), b"__builtin_offsetof": (_OFFSETOF, rb"(?![\w$])"),
    b"asm": (_ASM, rb"(?![\w$])"), b"__asm__": (_ASM, rb"(?![\w$])"), b"__asm": (_ASM, rb"(?![\w$])"),
    # `case A ... B:` (only when a `...` follows before the end of the label)
    b"case": (_RANGE, rb"(?![\w$])(?=(?:[^;:{}.]++|\.(?!\.\.))*+\.\.\.)"),
    # `static DECLARE_WORK(w, fn);` (only before an upper-case macro call)
    b"static": (_STATIC, rb"(?![\w$])(?=[ \t]++[A-Z][A-Z0-9_]*+[ \t]*+\()"),
}
_TYPEKW_END = re.compile(_TYPEKW_TAIL[3:-1])

_PRIM_WORDS = frozenset((b"signed", b"unsigned", b"short", b"long", b"int", b"char", b"void",
                         b"float", b"double", b"_Bool", b"__int128"))
_QUAL_WORDS = frozenset((b"const", b"volatile", b"struct", b"union", b"enum", b"__restrict",
                         b"restrict", b"_Atomic"))
_TYPE_ARG = re.compile(rb"[ \t\r\n\f\v]*(?:(?:const|volatile|struct|union|enum|signed|unsigned|short|long"
                       rb"|int|char|void|float|double|_Bool|__int128|restrict|__restrict|_Atomic)"
                       rb"[ \t\r\n\f\v]+)*[A-Za-z_$][\w$]*(?:[ \t\r\n\f\v]*\*)*[ \t\r\n\f\v]*")
_TYPE_TOK = re.compile(rb"[A-Za-z_$][\w$]*|\*")
# Words that look like a callee before '(' but are not calls (their arguments are real types).
_NOT_CALLEES = frozenset((b"sizeof", b"typeof", b"__typeof__", b"__typeof", b"_Alignof", b"alignof",
                          b"__alignof__", b"__alignof", b"offsetof", b"__builtin_offsetof", b"_Generic",
                          b"__builtin_types_compatible_p", b"if", b"while", b"for", b"switch",
                          b"return", b"case", b"__attribute__", b"__attribute", b"asm", b"__asm__",
                          b"__asm", b"volatile", b"__volatile__", b"_Static_assert",
                          b"static_assert", b"__builtin_va_arg", b"typeof_unqual",
                          b"__typeof_unqual__", b"__auto_type", b"do", b"else"))
# Words that may stand right before a callee in a call (statement) context.
_CALL_PRECEDERS = frozenset((b"return", b"case", b"else", b"do", b"static", b"extern"))
_ASM_QUALS = frozenset((b"volatile", b"__volatile__", b"__volatile", b"inline", b"__inline__",
                        b"__inline", b"goto"))
_DIGITS = frozenset(b"0123456789")


# ---------------------------------------------------------------------------------------------
# Macro tables
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MacroTables:
    """The merged macro tables plus the scanner compiled from them."""

    annotations: frozenset[str]
    annotations_with_args: frozenset[str]
    iterator_patterns: tuple[str, ...]
    type_arg_macros: frozenset[str]
    syscall_defines: tuple[str, ...]
    keyword_macros: dict[str, str]  # STATIC -> static
    name_macros: dict[str, str]  # HELPER -> helper_ (HELPER(x) -> helper_x)
    replacements: dict[bytes, bytes]  # both of the above, as bytes
    scan_re: re.Pattern[bytes]  # one pass: code skipped in C, stops at interesting tokens
    scan_nodir_re: re.Pattern[bytes]  # the same for a span where '#' starts no directive
    kinds: dict[bytes, int]  # exact word -> candidate kind
    iterator_anchors: tuple[tuple[bytes, re.Pattern[bytes]], ...]  # literal -> its search regex
    iterator_re: re.Pattern[bytes] | None  # full-identifier matcher for the iterator globs
    closer_re: re.Pattern[bytes] | None  # full-identifier matcher for loop-closer globs
    syscall_re: re.Pattern[bytes] | None  # full-identifier matcher for SYSCALL_DEFINEn & co
    iterator_any: re.Pattern[bytes] | None  # identifiers for globs without a usable literal


_SECTIONS = (("annotations", "names"), ("annotations_with_args", "names"),
             ("iterators", "patterns"), ("iterators", "closers"), ("type_arg_macros", "names"),
             ("syscall_defines", "names"))


def _default_toml() -> Path:
    from flowscan.resources import queries_dir

    return queries_dir() / "c" / "macros.toml"


def _section(doc: dict, name: str, key: str, path: str) -> tuple[list[str], list[str]]:
    sec = doc.get(name) or {}
    if not isinstance(sec, dict):
        raise ValueError(f"{path}: [{name}] must be a table")
    add = sec.get(key) or []
    rem = sec.get("remove") or []
    if not isinstance(add, list) or not isinstance(rem, list) \
            or not all(isinstance(x, str) and x for x in [*add, *rem]):
        raise ValueError(f"{path}: [{name}] {key} and remove must be lists of non-empty strings")
    return list(add), list(rem)


def _map_section(doc: dict, name: str, path: str) -> tuple[dict[str, str], list[str]]:
    sec = doc.get(name) or {}
    if not isinstance(sec, dict):
        raise ValueError(f"{path}: [{name}] must be a table")
    table = sec.get("map") or {}
    rem = sec.get("remove") or []
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in table.items()):
        raise ValueError(f"{path}: [{name}.map] must map names to strings")
    if not isinstance(rem, list) or not all(isinstance(x, str) for x in rem):
        raise ValueError(f"{path}: [{name}] remove must be a list of strings")
    return dict(table), list(rem)


def _trie_regex(words: dict[str, str] | list[str]) -> str:
    """An alternation of the words as a prefix trie (fast in the `re` engine).  `words` may map
    each word to a regex tail emitted right after it."""
    tails = words if isinstance(words, dict) else dict.fromkeys(words, "")
    trie: dict = {}
    for w, tail in tails.items():
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = tail

    def emit(node: dict) -> str:
        alts = [re.escape(ch) + emit(sub) for ch, sub in sorted(node.items()) if ch]
        if "" in node:
            if not alts:
                return node[""]
            alts.append(node[""])
            return "(?:" + "|".join(alts) + ")"
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(trie)


def _glob_to_regex(pat: str) -> str:
    if pat.startswith("re:"):
        return "(?:" + pat[3:] + ")"
    return "".join(r"[\w$]*" if ch == "*" else r"[\w$]" if ch == "?" else re.escape(ch)
                   for ch in pat)


def _glob_anchor(pat: str) -> str | None:
    """The longest literal run of a glob (used to find candidates fast); None for regexes."""
    if pat.startswith("re:"):
        return None
    pieces = [p for p in re.split(r"[*?]", pat) if p]
    return max(pieces, key=len) if pieces else None


def _build(annotations: list[str], with_args: list[str], iterators: list[str],
           closers: list[str], type_args: list[str], syscalls: list[str],
           keyword_macros: dict[str, str], name_macros: dict[str, str]) -> MacroTables:
    kinds: dict[bytes, int] = {w: k for w, (k, _) in _BUILTIN_WORDS.items()}
    for kind, names in ((_TARGS, type_args), (_PASTE, name_macros), (_KEYWORD, keyword_macros),
                        (_OBJ, annotations), (_FUNC, with_args)):
        for n in names:
            if _IDENT.fullmatch(n.encode()):
                kinds[n.encode()] = kind  # later tables win: annotations beat type-arg macros
    end = r"(?![\w$])"
    tails: dict[str, list[str]] = {}
    for w, k in kinds.items():
        builtin = _BUILTIN_WORDS.get(w)
        tails[w.decode()] = [builtin[1].decode() if builtin and builtin[0] == k else end]
    # Iterator globs with a literal prefix (`scoped_*`, `WITH_*GUARD`) go into the same trie, as
    # the prefix followed by the rest of the glob; infix globs (`*for_each*`) are searched later.
    iterator_re = iterator_any = syscall_re = closer_re = None
    infix: list[str] = []
    unanchored = []
    for pat in closers:
        lit = re.match(r"[A-Za-z_$][\w$]*", pat) if not pat.startswith("re:") else None
        if not lit:
            raise ValueError(f"[iterators] closers must start with a literal prefix: {pat!r}")
        tails.setdefault(lit.group(), []).append(_glob_to_regex(pat[lit.end():]) + end)
    if closers:
        closer_re = re.compile("|".join(_glob_to_regex(p) for p in closers).encode())
    for pat in iterators:
        lit = re.match(r"[A-Za-z_$][\w$]*", pat) if not pat.startswith("re:") else None
        if lit:
            tails.setdefault(lit.group(), []).append(_glob_to_regex(pat[lit.end():]) + end)
            continue
        a_ = _glob_anchor(pat)
        if a_ is None or len(a_) < 3:
            unanchored.append(pat)
        else:
            infix.append(pat)
    anchors = _choose_anchors(infix)
    names_rx = _trie_regex({w: t[0] if len(t) == 1 else "(?:" + "|".join(t) + ")"
                            for w, t in tails.items()})
    if syscalls:
        sys_rx = "(?:" + _trie_regex(sorted(set(syscalls))) + r")[0-9]++(?![\w$])"
        names_rx += "|" + sys_rx
        syscall_re = re.compile(sys_rx.encode())
    names_rx = "(?:" + names_rx + ")"
    # One pass: skip uninteresting code (punctuation runs, identifiers that are no macro name,
    # '/' that starts no comment) at C speed and stop at a directive, comment, string, char
    # literal or macro name.  Every byte is covered, so a search never fails and rescans.
    code = (r"[^\"'/\#A-Za-z_$0-9]++|(?!" + names_rx + r")[A-Za-z_$][\w$]*+"
            r"|[0-9][0-9A-Za-z.$]*+(?!_)|/(?![/*])|"
            + _STR.decode("latin-1") + "|" + _CHR.decode("latin-1"))
    # A number running into '_' (`52_BIT`, `1_1`: halves of a ## paste) is a token too.
    names_rx = "(?:" + names_rx + r"|[0-9][\w$.]*+)"
    lexed = b"|".join((_BLOCK, _LINE)).decode("latin-1")
    scan_re = re.compile(("(?:" + code + ")*+(" + _DIRECTIVE.decode("latin-1") + "|" + lexed
                          + "|" + names_rx + r"|\Z)").encode("latin-1"))
    scan_nodir_re = re.compile(("(?:" + code + r"|\#)*+(" + lexed + "|" + names_rx
                                + r"|\Z)").encode("latin-1"))
    if iterators:
        iterator_re = re.compile("|".join(_glob_to_regex(p) for p in iterators).encode())
        if unanchored:
            iterator_any = re.compile((r"(?<![\w$])(?:" + "|".join(_glob_to_regex(p) for p in unanchored)
                                       + r")(?![\w$])").encode())
    replacements = {n.encode(): v.encode() for n, v in keyword_macros.items()}
    replacements.update((n.encode(), v.encode()) for n, v in name_macros.items())
    return MacroTables(frozenset(annotations), frozenset(with_args), tuple(iterators),
                       frozenset(type_args), tuple(syscalls), dict(keyword_macros),
                       dict(name_macros), replacements, scan_re, scan_nodir_re, kinds,
                       tuple((a.encode(), re.compile(re.escape(a.encode()))) for a in sorted(anchors)),
                       iterator_re, closer_re, syscall_re, iterator_any)


def _choose_anchors(globs: list[str]) -> list[str]:
    """Few literal strings such that every glob's literal text contains one (each is searched
    once per file): greedy set cover over substrings of 4+ characters, longer ones first."""
    pieces = {g: [p for p in re.split(r"[*?]", g) if p] for g in globs}
    todo = set(globs)
    chosen: list[str] = []
    while todo:
        cands: dict[str, set[str]] = {}
        for g in todo:
            for piece in pieces[g]:
                n = len(piece)
                for ln in range(min(4, n), n + 1):
                    for i in range(n - ln + 1):
                        cands.setdefault(piece[i:i + ln], set()).add(g)
        best = max(cands, key=lambda c: (len(cands[c]), len(c), c))
        chosen.append(best)
        todo -= cands[best]
    return sorted(chosen)


@lru_cache(maxsize=8)
def _load(default_path: str, extra: str) -> MacroTables:
    paths = [default_path] + [p for p in extra.split(os.pathsep) if p.strip()]
    lists: list[list[str]] = [[] for _ in _SECTIONS]
    maps: dict[str, dict[str, str]] = {"keyword_macros": {}, "name_macros": {}}
    for i, path in enumerate(paths):
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            if i == 0:
                raise
            raise FileNotFoundError(f"{ENV_VAR}: macro table {path!r} not found") from None
        for target, (sec, key) in zip(lists, _SECTIONS):
            add, rem = _section(doc, sec, key, path)
            seen = set(target)
            for x in add:
                if x not in seen:
                    target.append(x)
                    seen.add(x)
            if rem:
                drop = set(rem)
                target[:] = [x for x in target if x not in drop]
        for sec, table in maps.items():
            add_map, rem = _map_section(doc, sec, path)
            table.update(add_map)
            for x in rem:
                table.pop(x, None)
    ann, fun, its, closers, targs, sys_ = lists
    fun_set = set(fun)
    ann = [a for a in ann if a not in fun_set]  # a name listed in both is function-like
    return _build(ann, fun, its, closers, targs, sys_, maps["keyword_macros"], maps["name_macros"])


_DEFAULT_TOML: list[str] = []


def macro_tables() -> MacroTables:
    """The merged macro tables (cached; the cache key includes $FLOWSCAN_MACROS)."""
    if not _DEFAULT_TOML:
        _DEFAULT_TOML.append(str(_default_toml()))
    return _load(_DEFAULT_TOML[0], os.environ.get(ENV_VAR, ""))


# ---------------------------------------------------------------------------------------------
# Helpers (all positions are in the same coordinates for data, out and masked)
# ---------------------------------------------------------------------------------------------
def _blank(buf: bytearray, s: int, e: int) -> None:
    buf[s:e] = bytes(buf[s:e]).translate(_BLANK)


def _close_paren(masked: bytearray, open_pos: int, commas: list[int] | None = None) -> int:
    """Index of the ')' matching masked[open_pos] == '(' (comments are blank in `masked`; string
    and char literals are skipped), or -1.  Gives up at ';', '{', '}' or after _MAX_ARGS bytes.
    Top-level commas are appended to `commas` when given."""
    depth = 0
    for m in _PAREN_TOK.finditer(masked, open_pos, open_pos + _MAX_ARGS):
        c = masked[m.start()]
        if c == 40:  # (
            depth += 1
        elif c == 41:  # )
            depth -= 1
            if depth == 0:
                return m.start()
        elif c == 44:  # ,
            if depth == 1 and commas is not None:
                commas.append(m.start())
        elif c in (59, 123, 125):  # ; { }
            return -1
    return -1


def _prev_nonspace(buf: bytearray, i: int) -> int:
    """Index of the last non-whitespace byte before i, or -1."""
    i -= 1
    while i >= 0 and buf[i] in _WS:
        i -= 1
    return i


def _next_nonspace(buf: bytearray, i: int) -> int:
    n = len(buf)
    while i < n and buf[i] in _WS:
        i += 1
    return i


def _word_ending_at(buf: bytearray, j: int) -> bytes:
    """The identifier whose last byte is buf[j] (b'' if buf[j] is not an identifier byte)."""
    k = j
    while k >= 0 and buf[k] in _IDCHARS:
        k -= 1
    return bytes(buf[k + 1:j + 1])


def _open_paren_before(buf: bytearray, close: int) -> int:
    """Index of the '(' matching the ')' at `close`, searching backwards a bounded distance."""
    depth = 0
    for i in range(close, max(-1, close - _MAX_BACK), -1):
        c = buf[i]
        if c == 41:  # )
            depth += 1
        elif c == 40:  # (
            depth -= 1
            if depth == 0:
                return i
        elif c in (59, 123, 125):  # ; { }
            return -1
    return -1


def _enclosing_open_paren(buf: bytearray, i: int) -> int:
    """Index of the unmatched '(' before position i (i is inside an argument list), or -1."""
    depth = 0
    for k in range(i - 1, max(-1, i - _MAX_BACK), -1):
        c = buf[k]
        if c == 41:
            depth += 1
        elif c == 40:
            if depth == 0:
                return k
            depth -= 1
        elif c in (59, 123, 125):
            return -1
    return -1


_STMT_KEYWORDS_PAREN = frozenset((b"if", b"for", b"while", b"switch"))
_STMT_KEYWORDS = frozenset((b"else", b"do"))


def _statement_start(masked: bytearray, s: int) -> bool:
    """Is position s (the start of an identifier) at the start of a statement?"""
    j = _prev_nonspace(masked, s)
    if j < 0:
        return True
    c = masked[j]
    if c in (59, 123, 125):  # ; { }
        return True
    if c == 58:  # ':' -- a label or case, not '::' or '?:'
        return j == 0 or masked[j - 1] != 58
    if c == 41:  # ')' -- only after if (...), for (...), while (...) or an iterator's (...)
        o = _open_paren_before(masked, j)
        return o >= 0 and _word_ending_at(masked, _prev_nonspace(masked, o)) in _STMT_KEYWORDS_PAREN
    if c in _IDCHARS:
        return _word_ending_at(masked, j) in _STMT_KEYWORDS
    return False


def _loop_body_follows(masked: bytearray, i: int) -> bool:
    """After an iterator's ')', does a loop body follow (rather than ';', ',', an operator...)?"""
    j = _next_nonspace(masked, i)
    if j >= len(masked):
        return False
    c = masked[j]
    if c == 123 or c == 40 or c in _IDCHARS or c == 42:  # { ( identifier/keyword *p = ...
        return True
    if c in (43, 45):  # ++x / --x
        return j + 1 < len(masked) and masked[j + 1] == c
    return False


def _is_call_paren(masked: bytearray, op: int) -> bool:
    """Is the '(' at op the argument list of a macro/function call (not a declaration, a cast,
    sizeof, a control statement or a function definition's parameter list)?"""
    j = _prev_nonspace(masked, op)
    if j < 0 or masked[j] not in _IDCHARS:
        return False
    callee = _word_ending_at(masked, j)
    if not callee or callee in _NOT_CALLEES or callee[0] in _DIGITS:
        return False
    k = _prev_nonspace(masked, j - len(callee) + 1)
    if k < 0:
        return True
    c = masked[k]
    if c in b"=(,;{}?:!&|+-<>/%^~[)":
        return True
    if c in _IDCHARS:
        return _word_ending_at(masked, k) in _CALL_PRECEDERS
    return False


def _rewrite_type_arg(out: bytearray, masked: bytearray, a: int, b: int) -> bool:
    """If masked[a:b] is a plain type (`struct foo *`, `unsigned long`, `const char *`), rewrite it
    in place into an expression-like identifier.  Returns True if something was rewritten."""
    m = _TYPE_ARG.fullmatch(masked, a, b)
    if not m:
        return False
    toks = list(_TYPE_TOK.finditer(masked, a, b))
    words = [t for t in toks if masked[t.start()] != 42]
    stars = [t for t in toks if masked[t.start()] == 42]
    if not words:
        return False
    kept = [t for t in words if t.group() not in _QUAL_WORDS]
    if not kept:
        return False
    prim = [t for t in kept if t.group() in _PRIM_WORDS]
    if not stars and len(kept) == len(words) and not prim:
        return False  # a plain identifier: nothing to do
    edits: list[tuple[int, bytes]] = []
    for t in stars:
        edits.append((t.start(), b" "))
    for t in words:
        if t.group() in _QUAL_WORDS:
            edits.append((t.start(), b" " * (t.end() - t.start())))
    if prim and len(prim) == len(kept):
        if len(kept) == 1:
            t = kept[0]
            edits.append((t.start(), t.group().upper()))
        else:
            # Join `unsigned long int` into one identifier when the gaps are on one line.
            for t0, t1 in zip(kept, kept[1:]):
                gap = masked[t0.end():t1.start()]
                if b"\n" in gap or gap.strip():
                    return False
            for t0, t1 in zip(kept, kept[1:]):
                edits.append((t0.end(), b"_" * (t1.start() - t0.end())))
    elif prim:
        for t in prim:
            edits.append((t.start(), t.group().upper()))
    for pos, text in edits:
        out[pos:pos + len(text)] = text
        masked[pos:pos + len(text)] = text
    return True


def _rewrite_syscall(out: bytearray, masked: bytearray, s: int, e: int, nargs: int) -> None:
    """SYSCALL_DEFINEn(name, t1, a1, ...) -> long name(t1 a1, ...), laid over the same bytes."""
    m = _OPEN_PAREN.match(masked, e)
    if not m:
        return
    op = m.end() - 1
    commas: list[int] = []
    cp = _close_paren(masked, op, commas)
    if cp < 0 or len(commas) + 1 != 2 * nargs + 1:
        return
    name_end = commas[0] if commas else cp
    nm = _IDENT.search(masked, op + 1, name_end)
    if not nm or masked[op + 1:nm.start()].strip() or masked[nm.end():name_end].strip():
        return
    if nargs == 0:
        toks = [b"long", nm.group() + b"(void)"]
        new = _layout(toks, bytes(out[s:cp + 1]))
        if new is not None:
            out[s:cp + 1] = new
            masked[s:cp + 1] = new
        return
    # In place: the macro name and '(' become "long", the first comma '(', and the commas between
    # a type and its argument name become spaces.  Everything else stays where it was.
    for buf in (out, masked):
        _blank(buf, s, op + 1)
        buf[s:s + 4] = b"long"
        buf[commas[0]] = 40  # (
        for k in range(1, len(commas), 2):
            buf[commas[k]] = 32


def _layout(tokens: list[bytes], span: bytes) -> bytes | None:
    """Place whole tokens (space-separated) into the line segments of span, newlines kept."""
    out_segs = []
    ti = 0
    for seg in span.split(b"\n"):
        cap = len(seg)
        line = b""
        while ti < len(tokens):
            t = tokens[ti]
            if len(line) + len(t) + (1 if line else 0) > cap:
                break
            line = line + b" " + t if line else t
            ti += 1
        out_segs.append(line + b" " * (cap - len(line)))
    if ti < len(tokens):
        return None
    return b"\n".join(out_segs)


def _directive_comments(chunk: bytes, out: bytearray, s: int) -> None:
    """Blank the comments inside a directive (chunk == data[s:...]) in `out`."""
    for cm in _COMMENT_IN_DIR.finditer(chunk):
        if chunk[cm.start()] == _SLASH:
            out[s + cm.start():s + cm.end()] = cm.group().translate(_BLANK)


def _at_line_start(data: bytes, s: int) -> bool:
    """Is data[s] the first non-blank byte of its line?"""
    return not data[data.rfind(b"\n", 0, s) + 1:s].strip()


def _operator_args(out: bytearray, masked: bytearray, mview: bytes) -> None:
    """`__vcpu_rmw_sys_reg(vcpu, reg, |=, val)`: an operator passed as a macro argument becomes
    an identifier (`__`)."""
    k = mview.find(b"=,")
    while k >= 0:
        a = k
        while a > 0 and mview[a - 1] in b"+-*/%&|^<>":
            a -= 1
        j = _prev_nonspace(masked, a)
        if j >= 0 and mview[j] in b",(" and k - a <= 2:
            out[a:k + 1] = b"_" * (k + 1 - a)
            masked[a:k + 1] = b"_" * (k + 1 - a)
        k = mview.find(b"=,", k + 2)


def _classify(tables: MacroTables, tok: bytes) -> int:
    """Kind of a scanned word that is not an exact name: a syscall definer, a loop closer, a
    pasted number (`52_BIT`) or an iterator."""
    if tok[0] in _DIGITS:
        return _NUMBER
    if tables.syscall_re is not None and tables.syscall_re.fullmatch(tok):
        return _SYS
    if tables.closer_re is not None and tables.closer_re.fullmatch(tok):
        return _CLOSER
    return _ITER


def _scan_nodir(tables: MacroTables, data: bytes, out: bytearray, masked: bytearray,
                cands: list, pos: int, endpos: int) -> None:
    """prepass()'s main loop over data[pos:endpos], where a '#' starts no directive."""
    for m in tables.scan_nodir_re.finditer(data, pos, endpos):
        s, e = m.span(1)
        if s == e:
            break
        c = data[s]
        if c == _SLASH:
            chunk = data[s:e].translate(_BLANK)
            out[s:e] = chunk
            masked[s:e] = chunk
        else:
            tok = data[s:e]
            cands.append((s, e, tables.kinds.get(tok) or _classify(tables, tok)))


# ---------------------------------------------------------------------------------------------
# Candidate handlers: each gets (data, out, masked, s, e) and returns the position up to which
# later candidates must be skipped (0 = none).
# ---------------------------------------------------------------------------------------------
def _do_obj(data, out, masked, s, e):
    j = _next_nonspace(masked, e)
    if j < len(masked) and masked[j] == 40:
        # `void __noreturn (*fn)(void)` is an annotation, but `__malloc(n, loc)` in a project that
        # names a function so is a call: only blank when a parameter list follows the (...).
        cp = _close_paren(masked, j)
        k = _next_nonspace(masked, cp + 1) if cp >= 0 else -1
        if k < 0 or k >= len(masked) or masked[k] != 40:
            return 0
    out[s:e] = b" " * (e - s)
    masked[s:e] = b" " * (e - s)
    return 0


def _do_func(data, out, masked, s, e):
    m = _OPEN_PAREN.match(masked, e)
    if not m:
        return 0
    cp = _close_paren(masked, m.end() - 1)
    if cp < 0:
        return 0
    _blank(out, s, cp + 1)
    _blank(masked, s, cp + 1)
    return cp + 1


def _do_iter(data, out, masked, s, e):
    if e - s < 5:
        return 0
    m = _OPEN_PAREN.match(masked, e)
    if not m:
        return 0
    op = m.end() - 1
    cp = _close_paren(masked, op)
    if cp < 0 or not _loop_body_follows(masked, cp + 1) or not _statement_start(masked, s):
        return 0
    if not masked[op + 1:cp].strip():
        # `WITH_RCU_READ_LOCK_GUARD() {` -> `for(;;) {`: `while ()` would not parse.
        new = b"for(;;)"
        if b"\n" in masked[s:cp + 1] or cp + 1 - s < len(new):
            return 0
        out[s:cp + 1] = new + b" " * (cp + 1 - s - len(new))
        masked[s:cp + 1] = out[s:cp + 1]
        return cp + 1
    new = b"while" + b" " * (e - s - 5)
    out[s:e] = new
    masked[s:e] = new
    return 0


def _do_sys(data, out, masked, s, e):
    d = e
    while masked[d - 1] in _DIGITS:
        d -= 1
    nargs = int(bytes(masked[d:e]))
    if nargs <= 16:
        _rewrite_syscall(out, masked, s, e, nargs)
    return 0


def _do_targs(data, out, masked, s, e):
    m = _OPEN_PAREN.match(masked, e)
    if not m:
        return 0
    op = m.end() - 1
    commas: list[int] = []
    cp = _close_paren(masked, op, commas)
    if cp < 0:
        return 0
    bounds = [op, *commas, cp]
    for a, b in zip(bounds, bounds[1:]):
        _rewrite_type_arg(out, masked, a + 1, b)
    return 0


def _do_typekw(data, out, masked, s, e):
    """`struct foo`, `union foo *`... as a whole argument of a call (container_of & co)."""
    if masked[s] == 32:  # already rewritten
        return 0
    j = _prev_nonspace(masked, s)
    a = s
    if j >= 0 and masked[j] in _IDCHARS and _word_ending_at(masked, j) in (b"const", b"volatile"):
        a = j - 4 if masked[j - 4:j + 1] == b"const" else j - 7
        j = _prev_nonspace(masked, a)
    if j < 0:
        return 0
    c = masked[j]
    if c == 40:  # (
        op = j
    elif c == 44:  # ,
        op = _enclosing_open_paren(masked, j)
        if op < 0:
            return 0
    else:
        return 0
    if not _is_call_paren(masked, op):
        return 0
    m = _TYPEKW_END.match(masked, e)
    if not m:
        return 0
    end = m.end() - 1  # the ',' or ')' after the type
    if masked[end] == 41:  # ')': a compound literal `(struct foo){...}` is no argument
        k = _next_nonspace(masked, end + 1)
        if k < len(masked) and masked[k] == 123:
            return 0
    _rewrite_type_arg(out, masked, a, end)
    return 0


def _do_range(data, out, masked, s, e):
    """`case A ... B:` -> `case A ?: B:` (GNU case ranges are not in tree-sitter-c's grammar)."""
    k = masked.find(b"...", e, e + 512)
    if k < 0 or any(c in masked[e:k] for c in b";{}:"):
        return 0
    out[k:k + 3] = b"?: "
    masked[k:k + 3] = b"?: "
    return 0


def _do_offsetof(data, out, masked, s, e):
    """`offsetof(T, a.b[i])` -> `offsetof(T, a_b_i_)`: the grammar only takes a field name."""
    if s and masked[s - 1] in _IDCHARS and _word_ending_at(masked, s - 1) != b"__builtin_":
        return 0
    m = _OPEN_PAREN.match(masked, e)
    if not m:
        return 0
    commas: list[int] = []
    cp = _close_paren(masked, m.end() - 1, commas)
    if cp < 0 or len(commas) != 1:
        return 0
    a, b = commas[0] + 1, cp
    member = bytes(masked[a:b])
    core = member.strip()
    if not core or b"\n" in core or _IDENT.fullmatch(core):
        return 0
    off = a + member.index(core[:1])
    new = bytes(ch if ch in _IDCHARS else 95 for ch in core)
    if new[0] in _DIGITS:
        return 0
    out[off:off + len(new)] = new
    masked[off:off + len(new)] = new
    return 0


def _asm_label(masked: bytearray, s: int) -> bool:
    """Does the `asm` at s follow a declarator (an asm label) rather than start a statement?"""
    j = _prev_nonspace(masked, s)
    if j < 0:
        return False
    c = masked[j]
    if c in _IDCHARS:
        return _word_ending_at(masked, j) not in (b"else", b"do", b"return", b"case", b"default")
    if c == 93:  # ]
        return True
    if c == 41:  # )
        o = _open_paren_before(masked, j)
        return o >= 0 and _word_ending_at(masked, _prev_nonspace(masked, o)) not in _STMT_KEYWORDS_PAREN
    return False


def _do_asm(data, out, masked, s, e):
    """`asm volatile(MACRO(...) : ...)`: the grammar wants string literals for the template,
    constraints and clobbers.  A template built with macros becomes blank string literals (one
    per line); if operands or clobbers use macros, the whole asm body does."""
    if s and masked[s - 1] in _IDCHARS:
        return 0
    if _asm_label(masked, s):
        # `register int x asm("r0") = 0;`, `int f(void) asm("g");`: blank the label.
        m = _OPEN_PAREN.match(masked, e)
        if not m:
            return 0
        cp = _close_paren(masked, m.end() - 1)
        if cp < 0:
            return 0
        _blank(out, s, cp + 1)
        _blank(masked, s, cp + 1)
        return cp + 1
    i = _next_nonspace(masked, e)
    goto = False
    while True:
        m = _IDENT.match(masked, i)
        if not m or m.group() not in _ASM_QUALS:
            break
        goto = goto or m.group() == b"goto"
        i = _next_nonspace(masked, m.end())
    if i >= len(masked) or masked[i] != 40:
        return 0
    cp = _close_paren(masked, i)
    if cp < 0:
        return 0
    # Sections: template : outputs : inputs : clobbers : goto labels.  The grammar wants string
    # literals for the template, constraints and clobbers; macros there need help.
    depth = 0
    section = 0
    template_end = cp
    dirty_template = dirty_operands = False
    for tm in _ASM_TOK.finditer(masked, i + 1, cp):
        c = masked[tm.start()]
        if c in (40, 91):  # ( [
            depth += 1
        elif c in (41, 93):  # ) ]
            depth -= 1
        elif depth:
            continue
        elif c == 58:  # :
            if section == 0:
                template_end = tm.start()
            section += 1
        elif c in (34, 39, 44) or c in _WS:  # literals and commas are fine
            continue
        elif section == 0:
            dirty_template = True
        elif not (goto and section == 4 and c in _IDCHARS):
            dirty_operands = True
    if dirty_operands:
        _blank_strings(out, masked, _next_nonspace(masked, i + 1), _prev_nonspace(masked, cp) + 1)
        return cp + 1
    if dirty_template:
        t = _next_nonspace(masked, i + 1)
        _blank_strings(out, masked, t, _prev_nonspace(masked, template_end) + 1)
        return template_end
    return 0


def _blank_strings(out: bytearray, masked: bytearray, a: int, b: int) -> None:
    """Replace out[a:b] by blank string literals, one per line (adjacent literals concatenate)."""
    segs = bytes(masked[a:b]).split(b"\n")
    if a >= b or not any(len(g) >= 2 for g in segs):
        return
    new = b"\n".join(b'"' + b" " * (len(g) - 2) + b'"' if len(g) >= 2 else b" " * len(g)
                     for g in segs)
    out[a:b] = new
    masked[a:b] = new.translate(_BLANK)


def _do_closer(data, out, masked, s, e):
    """`} while_each_thread(g, t);` -> `} while (g, t);` (the end of a do_each_* loop)."""
    if e - s < 5:
        return 0
    j = _prev_nonspace(masked, s)
    if j < 0 or masked[j] != 125:  # }
        return 0
    m = _OPEN_PAREN.match(masked, e)
    if not m:
        return 0
    op = m.end() - 1
    cp = _close_paren(masked, op)
    if cp < 0:
        return 0
    k = _next_nonspace(masked, cp + 1)
    if k >= len(masked) or masked[k] != 59:  # ;
        return 0
    if not masked[op + 1:cp].strip():
        new = b"while(1)"
        if b"\n" in masked[s:cp + 1] or cp + 1 - s < len(new):
            return 0
        new += b" " * (cp + 1 - s - len(new))
        out[s:cp + 1] = new
        masked[s:cp + 1] = new
        return cp + 1
    new = b"while" + b" " * (e - s - 5)
    out[s:e] = new
    masked[s:e] = new
    return 0


def _do_static(data, out, masked, s, e):
    """`static DECLARE_WORK(w, fn);` -> `       DECLARE_WORK(w, fn);` (a declaration the grammar
    cannot read becomes a call; one-argument forms already parse and are left alone)."""
    name = _IDENT.match(masked, _next_nonspace(masked, e))
    m = _OPEN_PAREN.match(masked, name.end()) if name else None
    if not m:
        return 0
    commas: list[int] = []
    if _close_paren(masked, m.end() - 1, commas) < 0 or not commas:
        return 0
    out[s:e] = b" " * (e - s)
    masked[s:e] = b" " * (e - s)
    return 0


def _do_number(data, out, masked, s, e):
    """`52_BIT` / `1_1` (halves of a ## paste) -> `_2_BIT` / `__1`: an identifier."""
    if b"_" not in masked[s:e] or (s and masked[s - 1] in _IDCHARS) or masked[s + 1:s + 2] in (
            b"x", b"X", b"b", b"B") and masked[s] == 48:
        return 0
    out[s] = 95
    masked[s] = 95
    return 0


def _do_keyword(data, out, masked, s, e):
    """`STATIC` -> `static`, `MEM_STATIC` -> `static    `: a macro standing for keywords."""
    new = macro_tables().replacements.get(bytes(masked[s:e]), b"")
    if len(new) > e - s:
        new = b""
    new += b" " * (e - s - len(new))
    out[s:e] = new
    masked[s:e] = new
    return 0


def _do_paste(data, out, masked, s, e):
    """`HELPER(foo)` -> `helper_foo ` (a macro that pastes a prefix onto its one argument)."""
    m = _OPEN_PAREN.match(masked, e)
    if not m:
        return 0
    cp = _close_paren(masked, m.end() - 1)
    if cp < 0:
        return 0
    arg = bytes(masked[m.end():cp]).strip()
    if not _IDENT.fullmatch(arg) or b"\n" in masked[s:cp]:
        return 0
    new = macro_tables().replacements.get(bytes(masked[s:e]), b"") + arg
    if len(new) > cp + 1 - s:
        return 0
    new += b" " * (cp + 1 - s - len(new))
    out[s:cp + 1] = new
    masked[s:cp + 1] = new
    return cp + 1


_HANDLERS = {_OBJ: _do_obj, _FUNC: _do_func, _ITER: _do_iter, _SYS: _do_sys, _TARGS: _do_targs,
             _TYPEKW: _do_typekw, _RANGE: _do_range, _OFFSETOF: _do_offsetof, _ASM: _do_asm,
             _CLOSER: _do_closer, _STATIC: _do_static, _NUMBER: _do_number,
             _KEYWORD: _do_keyword, _PASTE: _do_paste}


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------
def prepass(data: bytes) -> bytes:
    """Rewrite kernel/QEMU C so tree-sitter-c parses it; length and newline offsets unchanged."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("prepass() takes bytes")
    data = bytes(data)
    tables = macro_tables()
    out = bytearray(data)
    masked = bytearray(data)  # comments, literals and directive lines blank: code only
    translate = bytes.translate
    kinds = tables.kinds
    cands: list[tuple[int, int, int]] = []
    for m in tables.scan_re.finditer(data):
        s, e = m.span(1)
        if s == e:
            break  # end of data
        c = data[s]
        if c == _SLASH:  # comment
            chunk = translate(data[s:e], _BLANK)
            out[s:e] = chunk
            masked[s:e] = chunk
        elif c == 35:  # directive
            if s == 0 or data[s - 1] == 10 or _at_line_start(data, s):
                chunk = data[s:e]
                if b"/*" in chunk or b"//" in chunk:
                    _directive_comments(chunk, out, s)
                masked[s:e] = translate(chunk, _BLANK)
            else:  # a stray '#': the rest of the line is code after all
                _scan_nodir(tables, data, out, masked, cands, s + 1, e)
        else:  # a macro name or a built-in word
            tok = data[s:e]
            cands.append((s, e, kinds.get(tok) or _classify(tables, tok)))

    mview = bytes(masked)
    if b"=," in mview:
        _operator_args(out, masked, mview)
    if tables.iterator_re is not None:
        seen: set[int] = set()
        iter_re = tables.iterator_re
        for lit, rx in tables.iterator_anchors:
            if lit not in mview:
                continue
            for m in rx.finditer(mview):
                s, e = m.span()
                while s and mview[s - 1] in _IDCHARS:
                    s -= 1
                e = _ID_TAIL.match(mview, e).end()
                if s in seen or mview[s] in _DIGITS:
                    continue
                seen.add(s)
                if iter_re.fullmatch(mview, s, e) and mview[s:e] not in kinds and not (
                        tables.closer_re is not None and tables.closer_re.fullmatch(mview, s, e)):
                    cands.append((s, e, _ITER))
        if tables.iterator_any is not None:
            for m in tables.iterator_any.finditer(mview):
                if m.start() not in seen and mview[m.start()] not in _DIGITS \
                        and m.group() not in kinds:
                    seen.add(m.start())
                    cands.append((m.start(), m.end(), _ITER))
    if not cands:
        return bytes(out)
    cands.sort()
    done = 0
    for s, e, kind in cands:
        if s < done:
            continue
        done = max(done, _HANDLERS[kind](data, out, masked, s, e))
    return bytes(out)


_COND_KW = re.compile(rb"\#[ \t\f\v]*([A-Za-z_]\w*)")
_OPENERS = frozenset((b"if", b"ifdef", b"ifndef"))
_MIDDLES = frozenset((b"elif", b"else", b"elifdef", b"elifndef"))


def flatten_conditionals(data: bytes) -> bytes:
    """Keep one branch of each #if group, blank the rest and the conditional directives.

    The kept branch is the first one, except that a branch opened by a literal `#if 0` (or
    `#elif 0`) is skipped in favour of the next one.  Length and newline offsets unchanged.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("flatten_conditionals() takes bytes")
    data = bytes(data)
    if b"#" not in data:
        return data
    out = bytearray(data)
    stack: list[list[bool]] = []  # [parent_active, a branch was taken, current branch kept]
    active = True
    cur = 0
    translate = bytes.translate
    for lm in _LEX.finditer(data):
        s, e = lm.span()
        if data[s] != 35 or not _at_line_start(data, s):
            continue
        ds = s
        m = _COND_KW.match(data, ds, e)
        kw = m.group(1) if m else b""
        if kw in _OPENERS:
            if not active:
                out[cur:s] = translate(data[cur:s], _BLANK)
            cur = e
            out[s:e] = translate(data[s:e], _BLANK)
            take = not (kw == b"if" and _is_zero(data[ds:e], b"if"))
            stack.append([active, take, take])
            active = active and take
        elif kw in _MIDDLES or kw == b"endif":
            if not active:
                out[cur:s] = translate(data[cur:s], _BLANK)
            cur = e
            out[s:e] = translate(data[s:e], _BLANK)
            if not stack:
                continue
            top = stack[-1]
            if kw == b"endif":
                stack.pop()
                active = top[0]
            else:
                take = not top[1] and not (kw == b"elif" and _is_zero(data[ds:e], b"elif"))
                if take:
                    top[1] = True
                top[2] = take
                active = top[0] and take
    if not active and cur < len(data):
        out[cur:] = translate(data[cur:], _BLANK)
    return bytes(out)


def _is_zero(directive: bytes, kw: bytes) -> bool:
    """Is this directive `#if 0` / `#elif 0` (comments ignored)?"""
    body = _COMMENT_IN_DIR.sub(lambda m: b" " if m.group()[:1] == b"/" else m.group(), directive)
    parts = body.replace(b"#", b" ", 1).split()
    return len(parts) == 2 and parts[0] == kw and parts[1].strip(b"0") == b""
