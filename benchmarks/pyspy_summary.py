"""Summarise a py-spy raw (collapsed-stack) profile: where the time goes, per process role.

    py-spy record --subprocesses --format raw -o prof.txt -- python -m flowscan ...
    python -m benchmarks.pyspy_summary prof.txt [--top 25]

Prints, for the parent process and for the worker processes together, the share of samples in a few
buckets of flowscan's work (each stack goes to the first bucket, in the order below, that one of its
frames matches; record with --native to split tree-sitter's C code out), then per function: "self"
(the function is the innermost frame) and "total" (it is anywhere on the stack).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

_PROC = re.compile(r"^process (\d+):")
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^():]*):?(?P<line>\d*)\)$")


# (bucket, substrings of a frame): first match wins
BUCKETS = [
    ("Python cyclic GC", ("gc_collect_main", "gc_collect_with_callback")),
    ("tree-sitter parse (C)", ("ts_parser_parse", "parser_parse (")),
    ("tree-sitter query matches (C)", ("query_cursor_matches", "ts_query_cursor")),
    ("prepass", ("prepass (flowscan/prepass.py",)),
    ("flatten_conditionals", ("flatten_conditionals",)),
    ("ConditionMap (#if conditions)", ("ConditionMap",)),
    ("facts -> JSON (to_json/dumps)", ("FileFacts.dumps", "FileFacts.to_json")),
    ("facts cache write", ("FactsCache.put",)),
    ("facts cache read", ("FactsCache.get",)),
    ("extract: Python collectors", ("_Collector", "_context (flowscan/extract", "_top_level_errors", "_widen",
                                    "_count_errors")),
    ("extract: other", ("extract_file",)),
    ("JSON -> facts: json.loads", ("JSONDecoder", "json/__init__")),
    ("JSON -> facts: from_json/rows", ("from_json", "_facts_from_text")),
    ("graph build", ("Graph.__init__", "find_registrations", "QomIndex")),
    ("git cat-file read", ("_CatFile", "GitTree.read")),
    ("git ls-tree / blob checks", ("GitTree.files", "ensure_blobs", "_ls_tree")),
    ("pool / IPC", ("multiprocessing/", "concurrent/futures")),
    ("imports", ("importlib._bootstrap",)),
]


def _bucket(frames: list[str]) -> str:
    for label, keys in BUCKETS:
        for f in frames:
            if any(k in f for k in keys):
                return label
    return "other"


def _name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    for cut in ("site-packages/", "lib/python3", "/work/main/"):
        if cut in file:
            file = file.split(cut, 1)[1]
    return f"{m.group('fn')} ({file})"


def summarise(path: str, top: int) -> str:
    samples = collections.Counter()
    buckets = collections.defaultdict(collections.Counter)
    self_ = collections.defaultdict(collections.Counter)
    total = collections.defaultdict(collections.Counter)
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            procs = [f for f in frames if _PROC.match(f)]
            code = [f for f in frames if not _PROC.match(f)]
            role = "parent" if len(procs) <= 1 else "workers"
            samples[role] += n
            if not code:
                continue
            buckets[role][_bucket(code)] += n
            self_[role][_name(code[-1])] += n
            for fn in {_name(f) for f in code}:
                total[role][fn] += n
    out = []
    grand = sum(samples.values()) or 1
    for role in ("parent", "workers"):
        if not samples[role]:
            continue
        out.append(f"## {role}: {samples[role]} samples ({samples[role] / grand:.0%} of all)")
        out.append("")
        out.append("| bucket | % |")
        out.append("| --- | ---: |")
        for label, n in buckets[role].most_common():
            out.append(f"| {label} | {100 * n / samples[role]:.1f} |")
        out.append("")
        out.append("| self % | function |")
        out.append("| ---: | --- |")
        for fn, n in self_[role].most_common(top):
            out.append(f"| {100 * n / samples[role]:.1f} | `{fn}` |")
        out.append("")
        out.append("| total % | function |")
        out.append("| ---: | --- |")
        for fn, n in total[role].most_common(top + 12):
            out.append(f"| {100 * n / samples[role]:.1f} | `{fn}` |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pyspy_summary", description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    sys.stdout.write(summarise(args.profile, args.top) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
