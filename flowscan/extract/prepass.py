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

import re
from flowscan.extract.lexer import ASM, ASM_TOK, BLANK, CLOSER, COMMENT_IN_DIR, FUNC, IDCHARS, IDENT, ID_TAIL, ITER, KEYWORD, MAX_ARGS, MAX_BACK, NUMBER, OBJ, OFFSETOF, OPEN_PAREN, PAREN_TOK, PASTE, RANGE, SLASH, STATIC, SYS, TARGS, TYPEKW, TYPEKW_END, WS, at_line_start
from flowscan.extract.macros import MacroTables, macro_tables



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
# Helpers (all positions are in the same coordinates for data, out and masked)
# ---------------------------------------------------------------------------------------------
def _blank(buf: bytearray, s: int, e: int) -> None:
    buf[s:e] = bytes(buf[s:e]).translate(BLANK)


def _close_paren(masked: bytearray, open_pos: int, commas: list[int] | None = None) -> int:
    """Index of the ')' matching masked[open_pos] == '(' (comments are blank in `masked`; string
    and char literals are skipped), or -1.  Gives up at ';', '{', '}' or after MAX_ARGS bytes.
    Top-level commas are appended to `commas` when given."""
    depth = 0
    for m in PAREN_TOK.finditer(masked, open_pos, open_pos + MAX_ARGS):
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
    while i >= 0 and buf[i] in WS:
        i -= 1
    return i


def _next_nonspace(buf: bytearray, i: int) -> int:
    n = len(buf)
    while i < n and buf[i] in WS:
        i += 1
    return i


def _word_ending_at(buf: bytearray, j: int) -> bytes:
    """The identifier whose last byte is buf[j] (b'' if buf[j] is not an identifier byte)."""
    k = j
    while k >= 0 and buf[k] in IDCHARS:
        k -= 1
    return bytes(buf[k + 1:j + 1])


def _open_paren_before(buf: bytearray, close: int) -> int:
    """Index of the '(' matching the ')' at `close`, searching backwards a bounded distance."""
    depth = 0
    for i in range(close, max(-1, close - MAX_BACK), -1):
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
    for k in range(i - 1, max(-1, i - MAX_BACK), -1):
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
    if c in IDCHARS:
        return _word_ending_at(masked, j) in _STMT_KEYWORDS
    return False


def _loop_body_follows(masked: bytearray, i: int) -> bool:
    """After an iterator's ')', does a loop body follow (rather than ';', ',', an operator...)?"""
    j = _next_nonspace(masked, i)
    if j >= len(masked):
        return False
    c = masked[j]
    if c == 123 or c == 40 or c in IDCHARS or c == 42:  # { ( identifier/keyword *p = ...
        return True
    if c in (43, 45):  # ++x / --x
        return j + 1 < len(masked) and masked[j + 1] == c
    return False


def _is_call_paren(masked: bytearray, op: int) -> bool:
    """Is the '(' at op the argument list of a macro/function call (not a declaration, a cast,
    sizeof, a control statement or a function definition's parameter list)?"""
    j = _prev_nonspace(masked, op)
    if j < 0 or masked[j] not in IDCHARS:
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
    if c in IDCHARS:
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
    m = OPEN_PAREN.match(masked, e)
    if not m:
        return
    op = m.end() - 1
    commas: list[int] = []
    cp = _close_paren(masked, op, commas)
    if cp < 0 or len(commas) + 1 != 2 * nargs + 1:
        return
    name_end = commas[0] if commas else cp
    nm = IDENT.search(masked, op + 1, name_end)
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
    for cm in COMMENT_IN_DIR.finditer(chunk):
        if chunk[cm.start()] == SLASH:
            out[s + cm.start():s + cm.end()] = cm.group().translate(BLANK)




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
        return NUMBER
    if tables.syscall_re is not None and tables.syscall_re.fullmatch(tok):
        return SYS
    if tables.closer_re is not None and tables.closer_re.fullmatch(tok):
        return CLOSER
    return ITER


def _scan_nodir(tables: MacroTables, data: bytes, out: bytearray, masked: bytearray,
                cands: list, pos: int, endpos: int) -> None:
    """prepass()'s main loop over data[pos:endpos], where a '#' starts no directive."""
    for m in tables.scan_nodir_re.finditer(data, pos, endpos):
        s, e = m.span(1)
        if s == e:
            break
        c = data[s]
        if c == SLASH:
            chunk = data[s:e].translate(BLANK)
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


def _parens(masked: bytearray, e: int) -> tuple[int, int] | None:
    """(open, close) of the parenthesised list that follows position `e` (after blanks), or None."""
    m = OPEN_PAREN.match(masked, e)
    if not m:
        return None
    cp = _close_paren(masked, m.end() - 1)
    return None if cp < 0 else (m.end() - 1, cp)


def _do_func(data, out, masked, s, e):
    """`NAME(...)` blanked whole, through its closing parenthesis."""
    found = _parens(masked, e)
    if found is None:
        return 0
    cp = found[1]
    _blank(out, s, cp + 1)
    _blank(masked, s, cp + 1)
    return cp + 1


def _do_iter(data, out, masked, s, e):
    if e - s < 5:
        return 0
    m = OPEN_PAREN.match(masked, e)
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
    m = OPEN_PAREN.match(masked, e)
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
    if j >= 0 and masked[j] in IDCHARS and _word_ending_at(masked, j) in (b"const", b"volatile"):
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
    m = TYPEKW_END.match(masked, e)
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
    if s and masked[s - 1] in IDCHARS and _word_ending_at(masked, s - 1) != b"__builtin_":
        return 0
    m = OPEN_PAREN.match(masked, e)
    if not m:
        return 0
    commas: list[int] = []
    cp = _close_paren(masked, m.end() - 1, commas)
    if cp < 0 or len(commas) != 1:
        return 0
    a, b = commas[0] + 1, cp
    member = bytes(masked[a:b])
    core = member.strip()
    if not core or b"\n" in core or IDENT.fullmatch(core):
        return 0
    off = a + member.index(core[:1])
    new = bytes(ch if ch in IDCHARS else 95 for ch in core)
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
    if c in IDCHARS:
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
    if s and masked[s - 1] in IDCHARS:
        return 0
    if _asm_label(masked, s):
        # `register int x asm("r0") = 0;`, `int f(void) asm("g");`: blank the label.
        return _do_func(data, out, masked, s, e)
    i = _next_nonspace(masked, e)
    goto = False
    while True:
        m = IDENT.match(masked, i)
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
    for tm in ASM_TOK.finditer(masked, i + 1, cp):
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
        elif c in (34, 39, 44) or c in WS:  # literals and commas are fine
            continue
        elif section == 0:
            dirty_template = True
        elif not (goto and section == 4 and c in IDCHARS):
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
    masked[a:b] = new.translate(BLANK)


def _do_closer(data, out, masked, s, e):
    """`} while_each_thread(g, t);` -> `} while (g, t);` (the end of a do_each_* loop)."""
    if e - s < 5:
        return 0
    j = _prev_nonspace(masked, s)
    if j < 0 or masked[j] != 125:  # }
        return 0
    found = _parens(masked, e)
    if found is None:
        return 0
    op, cp = found
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
    name = IDENT.match(masked, _next_nonspace(masked, e))
    m = OPEN_PAREN.match(masked, name.end()) if name else None
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
    if b"_" not in masked[s:e] or (s and masked[s - 1] in IDCHARS) or masked[s + 1:s + 2] in (
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
    found = _parens(masked, e)
    if found is None:
        return 0
    op, cp = found
    arg = bytes(masked[op + 1:cp]).strip()
    if not IDENT.fullmatch(arg) or b"\n" in masked[s:cp]:
        return 0
    new = macro_tables().replacements.get(bytes(masked[s:e]), b"") + arg
    if len(new) > cp + 1 - s:
        return 0
    new += b" " * (cp + 1 - s - len(new))
    out[s:cp + 1] = new
    masked[s:cp + 1] = new
    return cp + 1


_HANDLERS = {OBJ: _do_obj, FUNC: _do_func, ITER: _do_iter, SYS: _do_sys, TARGS: _do_targs,
             TYPEKW: _do_typekw, RANGE: _do_range, OFFSETOF: _do_offsetof, ASM: _do_asm,
             CLOSER: _do_closer, STATIC: _do_static, NUMBER: _do_number,
             KEYWORD: _do_keyword, PASTE: _do_paste}


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
        if c == SLASH:  # comment
            chunk = translate(data[s:e], BLANK)
            out[s:e] = chunk
            masked[s:e] = chunk
        elif c == 35:  # directive
            if s == 0 or data[s - 1] == 10 or at_line_start(data, s):
                chunk = data[s:e]
                if b"/*" in chunk or b"//" in chunk:
                    _directive_comments(chunk, out, s)
                masked[s:e] = translate(chunk, BLANK)
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
                while s and mview[s - 1] in IDCHARS:
                    s -= 1
                e = ID_TAIL.match(mview, e).end()
                if s in seen or mview[s] in _DIGITS:
                    continue
                seen.add(s)
                if iter_re.fullmatch(mview, s, e) and mview[s:e] not in kinds and not (
                        tables.closer_re is not None and tables.closer_re.fullmatch(mview, s, e)):
                    cands.append((s, e, ITER))
        if tables.iterator_any is not None:
            for m in tables.iterator_any.finditer(mview):
                if m.start() not in seen and mview[m.start()] not in _DIGITS \
                        and m.group() not in kinds:
                    seen.add(m.start())
                    cands.append((m.start(), m.end(), ITER))
    if not cands:
        return bytes(out)
    cands.sort()
    done = 0
    for s, e, kind in cands:
        if s < done:
            continue
        done = max(done, _HANDLERS[kind](data, out, masked, s, e))
    return bytes(out)

