"""``_speedups.pyi`` stays true: both twins have exactly what it says, named as it says.

Type checkers read the stub for the compiled twin and the real source for the
pure one, so a parameter renamed in one twin, or a function added without its
stub, would go unnoticed until a keyword call broke on one implementation only.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

import pytest

import fastwsrpc
from fastwsrpc import _accel, _speedups_py

STUB_PATH = Path(fastwsrpc.__file__).with_name("_speedups.pyi")
STUB = ast.parse(STUB_PATH.read_text(encoding="utf-8"))

# (name, kind, has a default), the same shape for stub and runtime signatures
Param = Tuple[str, Any, bool]


def stub_params(node: ast.FunctionDef) -> List[Param]:
    args = node.args
    positional: List[Tuple[ast.arg, Any]] = [(a, inspect.Parameter.POSITIONAL_ONLY) for a in args.posonlyargs]
    positional += [(a, inspect.Parameter.POSITIONAL_OR_KEYWORD) for a in args.args]
    first_default = len(positional) - len(args.defaults)
    params: List[Param] = [(a.arg, kind, i >= first_default) for i, (a, kind) in enumerate(positional)]
    if args.vararg:
        params.append((args.vararg.arg, inspect.Parameter.VAR_POSITIONAL, False))
    for a, default in zip(args.kwonlyargs, args.kw_defaults):
        params.append((a.arg, inspect.Parameter.KEYWORD_ONLY, default is not None))
    if args.kwarg:
        params.append((args.kwarg.arg, inspect.Parameter.VAR_KEYWORD, False))
    return params


def runtime_params(obj: Any) -> Optional[List[Param]]:
    """The parameters of ``obj``, or None where the runtime does not say (slot wrappers)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = [(p.name, p.kind, p.default is not p.empty) for p in signature.parameters.values()]
    if any(kind is inspect.Parameter.VAR_POSITIONAL for _, kind, _ in params):
        return None  # "(self, /, *args, **kwargs)": a C slot saying nothing about its names
    return params


STUB_FUNCTIONS: Dict[str, ast.FunctionDef] = {n.name: n for n in STUB.body if isinstance(n, ast.FunctionDef)}
STUB_CONSTANTS: Dict[str, str] = {
    n.target.id: ast.unparse(n.annotation)
    for n in STUB.body
    if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
}
STUB_CLASSES: Dict[str, ast.ClassDef] = {n.name: n for n in STUB.body if isinstance(n, ast.ClassDef)}
STUB_NAMES = set(STUB_FUNCTIONS) | set(STUB_CONSTANTS) | set(STUB_CLASSES)


def test_the_stub_is_not_empty() -> None:
    # Guards the tests below against passing on a stub that failed to parse into anything.
    assert {"decode", "classify", "check_size", "frame_size"} <= set(STUB_FUNCTIONS)
    assert {"DEFAULT_MAX_DEPTH", "PARSE_ERROR"} <= set(STUB_CONSTANTS)
    assert "PendingTable" in STUB_CLASSES


@pytest.mark.parametrize("name", sorted(STUB_FUNCTIONS))
def test_stub_functions_exist_with_the_same_parameters(speedups: Any, name: str) -> None:
    function = getattr(speedups, name, None)
    assert callable(function), f"{speedups.__name__} has no function {name}"
    params = runtime_params(function)
    assert params is not None, f"{speedups.__name__}.{name} has no signature (Cython without binding=True?)"
    assert params == stub_params(STUB_FUNCTIONS[name])


@pytest.mark.parametrize("name", sorted(STUB_CONSTANTS))
def test_stub_constants_exist_with_their_type(speedups: Any, name: str) -> None:
    assert hasattr(speedups, name), f"{speedups.__name__} has no {name}"
    value = getattr(speedups, name)
    assert type(value).__name__ == STUB_CONSTANTS[name]
    assert value == getattr(_speedups_py, name)  # and the same value in both twins


@pytest.mark.parametrize("class_name", sorted(STUB_CLASSES))
def test_stub_classes_have_every_method_and_attribute(speedups: Any, class_name: str) -> None:
    cls = getattr(speedups, class_name, None)
    assert isinstance(cls, type), f"{speedups.__name__} has no class {class_name}"
    body = STUB_CLASSES[class_name].body
    methods = {n.name: n for n in body if isinstance(n, ast.FunctionDef)}
    for name, node in methods.items():
        method = getattr(cls, name, None)
        assert callable(method), f"{class_name}.{name} is missing"
        if not name.startswith("__"):
            # Cython turns dunders into C slots that report "(self, key, /)" or
            # nothing; of those, only __init__'s names can matter (checked below).
            assert runtime_params(method) == stub_params(node), f"{class_name}.{name}"
    init = methods.get("__init__")
    if init is not None:
        # The compiled constructor has no signature, so call it by the stub's names.
        keywords = {p[0]: 1 for p in stub_params(init)[1:]}
        instance = cls(**keywords)
    else:
        instance = cls()
    for member in body:
        if isinstance(member, ast.AnnAssign) and isinstance(member.target, ast.Name):
            assert hasattr(instance, member.target.id), f"{class_name}.{member.target.id} is missing"


def exported_names(module: Any) -> Set[str]:
    """Public names the module defines itself (what it imports is someone else's export).

    Functions and classes say where they were defined; constants do not, so a
    twin imports the constants it only uses under a private name.
    """
    names: Set[str] = set()
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if getattr(value, "__module__", module.__name__) == module.__name__:
            names.add(name)
    return names


def test_twins_export_nothing_the_stub_leaves_out(speedups: Any) -> None:
    assert exported_names(speedups) - STUB_NAMES == set()
    assert STUB_NAMES - exported_names(speedups) == set()


def test_decode_default_depth_is_the_exported_constant(speedups: Any) -> None:
    default = inspect.signature(speedups.decode).parameters["max_depth"].default
    assert default == speedups.DEFAULT_MAX_DEPTH == _accel.DEFAULT_MAX_DEPTH


def test_accel_exports_the_live_twin() -> None:
    for name in ("decode", "classify", "check_size", "PendingTable", "DEFAULT_MAX_DEPTH"):
        assert getattr(_accel, name) is getattr(_accel.impl, name)
    assert _accel.IMPLEMENTATION == ("python" if _accel.impl is _speedups_py else "cython")
