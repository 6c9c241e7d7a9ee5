"""The package's floors, stated once and checked on every import statement of vlbert_fast and benchmarks:

    vocabulary/config -> data -> kernels -> ops -> model -> tasks -> engine -> commands -> cli -> benchmarks

A module imports from its own floor or from floors to its left, never to its right; the compute floors (kernels,
ops) import nothing of data (what a token position holds is vocabulary, at the bottom); no module imports another
module's private names; and there is no import cycle between modules. The scan reads the source (ast), so imports
inside functions count as much as those at the top.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOORS = (
    ("vlbert_fast.version", 0),
    ("vlbert_fast.vocabulary", 0),
    ("vlbert_fast._ext", 0),
    ("vlbert_fast.config", 0),
    ("vlbert_fast.tokenization", 1),
    ("vlbert_fast.data", 1),
    ("vlbert_fast.kernels", 2),
    ("vlbert_fast.ops", 3),
    ("vlbert_fast.model", 4),
    ("vlbert_fast.tasks", 5),
    ("vlbert_fast.engine", 6),
    ("vlbert_fast.commands", 7),
    ("vlbert_fast.cli", 8),
    ("vlbert_fast.__main__", 9),
    ("benchmarks", 10),
)
COMPUTE = (2, 3)  # kernels and ops: no data imports
DATA = 1


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the longest known module the statement names)
    names: tuple[str, ...]  # the names taken from it (from-imports)
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def known_modules() -> dict[str, Path]:
    paths = [*(ROOT / "vlbert_fast").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    return {module_name(p): p for p in paths}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Our imports in `path`: `from a.b import c` counts as an import of a.b.c when that is a module, else of a.b."""
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith(("vlbert_fast", "benchmarks")):
                continue
            plain = []
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:
                    found.append(Import(name, f"{target}.{alias.name}", (), node.lineno))
                else:
                    plain.append(alias.name)
            if plain:
                found.append(Import(name, target, tuple(plain), node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(("vlbert_fast", "benchmarks")):
                    found.append(Import(name, alias.name, (), node.lineno))
    return found


def floor_of(module: str) -> int | None:
    best = None
    for prefix, floor in FLOORS:
        if module == prefix or module.startswith(prefix + "."):
            best = floor
    return best


def all_imports() -> list[Import]:
    modules = known_modules()
    return [i for name, path in sorted(modules.items()) for i in imports_of(name, path, modules)]


def violations(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        if imp.target in ("vlbert_fast", imp.source) or imp.source == "vlbert_fast":
            continue  # the package's own __init__ (the version) and a module naming itself
        src, dst = floor_of(imp.source), floor_of(imp.target)
        where = f"{imp.source} (line {imp.line}) imports {imp.target}"
        if src is None or dst is None:
            problems.append(f"{where}: a module on no floor; add it to FLOORS in tests/test_layering.py")
        elif dst > src:
            problems.append(f"{where}: an upward import (floor {src} -> {dst})")
        elif src in COMPUTE and dst == DATA:
            problems.append(
                f"{where}: kernels and ops import nothing of data (shared words: vlbert_fast/vocabulary.py)"
            )
        private = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
        if private and imp.target.rpartition(".")[0] != imp.source.rpartition(".")[0]:
            problems.append(f"{where}: private names {private} of another package")
    return problems


def cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan); a package and its own submodules excepted."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if (
            imp.target == imp.source
            or imp.target.startswith(imp.source + ".")
            or imp.source.startswith(imp.target + ".")
        ):
            continue  # a package's __init__ gathering its submodules, or a submodule reading its package
        graph.setdefault(imp.source, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_imports_only_run_downward():
    problems = violations(all_imports())
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    found = cycles(all_imports())
    assert not found, "\n".join(" <-> ".join(group) for group in found)


def test_the_check_fails_on_an_upward_import_and_a_cycle():
    """The rules catch what they are for: an ops module importing the engine, kernels importing data, a private
    name, a module on no floor, and two modules importing each other."""
    bad = [
        Import("vlbert_fast.ops.embedding", "vlbert_fast.engine.trainer", ("pretrain",), 1),
        Import("vlbert_fast.kernels.embedding", "vlbert_fast.data.batch", ("Batch",), 2),
        Import("vlbert_fast.commands.attention_maps", "vlbert_fast.data.pretrain_loader", ("_under",), 3),
        Import("vlbert_fast.newfloor.x", "vlbert_fast.config", (), 4),
    ]
    problems = violations(bad)
    assert len(problems) == 4, problems
    assert "upward" in problems[0] and "nothing of data" in problems[1]
    assert "private" in problems[2] and "no floor" in problems[3]
    loop = [
        Import("vlbert_fast.data.a", "vlbert_fast.data.b", (), 1),
        Import("vlbert_fast.data.b", "vlbert_fast.data.a", (), 1),
    ]
    assert cycles(loop) == [["vlbert_fast.data.a", "vlbert_fast.data.b"]]


def test_the_scan_sees_the_package():
    imports = all_imports()
    assert len(imports) > 300
    assert any(
        i.source == "vlbert_fast.engine.trainer" and i.target == "vlbert_fast.model.checkpoint_dir" for i in imports
    )
