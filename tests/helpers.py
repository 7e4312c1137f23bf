"""Run the flowscan CLI in-process, as the console script does (main(): exit codes and one-line errors)."""

from __future__ import annotations

import sys

import pytest

from flowscan.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["flowscan", *args]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("flowscan: error: "), err
    return lines[0]


__all__ = ["run", "one_line_error", "pytest"]
