"""Hostile input, built at test time: deep `#if` nesting, odd file names, corrupt caches and indexes, killed
and concurrent runs, outputs that must keep their promises. Every case ends in the right answer or in exit 2
with one line on stderr, never a traceback, and leaves nothing running or half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowscan.extract.conditionals import MAX_DEPTH, MAX_TERMS, ConditionMap
from flowscan.extract.parse import extract_file

try:  # tests/ as a package, or as a plain directory on sys.path
    from tests.helpers import one_line_error, run
except ImportError:  # pragma: no cover
    from helpers import one_line_error, run

ROOT = Path(__file__).resolve().parent.parent


def flowscan(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120,
             input: bytes | None = None) -> subprocess.CompletedProcess:
    """The CLI in its own process, as a user runs it."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "flowscan", *args], cwd=cwd, env=full, capture_output=True,
                          timeout=timeout, input=input)


def one_line(proc: subprocess.CompletedProcess) -> str:
    """Exit 2 with exactly one line on stderr, and no traceback."""
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("flowscan: error: "), err
    return lines[0]


# ------------------------------------------------------------------------------------ nested #if

def nested(depth: int, body: str = "int f(void) { return g(); }") -> bytes:
    return ("".join(f"#if CONFIG_OPT_{i}\n" for i in range(depth)) + body + "\n" + "#endif\n" * depth).encode()


def test_conditions_of_a_deep_nest_are_the_innermost_and_bounded():
    depth = 5000
    cm = ConditionMap(nested(depth))
    conds = cm.at(depth + 1)
    assert len(conds) == MAX_DEPTH + 1
    assert conds[0] == f"... ({depth - MAX_DEPTH} outer levels)"
    assert conds[1:] == tuple(f"CONFIG_OPT_{i}" for i in range(depth - MAX_DEPTH, depth))
    assert cm.at(1) == () and cm.at(2) == ("CONFIG_OPT_0",) and cm.at(depth * 2 + 2) == ()
    # at the limit nothing is summarised
    shallow = ConditionMap(nested(MAX_DEPTH))
    assert shallow.at(MAX_DEPTH + 1) == tuple(f"CONFIG_OPT_{i}" for i in range(MAX_DEPTH))


def test_a_long_elif_chain_names_its_first_branches_and_counts_the_rest():
    n = 1000
    src = "#if A0\nint a0;\n" + "".join(f"#elif A{i}\nint a{i};\n" for i in range(1, n)) + "#else\nint z;\n#endif\n"
    cm = ConditionMap(src.encode())
    last = cm.at(2 * n + 2)  # the #else branch
    assert last == (" && ".join([*(f"!A{i}" for i in range(MAX_TERMS)),
                                 f"... {n - MAX_TERMS} more branches not taken"]),)
    assert cm.at(4) == ("!A0 && A1",)


def test_facts_of_a_deep_nest_and_of_deep_if_statements():
    ff = extract_file(nested(3000), "deep.c")
    (fn,) = ff.functions
    (call,) = ff.calls
    assert (fn.name, fn.line, call.callee, call.line) == ("f", 3001, "g", 3001)
    assert call.conditions[0] == f"... ({3000 - MAX_DEPTH} outer levels)" and len(call.conditions) == MAX_DEPTH + 1
    depth = 400
    src = "void f(int a) {\n" + "".join(f"if (a > {i}) {{ h{i}(a);\n" for i in range(depth)) + "}\n" * depth + "}\n"
    ff = extract_file(src.encode(), "ifs.c")
    calls = {c.callee: c for c in ff.calls}
    assert len(calls) == depth
    assert calls["h0"].ifs == ("a > 0",) and calls["h31"].ifs == tuple(f"a > {i}" for i in range(32))
    deep = calls[f"h{depth - 1}"].ifs
    assert len(deep) == MAX_DEPTH + 1 and deep[-1] == f"a > {depth - 1}" and deep[0].startswith("... (")


def _peak_mb(path: Path, what: str) -> float:
    """Peak memory of extracting one file in a fresh process: `rss` (getrusage) or `python` (tracemalloc,
    the allocations that grew quadratically: deterministic, unlike RSS)."""
    code = ("import resource, sys, tracemalloc; from flowscan.extract.parse import extract_file; "
            "extract_file(b'int f(void) { return g(); }', 'x.c'); tracemalloc.start(); "
            "ff = extract_file(open(sys.argv[1], 'rb').read(), 'x.c'); assert len(ff.calls) == 1; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if sys.argv[2] == 'rss' "
            "else tracemalloc.get_traced_memory()[1] / 2**20)")
    out = subprocess.run([sys.executable, "-c", code, str(path), what], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    return float(out.stdout)


def test_peak_memory_on_nested_if_grows_linearly(tmp_path):
    """20,000 nested lines (270 KB) took 3.2 GB. Now peak RSS stays under 100 MB (measured 28, 37, 54 MB
    at 5k, 10k, 20k levels), and the Python allocations grow with the file (4x), not with its square (16x)."""
    peak = {}
    for depth in (5000, 20000):
        path = tmp_path / f"nest{depth}.c"
        path.write_bytes(nested(depth))
        peak[depth] = _peak_mb(path, "python")
        if depth == 20000:
            assert _peak_mb(path, "rss") < 150
    assert peak[20000] < 6 * peak[5000], peak


# ------------------------------------------------------------------------------------ FLOWSCAN_MACROS

PASTED = """void target(void) { }
static void MYPASTE(poke)(int x) { target(); }
void caller(void) { helper_poke(1); }
"""


def test_macro_tables_are_part_of_the_cache_key(tmp_path, capsys, monkeypatch):
    """A table given once must neither stick to later runs without it nor be ignored on a cache built
    without it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.c").write_text(PASTED)
    good = tmp_path / "good.toml"
    good.write_text('[name_macros.map]\nMYPASTE = "helper_"\n')
    cache = str(tmp_path / "cache")
    without = "a.c:3: caller -> helper_poke (not defined in scope)  [direct]\n"
    with_ = "a.c:3: caller -> helper_poke (a.c)  [direct]\n"
    for table, want in ((None, without), (good, with_), (None, without), (good, with_)):
        if table is None:
            monkeypatch.delenv("FLOWSCAN_MACROS", raising=False)
        else:
            monkeypatch.setenv("FLOWSCAN_MACROS", str(table))
        for whole in ("--whole", None):  # the index, then the cold path over the facts cache
            code, out, err = run(capsys, "-q", "--cache-dir", cache, "callees", "caller", "--src", str(src),
                                 *([whole] if whole else []))
            assert (code, out) == (0, want), (table, whole, err)
    # an edit of the table is a new table
    good.write_text('[name_macros.map]\nOTHER = "helper_"\n')
    monkeypatch.setenv("FLOWSCAN_MACROS", str(good))
    assert run(capsys, "-q", "--cache-dir", cache, "callees", "caller", "--src", str(src), "--whole")[1] == without


@pytest.mark.parametrize("text, why", [
    ('[annotations]\nnames = 3\n', "[annotations] names and remove must be lists of non-empty strings"),
    ('[annotations\n', "invalid TOML"),
    ('[iterators]\npatterns = ["re:("]\n', "bad pattern"),
    (None, "not found"),
    (b"\xff\xfe[x]", "invalid TOML"),
])
def test_a_bad_macro_table_is_one_error_and_poisons_nothing(tmp_path, capsys, monkeypatch, text, why):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.c").write_text(PASTED)
    bad = tmp_path / "bad.toml"
    if isinstance(text, bytes):
        bad.write_bytes(text)
    elif text is not None:
        bad.write_text(text)
    cache = str(tmp_path / "cache")
    monkeypatch.setenv("FLOWSCAN_MACROS", str(bad))
    for whole in ("--whole", None):
        code, out, err = run(capsys, "-q", "--cache-dir", cache, "callees", "caller", "--src", str(src),
                             *([whole] if whole else []))
        assert code == 2 and out == ""
        line = one_line_error(err)
        assert line.startswith("flowscan: error: FLOWSCAN_MACROS: ") and why in line, line
    monkeypatch.delenv("FLOWSCAN_MACROS")
    code, out, err = run(capsys, "-q", "--cache-dir", cache, "callees", "caller", "--src", str(src), "--whole")
    assert (code, out) == (0, "a.c:3: caller -> helper_poke (not defined in scope)  [direct]\n"), err


# ------------------------------------------------------------------------------------ a tree worth killing

def synthetic_tree(root: Path, files: int = 100, funcs: int = 40) -> Path:
    """C files enough for a parse that lasts a few seconds on two workers: every function calls the next."""
    for f in range(files):
        body = []
        for i in range(funcs):
            nxt = f"fn_{f}_{i + 1}" if i + 1 < funcs else f"fn_{(f + 1) % files}_0"
            body.append(f"#ifdef CONFIG_F{f}_{i}\nstatic int tab_{f}_{i}[] = {{ {', '.join(map(str, range(30)))} }};\n"
                        f"#endif\nint fn_{f}_{i}(int a)\n{{\n\tif (a > {i}) {{\n\t\tswitch (a) {{\n"
                        f"\t\tcase {i}: return {nxt}(a - 1);\n\t\tdefault: break;\n\t\t}}\n\t}}\n"
                        f"\treturn {nxt}(a + tab_{f}_{i % 3}[0]);\n}}\n")
        path = root / f"d{f % 8}" / f"file{f}.c"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(body))
    return root


def git_repo(root: Path, tag: str = "v1") -> Path:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost", "GIT_CONFIG_NOSYSTEM": "1"}
    for args in (["init", "-q", "-b", "master"], ["add", "-A"], ["commit", "-q", "-m", "c"], ["tag", tag]):
        subprocess.run(["git", *args], cwd=root, check=True, env=env, capture_output=True)
    return root


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory) -> Path:
    # large enough that a kill 0.1-0.8 s into the parse lands before the end on an idle machine too
    return git_repo(synthetic_tree(tmp_path_factory.mktemp("big") / "tree", files=400))


def _session_alive(sid: int) -> list[str]:
    """Processes of session `sid` still running (zombies waiting to be reaped do not count)."""
    alive = []
    for ent in Path("/proc").iterdir():
        if not ent.name.isdigit():
            continue
        try:
            stat = (ent / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(f"{ent.name} {stat[:stat.rindex(')') + 1]}")
    return alive


def _default_stop_signals() -> None:
    """In the child: the signals at their defaults, as from a terminal. Under `nohup` (SIGHUP ignored) or in
    a background job (SIGINT ignored) flowscan keeps them ignored, as it should, and would not stop."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flowscan", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_default_stop_signals,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _wait_for(proc: subprocess.Popen, word: bytes, limit: float = 60) -> bytes:
    """Read stderr until `word` shows (the run has reached that stage)."""
    import select
    import time

    seen = b""
    end = time.monotonic() + limit
    while word not in seen and time.monotonic() < end:
        ready, _, _ = select.select([proc.stderr], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    return seen


def _leftovers(cache: Path) -> list[str]:
    index = cache / "index"
    names = sorted(p.name for p in index.iterdir()) if index.is_dir() else []
    return [n for n in names if not (n.endswith(".sqlite") or n.endswith(".sqlite.seal"))]


@pytest.mark.parametrize("signame, group", [("SIGKILL", False), ("SIGTERM", False), ("SIGHUP", False),
                                            ("SIGINT", True)])
def test_a_killed_run_leaves_nothing_running_or_half_written(big_tree, tmp_path, signame, group):
    """Killed while its workers parse: the caller's read of stdout ends at once, no process of the run
    survives, no index is half there; a caught signal exits 128+n with one line and cleans up; the next run
    sweeps what SIGKILL left and answers as an uninterrupted run does."""
    import random
    import signal
    import time

    sig = getattr(signal, signame)
    cache = tmp_path / "cache"
    args = ["--cache-dir", str(cache), "-j", "2", "index", "--repo", str(big_tree), "--ref", "v1"]
    proc = _start(args)
    assert b"parsing" in _wait_for(proc, b"parsing")
    time.sleep(random.Random(signame).uniform(0.1, 0.8))
    (os.killpg if group else os.kill)(proc.pid, sig)
    out, err = proc.communicate(timeout=30)  # a worker holding stdout would make this wait forever
    assert proc.returncode in (-sig, 128 + sig), (proc.returncode, err)
    time.sleep(0.5)
    assert _session_alive(proc.pid) == []
    assert not list((cache / "index").glob("*.sqlite"))  # nothing half-written took the index's name
    if sig != signal.SIGKILL:
        lines = [ln for ln in err.decode().splitlines() if ln.strip()]
        assert lines[-1] == {"SIGTERM": "flowscan: terminated", "SIGHUP": "flowscan: hung up",
                             "SIGINT": "flowscan: interrupted"}[signame], err
        assert b"Traceback" not in err and b"Exception ignored" not in err, err
        assert _leftovers(cache) == []
    else:
        assert any(n.startswith(".build-") for n in _leftovers(cache))  # what a later run must sweep
    again = flowscan("-q", "--cache-dir", str(cache), "-j", "2", "callees", "fn_3_39", "--repo", str(big_tree),
                     "--ref", "v1")
    assert again.returncode == 0, again.stderr
    assert again.stdout.decode() == ("d3/file3.c:515: fn_3_39 -> fn_4_0 (d4/file4.c)  [direct]  [case 39; if (a > 39)]\n"
                                     "d3/file3.c:519: fn_3_39 -> fn_4_0 (d4/file4.c)  [direct]\n")
    assert _leftovers(cache) == []


def test_ctrl_c_while_reading_blobs_prints_one_line(big_tree, tmp_path):
    """Ctrl-C reaches the whole process group, git too: no traceback from the generator that was
    reading from git when it died."""
    import signal
    import time

    for delay in (0.0, 0.3, 0.7):
        cache = tmp_path / f"c{delay}"
        proc = _start(["--cache-dir", str(cache), "-j", "2", "callers", "fn_5_0", "--repo", str(big_tree),
                       "--ref", "v1", "--whole"])
        seen = _wait_for(proc, b"parsing")
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        err = seen + err
        assert proc.returncode == 130, err
        assert b"Traceback" not in err and b"Exception ignored" not in err, err
        assert err.decode().splitlines()[-1] == "flowscan: interrupted"


def test_several_processes_on_one_cache_agree_with_one_run(big_tree, tmp_path):
    """Four runs at once on an empty cache: one builds the index, the others wait for it; all answer what a
    run alone answers, and the cache holds one index and no scratch."""
    alone = flowscan("-q", "--cache-dir", str(tmp_path / "alone"), "-j", "1", "callers", "fn_7_0", "--repo",
                     str(big_tree), "--ref", "v1", "--whole")
    assert alone.returncode == 0 and alone.stdout, alone.stderr
    cache = tmp_path / "shared"
    procs = [_start(["-q", "--cache-dir", str(cache), "-j", "1", *cmd, "--repo", str(big_tree), "--ref", "v1"])
             for cmd in (["callers", "fn_7_0", "--whole"], ["callers", "fn_7_0", "--whole"], ["index"],
                         ["callers", "fn_7_0", "--whole"])]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0 and b"Traceback" not in err, err
    assert {results[i][0] for i in (0, 1, 3)} == {alone.stdout}
    assert len(list((cache / "index").glob("*.sqlite"))) == 1 and _leftovers(cache) == []


# ------------------------------------------------------------------------------------ damaged caches

def _flip(path: Path, at: float, keep_stat: bool = False) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    i = min(len(data) - 1, int(len(data) * at))
    data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    if keep_stat:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _sql(path: Path, statement: str) -> None:
    import sqlite3

    db = sqlite3.connect(path)
    db.execute(statement)
    db.commit()
    db.close()


def _zero_tail(path: Path) -> None:
    """The second half of the pages zeroed, size, mtime and inode kept: only SQLite can notice."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(st.st_size // 2)
        fh.write(b"\0" * (st.st_size - st.st_size // 2))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


DAMAGE = {
    "bit flip in the header": lambda p: _flip(p, 0.0002),
    "bit flip in the middle": lambda p: _flip(p, 0.5),
    "bit flip near the end": lambda p: _flip(p, 0.98),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "not a database": lambda p: p.write_bytes(os.urandom(8192)),
    "table dropped": lambda p: _sql(p, "DROP TABLE calls"),
    "lookup index dropped": lambda p: _sql(p, "DROP INDEX functions_name"),
    "row edited": lambda p: _sql(p, "UPDATE functions SET name = 'nothing' WHERE name = 'fn_3_39'"),
    "pages zeroed, stat kept": _zero_tail,
    "seal removed": lambda p: Path(str(p) + ".seal").unlink(),
    "seal garbage": lambda p: Path(str(p) + ".seal").write_text("{not json"),
    "seal removed, index truncated": lambda p: (Path(str(p) + ".seal").unlink(),
                                                p.write_bytes(p.read_bytes()[:4096])),
    "index replaced by a directory of the same name": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory) -> Path:
    return synthetic_tree(tmp_path_factory.mktemp("small") / "tree", files=12, funcs=40)


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_index_is_detected_and_rebuilt(small_tree, tmp_path, capsys, how):
    from flowscan.index import integrity

    cache = str(tmp_path / "cache")
    ask = ("-q", "--cache-dir", cache, "-j", "1", "callees", "fn_3_39", "--src", str(small_tree), "--whole")
    code, good, err = run(capsys, *ask)
    assert code == 0 and "fn_3_39 -> fn_4_0" in good, err
    (path,) = (tmp_path / "cache" / "index").glob("*.sqlite")
    DAMAGE[how](path)
    code, out, err = run(capsys, *ask)
    if how == "index replaced by a directory of the same name":
        assert code == 2 and "Traceback" not in err
        assert "Is a directory" in one_line_error(err), err
        return
    assert (code, out) == (0, good), err
    assert "Traceback" not in err
    assert path.is_file() and integrity.unchanged(path)  # rebuilt (or found sound) and sealed
    assert run(capsys, *ask)[1] == good  # and the next run takes it as it is


def test_damaged_facts_and_scan_records_are_rebuilt(small_tree, tmp_path, capsys):
    cache = tmp_path / "cache"
    ask = ("-q", "--cache-dir", str(cache), "-j", "1", "callees", "fn_3_39", "--src", str(small_tree), "--whole")
    code, good, _ = run(capsys, *ask)
    entries = [p for p in (cache / "facts").rglob("*") if p.is_file()]
    assert len(entries) == 12
    for i, entry in enumerate(entries):  # each one damaged a different way
        [lambda p: _flip(p, 0.5), lambda p: p.write_bytes(b""), lambda p: p.write_bytes(p.read_bytes()[:40]),
         lambda p: _flip(p, 0.01)][i % 4](entry)
    (cache / "scans.json").write_text("[1, 2")
    for path in (cache / "index").iterdir():
        path.unlink()
    code, out, err = run(capsys, *ask)
    assert (code, out) == (0, good) and "Traceback" not in err
    assert json.loads((cache / "scans.json").read_text())  # written again


def test_damage_only_sqlite_sees_is_rebuilt_when_a_question_meets_it(small_tree, tmp_path, capsys):
    """The calls table's pages zeroed behind the seal's back (size, mtime, inode kept): the warm open trusts
    the seal, the question meets SQLite's error, the index is checked, dropped, rebuilt, asked again."""
    import sqlite3

    cache = str(tmp_path / "cache")
    ask = ("-q", "--cache-dir", cache, "-j", "1", "callees", "fn_3_39", "--src", str(small_tree), "--whole")
    code, good, _ = run(capsys, *ask)
    (path,) = (tmp_path / "cache" / "index").glob("*.sqlite")
    db = sqlite3.connect(path)
    pages = [n for (n,) in db.execute("SELECT pageno FROM dbstat WHERE name = 'calls' AND pagetype = 'leaf'")]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    assert pages
    st = path.stat()
    with open(path, "r+b") as fh:
        for n in pages:
            fh.seek((n - 1) * size)
            fh.write(b"\xff" * size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    code, out, err = run(capsys, *ask)
    assert (code, out) == (0, good), err
    (line,) = err.splitlines()
    assert line.startswith("flowscan: warning: an index was damaged (") and "rebuilt it" in line
    assert run(capsys, *ask)[1:] == (good, "")


# ------------------------------------------------------------------------------------ malformed input files

DATA = ROOT / "tests" / "data"


def _bad_result(tmp_path: Path, how: str) -> Path:
    import copy

    good = json.loads((DATA / "arm64-reboot.json").read_text())
    path = tmp_path / f"{how}.json"
    data = copy.deepcopy(good)
    if how == "hops as a string":
        data["hops"] = "verified"
    elif how == "unknown status":
        data["hops"][0]["status"] = "bogus"
    elif how == "conditions as a number":
        data["hops"][0]["conditions"] = 5
    elif how == "deep nesting":
        path.write_text('{"schema_version": 2, "hops": ' + "[" * 100000 + "]" * 100000 + "}")
        return path
    elif how == "nesting the parser takes":
        data["hops"][0]["evidence"] = json.loads("[" * 500 + "]" * 500)
    elif how == "a diff with items as a number":
        drift = json.loads((DATA / "arm64-reboot-drift.json").read_text())
        data = {**drift, "old": good, "new": good, "items": 7}
    path.write_text(json.dumps(data))
    return path


BAD_RESULTS = ["hops as a string", "unknown status", "conditions as a number", "deep nesting",
               "nesting the parser takes", "a diff with items as a number"]


@pytest.mark.parametrize("how", BAD_RESULTS)
def test_malformed_saved_results_are_one_line(tmp_path, capsys, how):
    bad = _bad_result(tmp_path, how)
    for args in (["render", str(bad), "-o", str(tmp_path / "out.dot")],
                 ["diff", str(bad), str(DATA / "arm64-reboot.json")],
                 ["check", "--baseline", str(bad), "-q"]):
        code, out, err = run(capsys, *args)
        line = one_line_error(err)
        assert code == 2 and str(bad) in line, (args, err)
    assert not (tmp_path / "out.dot").exists()


@pytest.mark.parametrize("where", ["flow file", "flowscan.toml", "macro table"])
def test_deeply_nested_toml_is_one_line(tmp_path, capsys, monkeypatch, where):
    deep = tmp_path / "deep.toml"
    deep.write_text('name = "x"\na = ' + "[" * 100000 + "]" * 100000 + "\n")
    if where == "flow file":
        args = ["trace", "--flow-file", str(deep)]
    elif where == "flowscan.toml":
        args = ["--config", str(deep), "sources"]
    else:
        monkeypatch.setenv("FLOWSCAN_MACROS", str(deep))
        args = ["defs", "x", "--src", str(ROOT / "fixtures" / "linux" / "v6.12")]
    code, _, err = run(capsys, *args)
    assert code == 2 and "nested too deeply" in one_line_error(err), err


# ------------------------------------------------------------------------------------ outputs

@pytest.fixture(scope="module")
def baseline_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("base") / "base.json"
    proc = flowscan("-q", "--cache-dir", str(path.parent / "cache"), "baseline", "-o", str(path))
    assert proc.returncode == 0, proc.stderr
    return path


def test_outputs_keep_mode_write_through_links_and_refuse_read_only(tmp_path, capsys, baseline_file):
    import stat as st

    cache = str(baseline_file.parent / "cache")
    priv = tmp_path / "priv.md"
    priv.write_text("old")
    priv.chmod(0o600)
    assert run(capsys, "-q", "--cache-dir", cache, "trace", "--format", "md", "-o", str(priv))[0] == 0
    assert st.S_IMODE(priv.stat().st_mode) == 0o600 and priv.read_text().startswith("# ")
    target = tmp_path / "target.md"
    target.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    assert run(capsys, "-q", "--cache-dir", cache, "trace", "--format", "md", "-o", str(link))[0] == 0
    assert link.is_symlink() and target.read_text().startswith("# ")
    ro = tmp_path / "ro.md"
    ro.write_text("keep me")
    ro.chmod(0o444)
    code, _, err = run(capsys, "-q", "--cache-dir", cache, "trace", "--format", "md", "-o", str(ro))
    assert code == 2 and "read-only" in one_line_error(err) and ro.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.md", "priv.md", "ro.md", "target.md"]  # no temps


def test_check_writes_all_its_outputs_or_none(tmp_path, capsys, baseline_file):
    cache = str(baseline_file.parent / "cache")
    ro = tmp_path / "ro.sarif"
    ro.write_text("keep")
    ro.chmod(0o444)
    code, _, err = run(capsys, "-q", "--cache-dir", cache, "check", "--baseline", str(baseline_file),
                       "--markdown", str(tmp_path / "d.md"), "--junit", str(tmp_path / "j.xml"), "--sarif", str(ro))
    assert code == 2 and "read-only" in one_line_error(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro.sarif"]
    code, _, err = run(capsys, "-q", "--cache-dir", cache, "check", "--baseline", str(baseline_file),
                       "--markdown", str(tmp_path / "d.md"), "--junit", str(tmp_path / "missing" / "j.xml"))
    assert code == 2 and "does not exist" in one_line_error(err) and not (tmp_path / "d.md").exists()


def test_an_output_onto_an_input_is_refused(tmp_path, capsys, baseline_file):
    cache = str(baseline_file.parent / "cache")
    before = baseline_file.read_bytes()
    for args in (["check", "--baseline", str(baseline_file), "--sarif", str(baseline_file)],
                 ["render", str(baseline_file), "-o", str(baseline_file)],
                 ["diff", str(baseline_file), str(baseline_file), "-o", str(baseline_file)]):
        code, _, err = run(capsys, "-q", "--cache-dir", cache, *args)
        assert code == 2 and "refusing to overwrite" in one_line_error(err), args
    link = tmp_path / "alias.json"
    link.symlink_to(baseline_file)
    code, _, err = run(capsys, "-q", "--cache-dir", cache, "check", "--baseline", str(baseline_file),
                       "--junit", str(link))
    assert code == 2 and "refusing to overwrite" in one_line_error(err)
    assert baseline_file.read_bytes() == before


# ------------------------------------------------------------------------------------ terminal escapes

def test_control_characters_are_escaped_in_text_output(tmp_path, capsys):
    from flowscan.cli import escape_controls

    assert escape_controls("a\x1b[2Jb\rc\x07d\x9be\n\tf") == "a\\x1b[2Jb\\x0dc\\x07d\\x9be\n\tf"
    code, out, err = run(capsys, "-q", "--cache-dir", str(tmp_path / "c"), "defs", "x\x1b]0;owned\x07y\rFAKE",
                         "--src", str(ROOT / "fixtures" / "linux" / "v6.12"))
    line = one_line_error(err)
    assert code == 2 and "\x1b" not in err and "\r" not in err and "x\\x1b]0;owned\\x07y\\x0dFAKE" in line


# ------------------------------------------------------------------------------------ damaged clones

def _git_in(gitdir: Path, *args: str, input: bytes | None = None) -> str:
    return subprocess.run(["git", *args], env={**os.environ, "GIT_DIR": str(gitdir)}, check=True,
                          capture_output=True, input=input).stdout.decode()


def _packs(gitdir: Path, holding: str) -> list[Path]:
    """The packs of the clone holding objects of that type (blob: the files fetched; commit: the ref's)."""
    out = []
    for idx in sorted((gitdir / "objects" / "pack").glob("*.idx")):
        if f" {holding} " in _git_in(gitdir, "verify-pack", "-v", str(idx)):
            out.append(idx.with_suffix(".pack"))
    return out


def _flip_blob(gitdir: Path) -> None:
    """One byte flipped inside the largest blob's data: the listing reads, that blob does not."""
    for pack in _packs(gitdir, "blob"):
        rows = [ln.split() for ln in _git_in(gitdir, "verify-pack", "-v", str(pack.with_suffix(".idx"))).splitlines()
                if " blob " in ln]
        oid, _kind, _size, packed, offset = max(rows, key=lambda r: int(r[2]))[:5]
        _flip(pack, (int(offset) + int(packed) // 2) / pack.stat().st_size)


def _flips_everywhere(gitdir: Path) -> None:
    for pack in (gitdir / "objects" / "pack").glob("*.pack"):
        data = bytearray(pack.read_bytes())
        for i in range(100, len(data) - 40, 53):
            data[i] ^= 0x55
        pack.write_bytes(bytes(data))


def _explode_and_lose_tree(gitdir: Path) -> None:
    """Every object loose (as a clone from a server without packs holds them), then the tag's tree gone."""
    packs = sorted((gitdir / "objects" / "pack").glob("*.pack"))
    data = [p.read_bytes() for p in packs]
    for p in (gitdir / "objects" / "pack").iterdir():
        p.unlink()
    for blob in data:
        _git_in(gitdir, "unpack-objects", "-q", input=blob)
    tree = _git_in(gitdir, "rev-parse", "v6.12^{tree}").strip()
    (gitdir / "objects" / tree[:2] / tree[2:]).unlink()


def _garble_packed_refs(gitdir: Path) -> None:
    _git_in(gitdir, "pack-refs", "--all")
    with open(gitdir / "packed-refs", "a") as fh:
        fh.write("garbage line\n")


CLONE_DAMAGE = {
    "a byte flipped in a blob": _flip_blob,
    "bits flipped across every pack": _flips_everywhere,
    "the ref's pack truncated": lambda g: [os.truncate(p, p.stat().st_size // 2) for p in _packs(g, "commit")],
    "the ref's pack index deleted": lambda g: [p.with_suffix(".idx").unlink() for p in _packs(g, "commit")],
    "the blobs' pack truncated": lambda g: [os.truncate(p, p.stat().st_size // 2) for p in _packs(g, "blob")],
    "a loose tree object missing": _explode_and_lose_tree,
    "packed-refs garbled": _garble_packed_refs,
    "HEAD garbled": lambda g: (g / "HEAD").write_text("garbage\n"),
    "HEAD deleted": lambda g: (g / "HEAD").unlink(),
}
CLONE_QUESTION = ("callers", "psci_sys_reset", "--ref", "v6.12")


@pytest.fixture(scope="module")
def warm_clone(fixture_repos, tmp_path_factory) -> tuple[Path, str]:
    """A cache whose clone has the blobs of one question, and that question's answer."""
    import contextlib
    import io

    cache = tmp_path_factory.mktemp("clonecache") / "cache"
    args = ["-q", "--cache-dir", str(cache), *CLONE_QUESTION, "--repo", str(fixture_repos["linux"])]
    proc = flowscan(*args)
    assert proc.returncode == 0 and b"do_kernel_restart -> psci_sys_reset" in proc.stdout, proc.stderr
    return cache, proc.stdout.decode()


def _damaged_copy(warm_clone, tmp_path: Path, how: str) -> tuple[Path, Path]:
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(warm_clone[0], cache, symlinks=True)
    for sub in ("index", "facts"):  # the question must read the clone again
        shutil.rmtree(cache / sub, ignore_errors=True)
    (gitdir,) = (cache / "repos").glob("*.git")
    CLONE_DAMAGE[how](gitdir)
    return cache, gitdir


@pytest.mark.parametrize("how, whole", [*((h, False) for h in sorted(CLONE_DAMAGE)),  # a cold answer's reads
                                        *((h, True) for h in ("a byte flipped in a blob", "the blobs' pack truncated",
                                                              "the ref's pack truncated"))])  # an index build's
def test_a_damaged_clone_is_discarded_and_cloned_again(warm_clone, fixture_repos, tmp_path, capsys, how, whole):
    """However the cached clone is damaged, the rerun says so in one line, makes the clone again from the
    remote and answers exactly as before; nothing of the damaged one is left, the next run is quiet."""
    cache, gitdir = _damaged_copy(warm_clone, tmp_path, how)
    ask = ("-q", "--cache-dir", str(cache), *CLONE_QUESTION, "--repo", str(fixture_repos["linux"]),
           *(["--whole"] if whole else []))
    code, out, err = run(capsys, *ask)
    assert (code, out) == (0, warm_clone[1]), err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flowscan: warning: the cache clone of linux@v6.12 was damaged ("), err
    assert lines[0].endswith("): discarded it and cloned it again"), err
    assert sorted(p.name for p in (cache / "repos").iterdir()) == [gitdir.name, gitdir.with_suffix(".lock").name,
                                                                   gitdir.with_suffix(".use").name]
    assert _git_in(gitdir, "fsck", "--no-progress", "--no-dangling", "--connectivity-only") == ""
    for sub in ("index", "facts"):
        import shutil
        shutil.rmtree(cache / sub, ignore_errors=True)
    assert run(capsys, *ask) == (0, warm_clone[1], "")


def test_a_missing_blob_of_a_partial_clone_is_fetched_again(warm_clone, fixture_repos, tmp_path, capsys):
    """The pack of the fetched files without its index: those blobs are simply missing from a blob-less
    clone, and are fetched again in one request (no damage to report)."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(warm_clone[0], cache, symlinks=True)
    shutil.rmtree(cache / "facts")
    (gitdir,) = (cache / "repos").glob("*.git")
    for pack in _packs(gitdir, "blob"):
        pack.with_suffix(".idx").unlink()
    code, out, err = run(capsys, "-q", "--cache-dir", str(cache), *CLONE_QUESTION, "--repo", str(fixture_repos["linux"]))
    assert (code, out, err) == (0, warm_clone[1], "")


@pytest.mark.parametrize("how", ["HEAD deleted", "packed-refs garbled", "a byte flipped in a blob"])
def test_a_damaged_clone_whose_remote_is_gone_is_one_error(fixture_repos, tmp_path, capsys, how):
    import shutil

    remote = tmp_path / "linux"
    shutil.copytree(fixture_repos["linux"], remote, symlinks=True)
    cache = tmp_path / "cache"
    ask = ("-q", "--cache-dir", str(cache), *CLONE_QUESTION, "--repo", str(remote))
    assert run(capsys, *ask)[0] == 0
    shutil.rmtree(cache / "facts")
    shutil.rmtree(cache / "index", ignore_errors=True)
    (gitdir,) = (cache / "repos").glob("*.git")
    CLONE_DAMAGE[how](gitdir)
    shutil.rmtree(remote)
    remote.mkdir()  # there, but no repository any more
    code, out, err = run(capsys, *ask)
    assert code == 2 and out == "" and "Traceback" not in err
    lines = err.splitlines()
    if how == "a byte flipped in a blob":  # the tag was looked up first: that the remote is gone is said then
        assert lines[0].startswith(f"flowscan: warning: not a git repository: {remote}; using the cached linux@v6.12 = ")
        lines = lines[1:]
    assert len(lines) == 1, err
    assert lines[0].startswith("flowscan: error: the cache clone of linux@v6.12 was damaged ("), err
    assert lines[0].endswith(f") and is discarded; cloning it again failed: not a git repository: {remote}"), err
    assert sorted(p.name for p in (cache / "repos").iterdir()) == [gitdir.with_suffix(".lock").name,
                                                                   gitdir.with_suffix(".use").name]


def test_temporary_files_of_killed_facts_writers_are_swept(small_tree, tmp_path, capsys):
    """A writer killed between writing its temporary file and moving it into place leaves the file; a later
    run removes those whose process is gone or that are old, and leaves a live writer's alone."""
    import time

    from flowscan.index import facts_cache as fc

    cache = tmp_path / "cache"
    ask = ("-q", "--cache-dir", str(cache), "-j", "1", "callees", "fn_3_39", "--src", str(small_tree), "--whole")
    code, good, _ = run(capsys, *ask)
    assert code == 0
    shard = next(p for p in (cache / "facts").iterdir() if p.is_dir())
    dead = subprocess.Popen(["true"])
    dead.wait()
    old = time.time() - 2 * fc.TEMP_AGE
    recent = time.time() - 2 * fc.DEAD_AGE
    made = {
        "dead writer": (shard / f".{'a' * 38}.{dead.pid}.0badf00d.tmp", recent),
        "old, live writer": (shard / f".{'b' * 38}.{os.getpid()}.0badf00d.tmp", old),
        "live writer": (shard / f".{'c' * 38}.{os.getpid()}.0badf00d.tmp", recent),
        "dead writer, just now": (shard / f".{'d' * 38}.{dead.pid}.0badf00d.tmp", time.time()),
        "not ours": (shard / ".notes.tmp", old),
    }
    for path, when in made.values():
        path.write_bytes(b"partial")
        os.utime(path, (when, when))
    (cache / "facts" / fc.SWEPT).unlink(missing_ok=True)  # a sweep ran; the next sweep is due in an hour
    for path in (cache / "index").glob("*.sqlite"):
        path.unlink()
    code, out, err = run(capsys, *ask)
    assert (code, out) == (0, good), err
    assert sorted(k for k, (p, _) in made.items() if p.exists()) == ["dead writer, just now", "live writer", "not ours"]
    made["live writer"][0].unlink()
    path, _ = made["dead writer, just now"]
    os.utime(path, (recent, recent))
    assert fc.sweep_temporary(cache / "facts") == 0  # swept a moment ago: not again within the hour
    assert fc.sweep_temporary(cache / "facts", force=True) == 1 and not path.exists()
