"""Macro tables as data: queries/c/macros.toml plus the files FLOWSCAN_MACROS names, compiled once per process."""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from flowscan.errors import FlowscanError
from flowscan.extract.facts import EXTRACTOR_VERSION
from flowscan.extract.lexer import BLOCK, BUILTIN_WORDS, CHR, DIRECTIVE, FUNC, IDENT, KEYWORD, LINE, OBJ, PASTE, STR, TARGS


ENV_VAR = "FLOWSCAN_MACROS"



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
    kinds: dict[bytes, int] = {w: k for w, (k, _) in BUILTIN_WORDS.items()}
    for kind, names in ((TARGS, type_args), (PASTE, name_macros), (KEYWORD, keyword_macros),
                        (OBJ, annotations), (FUNC, with_args)):
        for n in names:
            if IDENT.fullmatch(n.encode()):
                kinds[n.encode()] = kind  # later tables win: annotations beat type-arg macros
    end = r"(?![\w$])"
    tails: dict[str, list[str]] = {}
    for w, k in kinds.items():
        builtin = BUILTIN_WORDS.get(w)
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
            + STR.decode("latin-1") + "|" + CHR.decode("latin-1"))
    # A number running into '_' (`52_BIT`, `1_1`: halves of a ## paste) is a token too.
    names_rx = "(?:" + names_rx + r"|[0-9][\w$.]*+)"
    lexed = b"|".join((BLOCK, LINE)).decode("latin-1")
    scan_re = re.compile(("(?:" + code + ")*+(" + DIRECTIVE.decode("latin-1") + "|" + lexed
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
def _load(default_path: str, extra: str, _stamp: tuple = ()) -> tuple[MacroTables, str]:
    """The merged tables, and a digest of the bytes they were read from (part of every cache key: facts
    made with other tables are other facts)."""
    paths = [default_path] + [p for p in extra.split(os.pathsep) if p.strip()]
    lists: list[list[str]] = [[] for _ in _SECTIONS]
    maps: dict[str, dict[str, str]] = {"keyword_macros": {}, "name_macros": {}}
    digest = hashlib.sha256()
    for i, path in enumerate(paths):
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            if i == 0:
                raise
            raise FileNotFoundError(f"{ENV_VAR}: macro table {path!r} not found") from None
        digest.update(b"%d\0" % len(raw) + raw)
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"{path}: invalid TOML: {exc}") from None
        except RecursionError:
            raise ValueError(f"{path}: invalid TOML: nested too deeply") from None
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
    try:
        tables = _build(ann, fun, its, closers, targs, sys_, maps["keyword_macros"], maps["name_macros"])
    except re.error as exc:
        raise ValueError(f"{ENV_VAR if extra.strip() else default_path}: bad pattern: {exc}") from None
    return tables, digest.hexdigest()[:16]


_DEFAULT_TOML: list[str] = []


def _loaded() -> tuple[MacroTables, str]:
    if not _DEFAULT_TOML:
        _DEFAULT_TOML.append(str(_default_toml()))
    extra = os.environ.get(ENV_VAR, "")
    return _load(_DEFAULT_TOML[0], extra, _stamp(extra) if extra else ())


def _stamp(extra: str) -> tuple:
    """When the named files last changed: an edited table is read again (and is a new cache key)."""
    out = []
    for path in extra.split(os.pathsep):
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def macro_tables() -> MacroTables:
    """The merged macro tables (cached; the cache key includes $FLOWSCAN_MACROS)."""
    return _loaded()[0]


@lru_cache(maxsize=1)
def _bundled_digest(path: str) -> str:
    """_load's digest of the bundled table alone, without building its scanner (0.1 s of every warm
    question, which parses no C)."""
    raw = Path(path).read_bytes()
    return hashlib.sha256(b"%d\0" % len(raw) + raw).hexdigest()[:16]


def _digest() -> str:
    if os.environ.get(ENV_VAR, "").strip():
        return _loaded()[1]  # a user's tables: read and checked in full
    if not _DEFAULT_TOML:
        _DEFAULT_TOML.append(str(_default_toml()))
    return _bundled_digest(_DEFAULT_TOML[0])


def facts_version() -> str:
    """The version facts are cached under: the extractor's, and the macro tables it reads through (the
    bundled one and those $FLOWSCAN_MACROS names), so a table added, edited or dropped never serves facts
    made without it."""
    return f"{EXTRACTOR_VERSION}+m{_digest()}"


def check_macro_tables() -> None:
    """Load the tables once up front, so a bad $FLOWSCAN_MACROS file is one clear error before any work
    (in the workers it would make every file fail to parse)."""
    try:
        _digest()  # the bundled table is checked by the tests; a user's is built here
    except (OSError, ValueError) as exc:
        given = bool(os.environ.get(ENV_VAR, "").strip())
        text = str(exc)
        raise FlowscanError(text if text.startswith(ENV_VAR) or not given else f"{ENV_VAR}: {text}") from None
