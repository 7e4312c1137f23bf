"""The pipeline's layers import only downward, with no cycles and no private names across modules."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "flowscan"

# Lowest first. A module may import modules of its own layer (no cycles) or of layers below it.
LAYERS = [
    ["flowscan.errors", "flowscan.fileio", "flowscan.resources", "flowscan.progress", "flowscan"],
    ["flowscan.sources"],
    ["flowscan.config"],
    ["flowscan.extract"],
    ["flowscan.index"],
    ["flowscan.buildconfig"],
    ["flowscan.graph"],
    ["flowscan.flow"],
    ["flowscan.report"],
    ["flowscan.workspace", "flowscan.cold"],
    ["flowscan.cli", "flowscan.console", "flowscan.__main__"],
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _layer(mod: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and (best is None or len(n) > best[1]):
                best = (i, len(n))
    assert best is not None, f"{mod} is in no layer"
    return best[0]


def _imports(path: Path, mod: str) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every flowscan import, lazy ones too."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "flowscan":
            out.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "flowscan"]
    return out


MODULES = _modules()


def _resolve(target: str, names: list[str]) -> list[tuple[str, str | None]]:
    """`from pkg import mod` names a module; `from mod import name` a name in it."""
    out = []
    for n in names or [None]:
        sub = f"{target}.{n}" if n else None
        out.append((sub, None) if sub in MODULES else (target, n))
    return out


def test_every_module_is_in_a_layer():
    for mod in MODULES:
        _layer(mod)


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_imports_go_downward_and_take_no_private_names(mod):
    here = _layer(mod)
    for target, names, line in _imports(MODULES[mod], mod):
        for m, name in _resolve(target, names):
            assert m in MODULES, f"{mod}:{line} imports unknown module {m}"
            assert _layer(m) <= here, f"{mod}:{line} imports {m}, a higher layer"
            if name is not None and m != "flowscan":
                assert not name.startswith("_"), f"{mod}:{line} imports the private name {name} from {m}"


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for target, names, _ in _imports(path, mod):
            for m, _name in _resolve(target, names):
                if m != mod and m in MODULES and m != "flowscan":
                    graph[mod].add(m)
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
