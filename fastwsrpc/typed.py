"""Typed methods: a method's type hints validate and convert the params it receives.

For each exposed method we build, once per class, a msgspec Struct type from its
signature (``msgspec.defstruct``). A call's params, named or positional, are
converted into it by ``msgspec.convert``: plain types, msgspec Structs,
dataclasses, ``Optional``, lists and dicts come out as the hinted types. A
mismatch answers ``-32602`` whose ``data`` names the parameter and the path
(``{"param": "items", "path": "$.items[3].price", "message": "Expected `float`,
got `str`"}``). Parameters hinted with pydantic models are validated by pydantic.

Methods without hints, or with ``*args`` / ``**kwargs``, are called as they are:
nothing is built for them and nothing is spent per call.
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any, Callable, Dict, List, Optional, Tuple

import msgspec

from .errors import RpcInvalidParamsError

_PATH = re.compile(r"^(?P<message>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.S)
_INDEX = re.compile(r"^\$\[(\d+)\]")
#: Param types whose values msgspec passes through unchanged when they have exactly
#: that type (a bool is not an int to msgspec, nor an int a float: those take the full path).
_EXACT = (int, str, float, bool, Any)
_UNKNOWN: Any = object()  # a key the method does not take: never a type


def _is_pydantic(tp: Any) -> bool:
    return isinstance(tp, type) and hasattr(tp, "model_validate") and hasattr(tp, "model_fields")


class MethodSpec:
    """What we know of one method: its params as a Struct, its docs and types for discovery."""

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self.name = name
        self.doc = inspect.getdoc(func) or ""
        sig = inspect.signature(func)
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable forward references: fall back to no hints
            hints = {}
        self.result_type: Any = hints.get("return", Any)
        self.params: List[Tuple[str, Any, Any]] = []  # (name, type, default or NODEFAULT)
        self.variadic = False
        for p in list(sig.parameters.values())[1:]:  # skip self
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                self.variadic = True
                continue
            default = msgspec.NODEFAULT if p.default is p.empty else p.default
            self.params.append((p.name, hints.get(p.name, Any), default))
        self.names = [p[0] for p in self.params]
        self.pydantic = {n: t for n, t, _ in self.params if _is_pydantic(t)}
        annotated = any(t is not Any for _, t, _ in self.params)
        self.validates = annotated and not self.variadic
        #: Each param's one accepted type (None: anything) when all are plain scalars:
        #: params of exactly those types need no conversion, and skip msgspec.
        self.exact: Optional[Dict[str, Optional[type]]] = None
        if self.validates and all(t in _EXACT for _, t, _ in self.params):
            self.exact = {n: (None if t is Any else t) for n, t, _ in self.params}
        if self.validates:
            fields = [
                (n, Any if n in self.pydantic else t)
                if d is msgspec.NODEFAULT
                else (n, Any if n in self.pydantic else t, d)
                for n, t, d in self.params
            ]
            self.named = msgspec.defstruct(f"{name}_params", fields, forbid_unknown_fields=True)
            self.positional = msgspec.defstruct(f"{name}_args", fields, array_like=True)

    def _fail(self, exc: Exception, positional: bool) -> RpcInvalidParamsError:
        text = str(exc)
        match = _PATH.match(text)
        message = match.group("message") if match else text
        path = (match.group("path") if match else None) or "$"
        if positional:
            index = _INDEX.match(path)
            if index and int(index.group(1)) < len(self.names):
                path = f"$.{self.names[int(index.group(1))]}" + path[index.end() :]
        param = path[2:].split(".")[0].split("[")[0] if path.startswith("$.") else None
        return RpcInvalidParamsError(
            f"Invalid params for {self.name}: {path}: {message}",
            data={"param": param, "path": path, "message": message},
        )

    def convert(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        """Validate and convert one call's params, or raise RpcInvalidParamsError (-32602)."""
        exact = self.exact
        if exact is not None:
            # The common case (``add(a: int, b: int)`` called with two ints) costs
            # a type check per param instead of building a Struct and a dict.
            if args:
                if len(args) == len(exact) and all(t is None or type(v) is t for v, t in zip(args, exact.values())):
                    return (), dict(zip(exact, args))
            elif len(kwargs) == len(exact):
                for key, value in kwargs.items():
                    expected = exact.get(key, _UNKNOWN)
                    if expected is not None and type(value) is not expected:
                        break
                else:
                    return (), kwargs
        try:
            if args:
                if len(args) > len(self.names):
                    raise msgspec.ValidationError(f"Expected at most {len(self.names)} params, got {len(args)}")
                values = msgspec.structs.asdict(msgspec.convert(list(args), self.positional))
            else:
                values = msgspec.structs.asdict(msgspec.convert(kwargs, self.named))
        except msgspec.ValidationError as exc:
            raise self._fail(exc, positional=bool(args)) from None
        for name, model in self.pydantic.items():
            try:
                values[name] = model.model_validate(values[name])
            except Exception as exc:  # pydantic.ValidationError
                errors: List[Any] = getattr(exc, "errors", list)()
                loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in (errors[0]["loc"] if errors else ()))
                message = errors[0]["msg"] if errors else str(exc)
                raise RpcInvalidParamsError(
                    f"Invalid params for {self.name}: $.{name}{loc}: {message}",
                    data={"param": name, "path": f"$.{name}{loc}", "message": message},
                ) from None
        return (), values


_specs: Dict[Tuple[type, str], MethodSpec] = {}


def method_spec(cls: type, name: str) -> MethodSpec:
    """The spec of ``cls.name``, built on first use and kept."""
    key = (cls, name)
    spec = _specs.get(key)
    if spec is None:
        spec = _specs[key] = MethodSpec(name, getattr(cls, name))
    return spec


def typed_handler(bound: Callable[..., Any], spec: MethodSpec) -> Callable[..., Any]:
    """Wrap a bound method so that its params are converted first (only if it has hints).

    The wrapper is a plain function that returns the method's coroutine: no
    coroutine of its own per call. A conversion error raises where the caller
    calls it, inside the same ``await handler(...)`` expression, so the caller
    sees it exactly as if it came from an ``async def`` wrapper.
    """
    if not spec.validates:
        return bound
    convert = spec.convert

    def call(*args: Any, **kwargs: Any) -> Any:
        _, values = convert(args, kwargs)
        return bound(**values)

    call.__wrapped__ = bound  # type: ignore[attr-defined]
    return call


def convert_result(value: Any, result_type: Any) -> Any:
    """Client side: turn a JSON result into ``result_type`` (msgspec types or pydantic models)."""
    if _is_pydantic(result_type):
        return result_type.model_validate(value)
    return msgspec.convert(value, result_type)


def _schema_for(tp: Any) -> Dict[str, Any]:
    if tp is Any or tp is inspect.Parameter.empty:
        return {}
    if _is_pydantic(tp):
        return dict(tp.model_json_schema())
    try:
        return dict(msgspec.json.schema(tp))
    except Exception:
        return {}


def openrpc_method(spec: MethodSpec) -> Dict[str, Any]:
    """One method's OpenRPC 1.x description."""
    summary, _, description = spec.doc.partition("\n")
    entry: Dict[str, Any] = {
        "name": spec.name,
        "params": [
            {"name": n, "required": d is msgspec.NODEFAULT, "schema": _schema_for(t)} for n, t, d in spec.params
        ],
        "result": {"name": "result", "schema": _schema_for(spec.result_type)},
        "paramStructure": "either",
    }
    if summary:
        entry["summary"] = summary.strip()
    if description.strip():
        entry["description"] = description.strip()
    return entry


def openrpc_document(methods: Any, names: Any, title: str, version: str) -> Dict[str, Any]:
    cls = type(methods)
    return {
        "openrpc": "1.2.6",
        "info": {"title": title, "version": version},
        "methods": [openrpc_method(method_spec(cls, name)) for name in sorted(names)],
    }


__all__ = ["MethodSpec", "convert_result", "method_spec", "openrpc_document", "typed_handler"]
