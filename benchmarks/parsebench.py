"""In-process measurements, run as their own process so that startup and peak memory are measured alike.

    python -m benchmarks.parsebench MODE ROOT LIST [--jobs N]

MODE is one of:
  parse    raw tree-sitter-c parsing: a pool of N worker processes, each builds
           ``Parser(Language(tree_sitter_c.language()))`` once and parses file bytes, nothing else
           (N = 1: in the process itself, no pool);
  prepass  ``flowscan.prepass.prepass`` alone over every file, in this process (one core);
  extract  ``flowscan.extract.extract_file`` (prepass + parse + queries + facts) in this process.

ROOT is the directory the relative paths of LIST (one per line) are under. Prints one JSON line:
files, bytes, and ``seconds`` = time spent in the measured calls alone (file reads excluded for the
one-process modes; for the pool: wall time from the first submission to the last result).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

_PARSER = None
_ROOT = ""


def _init(root: str) -> None:
    global _PARSER, _ROOT
    import tree_sitter_c
    from tree_sitter import Language, Parser

    _PARSER = Parser(Language(tree_sitter_c.language()))
    _ROOT = root


def _parse_chunk(paths: list[str]) -> int:
    total = 0
    for p in paths:
        with open(os.path.join(_ROOT, p), "rb") as fh:
            data = fh.read()
        _PARSER.parse(data)
        total += len(data)
    return total


def _chunks(paths: list[str], size: int):
    for i in range(0, len(paths), size):
        yield paths[i:i + size]


def run_pool(root: str, paths: list[str], jobs: int) -> tuple[float, int]:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs, initializer=_init, initargs=(root,)) as pool:
        started = time.perf_counter()
        total = sum(pool.imap_unordered(_parse_chunk, _chunks(paths, 8)))
        seconds = time.perf_counter() - started
    return seconds, total


def run_serial(mode: str, root: str, paths: list[str]) -> tuple[float, int]:
    if mode == "parse":
        _init(root)
        call = _PARSER.parse
    elif mode == "prepass":
        from flowscan.extract.prepass import prepass

        prepass(b"int x;\n")  # build the macro tables outside the timed region
        call = prepass
    elif mode == "extract":
        from flowscan.extract.parse import extract_file

        extract_file(b"int x;\n", "warmup.c")  # language, queries and tables outside the timed region
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = 0.0
    total = 0
    for p in paths:
        with open(os.path.join(root, p), "rb") as fh:
            data = fh.read()
        t = time.perf_counter()
        if mode == "extract":
            extract_file(data, p)
        else:
            call(data)
        seconds += time.perf_counter() - t
        total += len(data)
    return seconds, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.parsebench")
    ap.add_argument("mode", choices=["parse", "prepass", "extract"])
    ap.add_argument("root")
    ap.add_argument("filelist")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    with open(args.filelist, encoding="utf-8", errors="surrogateescape") as fh:
        paths = [line.rstrip("\n") for line in fh if line.strip()]
    if args.mode == "parse" and args.jobs > 1:
        seconds, total = run_pool(args.root, paths, args.jobs)
    else:
        seconds, total = run_serial(args.mode, args.root, paths)
    json.dump({"mode": args.mode, "jobs": args.jobs, "files": len(paths), "bytes": total,
               "seconds": seconds}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
