"""The layout's rules, checked: every room is in the import contract, no private name crosses a module,
tests mirror the package, and library code never prints.

The import contract itself (layers, no cycles) is checked by ``lint-imports`` in ``make test``;
these tests catch what it cannot: a new room left out of the contract, a private import.
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

import camanim

SRC = Path(camanim.__file__).parent
ROOT = SRC.parent.parent
TESTS = ROOT / "tests"


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str) -> list[tuple[str, str, int]]:
    """(module imported from, name, line) of every ``from ... import name`` in the file, made absolute."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out += [(base, alias.name, node.lineno) for alias in node.names]
    return out


def test_every_room_is_a_layer_of_the_import_contract():
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    layers = config["importlinter:contract:rooms"]["layers"]
    named = {part.strip() for line in layers.splitlines() for part in line.split("|") if part.strip()}
    rooms = {f"camanim.{p.stem if p.is_file() else p.name}" for p in SRC.iterdir()
             if (p.suffix == ".py" and p.stem not in ("__init__", "__main__")) or (p / "__init__.py").is_file()}
    assert rooms - named == set(), "rooms missing from the import contract's layers"
    assert named - rooms == set(), "the contract names rooms that do not exist"


def test_every_module_of_a_room_is_a_layer_of_its_rooms_contract():
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    by_container = {}
    for section in config.sections():
        if "containers" in config[section]:
            container = config[section]["containers"].strip()
            by_container[container] = {part.strip() for line in config[section]["layers"].splitlines()
                                       for part in line.split("|") if part.strip()}
    for room in (p for p in SRC.iterdir() if (p / "__init__.py").is_file()):
        modules = {p.stem for p in room.glob("*.py") if p.stem != "__init__"}
        if len(modules) < 2:
            continue
        layers = by_container.get(f"camanim.{room.name}")
        assert layers is not None, f"room {room.name} has no contract of its own in .importlinter"
        assert modules == layers, f"room {room.name}: modules {sorted(modules)} vs layers {sorted(layers)}"


def test_no_private_name_is_imported_from_another_module():
    """Not in the package, and not from the package by its tests and benchmarks either: what
    another module needs is public (a benchmark or test reaching for ``_x`` would pin a detail)."""
    files = [(name, path) for name, path in _modules().items()]
    files += [("tests", p) for p in TESTS.rglob("*.py")] + [("benchmarks", p) for p in (ROOT / "benchmarks").glob("*.py")]
    crossing = []
    for name, path in files:
        for source, imported, line in _imports(path, name):
            if source.startswith("camanim") and imported.startswith("_") and not imported.startswith("__"):
                crossing.append(f"{path.relative_to(ROOT)}:{line} imports {imported} from {source}")
    assert crossing == []


def test_no_module_of_the_package_is_private():
    assert [n for n in _modules() if any(p.startswith("_") and p != "__main__" for p in n.split("."))] == []


def test_library_code_never_prints():
    printing = []
    for name, path in _modules().items():
        if name in ("camanim.cli", "camanim.__main__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                printing.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert printing == []


def test_tests_mirror_the_package():
    """Every room has a folder of tests, every top-level module a test module, and no other test
    module sits at the top (a test of a room's module lives in the room's folder)."""
    rooms = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    for room in rooms:
        assert list((TESTS / room).glob("test_*.py")), f"no tests/{room}/test_*.py for room {room}"
    top = {p.stem for p in SRC.glob("*.py")} - {"__init__", "__main__", "version", "errors"}
    for module in top:
        assert (TESTS / f"test_{module}.py").is_file(), f"no tests/test_{module}.py"
    about_the_package = {"test_structure", "test_docstrings"}
    stray = {p.stem for p in TESTS.glob("test_*.py")} - {f"test_{m}" for m in top} - about_the_package
    assert stray == set(), "test modules at the top that belong in a room's folder"
    assert {p.name for p in TESTS.iterdir() if p.is_dir() and list(p.glob("test_*.py"))} <= rooms


#: Test modules of a room named after what they cover across the room's modules, not after one module.
ACROSS = {"methods": {"test_reference"}, "sources": {"test_sources"}}


def test_each_test_module_of_a_room_is_named_after_a_module_of_it():
    """``tests/<room>/test_<module>[_<what>].py``, ``test_cli.py`` for the room's subcommand, or one of
    the few cross-module test modules named in :data:`ACROSS`."""
    for room in (p for p in SRC.iterdir() if (p / "__init__.py").is_file()):
        modules = {m.stem for m in room.glob("*.py") if m.stem != "__init__"}
        for test in (TESTS / room.name).glob("test_*.py"):
            covered = test.stem.removeprefix("test_")
            named = any(covered == m or covered.startswith(f"{m}_") for m in modules | {"cli"})
            assert named or test.stem in ACROSS.get(room.name, set()), f"{test.relative_to(TESTS)} names no module"
