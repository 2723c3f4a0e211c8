"""The package's shape stays what a newcomer can read: no function in ``fakeproof/`` over
:data:`MAX_FUNCTION_LINES` lines, no file over :data:`MAX_FILE_LINES`, and the module import graph
(every ``import`` of a fakeproof module, at the top or inside a function; not those under
``if TYPE_CHECKING``) has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fakeproof"
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The fakeproof modules ``name`` imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):  # annotations only: no import at run time
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m in modules and m != name}


def test_no_function_or_file_is_too_long() -> None:
    long_files, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append(f"{path.relative_to(PACKAGE.parent)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} "
                                          f"{node.name}: {n} lines")
    assert long_files == [], f"files over {MAX_FILE_LINES} lines"
    assert long_functions == [], f"functions over {MAX_FUNCTION_LINES} lines"


def test_the_module_import_graph_has_no_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # A submodule importing its own package (``fakeproof.models.smallcnn`` imports
    # ``fakeproof.models``) is how a package's parts reach its shared names: a cycle only when
    # the package imports that submodule back, which the search below still sees.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_every_benchmark_imports_names_the_package_has() -> None:
    """Benchmarks are not run by the suite; a module moved or a name renamed in ``fakeproof/``
    must still not leave one importing what no longer exists (every ``from fakeproof... import``
    and ``import fakeproof...`` of ``benchmarks/*.py``, at the top or inside a function)."""
    import importlib
    import importlib.util

    stale = []
    for path in sorted((PACKAGE.parent / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fakeproof"):
                try:
                    mod = importlib.import_module(node.module)
                except ModuleNotFoundError:
                    stale.append(f"{path.name}: {node.module}")
                    continue
                for alias in node.names:
                    if not hasattr(mod, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ModuleNotFoundError:
                            stale.append(f"{path.name}: {node.module}.{alias.name}")
            elif isinstance(node, ast.Import):
                stale += [f"{path.name}: {a.name}" for a in node.names
                          if a.name.startswith("fakeproof")
                          and importlib.util.find_spec(a.name) is None]
    assert stale == []
