"""Public docstrings: every public function, method and class of the package has one; each that
raises says so in a ``Raises:`` section; each CAM method cites its paper with a link (not every one is on
arXiv), and ROAD with its arXiv link."""

from __future__ import annotations

import ast
from pathlib import Path

import camanim
from camanim.methods import get_method, list_methods

SRC = Path(camanim.__file__).parent


def _public_defs():
    """(where, node) of every public module-level function and class, and public method of a public class."""
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                yield f"{path.relative_to(SRC)}:{node.name}", node
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                            yield f"{path.relative_to(SRC)}:{node.name}.{item.name}", item


def _raises(node: ast.AST) -> bool:
    """Whether the function's own body (not a nested function's) raises an exception of its own."""
    stack = list(ast.iter_child_nodes(node))
    while stack:
        item = stack.pop()
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(item, ast.Raise) and item.exc is not None:
            name = item.exc.func if isinstance(item.exc, ast.Call) else item.exc
            if not (isinstance(name, ast.Name) and name.id in ("NotImplementedError", "StopIteration")):
                return True
        stack.extend(ast.iter_child_nodes(item))
    return False


def test_every_public_definition_has_a_docstring():
    missing = [where for where, node in _public_defs() if not ast.get_docstring(node)]
    assert missing == []


def test_every_public_function_that_raises_has_a_raises_section():
    missing = [where for where, node in _public_defs()
               if isinstance(node, ast.FunctionDef) and _raises(node) and "Raises:" not in (ast.get_docstring(node) or "")]
    assert missing == []


def test_every_cam_method_and_road_cite_their_paper():
    built_in = [type(get_method(name)) for name in list_methods()]
    method_modules = {f"camanim.methods.{m}" for m in ("gradient", "activation", "extra", "perturbation")}
    built_in = [cls for cls in built_in if cls.__module__ in method_modules]  # not plugins other tests registered
    assert len(built_in) >= 16
    uncited = [cls.name for cls in built_in if "https://" not in (cls.__doc__ or "")]
    assert uncited == []
    from camanim import road

    assert "arxiv.org/abs/2202.00449" in (road.__doc__ or "") and "arxiv.org/abs/" in (road.ybroad.__doc__ or "")
