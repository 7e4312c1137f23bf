"""python -m benchmarks: flowscan against the raw-parse limit, Universal Ctags and cscope, on real trees.

Every measurement is a whole process (startup and imports count) timed with the wall clock; its peak
memory is the summed RSS of its whole process tree (see benchmarks/measure.py). Repeated steps report
the median time and the largest peak. A tool that is missing or fails gives an "n/a" row, never a crash.
See docs/benchmarks.md for what each row means.
"""

from __future__ import annotations

import argparse
import compileall
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import measure, trees
from benchmarks.trees import PROJECTS, FileSet, Project

PY = sys.executable
GIB = 1 << 30
MIB = 1 << 20


# ------------------------------------------------------------------------------------------ rows

@dataclass
class Row:
    step: str
    files: int | None = None
    nbytes: int | None = None  # bytes of the C files this step reads (MB/s); None: not a scan
    times: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # CPU seconds of the whole process tree, per run
    scan: bool = True  # show MB/s and the ratios
    note: str = ""
    na: str = ""  # why there is no number

    @property
    def seconds(self) -> float | None:
        return statistics.median(self.times) if self.times and not self.na else None

    @property
    def cpu(self) -> float | None:
        return statistics.median(self.cpus) if self.cpus and not self.na else None

    @property
    def peak(self) -> int | None:
        return max(self.peaks) if self.peaks and not self.na else None

    def to_json(self) -> dict:
        return {"step": self.step, "files": self.files, "bytes": self.nbytes, "times": self.times,
                "peaks": self.peaks, "cpus": self.cpus, "seconds": self.seconds, "cpu": self.cpu,
                "peak_rss": self.peak, "note": self.note, "na": self.na}


@dataclass
class Section:
    key: str  # e.g. linux/reboot
    title: str
    lines: list[str] = field(default_factory=list)  # description under the title
    rows: list[Row] = field(default_factory=list)
    refs: dict[str, Row] = field(default_factory=dict)  # raw / ctags / cscope / cold ... by role

    def add(self, row: Row, role: str = "") -> Row:
        self.rows.append(row)
        if role:
            self.refs[role] = row
        return row


# ------------------------------------------------------------------------------------------ formatting

def fmt_s(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x < 10:
        return f"{x:.2f}"
    if x < 100:
        return f"{x:.1f}"
    return f"{x:.0f}"


def fmt_mb(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:,.1f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "n/a"
    return f"{a / b:.2f}x"


def fmt_peak(n: int | None) -> str:
    return "n/a" if n is None else f"{n / MIB:,.0f}"


def section_markdown(sec: Section) -> list[str]:
    out = [f"### {sec.title}", ""]
    out += sec.lines
    if sec.lines:
        out.append("")
    raw = sec.refs.get("raw")
    ctags = sec.refs.get("ctags")
    cscope = sec.refs.get("cscope")
    out.append("| step | files | MB | runs | seconds | CPU s | MB/s | peak RSS MiB | x raw parse | x ctags | x cscope "
               "| note |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in sec.rows:
        s = r.seconds
        if r.scan and r.nbytes and s:
            mbs = f"{r.nbytes / 1e6 / s:,.1f}"
        else:
            mbs = ""
        if r.scan:
            ratios = [fmt_ratio(s, x.seconds if x else None) for x in (raw, ctags, cscope)]
        else:
            ratios = ["", "", ""]
        note = r.na if r.na else r.note
        files = "" if r.files is None else f"{r.files:,}"
        runs = str(len(r.times)) if r.times and not r.na else "0"
        out.append(f"| {r.step} | {files} | {fmt_mb(r.nbytes)} | {runs} | {fmt_s(s)} | {fmt_s(r.cpu)} | {mbs} "
                   f"| {fmt_peak(r.peak)} "
                   f"| {' | '.join(ratios)} | {note} |")
    out.append("")
    return out


# ------------------------------------------------------------------------------------------ the bench

class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.jobs = args.jobs or os.cpu_count() or 1
        self.work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="flowscan-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.trees = Path(args.trees)
        self.sections: list[Section] = []
        self.goals: list[tuple[str, str, str, str]] = []  # goal, measured, target, verdict
        self.tools = {}
        self.code = self.snapshot()
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(self.code), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.scratch = self.work / "cwd"  # every run starts here: no flowscan.toml of anyone's is picked up
        self.scratch.mkdir(exist_ok=True)

    def snapshot(self) -> Path:
        """Copy flowscan/, queries/, fixtures/ and benchmarks/ as they are now: the code measured stays the
        same for the whole run even while the checkout is being edited (a changed extractor version
        would silently turn warm runs cold)."""
        if self.args.live:
            return trees.REPO_ROOT
        dest = self.work / "code"
        if dest.exists():
            shutil.rmtree(dest)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in ("flowscan", "queries", "fixtures", "benchmarks"):
            src = trees.REPO_ROOT / name
            if src.is_dir():
                shutil.copytree(src, dest / name, ignore=ignore)
        # Byte-compiled as `pip install` leaves a package: otherwise every measured process compiles
        # every module it imports (0.15 s of a warm question here; the runs set PYTHONDONTWRITEBYTECODE).
        compileall.compile_dir(str(dest), quiet=1)
        return dest

    # -- logging and running ------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def run(self, cmd: list[str], cwd: Path | None = None, ok=(0,)) -> measure.Run:
        r = measure.run([str(c) for c in cmd], cwd=str(cwd or self.scratch), env=self.env,
                        timeout=self.args.timeout)
        if r.timed_out:
            r.returncode = -999
        elif r.returncode not in ok:
            tail = (r.stderr.strip().splitlines() or ["?"])[-1][:160]
            self.log(f"  failed (rc={r.returncode}): {' '.join(map(str, cmd))[:200]}: {tail}")
        return r

    def repeat(self, row: Row, n: int, cmd_fn, *, before=None, cwd: Path | None = None, ok=(0,),
               inner: bool = False, warm: Path | None = None) -> Row:
        """Run cmd_fn() n times (before() untimed ahead of each); fill row; n/a on failure or timeout.

        warm: a facts cache that must not change; entries written during a run are noted on the row."""
        for i in range(n):
            if before is not None:
                before()
            since = time.time()
            try:
                r = self.run(cmd_fn(), cwd=cwd, ok=ok)
            except Exception as exc:  # never crash on one row
                row.na = f"n/a ({type(exc).__name__}: {exc})"[:200]
                return row
            if r.timed_out:
                row.na = f"n/a (stopped after {self.args.timeout:.0f} s)"
                row.times.append(r.seconds)
                return row
            if r.returncode not in ok:
                tail = (r.stderr.strip().splitlines() or ["?"])[-1][:120].replace("|", "/")
                row.na = f"n/a (exit {r.returncode}: {tail})"
                return row
            secs = r.seconds
            if inner:  # the in-process figure printed by benchmarks.parsebench
                try:
                    secs = json.loads(r.stdout.strip().splitlines()[-1])["seconds"]
                except (ValueError, KeyError, IndexError):
                    row.na = "n/a (no result)"
                    return row
            row.times.append(secs)
            row.peaks.append(r.peak_rss)
            row.cpus.append(r.cpu)
            if warm is not None:
                fresh = fresh_entries(warm, since)
                if fresh:
                    row.note = f"NOT WARM: {fresh} cache entries written during the run"
            self.log(f"  {row.step} [{i + 1}/{n}]: {secs:.2f} s, CPU {r.cpu:.2f} s, {r.peak_rss / MIB:.0f} MiB")
        return row

    # -- tools --------------------------------------------------------------------------------------
    def check_tools(self) -> None:
        ctags = shutil.which("ctags")
        self.tools["ctags"] = None
        self.tools["ctags_version"] = "missing"
        if ctags:
            try:
                v = subprocess.run([ctags, "--version"], capture_output=True, text=True, timeout=30).stdout
                first = (v.splitlines() or [""])[0]
                self.tools["ctags_version"] = first.split(",")[0].strip()
                if "Universal Ctags" in v:
                    self.tools["ctags"] = ctags
            except (OSError, subprocess.SubprocessError):
                pass
        cscope = shutil.which("cscope")
        self.tools["cscope"] = cscope
        self.tools["cscope_version"] = "missing"
        if cscope:
            try:
                p = subprocess.run([cscope, "-V"], capture_output=True, text=True, timeout=30)
                line = (p.stdout + p.stderr).strip().splitlines()[0]
                self.tools["cscope_version"] = "cscope " + line.rsplit("version", 1)[-1].strip()
            except (OSError, subprocess.SubprocessError, IndexError):
                pass
        try:
            v = subprocess.run([PY, "-c", "import tree_sitter, importlib.metadata as m;"
                                "print(m.version('tree-sitter'), m.version('tree-sitter-c'))"],
                               capture_output=True, text=True, env=self.env, timeout=60).stdout.split()
            self.tools["tree_sitter"] = f"tree-sitter {v[0]}, tree-sitter-c {v[1]}"
        except (OSError, subprocess.SubprocessError, IndexError):
            self.tools["tree_sitter"] = "missing"
        try:
            head = subprocess.run(["git", "-C", str(trees.REPO_ROOT), "rev-parse", "--short=12", "HEAD"],
                                  capture_output=True, text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(trees.REPO_ROOT), "status", "--porcelain", "--", "flowscan",
                                    "queries"],
                                   capture_output=True, text=True).stdout.strip()
            self.tools["flowscan"] = head + (" + uncommitted changes" if dirty else "")
        except OSError:
            self.tools["flowscan"] = "?"
        try:
            import hashlib

            h = hashlib.sha256()
            for f in sorted((self.code / "flowscan").rglob("*.py")) + sorted((self.code / "queries").rglob("*")):
                if f.is_file():
                    h.update(str(f.relative_to(self.code)).encode() + b"\0" + f.read_bytes())
            version = subprocess.run([PY, "-c", "from flowscan.extract.facts import EXTRACTOR_VERSION as v; print(v)"],
                                     capture_output=True, text=True, env=self.env, cwd=self.scratch).stdout.strip()
            self.tools["flowscan"] += (f", code sha256 {h.hexdigest()[:12]}, EXTRACTOR_VERSION {version or '?'}"
                                       + ("" if self.args.live else " (copied at start)"))
        except OSError:
            pass

    # -- flowscan commands --------------------------------------------------------------------------
    def fs(self, cache: Path, *args: str) -> list[str]:
        return [PY, "-m", "flowscan", "-q", "--cache-dir", str(cache), "--jobs", str(self.jobs), *args]

    @staticmethod
    def scope_args(scope: tuple[str, ...]) -> list[str]:
        out: list[str] = []
        for s in scope:
            out += ["--scope", s]
        return out

    # -- one project, one scope set -----------------------------------------------------------------
    def project(self, proj: Project, which: str, n: int) -> Section:
        repo = self.trees / proj.name
        if which == "reboot":
            scope = trees.present_scope(repo, proj.tag, proj.reboot_scope)
            scope2 = trees.present_scope(repo, proj.second, proj.reboot_scope)
            what = "reboot scope (" + " ".join(scope) + ")"
        else:
            scope = scope2 = ()
            what = "whole tree"
        fa = trees.file_set(repo, proj.tag, scope)
        fb = trees.file_set(repo, proj.second, scope2)
        sec = Section(key=f"{proj.name}/{which}", title=f"{proj.title} {proj.tag}, {what}")
        large = fa.large()
        sec.lines.append(f"{len(fa.files):,} .c/.h files, {fa.bytes / 1e6:,.1f} MB; {self.jobs} processes "
                         f"(`--jobs {self.jobs}`); {n} run(s) per step, median seconds, largest peak.")
        if large:
            sec.lines.append(f"{len(large)} of them ({sum(s for *_, s in large) / 1e6:,.1f} MB) are over 4 MiB: "
                             "flowscan lists and skips them; the raw-parse limit for flowscan is the "
                             "`<= 4 MiB` row.")
        self.log(f"{sec.title}: {len(fa.files)} files, {fa.bytes / 1e6:.1f} MB")
        load_start = loadavg()
        tag_dir = self.work / f"{which}-{proj.name}"
        if tag_dir.exists():
            shutil.rmtree(tag_dir)
        tag_dir.mkdir(parents=True)
        wt = tag_dir / "tree"
        if which == "whole":
            ws = FileSet(fa.repo, fa.tag, ("*.c", "*.h"))
            trees.extract(ws, wt)
        else:
            trees.extract(fa, wt)
        paths = [p for p, _, _ in fa.files]
        all_list = trees.write_list(paths, tag_dir / "files.txt")
        small = fa.small()
        small_list = trees.write_list([p for p, _, _ in small], tag_dir / "files-small.txt")
        trees.warm_page_cache(wt, paths)
        nbytes, nfiles = fa.bytes, len(fa.files)

        # raw parse, the limit
        pb = [PY, "-m", "benchmarks.parsebench"]
        self.repeat(sec.add(Row(f"raw parse, {self.jobs} processes", nfiles, nbytes), "raw"), n,
                    lambda: [*pb, "parse", wt, all_list, "--jobs", self.jobs])
        if large:
            self.repeat(sec.add(Row(f"raw parse, {self.jobs} processes, files <= 4 MiB", len(small),
                                    sum(s for *_, s in small)), "raw_small"), n,
                        lambda: [*pb, "parse", wt, small_list, "--jobs", self.jobs])
        # single core, in-process: raw parse vs the pre-pass (and the whole extractor on small sets)
        one = self.repeat(sec.add(Row("raw parse, 1 process (in-process time)", len(small),
                                      sum(s for *_, s in small), note="parse calls only"), "raw1"), n,
                          lambda: [*pb, "parse", wt, small_list], inner=True)
        pre = self.repeat(sec.add(Row("flowscan prepass alone, 1 process (in-process time)", len(small),
                                      sum(s for *_, s in small)), "prepass"), n,
                          lambda: [*pb, "prepass", wt, small_list], inner=True)
        if pre.seconds and one.seconds:
            pre.note = f"{pre.seconds / one.seconds:.0%} of raw parse, 1 process"
        if which == "reboot" or self.args.extract_whole:
            ex = self.repeat(sec.add(Row("flowscan extract_file, 1 process (in-process time)", len(small),
                                         sum(s for *_, s in small)), "extract"), n,
                             lambda: [*pb, "extract", wt, small_list], inner=True)
            if ex.seconds and one.seconds:
                ex.note = f"{ex.seconds / one.seconds:.1f}x raw parse, 1 process"

        # ctags, cscope
        out_dir = tag_dir / "out"
        out_dir.mkdir()
        row = sec.add(Row("Universal Ctags (`ctags -L`)", nfiles, nbytes), "ctags")
        if self.tools["ctags"]:
            self.repeat(row, n, lambda: [self.tools["ctags"], "--languages=C", "--langmap=C:.c.h",
                                         "-f", out_dir / "tags", "-L", all_list], cwd=wt)
        else:
            row.na = f"n/a (no Universal Ctags: {self.tools['ctags_version']})"
        row = sec.add(Row("cscope -bqk", nfiles, nbytes), "cscope")
        if self.tools["cscope"]:
            def rm_cscope() -> None:
                for f in out_dir.glob("cscope.out*"):
                    f.unlink()
            self.repeat(row, n, lambda: [self.tools["cscope"], "-bqk", "-i", all_list, "-f", out_dir / "cscope.out"],
                        cwd=wt, before=rm_cscope)
        else:
            row.na = "n/a (cscope not found)"

        # flowscan
        cache = tag_dir / "cache"
        facts = cache / "facts"
        index = cache / "index"
        ref_args = lambda tag=proj.tag, sc=scope: ["--repo", str(repo), "--ref", tag, *self.scope_args(sc)]
        callers = lambda tag=proj.tag, sc=scope: self.fs(cache, "callers", proj.function, *ref_args(tag, sc))

        def fresh() -> None:
            if cache.exists():
                shutil.rmtree(cache)

        def no_index() -> None:
            if index.exists():
                shutil.rmtree(index)

        def no_facts() -> None:  # nothing extracted, nothing indexed: every file is new again
            no_index()
            if facts.exists():
                shutil.rmtree(facts)

        self.repeat(sec.add(Row("flowscan clone (`fetch`, shallow and blob-less)", scan=False), "clone"), n,
                    lambda: self.fs(cache, "fetch", "--guest-repo", str(repo), "--guest", proj.tag,
                                    "--vmm-repo", str(repo), "--vmm", proj.tag), before=fresh)
        first = self.repeat(sec.add(Row(f"flowscan first run after the clone: cold question `callers "
                                        f"{proj.function}` (fetches the blobs)", nfiles, nbytes), "first"), 1,
                            callers)
        cold = sec.add(Row(f"flowscan cold question `callers {proj.function}` (no index, empty facts cache)",
                           nfiles, nbytes), "cold")
        cold2 = sec.add(Row(f"flowscan cold question `callees {proj.function}` (no index, empty facts cache)",
                            nfiles, nbytes), "cold_callees")
        cold_path = sec.add(Row(f"flowscan cold `path {' '.join(proj.path)}` (no index, empty facts cache)",
                                nfiles, nbytes), "cold_path")
        build = sec.add(Row("flowscan index build (`flowscan index`, empty facts cache)", nfiles, nbytes), "index")
        rebuild = sec.add(Row("flowscan index build from the facts cache", nfiles, nbytes), "index_cached")
        if first.na:
            cold.na = cold2.na = cold_path.na = build.na = rebuild.na = "skipped (first run failed)"
        else:
            self.repeat(cold, n, callers, before=no_facts)
            self.repeat(cold2, n, lambda: self.fs(cache, "callees", proj.function, *ref_args()), before=no_facts)
            self.repeat(cold_path, n, lambda: self.fs(cache, "path", *proj.path, *ref_args()), before=no_facts)
            self.repeat(build, n, lambda: self.fs(cache, "index", *ref_args()), before=no_facts)
            self.repeat(rebuild, n, lambda: self.fs(cache, "index", *ref_args()), before=no_index)
            if not build.na:  # size on disk beside cscope's database of the same files
                ours = sum(f.stat().st_size for f in index.glob("*.sqlite"))
                theirs = sum(f.stat().st_size for f in out_dir.glob("cscope.out*"))
                build.note = (f"index {ours / 1e6:.1f} MB on disk"
                              + (f" (cscope.out* {theirs / 1e6:.1f} MB)" if theirs else ""))
        rest_ok = not build.na
        steps = [(f"warm query `defs {proj.function}` (index present)", "warm",
                  lambda: self.fs(cache, "defs", proj.function, *ref_args())),
                 (f"warm query `callers {proj.function}`", "q_callers", callers),
                 (f"warm query `callees {proj.function}`", "q_callees",
                  lambda: self.fs(cache, "callees", proj.function, *ref_args()))]
        for label, role, fn in steps:
            row = sec.add(Row(label, scan=False), role)
            if rest_ok:
                self.repeat(row, n, fn, warm=facts)
            else:
                row.na = "skipped (index build failed)"
        sec.refs["q_defs"] = sec.refs["warm"]

        # the same files as a checkout (`--src`): indexed once (facts cached), then asked warm (its stat
        # cache and index present: a walk with a stat of every file, the listing's digest, the index)
        co_index = sec.add(Row("flowscan index of the tree as a checkout (`index --src`, facts cached)", nfiles,
                               nbytes), "co_index")
        co_warm = sec.add(Row(f"warm question on the checkout `callers {proj.function} --src` (stat cache and "
                              "index present)", scan=False), "q_checkout")
        if not rest_ok:
            co_index.na = co_warm.na = "skipped (index build failed)"
        else:
            self.repeat(co_index, 1, lambda: self.fs(cache, "index", "--src", str(wt)))
            if co_index.na:
                co_warm.na = "skipped (checkout index failed)"
            else:
                self.repeat(co_warm, max(n, 3), lambda: self.fs(cache, "callers", proj.function, "--src", str(wt)),
                            warm=facts)

        # second tag with the cache of the first
        blobs_a = {b for _, b, _ in fa.files}
        changed = [f for f in fb.small() if f[1] not in blobs_a]
        cbytes = sum(s for *_, s in changed)
        cdir = tag_dir / "changed"
        trees.write_blobs(repo, changed, cdir)
        clist = trees.write_list([p for p, _, _ in changed], tag_dir / "changed.txt")
        trees.warm_page_cache(cdir, [p for p, _, _ in changed])
        self.repeat(sec.add(Row(f"raw parse of the {proj.second} files not in the {proj.tag} cache, "
                                f"{self.jobs} processes", len(changed), cbytes), "changed"), n,
                    lambda: [*pb, "parse", cdir, clist, "--jobs", self.jobs])
        second_q = lambda: callers(proj.second, scope2)
        snap = tag_dir / "facts-first-tag"
        s1 = sec.add(Row(f"flowscan second tag {proj.second}, first run: cold question `callers "
                         f"{proj.function}` (fetches ref and blobs)", len(fb.files), fb.bytes), "second_first")
        s2 = sec.add(Row(f"flowscan second tag {proj.second}: cold question `callers {proj.function}` "
                         f"(facts of {proj.tag}, blobs present)", len(fb.files), fb.bytes), "second")
        s3 = sec.add(Row(f"flowscan second tag {proj.second}: index build (facts of {proj.tag}, blobs present)",
                         len(fb.files), fb.bytes), "second_index")
        if rest_ok and facts.is_dir():
            if snap.exists():
                shutil.rmtree(snap)
            subprocess.run(["cp", "-al", str(facts), str(snap)], check=True)  # hard links: cheap snapshot

            def restore() -> None:
                no_facts()
                subprocess.run(["cp", "-al", str(snap), str(facts)], check=True)

            self.repeat(s1, 1, second_q, before=restore)
            if s1.na:
                s2.na = s3.na = "skipped (first run failed)"
            else:
                self.repeat(s2, n, second_q, before=restore)
                self.repeat(s3, n, lambda: self.fs(cache, "index", *ref_args(proj.second, scope2)), before=restore)
        else:
            s1.na = s2.na = s3.na = "skipped (index build failed)"
        sec.lines.append(f"Second tag {proj.second}: {len(fb.files):,} files, {fb.bytes / 1e6:,.1f} MB, of which "
                         f"{len(changed):,} files ({cbytes / 1e6:,.1f} MB, <= 4 MiB) have blobs not in the "
                         f"{proj.tag} set.")
        sec.lines.append(f"Load average (1/5/15 min) before this table: {load_start}; after: {loadavg()}.")
        if not self.args.keep:
            shutil.rmtree(tag_dir, ignore_errors=True)
        return sec

    # -- the flow trace -----------------------------------------------------------------------------
    def trace(self, n: int) -> Section:
        lin, qemu = PROJECTS["linux"], PROJECTS["qemu"]
        L, Q = self.trees / "linux", self.trees / "qemu"
        sec = Section(key="trace", title=f"`flowscan trace arm64-reboot`: guest and host Linux {lin.tag}, "
                                         f"QEMU {qemu.tag}")
        sec.lines.append("Each role is scanned in the flow's own scopes (queries/flows/arm64-reboot.toml). "
                         f"Second tags: Linux {lin.second}, QEMU {qemu.second}. "
                         "Exit status 1 (a hop missing in a release) counts as a finished run.")
        load_start = loadavg()
        cache = self.work / "trace" / "cache"
        facts = cache / "facts"
        snap = self.work / "trace" / "facts-first-tags"

        def fresh() -> None:
            if cache.exists():
                shutil.rmtree(cache)

        def no_facts() -> None:  # nothing extracted, nothing indexed
            for d in (facts, cache / "index"):
                if d.exists():
                    shutil.rmtree(d)

        def trace_cmd(gl: str, qv: str) -> list[str]:
            return self.fs(cache, "trace", "arm64-reboot", "--guest-repo", str(L), "--guest", gl, "--host-repo",
                           str(L), "--host", gl, "--vmm-repo", str(Q), "--vmm", qv)

        first = lambda: trace_cmd(lin.tag, qemu.tag)
        second = lambda: trace_cmd(lin.second, qemu.second)
        ok = (0, 1)
        self.repeat(sec.add(Row("clone both (`fetch`)", scan=False), "clone"), n,
                    lambda: self.fs(cache, "fetch", "--guest-repo", str(L), "--guest", lin.tag, "--vmm-repo", str(Q),
                                    "--vmm", qemu.tag), before=fresh)
        r1 = self.repeat(sec.add(Row("trace, first run after the clone (fetches blobs, cold scan)", scan=False),
                                 "first"), 1, first, ok=ok)
        cold = sec.add(Row("trace, cold (clones present, empty facts cache)", scan=False), "cold")
        warm = sec.add(Row("trace, warm", scan=False), "warm")
        s1 = sec.add(Row("trace second tags, first run (fetches refs and blobs)", scan=False), "second_first")
        s2 = sec.add(Row("trace second tags (cache of the first tags, blobs present)", scan=False), "second")
        if r1.na:
            cold.na = warm.na = s1.na = s2.na = "skipped (first run failed)"
            return sec
        self.repeat(cold, n, first, before=no_facts, ok=ok)
        self.repeat(warm, n, first, ok=ok, warm=facts)
        if snap.exists():
            shutil.rmtree(snap)
        subprocess.run(["cp", "-al", str(facts), str(snap)], check=True)

        def restore() -> None:
            no_facts()
            subprocess.run(["cp", "-al", str(snap), str(facts)], check=True)

        self.repeat(s1, 1, second, before=restore, ok=ok)
        if s1.na:
            s2.na = "skipped (first run failed)"
        else:
            self.repeat(s2, n, second, before=restore, ok=ok)
        sec.lines.append(f"Load average (1/5/15 min) before this table: {load_start}; after: {loadavg()}.")
        if not self.args.keep:
            shutil.rmtree(self.work / "trace", ignore_errors=True)
        return sec

    # -- goals --------------------------------------------------------------------------------------
    def judge(self) -> None:
        def add(goal: str, measured: float | None, target: float | None, text: str, target_text: str) -> None:
            if measured is None or target is None:
                self.goals.append((goal, "n/a", target_text, "n/a"))
                return
            verdict = "met" if measured <= target else f"missed by {measured / target:.1f}x" \
                if measured > 1.5 * target else f"missed by {100 * (measured / target - 1):.0f}%"
            self.goals.append((goal, text, target_text, verdict))

        for sec in self.sections:
            if sec.key == "trace":
                w = sec.refs.get("warm")
                add("warm trace < 2 s", w.seconds if w else None, 2.0, f"{fmt_s(w.seconds if w else None)} s", "2 s")
                continue
            r = sec.refs
            raw = r.get("raw_small") or r.get("raw")
            for role, what in (("cold", "cold question `callers`"), ("cold_callees", "cold question `callees`"),
                               ("index", "index build")):
                row = r.get(role)
                if row and raw and row.seconds and raw.seconds:
                    cpu = f", CPU {row.cpu / raw.cpu:.2f}x" if row.cpu and raw.cpu else ""
                    add(f"{sec.key}: {what} within 1.5x raw parse", row.seconds, 1.5 * raw.seconds,
                        f"{fmt_s(row.seconds)} s = {row.seconds / raw.seconds:.2f}x{cpu}",
                        f"{fmt_s(1.5 * raw.seconds)} s")
                else:
                    add(f"{sec.key}: {what} within 1.5x raw parse", None, None, "", "1.5x")
            if sec.key.endswith("/whole"):
                row = r.get("cold_path")
                add(f"{sec.key}: cold `path` < 15 s", row.seconds if row else None, 15.0,
                    f"{fmt_s(row.seconds if row else None)} s", "15 s")
                cs = r.get("cscope")
                for role, what in (("cold", "cold question `callers`"), ("cold_callees", "cold question `callees`"),
                                   ("index", "index build")):
                    row = r.get(role)
                    add(f"{sec.key}: {what} faster than cscope", row.seconds if row else None,
                        cs.seconds if cs else None, f"{fmt_s(row.seconds if row else None)} s",
                        f"{fmt_s(cs.seconds if cs else None)} s")
                    add(f"{sec.key}: {what} peak < 2 GiB", row.peak / GIB if row and row.peak else None, 2.0,
                        f"{row.peak / GIB:.2f} GiB" if row and row.peak else "n/a", "2 GiB")
            for q in ("q_defs", "q_callers", "q_callees"):
                row = r.get(q)
                name = q[2:]
                add(f"{sec.key}: warm `{name}` < 0.5 s", row.seconds if row else None, 0.5,
                    f"{fmt_s(row.seconds if row else None)} s", "0.5 s")
            row = r.get("q_checkout")
            add(f"{sec.key}: warm question on the checkout < 0.5 s", row.seconds if row else None, 0.5,
                f"{fmt_s(row.seconds if row else None)} s", "0.5 s")
            ch, s2 = r.get("changed"), r.get("second")
            if ch and s2 and ch.seconds is not None and s2.seconds is not None:
                add(f"{sec.key}: second tag <= parse of changed files + 1 s", s2.seconds, ch.seconds + 1.0,
                    f"{fmt_s(s2.seconds)} s", f"{fmt_s(ch.seconds + 1.0)} s")
            else:
                add(f"{sec.key}: second tag <= parse of changed files + 1 s", None, None, "", "")
            s3 = r.get("second_index")
            if ch and s3 and ch.seconds is not None and s3.seconds is not None:
                add(f"{sec.key}: second tag index build <= parse of changed files + 1 s", s3.seconds,
                    ch.seconds + 1.0, f"{fmt_s(s3.seconds)} s", f"{fmt_s(ch.seconds + 1.0)} s")

    # -- report -------------------------------------------------------------------------------------
    def machine(self) -> list[str]:
        try:
            mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
            mem_s = f"{int(mem) / (1 << 20):.1f} GiB RAM"
        except (OSError, StopIteration, ValueError):
            mem_s = "RAM ?"
        try:
            cpu = next(l for l in open("/proc/cpuinfo") if l.startswith("model name")).split(":", 1)[1].strip()
        except (OSError, StopIteration):
            cpu = platform.processor() or "?"
        return [f"nproc {os.cpu_count()}, {mem_s}, {cpu}",
                f"Python {platform.python_version()}, {self.tools.get('tree_sitter')}, "
                f"{self.tools.get('ctags_version')}, {self.tools.get('cscope_version')}",
                f"flowscan {self.tools.get('flowscan')}"]

    def markdown(self, started: str, load0: str, load1: str, elapsed: float) -> str:
        a = self.args
        out = [f"## flowscan benchmark, {started}", ""]
        out.append(f"- machine: {self.machine()[0]}")
        out.append(f"- software: {self.machine()[1]}")
        out.append(f"- {self.machine()[2]}")
        out.append(f"- `python -m benchmarks{' --quick' if a.quick else ''} --jobs {self.jobs}"
                   f"{f' --repeat {a.repeat}' if a.repeat else ''}`; load average (1/5/15 min) at start "
                   f"{load0}, at end {load1}; {elapsed / 60:.1f} minutes in all")
        out.append("")
        for sec in self.sections:
            out += section_markdown(sec)
        out += ["### Goals", "", "| goal | measured | target | verdict |", "| --- | ---: | ---: | --- |"]
        for g in self.goals:
            out.append(f"| {g[0]} | {g[1]} | {g[2]} | {g[3]} |")
        out.append("")
        return "\n".join(out)


def fresh_entries(facts: Path, since: float) -> int:
    """Entries of a facts cache (<facts>/<2 hex>/<rest>) modified at or after `since`."""
    n = 0
    try:
        shards = list(os.scandir(facts))
    except OSError:
        return 0
    for shard in shards:
        if not shard.is_dir(follow_symlinks=False):
            continue
        with os.scandir(shard.path) as it:
            for ent in it:
                try:
                    if ent.is_file(follow_symlinks=False) and ent.stat(follow_symlinks=False).st_mtime >= since:
                        n += 1
                except OSError:
                    continue
    return n


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure flowscan (cold scan, warm re-run, second tag, warm queries, trace) against raw "
                    "tree-sitter parsing with the same number of processes, Universal Ctags and cscope, on the "
                    "real Linux and QEMU trees of ../shared/realtrees/get-real-trees (built if missing). "
                    "Prints Markdown tables: seconds (median), MB/s, peak RSS of the whole process tree, ratios.",
        epilog="Scope sets: the reboot scope of Linux (arch/arm64 kernel virt drivers/firmware) and of QEMU "
               "(accel system|softmmu hw/core hw/intc target/arm util include/hw), then (without --quick) the "
               "whole trees. Tags: Linux v6.12.8 then v6.1.176, QEMU v10.0.13 then v7.2.0.")
    ap.add_argument("--quick", action="store_true", help="Reboot scopes (and the trace) only; no whole trees.")
    ap.add_argument("--repeat", type=int, default=0, metavar="N",
                    help="Runs per step (default: 3 for the reboot scopes, 1 for whole trees).")
    ap.add_argument("--jobs", type=int, default=0, metavar="N",
                    help="Processes for flowscan (--jobs) and for the raw-parse pool (default: all cores).")
    ap.add_argument("--output", "-o", metavar="FILE", help="Also write the Markdown tables to FILE.")
    ap.add_argument("--json", metavar="FILE", help="Also write every run's figures as JSON.")
    ap.add_argument("--projects", default="linux,qemu", help="Comma-separated subset of linux,qemu.")
    ap.add_argument("--no-trace", action="store_true", help="Skip the `flowscan trace` rows.")
    ap.add_argument("--extract-whole", action="store_true",
                    help="Also time extract_file in-process on whole trees (slow: one core).")
    ap.add_argument("--trees", default=str(trees.DEFAULT_TREES), metavar="DIR",
                    help="Where the real-tree repositories are (default: %(default)s).")
    ap.add_argument("--work-dir", metavar="DIR", help="Scratch directory (default: a new one under $TMPDIR).")
    ap.add_argument("--keep", action="store_true", help="Keep the scratch directory (worktrees, caches).")
    ap.add_argument("--live", action="store_true",
                    help="Run the checkout's flowscan as it is at each moment instead of a copy taken at the start.")
    ap.add_argument("--timeout", type=float, default=900.0, metavar="SEC",
                    help="Stop any single run after SEC seconds; its row says so (default: %(default)s).")
    args = ap.parse_args(argv)
    projects = [p.strip() for p in args.projects.split(",") if p.strip()]
    bad = [p for p in projects if p not in PROJECTS]
    if bad or not projects:
        ap.error(f"--projects: unknown {', '.join(bad) or '(empty)'}; known: linux, qemu")
    args.project_list = projects
    if args.repeat < 0 or args.jobs < 0:
        ap.error("--repeat and --jobs take a positive number")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load0 = loadavg()
    t0 = time.perf_counter()
    bench.check_tools()
    wanted = []
    for name in args.project_list:
        p = PROJECTS[name]
        wanted += [(name, p.tag), (name, p.second)]
    if not args.no_trace:
        wanted += [("linux", PROJECTS["linux"].tag), ("linux", PROJECTS["linux"].second),
                   ("qemu", PROJECTS["qemu"].tag), ("qemu", PROJECTS["qemu"].second)]
    trees.ensure_trees(Path(args.trees), sorted(set(wanted)), bench.log)
    sets = [("reboot", args.repeat or 3)]
    if not args.quick:
        sets.append(("whole", args.repeat or 1))
    try:
        for which, n in sets:
            for name in args.project_list:
                try:
                    bench.sections.append(bench.project(PROJECTS[name], which, n))
                except Exception as exc:  # one broken section must not lose the others
                    bench.log(f"{name}/{which} failed: {type(exc).__name__}: {exc}")
                    sec = Section(key=f"{name}/{which}", title=f"{PROJECTS[name].title}, {which}")
                    sec.lines.append(f"n/a: {type(exc).__name__}: {exc}")
                    bench.sections.append(sec)
            if which == "reboot" and not args.no_trace:
                try:
                    bench.sections.append(bench.trace(args.repeat or 3))
                except Exception as exc:
                    bench.log(f"trace failed: {type(exc).__name__}: {exc}")
                    sec = Section(key="trace", title="`flowscan trace arm64-reboot`")
                    sec.lines.append(f"n/a: {type(exc).__name__}: {exc}")
                    bench.sections.append(sec)
    finally:
        if not args.keep and not args.work_dir:
            shutil.rmtree(bench.work, ignore_errors=True)
    bench.judge()
    text = bench.markdown(started, load0, loadavg(), time.perf_counter() - t0)
    sys.stdout.write(text)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    if args.json:
        data = {"started": started, "machine": bench.machine(), "jobs": bench.jobs,
                "sections": [{"key": s.key, "title": s.title, "lines": s.lines, "rows": [r.to_json() for r in s.rows]}
                             for s in bench.sections],
                "goals": [dict(zip(("goal", "measured", "target", "verdict"), g)) for g in bench.goals]}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
