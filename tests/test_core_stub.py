"""The type stub python/rnnext/_core.pyi names every function of the compiled engine with its real parameters."""
import ast
import pathlib
import re

import rnnext
from rnnext import _core

STUB = pathlib.Path(rnnext.__file__).with_name("_core.pyi")


def stub_functions():
    tree = ast.parse(STUB.read_text())
    return {node.name: [arg.arg for arg in node.args.args] for node in tree.body if isinstance(node, ast.FunctionDef)}


def stub_classes():
    tree = ast.parse(STUB.read_text())
    return {node.name: sorted(item.name for item in node.body
                              if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"))
            for node in tree.body if isinstance(node, ast.ClassDef) and "TypedDict" not in ast.unparse(node.bases)}


def engine_functions():
    # pybind11 writes each function's signature as the first line of its docstring: name(a: type, b: type = x) -> r
    functions = {}
    for name in dir(_core):
        if name.startswith("_") or isinstance(getattr(_core, name), type):
            continue
        signature = getattr(_core, name).__doc__.splitlines()[0]
        params = re.fullmatch(rf"{name}\((.*)\) -> .*", signature)[1]
        functions[name] = [part.split(":")[0].strip() for part in params.split(", ")] if params else []
    return functions


def engine_classes():
    classes = {name: getattr(_core, name) for name in dir(_core) if isinstance(getattr(_core, name), type)}
    return {name: sorted(member for member in vars(cls) if not member.startswith("_")) for name, cls in classes.items()}


def test_stub_matches_the_compiled_module():
    assert STUB.is_file(), f"{STUB} is not installed with the package"
    assert stub_functions() == engine_functions()
    assert stub_classes() == engine_classes()
