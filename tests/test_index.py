"""The per-ref index (warm questions read nothing else) and cold questions answered from the files
that spell what they need (flowscan.prefilter)."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from flowscan.index import store as ixm
from flowscan import cold as prefilter
from flowscan.index import build as scan_mod
from flowscan.graph.callgraph import Graph
from flowscan.extract.apis import default_registry
from flowscan.sources.trees import DirTree
from flowscan.sources.refs import Source
from flowscan.sources.clones import open_tree
from flowscan.workspace import load
from tests.helpers import one_line_error, run

FIX = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def fs(capsys, tmp_path):
    def call(*args):
        return run(capsys, "-q", "--cache-dir", str(tmp_path / "cache"), *args)
    return call


def _indexes(cache: Path) -> list[Path]:
    return sorted((cache / "index").glob("*.sqlite"))


def test_warm_question_reads_only_the_index(fs, fixture_repos, tmp_path):
    repo = ("--repo", str(fixture_repos["linux"]), "--ref", "v6.12")
    code, out, _ = fs("index", *repo)
    assert code == 0 and out.startswith("linux@v6.12: 31 files (31 parsed, 0 from the facts cache, 0 skipped)")
    code, before, _ = fs("callers", "psci_sys_reset", *repo)
    assert code == 0 and "kernel/reboot.c:76: do_kernel_restart -> psci_sys_reset  [notifier: restart_handler_list" in before
    shutil.rmtree(tmp_path / "cache" / "facts")  # a warm question never needs a file's facts again
    code, after, _ = fs("callers", "psci_sys_reset", *repo)
    assert (code, after) == (0, before)
    assert not (tmp_path / "cache" / "facts").exists()
    code, out, _ = fs("index", *repo)
    assert out.startswith("linux@v6.12: 31 files (already indexed, 0 skipped)")
    assert len(_indexes(tmp_path / "cache")) == 1


def test_one_index_per_ref_and_scope(fs, fixture_repos, tmp_path):
    repo = str(fixture_repos["linux"])
    fs("index", "--repo", repo, "--ref", "v6.12")
    fs("index", "--repo", repo, "--ref", "v6.1")
    fs("index", "--repo", repo, "--ref", "v6.12", "--scope", "kernel")
    fs("index", "--repo", repo, "--ref", "v6.12", "--scope", "kernel/")  # the same scope, spelled otherwise
    assert len(_indexes(tmp_path / "cache")) == 3


def test_damaged_index_is_rebuilt(fs, fixture_repos, tmp_path):
    repo = ("--repo", str(fixture_repos["qemu"]), "--ref", "v10.0.0")
    fs("index", *repo)
    (path,) = _indexes(tmp_path / "cache")
    good = fs("callees", "qemu_system_reset", *repo)[1]
    path.write_bytes(path.read_bytes()[:5000])  # truncated
    code, out, err = fs("callees", "qemu_system_reset", *repo)
    assert (code, out) == (0, good) and "Traceback" not in err
    path.write_bytes(b"not a database at all" * 100)
    assert fs("callees", "qemu_system_reset", *repo)[1] == good
    assert sqlite3.connect(path).execute("SELECT value FROM meta WHERE key = 'version'").fetchone() == (
        ixm.INDEX_VERSION,)


def test_failed_build_leaves_nothing(fs, fixture_repos, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ixm, "finish", boom)
    with pytest.raises(RuntimeError):
        load(Source("", str(fixture_repos["linux"]), "v6.12"), cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "index").iterdir()) == []  # no index, no scratch directory


def test_directory_edit_updates_its_index(fs, tmp_path):
    """A checkout has one index, kept up to date with its listing (not one per listing)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.c").write_text("void b(void) {}\nvoid a(void) { b(); }\n")
    assert "a.c:2: a -> b (a.c)" in fs("callees", "a", "--whole", "--src", str(src))[1]
    (src / "a.c").write_text("void c(void) {}\nvoid a(void) { c(); }\n")
    assert "a.c:2: a -> c (a.c)" in fs("callees", "a", "--whole", "--src", str(src))[1]
    assert len(_indexes(tmp_path / "cache")) == 1


def test_index_round_trips_facts(linux_new):
    """What goes in comes out: every fact of every file, through the index, in path order."""
    from flowscan.extract.parse import extract_file

    facts = [extract_file(p.read_bytes(), p.relative_to(linux_new).as_posix())
             for p in sorted(linux_new.rglob("*.[ch]"))]
    back = ixm.build_in_memory(facts, default_registry(), prune=False).all_facts()
    assert [f.dumps() for f in back] == [f.dumps() for f in sorted(facts, key=lambda f: f.path)]
    pruned = ixm.build_in_memory(facts, default_registry()).all_facts()  # stores of names nothing defines
    dropped = {(f.path, s.function) for f, g in zip(back, pruned) for s in f.stores if s not in g.stores}
    assert ("drivers/firmware/efi/reboot.c", "efi_power_off") not in dropped and dropped
    assert all(not any(d.name == fn for f in back for d in f.functions) for _, fn in dropped)


# -- cold questions ---------------------------------------------------------------------------------
def _questions(graph: Graph) -> list[str]:
    return sorted(graph.def_names())


@pytest.mark.parametrize("project,tag", [("linux", "v6.1"), ("linux", "v6.12"), ("qemu", "v7.2.0"),
                                         ("qemu", "v10.0.0")])
def test_cold_answers_equal_the_whole_index(fixture_repos, tmp_path, monkeypatch, project, tag):
    """For every function of the fixture: callers and callees from the files the question needs are
    exactly those from the index of the whole tree."""
    monkeypatch.setattr(prefilter, "WIDE", 2.0)  # never fall back to the whole index here
    source = Source("", str(fixture_repos[project]), tag)
    whole = load(source, cache_dir=tmp_path / "whole").graph
    names = _questions(whole)
    assert len(names) > 40
    cold_cache = tmp_path / "cold"
    fewer = rounds = 0
    with open_tree(source, cold_cache) as tree:
        entries = tree.files([])
        for name in names:
            for what in ("callers", "callees"):
                def question(g: Graph, name=name, what=what):
                    edges = g.callers(name) if what == "callers" else [
                        e for d in g.preferred(g.definitions(name)) for e in g.callees(d)]
                    return [e.to_json() for e in edges]

                expected = question(whole)
                got, used, n = prefilter.answer(tree, entries, question, [name], cache=None,
                                                registry=default_registry(), jobs=1)
                assert got == expected, (what, name)
                fewer += used < len(entries)
                rounds = max(rounds, n)
    assert fewer > len(names) and rounds >= 2  # it did read fewer files, and it did follow leads
    assert not (cold_cache / "index").exists() or _indexes(cold_cache) == []


def test_cold_question_follows_a_registration(fixture_repos, tmp_path, monkeypatch):
    """`kvm_arm_gicv3_reset_hold` is reached through a hold phase that only a registration API call
    fills (no file spells `.hold = kvm_arm_gicv3_reset_hold`): the member brings the API in."""
    monkeypatch.setattr(prefilter, "WIDE", 2.0)
    with open_tree(Source("", str(fixture_repos["qemu"]), "v10.0.0"), tmp_path) as tree:
        entries = tree.files([])
        got, used, rounds = prefilter.answer(
            tree, entries, lambda g: {(e.caller, e.kind) for e in g.callers("kvm_arm_gicv3_reset_hold")},
            ["kvm_arm_gicv3_reset_hold"], cache=None, registry=default_registry(), jobs=1)
    assert ("resettable_phase_hold", "registration") in got
    assert used < len(entries) and rounds >= 2


def test_cold_rounds_grow_one_index_as_a_fresh_build_writes_it(fixture_repos, tmp_path, monkeypatch):
    """Each round adds only its new files to the question's index (their facts inserted, registrations
    derived again, argrefs of names still undefined kept aside, stores kept): after the last round every
    table equals that of an index built at once from the same files."""
    from flowscan.index.build import build_index
    from tests.test_checkout import _dump

    monkeypatch.setattr(prefilter, "WIDE", 2.0)
    seen: list[Path] = []
    opened = ixm.Index.open

    def keep(path, partial=False):
        seen.append(tmp_path / f"round{len(seen)}.sqlite")
        shutil.copyfile(path, seen[-1])
        return opened(path, partial)

    monkeypatch.setattr(prefilter.Index, "open", keep)
    with open_tree(Source("", str(fixture_repos["qemu"]), "v10.0.0"), tmp_path / "cache") as tree:
        entries = tree.files([])
        _got, used, rounds = prefilter.answer(
            tree, entries, lambda g: sorted(e.caller for e in g.callers("kvm_arm_gicv3_reset_hold")),
            ["kvm_arm_gicv3_reset_hold"], cache=None, registry=default_registry(), jobs=1)
        assert rounds >= 2 and len(seen) >= 2
        with sqlite3.connect(seen[-1]) as db:
            paths = [p for (p,) in db.execute("SELECT path FROM files ORDER BY id")]
        assert len(paths) == used
        ids = {p: i + 1 for i, p in enumerate(sorted(e.path for e in entries))}
        by_path = {e.path: e for e in entries}
        build_index(tree, [by_path[p] for p in paths], None, tmp_path / "fresh.sqlite", jobs=1,
                    registry=default_registry(), partial=True, updatable=True, ids=ids)
    grown, fresh = _dump(seen[-1]), _dump(tmp_path / "fresh.sqlite")
    grown["meta"].pop("files"), fresh["meta"].pop("files")
    assert grown == fresh
    assert grown["argrefs_pruned"] or grown["stores"]  # (not two empty indexes)


def test_tokens_for_lookups():
    reg = default_registry()
    words, members, defs, macros = prefilter.tokens_for(
        {("def", "foo"), ("name", "bar"), ("member", "hold"), ("chain", "restart_handler_list"),
         ("owner", "ResettableClass"), ("name", "a b"), ("macro", "ARM_SMCCC")}, reg)
    assert defs == {"foo"} and members == {"hold"} and macros == {"ARM_SMCCC"}
    assert {"bar", "resettable_class_set_parent_phases", "register_sys_off_handler",
            "ResettableClass", "restart_handler_list"} <= words
    assert "a b" not in words
    with pytest.raises(prefilter.TooWide):
        prefilter.tokens_for({("all", "functions")}, reg)


def test_grep_git_and_directory_agree(fixture_repos, tmp_path):
    """The same words, members and definition lines, whether read with git grep or from a directory."""
    asks = [dict(words=["machine_restart"]), dict(members=["notifier_call"]), dict(defs=["kernel_restart"]),
            dict(words=["psci_sys_reset"], members=["hold"], defs=["smp_send_stop", "nothing_here"])]
    with open_tree(Source("", str(fixture_repos["linux"]), "v6.12"), tmp_path) as git_tree:
        git_entries = git_tree.files([])
        got_git = [git_tree.grep(git_entries, **a) for a in asks]
        from flowscan.sources import trees

        trees._PCRE[git_tree.gitdir] = False  # git without Perl regexes: lines come back and are tested here
        try:
            assert [git_tree.grep(git_entries, **a) for a in asks] == got_git
        finally:
            trees._PCRE.pop(git_tree.gitdir)
        some = [e for e in git_entries if not e.path.startswith("include/")]  # named one by one, not by suffix
        assert [git_tree.grep(some, **a) for a in asks] == [{p for p in g if not p.startswith("include/")}
                                                            for g in got_git]
    d = DirTree(FIX / "linux" / "v6.12")
    got_dir = [d.grep(d.files([]), **a) for a in asks]
    assert got_git == got_dir
    assert got_git[2] == {"kernel/reboot.c"}  # the definition: not the prototype, not the callers
    assert "arch/arm64/kernel/process.c" not in got_git[2]


def test_too_wide_question_builds_the_index(fs, fixture_repos, tmp_path, monkeypatch):
    """A question that needs more than WIDE of the tree's bytes gets the whole index (and later ones too)."""
    repo = ("--repo", str(fixture_repos["linux"]), "--ref", "v6.12")
    code, cold, _ = fs("callees", "machine_restart", *repo)
    assert code == 0 and _indexes(tmp_path / "cache") == []  # answered from some files, nothing kept
    monkeypatch.setattr(prefilter, "WIDE", 0.0)
    code, out, _ = fs("callees", "machine_restart", *repo)
    assert (code, out) == (0, cold) and len(_indexes(tmp_path / "cache")) == 1


def test_cold_error_is_one_line(fs, fixture_repos):
    code, _, err = fs("callers", "no_such_function_anywhere", "--repo", str(fixture_repos["qemu"]),
                      "--ref", "v10.0.0")
    assert code == 2 and "function 'no_such_function_anywhere' is not defined" in one_line_error(err)


def test_scan_api_gives_facts_through_the_index(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "x.c").write_text("static int y(void) { return 1; }\nint x(void) { return y(); }\n")
    facts, stats = scan_mod.scan(DirTree(src), [], None, jobs=1)
    assert [f.name for f in facts[0].functions] == ["y", "x"] and facts[0].functions[0].static is True
    assert (stats.parsed, stats.reused) == (1, 0)


def test_empty_index_answers_nothing():
    g = Graph([])
    assert g.callers("x") == [] and g.definitions("x") == [] and g.def_names() == []


def test_partial_index_records_its_lookups(tmp_path):
    """A partial index (cold questions) says so and records what was asked; a whole one records nothing."""
    src = tmp_path / "s"
    src.mkdir()
    (src / "x.c").write_text("static int y(void) { return 1; }\nint x(void) { return y(); }\n")
    tree = DirTree(src)
    dest = tmp_path / "i.sqlite"
    scan_mod.build_index(tree, tree.files([]), None, dest, jobs=1, registry=default_registry())
    whole = ixm.Index.open(dest)
    g = Graph(whole)
    assert [d.name for d in g.definitions("x")] == ["x"] and not g.partial and whole.lookups() == frozenset()
    part = ixm.Index.open(dest, partial=True)
    g = Graph(part)
    assert g.partial and [d.name for d in g.definitions("nowhere")] == []
    assert ("def", "nowhere") in part.lookups()
    whole.db.close()
    part.db.close()


def _route_json(graph: Graph, src: str, dst: str):
    found = graph.route(src, dst)
    return None if found is None else [e.to_json() for e in found]


@pytest.mark.parametrize("project,tag", [("linux", "v6.12"), ("qemu", "v10.0.0"), ("qemu", "v7.2.0")])
def test_routes_walked_back_from_the_target_are_the_routes(fixture_repos, tmp_path, monkeypatch, project, tag):
    """route() proves that no narrower route exists by walking back from the target (reach_back) once a
    forward search grows: the routes are the ones of the plain forward search, for every pair of the
    fixture's functions, and cold ones (from the files that spell what they need) equal the index's."""
    from flowscan.graph import callgraph

    whole = load(Source("", str(fixture_repos[project]), tag), cache_dir=tmp_path / "whole").graph
    names = _questions(whole)
    monkeypatch.setattr(callgraph, "PRUNE_DEPTH", 99)
    plain = {(a, b): _route_json(whole, a, b) for a in names for b in names}
    monkeypatch.setattr(callgraph, "PRUNE_DEPTH", 1)
    monkeypatch.setattr(callgraph, "FORWARD_BUDGET", 1)  # every narrower search walks back first
    walked = {}
    for a, b in plain:
        whole._memo.clear()
        walked[(a, b)] = _route_json(whole, a, b)
    assert walked == plain
    narrowed = [k for k, v in plain.items() if v and max(e.get("fanout", 1) for e in v) == 1
                and any(e["kind"] not in callgraph.COMPILED for e in v)]
    assert sum(1 for v in plain.values() if v) > 100
    monkeypatch.setattr(prefilter, "WIDE", 2.0)
    with open_tree(Source("", str(fixture_repos[project]), tag), tmp_path / "cold") as tree:
        entries = tree.files([])
        wide = sorted((k for k, v in plain.items() if v and any(e.get("fanout", 1) > 1 for e in v)), key=str)[:6]
        pairs = wide + sorted(narrowed, key=str)[:3] + [(names[0], names[-1])]
        for a, b in pairs:
            got, used, _ = prefilter.answer(tree, entries, lambda g: _route_json(g, a, b), [a, b], cache=None,
                                            registry=default_registry(), jobs=1)
            assert got == plain[(a, b)], (a, b)
        # ... and with the real limits: cold, a narrower search walks back first (within FORWARD_BUDGET)
        monkeypatch.setattr(callgraph, "PRUNE_DEPTH", 6)
        monkeypatch.setattr(callgraph, "FORWARD_BUDGET", 16)
        for a, b in pairs:
            got, used, _ = prefilter.answer(tree, entries, lambda g: _route_json(g, a, b), [a, b], cache=None,
                                            registry=default_registry(), jobs=1)
            assert got == plain[(a, b)], (a, b)


@pytest.mark.parametrize("project,tag", [("linux", "v6.12"), ("qemu", "v10.0.0"), ("qemu", "v7.2.0")])
def test_registrations_of_named_apis_are_answered_cold(fixture_repos, tmp_path, capsys, monkeypatch, project, tag):
    """`registrations --api X` reads the files that call X (a registration is its call, the notifier block
    it names is in the same file) and those its QOM types need, and prints what --whole prints."""
    monkeypatch.setattr(prefilter, "WIDE", 2.0)
    repo = ("--repo", str(fixture_repos[project]), "--ref", tag)
    code, every, _ = run(capsys, "-q", "--cache-dir", str(tmp_path / "whole"), "registrations", *repo)
    apis = sorted({line.split(": ", 1)[1].split(" ", 1)[0] for line in every.splitlines()})
    assert code == 0 and len(apis) >= 3, apis
    for api in apis:
        cache = tmp_path / f"cold-{api}"
        code, cold, err = run(capsys, "--cache-dir", str(cache), "registrations", "--api", api, *repo)
        assert code == 0 and "answered from the" in err and _indexes(cache) == [], api
        assert cold == "".join(line + "\n" for line in every.splitlines() if f": {api} in " in line), api
        assert run(capsys, "-q", "--cache-dir", str(tmp_path / "whole"), "registrations", "--api", api, *repo,
                   "--whole")[:2] == (0, cold)
    code, _, err = run(capsys, "--cache-dir", str(tmp_path / "x"), "registrations", "--api", "no_such_api", *repo)
    assert code == 2 and "unknown registration API 'no_such_api'" in err and "Traceback" not in err


def test_a_narrowing_search_that_gives_up_says_so(fs, fixture_repos, monkeypatch):
    """When neither walking back nor a forward search within NARROWING_BUDGET can show that no narrower
    route exists, `path` prints the route it has and says on stderr that a narrower one was not ruled out."""
    from flowscan.graph import callgraph

    repo = ("--repo", str(fixture_repos["qemu"]), "--ref", "v10.0.0", "--whole")
    code, full, err = fs("path", "main_loop_should_exit", "kvm_arm_gicv3_reset_hold", *repo)
    assert code == 0 and "not ruled out" not in err
    monkeypatch.setattr(callgraph, "PRUNE_DEPTH", 1)
    monkeypatch.setattr(callgraph, "FORWARD_BUDGET", 1)  # the forward search is over budget at once,
    monkeypatch.setattr(callgraph, "WALK_SITES", 0)  # walking back too,
    monkeypatch.setattr(callgraph, "NARROWING_BUDGET", 1)  # and so is the unpruned search
    code, cut, err = fs("path", "main_loop_should_exit", "kvm_arm_gicv3_reset_hold", *repo)
    assert code == 0 and cut.startswith("1. main_loop_should_exit -> ")
    assert "a narrower route was not ruled out: the search for one stopped after 1 functions" in err
    width = lambda text: max(int(n) for n in re.findall(r", 1 of (\d+)\)", text) or ["1"])
    assert width(cut) >= width(full)


def test_path_is_answered_cold(fs, fixture_repos, tmp_path, capsys, monkeypatch):
    """`path` without an index reads the files that spell what the search needs, and answers as --whole."""
    monkeypatch.setattr(prefilter, "WIDE", 2.0)  # (a miniature tree: any question needs much of it)
    repo = ("--repo", str(fixture_repos["qemu"]), "--ref", "v10.0.0")
    code, cold, err = run(capsys, "--cache-dir", str(tmp_path / "cache"), "path", "main_loop_should_exit",
                          "kvm_arm_gicv3_reset_hold", *repo)
    assert code == 0 and "answered from the" in err and _indexes(tmp_path / "cache") == []
    code, whole, _ = fs("path", "main_loop_should_exit", "kvm_arm_gicv3_reset_hold", *repo, "--whole")
    assert (code, whole) == (0, cold) and len(_indexes(tmp_path / "cache")) == 1
    assert cold.splitlines()[0].startswith("1. main_loop_should_exit -> ")
    code, _, err = fs("path", "kvm_arm_gicv3_reset_hold", "main_loop_should_exit", "--max-depth", "3", *repo)
    assert code == 1 and "no call path from kvm_arm_gicv3_reset_hold to main_loop_should_exit within 3" in err


@pytest.mark.parametrize("tag", ["v7.2.0", "v10.0.0"])
def test_cold_types_equal_the_whole_index(fixture_repos, tmp_path, monkeypatch, tag):
    """`types NAME` from the files it needs, for every QOM type of the fixture by its name and by its macro:
    a type named by its string is found through the #define that spells it, then the TypeInfo that spells
    the macro."""
    from flowscan.report import answers

    monkeypatch.setattr(prefilter, "WIDE", 2.0)
    source = Source("", str(fixture_repos["qemu"]), tag)
    whole = load(source, cache_dir=tmp_path / "whole").graph
    nodes = sorted(whole.qom.types.values(), key=lambda t: t.name)
    assert len(nodes) > 5
    with open_tree(source, tmp_path / "cold") as tree:
        entries = tree.files([])
        fewer = 0
        for node in nodes:
            for name in {node.name, node.macro.strip('"')}:
                def question(g: Graph, name=name):
                    found = g.qom.find(name)
                    return None if found is None else answers.types(g, [found.name], "json")

                expected = question(whole)
                got, used, _ = prefilter.answer(tree, entries, question, [name], cache=None,
                                                registry=default_registry(), jobs=1)
                assert expected is not None and got == expected, name
                fewer += used < len(entries)
    assert fewer
