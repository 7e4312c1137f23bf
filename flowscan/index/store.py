"""The per-ref index: every file's facts of one tree and scope in one SQLite database.

A question on a warm tree must not reload and re-link every file's facts (60k files, 9M rows on Linux):
it opens this database and reads the few rows it needs through B-tree indexes. SQLite comes with
Python, is a single file that is written once and then only read, and its indexes do the lookups the
call graph needs (by name, by member, by type) in microseconds.

Tables mirror the fact dataclasses column for column (``path`` becomes a ``file`` id into ``files``,
tuples are joined with US, 0x1f). Facts are written by the scan's workers into one shard database each and
merged here (``INSERT ... SELECT``, in C). Constants are split on `A|B` (one row per name) by the workers;
derived tables (registrations and their synthetic stores, each file's run of call ids, function names
passed as arguments) are computed once after the merge. The database is
built under a temporary name and moved into place, so a reader sees a whole index or none.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sqlite3
from dataclasses import astuple, fields
from pathlib import Path
from typing import Iterable, Sequence

from flowscan.extract.facts import CallSite, ConstantUse, FieldDecl, FileFacts, FunctionDef, GlobalRef, MacroDef, PointerStore, QomType, TypedefDecl
from flowscan.extract.registrations import Registration, find_registrations, synthetic_stores
from flowscan.extract.apis import Registry
from flowscan.extract.macros import facts_version
from flowscan.index.integrity import expected_objects

INDEX_VERSION = "ix-4"
SEP = "\x1f"

_TABLES = {"functions": FunctionDef, "calls": CallSite, "stores": PointerStore, "types": QomType,
           "constants": ConstantUse, "globals": GlobalRef, "macros": MacroDef, "members": FieldDecl,
           "typedefs": TypedefDecl}
# Extra columns: the last member of field paths (lookups by member), and for constants the key they
# are found under (`A|B` is one row under A and one under B; `first` marks one row per use) and `seq`
# (0: written or tested, 1: passed to a call).
_EXTRA = {"calls": ("last",), "stores": ("last",), "constants": ("key", "first", "seq")}


def _col(name: str) -> str:
    return {"path": "file", "index": "idx", "static": "static_", "local": "local_", "type": "type_",
            "write": "write_"}.get(name, name)


_NAMES = {t: [f.name for f in fields(k)] for t, k in _TABLES.items()}
_COLS = {t: [_col(n) for n in names] + list(_EXTRA.get(t, ())) for t, names in _NAMES.items()}
_PATH_AT = {t: names.index("path") for t, names in _NAMES.items()}
_TUPLE_AT = {t: tuple(i for i, f in enumerate(fields(k)) if str(f.type).startswith("tuple"))
             for t, k in _TABLES.items()}
_FIELD_AT = {"calls": _NAMES["calls"].index("callee"), "stores": _NAMES["stores"].index("field")}
# calls.last is looked up only for calls through a member (kind = 'field'); for the others it would repeat
# the callee (1.9 MB of the 34 MB index of the Linux reboot scopes), so it stays empty there.
_LAST_ONLY_FOR_KIND = {"calls": (_NAMES["calls"].index("kind"), "field")}
_BOOL_AT = {t: tuple(i for i, f in enumerate(fields(k)) if str(f.type) == "bool") for t, k in _TABLES.items()}
# Positions in the JSON rows that write_file reads beyond the generic columns.
_CALL = {n: _NAMES["calls"].index(n) for n in ("caller", "callee", "kind", "line", "args", "constants")}
_CONST = {n: _NAMES["constants"].index(n) for n in ("name", "kind", "target", "function", "line")}

SCHEMA = "".join(
    f"CREATE TABLE IF NOT EXISTS {t}(id INTEGER PRIMARY KEY, {', '.join(cols)});\n" for t, cols in _COLS.items()
) + """
CREATE TABLE IF NOT EXISTS files(id INTEGER PRIMARY KEY, path TEXT UNIQUE, blob TEXT, parse_errors INT,
                                 skipped TEXT);
CREATE TABLE IF NOT EXISTS argrefs(name TEXT, callee TEXT, file INT);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
"""

# A checkout's index is updated in place (flowscan.index.update): it also keeps the rows pruned for want
# of a definition (an edit may add one) and each file's run of row ids in every table (a file's rows
# are written together, so they are one run; an edited file's run is deleted by range).
ROW_TABLES = (*_TABLES, "argrefs")
ID_STEP = 1024  # file ids of an updatable index: room for files added between two (paths in id order)
_ID = {**{t: "id" for t in _TABLES}, "argrefs": "rowid"}
UPDATABLE_SCHEMA = f"""
CREATE TABLE stores_pruned(id INTEGER PRIMARY KEY, {', '.join(_COLS['stores'])});
CREATE INDEX stores_pruned_function ON stores_pruned(function);
CREATE TABLE argrefs_pruned(id INTEGER PRIMARY KEY, name TEXT, callee TEXT, file INT);
CREATE INDEX argrefs_pruned_name ON argrefs_pruned(name);
CREATE TABLE file_rows(file INT, tab TEXT, lo INT, hi INT, PRIMARY KEY (file, tab)) WITHOUT ROWID;
"""

_INDEXES = """
CREATE INDEX functions_name ON functions(name);
CREATE INDEX calls_callee ON calls(callee, kind);
CREATE INDEX calls_last ON calls(last) WHERE kind = 'field';
CREATE INDEX calls_var_type ON calls(var_type) WHERE kind = 'variable';
CREATE INDEX stores_function ON stores(function);
CREATE INDEX stores_in_function ON stores(in_function);
CREATE INDEX stores_last ON stores(last);
CREATE INDEX stores_variable ON stores(variable);
CREATE INDEX stores_var_type ON stores(var_type);
CREATE INDEX members_key ON members(struct, field);
CREATE INDEX macros_name ON macros(name);
CREATE INDEX members_field ON members(field);
CREATE INDEX typedefs_name ON typedefs(name);
CREATE INDEX globals_name ON globals(name);
CREATE INDEX globals_function ON globals(function);
CREATE TABLE file_calls(file INTEGER PRIMARY KEY, lo INT, hi INT);
INSERT INTO file_calls SELECT file, min(id), max(id) FROM calls GROUP BY file;
CREATE TABLE registrations(id INTEGER PRIMARY KEY, file INT, row TEXT);
CREATE TABLE reg_callbacks(fn TEXT, reg INT, chain TEXT);
CREATE INDEX reg_callbacks_fn ON reg_callbacks(fn);
CREATE INDEX reg_callbacks_chain ON reg_callbacks(chain);
CREATE INDEX constants_key ON constants(key);
CREATE INDEX constants_function ON constants(function) WHERE first = 1;
"""


# ------------------------------------------------------------------------------------------ writing

def connect_for_writing(path: Path | str) -> sqlite3.Connection:
    """A connection tuned for a database nobody reads until it is complete (it is rebuilt if torn)."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # (before any table) so that finish() can return free pages
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA temp_store=MEMORY")
    db.execute("PRAGMA cache_size=-65536")
    db.executescript(SCHEMA)
    db.execute("BEGIN")
    return db


def _insert_sql(table: str) -> str:
    cols = _COLS[table]
    return f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"


_INSERT = {t: _insert_sql(t) for t in _TABLES}


def _rows(table: str, rows: Iterable[list], file_id: int) -> list[tuple]:
    """Positional JSON rows (FileFacts.to_json) -> table rows."""
    at = _PATH_AT[table]
    tuples = _TUPLE_AT[table]
    field_at = _FIELD_AT.get(table)
    kind_at, kind = _LAST_ONLY_FOR_KIND.get(table, (None, ""))
    out = []
    for row in rows:
        row = list(row)
        row[at] = file_id
        for i in tuples:
            row[i] = SEP.join(row[i])
        if field_at is not None:
            row.append(row[field_at].rsplit(".", 1)[-1] if kind_at is None or row[kind_at] == kind else "")
        out.append(tuple(row))
    return out


def write_file(db: sqlite3.Connection, file_id: int, path: str, data: dict | None, blob: str,
               skipped: str = "") -> None:
    """One file's facts (FileFacts.to_json() form) into an open writing connection."""
    if data is None:
        db.execute("INSERT INTO files VALUES (?, ?, ?, 0, ?)", (file_id, path, blob, skipped))
        return
    db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)",
               (file_id, path, blob, data.get("parse_errors", 0), data.get("skipped", "")))
    for table in _TABLES:
        rows = data.get(table)
        if rows and table != "constants":
            db.executemany(_INSERT[table], _rows(table, rows, file_id))
    refs = set()
    c, k = _CALL, _CONST
    consts = [(row[k["name"]], row[k["kind"]], row[k["target"]], row[k["function"]], file_id, row[k["line"]], 0)
              for row in data.get("constants", ())]
    for row in data.get("calls", ()):
        if row[c["kind"]] == "direct":
            for arg in row[c["args"]]:
                arg = arg.lstrip("&").strip()
                if arg.isidentifier():
                    refs.add((arg, row[c["callee"]]))
        for name in row[c["constants"]]:
            consts.append((name, "call-arg", row[c["callee"]], row[c["caller"]], file_id, row[c["line"]], 1))
    if consts:
        db.executemany(_INSERT["constants"], [
            (name, kind, target, fn, fid, line, " ".join(part.split()), int(i == 0), seq)
            for name, kind, target, fn, fid, line, seq in consts for i, part in enumerate(name.split("|"))])
    if refs:
        db.executemany("INSERT INTO argrefs VALUES (?, ?, ?)", [(a, c, file_id) for a, c in refs])


def merge(db: sqlite3.Connection, shard: Path) -> None:
    """Append a worker's shard (its files never overlap another shard's)."""
    db.execute("COMMIT")
    db.execute("ATTACH DATABASE ? AS shard", (str(shard),))
    db.execute("BEGIN")
    for table, cols in [*_COLS.items(), ("files", ["id", "path", "blob", "parse_errors", "skipped"]),
                        ("argrefs", ["name", "callee", "file"])]:
        names = ", ".join(cols)
        db.execute(f"INSERT INTO main.{table}({names}) SELECT {names} FROM shard.{table} ORDER BY rowid")
    db.execute("COMMIT")
    db.execute("DETACH DATABASE shard")
    db.execute("BEGIN")


def finish(db: sqlite3.Connection, registry: Registry, meta: dict[str, str], prune: bool = True,
           updatable: bool = False) -> None:
    """Indexes and derived tables, once all files are in. `prune`: drop stores of names no file defines
    (not on a partial index, where the definition may be in a file not read yet). `updatable` (a
    checkout's index, see flowscan.index.update): the pruned rows are kept aside, where a later
    definition can bring them back, and each file's run of row ids is recorded."""
    db.executescript(_INDEXES)  # (commits what was pending)
    if updatable:
        db.executescript(UPDATABLE_SCHEMA)
    db.execute("BEGIN")
    if updatable:  # (before the synthetic stores: those are no file's run, they are derived again)
        for table in ROW_TABLES:
            db.execute(f"INSERT INTO file_rows SELECT file, '{table}', min({_ID[table]}), max({_ID[table]}) "
                       f"FROM {table} GROUP BY file")
    derive_registrations(db, registry)
    # A store of a name that no scanned file defines is a plain value, not a call target.
    if updatable:
        keep_aside(db, "function NOT IN (SELECT name FROM functions)" if prune else "0",
                   "name NOT IN (SELECT name FROM functions)")
    if prune:
        db.execute("DELETE FROM stores WHERE function NOT IN (SELECT name FROM functions)")
    db.execute("DELETE FROM argrefs WHERE name NOT IN (SELECT name FROM functions)")
    db.execute("CREATE INDEX argrefs_name2 ON argrefs(name, callee)")
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", sorted(meta.items()))
    db.execute("COMMIT")
    compact(db)


def compact(db: sqlite3.Connection) -> None:
    """Planner statistics, and the free pages given back."""
    db.execute("PRAGMA analysis_limit=1000")  # the planner needs the shape of the indexes, not exact counts
    db.execute("ANALYZE")
    # The deletes above and the index builds leave 8-10% of the pages free (2.6 MB of the Linux reboot
    # scopes' 32 MB): give them back (pages moved down from the end, no copy of the database).
    db.executescript("PRAGMA incremental_vacuum;")  # (executescript steps it to the end)


def derive_registrations(db: sqlite3.Connection, registry: Registry, first_store_id: int | None = None) -> None:
    """Registrations (from the calls of registration APIs and notifier blocks), their callbacks, and the
    synthetic stores they make (kind 'registration', ids from `first_store_id`, else after the last)."""
    ix = Index(db)
    api_names = sorted({*registry.fields, *registry.notifiers})
    calls = ix._calls(f"kind = 'direct' AND callee IN ({','.join('?' * len(api_names))})", api_names) \
        if api_names else []
    blocks = ix._stores("kind = 'initializer' AND field = 'notifier_call' AND variable != ''", ())
    regs = find_registrations(calls, blocks, registry)
    file_of = {p: i for i, p in db.execute("SELECT id, path FROM files")} if regs else {}
    for r in regs:
        cur = db.execute("INSERT INTO registrations(file, row) VALUES (?, ?)",
                         (file_of[r.path], json.dumps(_reg_row(r))))
        for _phase, _field, fn in r.callbacks:
            db.execute("INSERT INTO reg_callbacks VALUES (?, ?, ?)", (fn, cur.lastrowid, r.chain))
    synth = [_rows("stores", [astuple(s)], file_of[s.path])[0] for s in synthetic_stores(regs)]
    if synth and first_store_id is not None:
        db.executemany(f"INSERT INTO stores(id, {', '.join(_COLS['stores'])}) "
                       f"VALUES ({', '.join('?' * (1 + len(_COLS['stores'])))})",
                       [(first_store_id + i, *row) for i, row in enumerate(synth)])
    elif synth:
        db.executemany(_INSERT["stores"], synth)


def keep_aside(db: sqlite3.Connection, stores_where: str, argrefs_where: str, params: Sequence = ()) -> None:
    """Move the scanned stores and argrefs matching these conditions to the side tables (row ids kept)."""
    db.execute(f"INSERT INTO stores_pruned SELECT * FROM stores WHERE kind != 'registration' AND ({stores_where})",
               params)
    db.execute(f"INSERT INTO argrefs_pruned SELECT rowid, * FROM argrefs WHERE {argrefs_where}", params)


def _reg_row(r: Registration) -> list:
    return [r.api, r.kind, r.path, r.line, r.function, r.owner, r.callbacks, r.parent_storage, r.parent_base,
            r.parent_path, r.parent_fields, r.chain, r.conditions]


def _reg_from_row(row: list) -> Registration:
    (api, kind, path, line, function, owner, callbacks, storage, base, ppath, pfields, chain, conds) = row
    return Registration(api=api, kind=kind, path=path, line=line, function=function, owner=owner,
                        callbacks=tuple(tuple(c) for c in callbacks), parent_storage=storage, parent_base=base,
                        parent_path=ppath, parent_fields=tuple(tuple(p) for p in pfields), chain=chain,
                        conditions=tuple(conds))


def registry_digest(registry: Registry) -> str:
    return hashlib.sha256(repr(registry).encode()).hexdigest()[:16]


def build_in_memory(facts: Sequence[FileFacts], registry: Registry, prune: bool = True) -> "Index":
    """An index of facts already in memory (tests, small trees)."""
    db = connect_for_writing(":memory:")
    for i, ff in enumerate(sorted(facts, key=lambda f: f.path)):
        write_file(db, i + 1, ff.path, None if ff.skipped else ff.to_json(), ff.blob, ff.skipped)
    finish(db, registry, {"files": str(len(facts))}, prune=prune)
    return Index(db)


# ------------------------------------------------------------------------------------------ reading

def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split(SEP)) if text else ()


class Index:
    """Read access to an index: each lookup one indexed SELECT, memoised; each fact decoded once (the
    same row always gives the same object, so callers may key memos by identity)."""

    def __init__(self, db: sqlite3.Connection, partial: bool = False):
        self.db = db
        # A partial index (some files only, see flowscan.cold) records every key a lookup asks for, as
        # (kind, value): the question learns from them which more files can matter to it.
        self._asked: set[tuple[str, str]] | None = set() if partial else None
        self._paths: dict[int, str] = {}
        self._objects: dict[tuple[str, int], object] = {}
        self._memo: dict[tuple, list] = {}

    @classmethod
    def open(cls, path: Path, partial: bool = False) -> "Index":
        """`partial`: the index holds the files one question needs, not a whole tree or scope; its
        lookups are recorded (lookups())."""
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA query_only=ON")
        db.execute("PRAGMA cache_size=-32768")
        return cls(db, partial)

    @property
    def partial(self) -> bool:
        """Built from the files a question needs, not all: a name found nowhere may be in a file not read."""
        return self._asked is not None

    def lookups(self) -> frozenset[tuple[str, str]]:
        """Every (kind, value) a lookup asked for so far (partial indexes; empty otherwise)."""
        return frozenset(self._asked or ())

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta"))

    def path_of(self, file_id: int) -> str:
        path = self._paths.get(file_id)
        if path is None:
            path = self._paths[file_id] = self.db.execute("SELECT path FROM files WHERE id = ?",
                                                          (file_id,)).fetchone()[0]
        return path

    def _decode(self, table: str, klass, where: str, params: Sequence, order: str = "file, id") -> list:
        cols = _COLS[table]
        n = len(_NAMES[table])
        at = _PATH_AT[table]
        tuples = _TUPLE_AT[table]
        bools = _BOOL_AT[table]
        out = []
        objects = self._objects
        for row in self.db.execute(f"SELECT id, {', '.join(cols[:n])} FROM {table} WHERE {where} "
                                   f"ORDER BY {order}", params):
            key = (table, row[0])
            obj = objects.get(key)
            if obj is None:
                vals = list(row[1:])
                vals[at] = self.path_of(vals[at])
                for i in tuples:
                    vals[i] = _split(vals[i])
                for i in bools:
                    vals[i] = bool(vals[i])
                obj = klass(*vals)
                objects[key] = obj
            out.append(obj)
        return out

    def _calls(self, where: str, params: Sequence) -> list[CallSite]:
        return self._decode("calls", CallSite, where, params)

    def _stores(self, where: str, params: Sequence) -> list[PointerStore]:
        return self._decode("stores", PointerStore, where, params)

    def ask(self, kind: str, value: str) -> None:
        if self._asked is not None:
            self._asked.add((kind, value))

    def _cached(self, key: tuple, make) -> list:
        hit = self._memo.get(key)
        if hit is None:
            hit = make()
            self._memo[key] = hit
        return hit

    # -- the lookups the graph needs
    def defs(self, name: str, ask: bool = True) -> list[FunctionDef]:
        if ask:
            self.ask("def", name)
        return self._cached(("defs", name), lambda: self._decode("functions", FunctionDef, "name = ?", (name,)))

    def def_names(self) -> list[str]:
        self.ask("all", "functions")
        return self._cached(("names",), lambda: [n for (n,) in self.db.execute(
            "SELECT DISTINCT name FROM functions ORDER BY name")])

    def calls_in(self, caller: str, path: str, first: int, last: int) -> list[CallSite]:
        """The calls `caller` in `path` makes between two lines (a file's calls are one run of ids)."""
        return self._cached(("in", caller, path, first, last), lambda: self._calls(
            "id BETWEEN (SELECT lo FROM file_calls WHERE file = (SELECT id FROM files WHERE path = ?)) "
            "AND (SELECT hi FROM file_calls WHERE file = (SELECT id FROM files WHERE path = ?)) "
            "AND caller = ? AND line BETWEEN ? AND ?", (path, path, caller, first, last)))

    def calls_to(self, callee: str, kind: str, ask: bool = True) -> list[CallSite]:
        """`ask=False`: the caller knows which files can matter (a word the sites must spell) and has
        asked for that instead."""
        if ask:
            self.ask("name", callee)
        return self._cached(("to", callee, kind),
                            lambda: self._calls("callee = ? AND kind = ?", (callee, kind)))

    def field_calls(self, last: str) -> list[CallSite]:
        self.ask("member", last)
        return self._cached(("fcall", last), lambda: self._calls("kind = 'field' AND last = ?", (last,)))

    def var_calls_typed(self, var_type: str) -> list[CallSite]:
        self.ask("name", var_type)
        return self._cached(("vtype", var_type),
                            lambda: self._calls("kind = 'variable' AND var_type = ?", (var_type,)))

    def arg_callees(self, name: str) -> list[str]:
        """Functions to which some direct call passes `name` (a function) as an argument."""
        self.ask("name", name)
        return self._cached(("argref", name), lambda: [c for (c,) in self.db.execute(
            "SELECT DISTINCT callee FROM argrefs WHERE name = ?", (name,))])

    def stores_where(self, column: str, value: str) -> list[PointerStore]:
        assert column in ("function", "in_function", "last", "variable", "var_type")
        self.ask({"last": "member", "var_type": "owner"}.get(column, "name"), value)
        return self._cached(("store", column, value), lambda: self._stores(f"{column} = ?", (value,)))

    def member_type(self, struct: str, field: str) -> str:
        self.ask("name", struct)
        return self._cached(("member", struct, field), lambda: [next(iter(self.db.execute(
            "SELECT type_ FROM members WHERE struct = ? AND field = ? ORDER BY file, id LIMIT 1",
            (struct, field))), ("",))[0]])[0]

    def registrations(self, where: str = "1", params: Sequence = ()) -> list[Registration]:
        if where == "1":
            self.ask("all", "registrations")
        def make() -> list[Registration]:
            out = []
            for rid, row in self.db.execute(f"SELECT id, row FROM registrations WHERE {where} ORDER BY id",
                                            params):
                obj = self._objects.get(("registrations", rid))
                if obj is None:
                    obj = self._objects[("registrations", rid)] = _reg_from_row(json.loads(row))
                out.append(obj)
            return out

        return self._cached(("regs", where, *params), make)

    def regs_by_callback(self, fn: str) -> list[Registration]:
        self.ask("name", fn)
        return self.registrations("id IN (SELECT reg FROM reg_callbacks WHERE fn = ?)", (fn,))

    def regs_by_api(self, apis: Sequence[str], ask: bool = True) -> list[Registration]:
        """The registrations by these APIs: each one's call, so a file that spells the API (the notifier
        block it names is looked for in the call's own file)."""
        for api in apis if ask else ():
            self.ask("name", api)
        heads = [json.dumps([api])[:-1] + "," for api in sorted(set(apis))]  # a row starts `["api",`
        if not heads:
            return []
        return self.registrations(" OR ".join(["substr(row, 1, ?) = ?"] * len(heads)),
                                  [x for h in heads for x in (len(h), h)])

    def regs_with_parent(self, apis: Sequence[str]) -> list[Registration]:
        """The registrations by `apis` that keep the parent type's callback (`device_class_set_parent_reset(dc,
        fn, &acc->parent_reset)`); a caller asks for the member they fill (their API spells it)."""
        return self._cached(("regs-parent", *sorted(apis)), lambda: [
            r for r in self.regs_by_api(apis, ask=False) if r.parent_path])

    def regs_in_file(self, path: str) -> list[Registration]:
        return self.registrations("file IN (SELECT id FROM files WHERE path = ?)", (path,))

    def notifier_callbacks(self, chain: str) -> list[tuple[str, Registration]]:
        self.ask("chain", chain)
        out = []
        for reg in self.registrations("id IN (SELECT reg FROM reg_callbacks WHERE chain = ?)", (chain,)):
            if reg.kind == "notifier":
                out.extend((fn, reg) for _phase, _field, fn in reg.callbacks)
        return out

    def qom_rows(self) -> tuple[list[QomType], list[MacroDef]]:
        return (self._decode("types", QomType, "1", ()),
                self._decode("macros", MacroDef, "params = '' AND value LIKE '\"%'", ()))

    def macros_spelling(self, words: Sequence[str]) -> dict[str, set[str]]:
        """word -> the macros whose body spells it as a whole word (a call of the macro can reach it)."""
        out: dict[str, set[str]] = {}
        todo = []
        for w in words:
            self.ask("name", w)
            hit = self._memo.get(("spelled", w))
            if hit is None:
                todo.append(w)
            else:
                out[w] = hit
        for i in range(0, len(todo), 100):
            chunk = todo[i:i + 100]
            found: dict[str, set[str]] = {w: set() for w in chunk}
            word = re.compile(r"(?<![\w$])(" + "|".join(map(re.escape, chunk)) + r")(?![\w$])")
            for name, value in self.db.execute(
                    "SELECT DISTINCT name, value FROM macros WHERE " + " OR ".join(["instr(value, ?) > 0"] * len(chunk)),
                    chunk):
                for m in word.finditer(value):
                    found[m.group(1)].add(name)
            for w, names in found.items():
                self._memo[("spelled", w)] = out[w] = names
        return out

    def macros(self, name: str) -> list[MacroDef]:
        """The #defines of `name` (one per #if branch, per file), in file order."""
        self.ask("macro", name)
        return self._cached(("macro", name), lambda: self._decode("macros", MacroDef, "name = ?", (name,)))

    def constant_uses(self, key: str, column: str = "key") -> list[ConstantUse]:
        self.ask("name", key)
        where = "key = ?" if column == "key" else "function = ? AND first = 1"
        return self._cached(("const", column, key), lambda: self._decode(
            "constants", ConstantUse, where, (key,), order="seq, file, id"))

    def typedefs(self, name: str) -> list[TypedefDecl]:
        """Function-pointer typedefs of that name (one per header that declares it)."""
        self.ask("name", name)
        return self._cached(("typedef", name), lambda: self._decode("typedefs", TypedefDecl, "name = ?", (name,)))

    def member_types(self, field: str) -> list[str]:
        """The declared types of struct members of that name, in any struct."""
        self.ask("name", field)
        return self._cached(("mtypes", field), lambda: [r[0] for r in self.db.execute(
            "SELECT DISTINCT type_ FROM members WHERE field = ? ORDER BY type_", (field,))])

    def global_refs(self, column: str, value: str) -> list[GlobalRef]:
        assert column in ("name", "function")
        self.ask("name", value)
        return self._cached(("glob", column, value),
                            lambda: self._decode("globals", GlobalRef, f"{column} = ?", (value,)))

    def all_facts(self) -> list[FileFacts]:
        """Every file's facts back as FileFacts, in path order (tests and tools; queries never need this)."""
        out = {}
        for _fid, path, blob, errors, skipped in self.db.execute("SELECT * FROM files ORDER BY path"):
            out[path] = FileFacts(path=path, blob=blob, parse_errors=errors, skipped=skipped)
        for table, klass in _TABLES.items():
            for obj in self._decode(table, klass, "seq = 0 AND first = 1" if table == "constants" else "1", ()):
                getattr(out[obj.path], table).append(obj)
        return list(out.values())

    def file_counts(self) -> dict[str, int]:
        files, skipped = self.db.execute(
            "SELECT count(*), sum(skipped != '') FROM files").fetchone()
        return {"files": files, "skipped": skipped or 0}


def layout() -> set[tuple[str, str]]:
    """Every (type, name) of a table or index a complete index holds (a damaged one may lack some)."""
    return expected_objects(SCHEMA, _INDEXES)


def index_key(snapshot: str, registry: str) -> str:
    """Same files (a commit and scopes, or a listing), extractor, registration table and index layout ->
    same index."""
    text = "\n".join([INDEX_VERSION, facts_version(), registry, snapshot])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def indexes_dir(cache_dir: Path) -> Path:
    """The per-ref indexes inside flowscan's cache directory."""
    return Path(cache_dir) / "index"


def index_path(cache_dir: Path, key: str) -> Path:
    return indexes_dir(cache_dir) / f"{key}.sqlite"


def index_info(root: Path) -> dict:
    """Indexes kept in a cache (for `flowscan sources`): how many, how large, what they hold."""
    out = {"path": str(root), "entries": 0, "bytes": 0, "trees": []}
    for path in sorted(Path(root).glob("*.sqlite")) if Path(root).is_dir() else ():
        out["entries"] += 1
        out["bytes"] += path.stat().st_size
        try:
            ix = Index.open(path)
            meta = ix.meta()
            ix.db.close()
            out["trees"].append({"tree": meta.get("tree", "?"), "scopes": meta.get("scopes", ""),
                                 "files": int(meta.get("files", 0)), "bytes": path.stat().st_size})
        except (sqlite3.DatabaseError, ValueError):
            continue
    return out


def lock_of(index: Path) -> Path:
    """The lock a builder of this index holds (beside the cache's other locks, not among the indexes)."""
    return Path(index).parent.parent / "locks" / f"index-{Path(index).stem}.lock"


def use_stamp(index: Path) -> Path:
    """Held shared by every process reading the index; its mtime is the index's last use (for gc)."""
    return Path(index).parent.parent / "locks" / f"index-{Path(index).stem}.use"


_HELD: dict[str, int] = {}


def hold(index: Path) -> None:
    """Mark the index in use by this process until it exits: a shared lock on its use stamp (gc removes
    only indexes whose stamp it can lock alone), and the stamp touched. Waits while gc is removing it, so
    the caller checks that it is still there afterwards."""
    stamp = use_stamp(index)
    key = str(stamp)
    fd = _HELD.get(key)
    if fd is None:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(stamp, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o666)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _HELD[key] = fd
    try:
        os.utime(fd)
    except OSError:
        pass


def remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
