"""The C lexer every byte-preserving pass shares: literals, comments, directive lines, and the kinds of rewrite candidates."""

from __future__ import annotations

import hashlib
import re

# Translation table: every byte becomes a space except "\n" and "\r" (line structure is kept).
BLANK = bytes(c if c in (10, 13) else 32 for c in range(256))

# ---------------------------------------------------------------------------------------------
# Lexical scanner (strings, chars, comments, directive lines)
# ---------------------------------------------------------------------------------------------
_ESC = rb"\\(?:\r\n|[\s\S])?"
STR = rb'"(?:[^"\\\n]++|' + _ESC + rb')*+"?'
CHR = rb"'(?:[^'\\\n]++|" + _ESC + rb")*+'?"
BLOCK = rb"/\*(?:[^*]++|\*(?!/))*+(?:\*/)?"
LINE = rb"//(?:[^\n\\]++|" + _ESC + rb")*+"
# A directive body runs to the first newline that is not escaped and not inside a block comment.
_DIR_BODY = (rb"(?:[^\n\\/\"']++|" + _ESC + rb"|" + BLOCK + rb"|" + LINE + rb"|" + STR
             + rb"|" + CHR + rb"|/)*+")
# Lexical tokens: a directive ('#' to the end of its logical line; the caller checks that the
# '#' starts its line), a comment, a string or a char literal.  A match is never empty.
DIRECTIVE = rb"\#" + _DIR_BODY
LEX = re.compile(DIRECTIVE + rb"|" + BLOCK + rb"|" + LINE + rb"|" + STR + rb"|" + CHR)
COMMENT_IN_DIR = re.compile(BLOCK + rb"|" + LINE + rb"|" + STR + rb"|" + CHR)

SLASH = 47

IDCHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
WS = b" \t\r\n\f\v"
ID_TAIL = re.compile(rb"[\w$]*")
IDENT = re.compile(rb"[A-Za-z_$][\w$]*")
OPEN_PAREN = re.compile(rb"[ \t\r\n\f\v]*\(")
# Tokens for bracket matching in `masked` (where string and char literals are still present).
PAREN_TOK = re.compile(rb"[(),;{}:]|" + STR + rb"|" + CHR)
ASM_TOK = re.compile(STR + rb"|" + CHR + rb"|[A-Za-z_$][\w$]*|[^ \t\r\n\f\v]")
MAX_ARGS = 8192  # bytes searched for a closing parenthesis
MAX_BACK = 2048  # bytes searched backwards for an opening parenthesis

# Candidate kinds.
(OBJ, FUNC, ITER, SYS, TARGS, TYPEKW, RANGE, OFFSETOF, ASM, CLOSER, STATIC,
 NUMBER, KEYWORD, PASTE) = range(1, 15)  # all truthy

# Words handled by built-in rules for C-grammar gaps (not macro data), each with a regex tail
# that must follow for the word to be a candidate at all.
_C_WORD = rb"[A-Za-z_$][\w$]*+"
_TYPEKW_TAIL = rb"(?=[ \t\r\n]++" + _C_WORD + rb"(?:[ \t\r\n]*+\*)*+[ \t\r\n]*+[,)])"
BUILTIN_WORDS: dict[bytes, tuple[int, bytes]] = {
    b"struct": (TYPEKW, _TYPEKW_TAIL), b"union": (TYPEKW, _TYPEKW_TAIL),
    b"enum": (TYPEKW, _TYPEKW_TAIL),
    b"offsetof": (OFFSETOF, rb"(?![\w$])"), b"__builtin_offsetof": (OFFSETOF, rb"(?![\w$])"),
    b"asm": (ASM, rb"(?![\w$])"), b"__asm__": (ASM, rb"(?![\w$])"), b"__asm": (ASM, rb"(?![\w$])"),
    # `case A ... B:` (only when a `...` follows before the end of the label)
    b"case": (RANGE, rb"(?![\w$])(?=(?:[^;:{}.]++|\.(?!\.\.))*+\.\.\.)"),
    # `static DECLARE_WORK(w, fn);` (only before an upper-case macro call)
    b"static": (STATIC, rb"(?![\w$])(?=[ \t]++[A-Z][A-Z0-9_]*+[ \t]*+\()"),
}
TYPEKW_END = re.compile(_TYPEKW_TAIL[3:-1])


def at_line_start(data: bytes, s: int) -> bool:
    """Is data[s] the first non-blank byte of its line?"""
    return not data[data.rfind(b"\n", 0, s) + 1:s].strip()



def digest(text: bytes) -> str:
    """A function's text without whitespace runs (comments blanked beforehand): equal digests mean the
    function only moved, so drift can leave line shifts out."""
    # (split() on bytes cuts at the ASCII whitespace rb"\s" matches, and is 3x faster than re.sub)
    return hashlib.blake2b(b" ".join(text.split()), digest_size=8).hexdigest()
