"""The package's layout (docs/DESIGN.md): modules stay short, imports flow one way and form no circle, no module
reaches into another's private names, and `import cladec` / `cladec --help` need no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cladec"

#: Layers from the bottom up (docs/DESIGN.md): a module may import its own layer's modules and lower layers only.
#: Keys are top-level modules or subpackages of cladec.
LAYERS = {
    "_version": 0,
    "_errors": 0,
    "_checks": 0,
    "_tensors": 0,
    "normalize": 0,
    "_schema": 0,
    "_io": 0,
    "_limits": 0,
    "_sampling": 0,
    "defaults": 0,
    "data": 1,
    "training": 1,
    "models": 2,
    "capture": 3,
    "layouts": 3,
    "decoder": 3,
    "_decoder_arch": 3,
    "explainers": 4,
    "persistence": 5,
    "explanation": 5,
    "runs": 6,
    "evaluation": 7,
    "saliency": 8,  # scores maps, and compares them with evaluation's statistics
    "report": 9,
    "demo": 10,  # trains, fits, explains and builds a report
    "cli": 11,
    "__main__": 11,
}
MAX_LINES = 500
#: A command module parses, calls the library and prints; main (entry point, root parser, error mapping) and
#: _args (argument types shared by the commands) are not command groups.
MAX_CLI_COMMAND_LINES = 150
MAX_CLI_SHARED_LINES = 300


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(SRC.rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["cladec", *parts])] = p
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(name: str, path: Path) -> list[tuple[str, int, list[str]]]:
    """(imported cladec module, line, imported names) for every import a module runs, at any depth (deferred
    ones too), except those under `if TYPE_CHECKING:` (never run)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: list[tuple[str, int, list[str]]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                else:
                    mod = child.module or ""
                if mod == "cladec" or mod.startswith("cladec."):
                    names = [a.name for a in child.names]
                    # `from . import x` imports the module cladec.x where one exists
                    submods = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in MODULES]
                    if submods:
                        out.extend((m, child.lineno, []) for m in submods)
                        names = [n for n in names if f"{mod}.{n}" not in MODULES]
                    if names or not submods:
                        out.append((mod, child.lineno, names))
            elif isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, []) for a in child.names if a.name.startswith("cladec"))
            visit(child)

    visit(ast.parse(path.read_text()))
    return out


def _packages_run(mod: str) -> list[str]:
    """Importing cladec.a.b runs cladec/a/__init__.py first: the package inits an import executes."""
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in MODULES]


def _layer(mod: str) -> int | None:
    parts = mod.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_layer():
    missing = sorted({m.split(".")[1] for m in MODULES if m != "cladec" and _layer(m) is None})
    assert not missing, f"add these to LAYERS (and docs/DESIGN.md): {missing}"


def test_modules_are_short():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_cli_modules_only_parse_and_print():
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items() if m.startswith("cladec.cli.")}
    shared = {"cladec.cli.main", "cladec.cli._args"}
    over = {m: n for m, n in sizes.items() if n > (MAX_CLI_SHARED_LINES if m in shared else MAX_CLI_COMMAND_LINES)}
    assert not over, f"command-line modules too long (move the work into the library): {over}"


def test_imports_flow_downwards():
    """No module imports a higher layer (evaluation never imports saliency, models never imports capture...)."""
    upward = []
    for name, path in MODULES.items():
        own = _layer(name)
        if own is None:  # cladec/__init__.py: its public names are looked up lazily, by name
            continue
        for mod, line, _ in _imports(name, path):
            other = _layer(mod)
            if other is not None and other > own:
                upward.append(f"{path.relative_to(SRC)}:{line} imports {mod}")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_no_import_circles():
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in MODULES.items():
        for mod, _, _ in _imports(name, path):
            for target in [*_packages_run(mod), mod]:
                # a module inside a package runs after the package's __init__ started: no edge to it
                if target in MODULES and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                circles.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in list(MODULES):
        if v not in index:
            strong(v)
    assert not circles, f"import circles: {circles}"


def test_no_private_names_cross_modules():
    """A name another module needs is public within the package (private modules like _io may hold it)."""
    crossing = []
    for name, path in MODULES.items():
        for mod, line, names in _imports(name, path):
            crossing += [
                f"{path.relative_to(SRC)}:{line} {mod}.{n}"
                for n in names
                if n.startswith("_") and not n.startswith("__")
            ]
    assert not crossing, "private names imported from another module:\n" + "\n".join(crossing)


@pytest.mark.parametrize(
    "code",
    [
        "import cladec",
        "import cladec.cli",
        "from cladec.cli import build_parser; build_parser()",
        "import cladec.defaults",
    ],
)
def test_no_torch_on_import(code):
    """`cladec --help`, usage errors and `import cladec` are quick: they load no torch."""
    check = f"{code}; import sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"{code!r} imported torch"
