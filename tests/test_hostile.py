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
