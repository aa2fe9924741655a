"""The layering of ``docs/architecture.md`` holds in the code: imports point down only, and no
module imports itself through others (read from the source with ``ast``, function-level
imports included, ``if TYPE_CHECKING:`` blocks excluded)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "unblur"

# Lowest first; a module may import its own layer and the ones below it.
LAYERS = [
    ("types", "utils", "config", "analytic"),
    ("processes", "nets", "text"),
    ("precond", "objectives"),
    ("sampling", "guidance"),
    ("images", "data"),
    ("conditioning",),
    ("editing",),
    ("pipelines",),
    ("runs",),
    ("training", "eval", "show"),
    ("serve",),
    ("cli", "__main__"),
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> set[str]:
    """The unblur modules ``path`` imports (absolute names), anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "unblur")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] == "unblur":
                for a in node.names:  # `from . import x` may name a submodule
                    sub = f"{mod}.{a.name}"
                    out.add(sub if _exists(sub) else mod)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    out.discard(name)
    return out


def _exists(mod: str) -> bool:
    p = SRC.parent.joinpath(*mod.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(SRC.rglob("*.py"))}


def unit(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer():
    missing = sorted({unit(m) for m in graph()} - set(LAYER_OF) - {"__init__"})
    assert not missing, f"modules with no layer in tests/test_architecture.py and docs/architecture.md: {missing}"


def test_imports_point_down_only():
    upward = []
    for mod, deps in graph().items():
        if unit(mod) == "__init__":
            continue
        for dep in deps:
            if unit(dep) != "__init__" and LAYER_OF[unit(dep)] > LAYER_OF[unit(mod)]:
                upward.append(f"{mod} -> {dep}")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def test_no_import_loops():
    g = graph()
    # Tarjan's strongly connected components; a component of two or more modules is a loop.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    loops: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                loops.append(sorted(comp))

    for v in g:
        if v not in index:
            strong(v)
    assert not loops, f"import loops: {loops}"
