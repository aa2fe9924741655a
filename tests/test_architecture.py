"""The layering of ``docs/architecture.md`` holds in the code: imports point down only, no
module imports itself through others, and the front ends reach the library through its doors
(read from the source with ``ast``, function-level imports included, ``if TYPE_CHECKING:``
blocks excluded). The layer table is read from the page itself, so the picture and the check
cannot drift apart."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "unblur"
DOC = ROOT / "docs" / "architecture.md"
HEADING = "## Layers (imports point down only)"

# The front ends, and what they may import from the library: the doors (`runs`, `kinds`) and
# the layers above them, the vocabulary, and `images` (the one reader of image files). They may
# import each other (`cli serve` starts `serve`).
FRONT_ENDS = ("cli", "serve", "__main__")
FRONT_END_MAY_IMPORT = ("runs", "kinds", "training", "eval", "show", "types", "utils", "config", "images")


def read_layers(text: str) -> list[tuple[str, ...]]:
    """The layers of the fenced block under ``HEADING``, lowest first.

    Each line that does not start with a space is a layer: its leading names (``cli/``,
    ``__main__.py``) stripped of ``/`` and ``.py``, then the description. A line that starts with
    a space continues the description above it. The top line is the highest layer."""
    lines = text.splitlines()
    if HEADING not in lines:
        raise AssertionError(f"{DOC} has no line {HEADING!r}: the layer table is read from under it")
    i = lines.index(HEADING) + 1
    while i < len(lines) and not lines[i].startswith("```"):
        if lines[i].startswith("#"):
            raise AssertionError(f"no fenced block under {HEADING!r} in {DOC}")
        i += 1
    layers: list[tuple[str, ...]] = []
    for line in lines[i + 1:]:
        if line.startswith("```"):
            break
        if not line.strip() or line[0].isspace():
            continue  # a continuation of the description above
        names = []
        for token in line.split():
            m = re.fullmatch(r"([A-Za-z_]\w*)(/|\.py)", token)
            if not m:
                break
            names.append(m.group(1))
        if not names:
            raise AssertionError(f"a layer line of {DOC} names no package or module: {line!r}")
        layers.append(tuple(names))
    else:
        raise AssertionError(f"the fenced block under {HEADING!r} in {DOC} is not closed")
    return layers[::-1]


# Lowest first; a module may import its own layer and the ones below it.
LAYERS = read_layers(DOC.read_text(encoding="utf-8"))
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


def units_on_disk() -> set[str]:
    """Every package (a folder holding Python files) and top-level module of ``src/unblur``."""
    out = {p.stem for p in SRC.glob("*.py") if p.name != "__init__.py"}
    out |= {d.name for d in SRC.iterdir() if d.is_dir() and any(d.rglob("*.py"))}
    return out


def test_the_layer_table_is_read_from_the_page():
    assert len(LAYERS) > 5 and LAYERS[-1][0] == "cli" and "types" in LAYERS[0], LAYERS
    repeated = sorted({u for u in LAYER_OF if sum(u in layer for layer in LAYERS) > 1})
    assert not repeated, f"named in more than one layer of {DOC}: {repeated}"


def test_every_module_has_a_layer():
    missing = sorted((units_on_disk() | {unit(m) for m in graph()}) - set(LAYER_OF) - {"__init__"})
    assert not missing, (
        f"packages or modules of src/unblur in no layer: {missing}; add each to the table under "
        f"{HEADING!r} in docs/architecture.md, on the line of the layer it belongs to")


def test_the_layer_table_names_only_what_exists():
    gone = sorted(set(LAYER_OF) - units_on_disk())
    assert not gone, f"the layer table of docs/architecture.md names what src/unblur does not hold: {gone}"


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


def test_front_ends_reach_the_library_through_its_doors():
    allowed = set(FRONT_END_MAY_IMPORT) | set(FRONT_ENDS)
    bad = []
    for mod, deps in graph().items():
        if unit(mod) not in FRONT_ENDS:
            continue
        path = SRC.parent.joinpath(*mod.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        for dep in sorted(deps):
            if unit(dep) not in allowed and unit(dep) != "__init__":
                bad.append(f"{path.relative_to(ROOT)}: {dep}")
    assert not bad, (
        f"front ends ({', '.join(FRONT_ENDS)}) import from the library only {', '.join(FRONT_END_MAY_IMPORT)}; "
        f"these imports reach past the doors (add what they need to a `Run` or a kind instead):\n" + "\n".join(bad))
