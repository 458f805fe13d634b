"""Reading the configs that come with released checkpoints, without running them.

OpenTAD and PBD write mmengine-style Python configs: top-level assignments of literals, `dict(...)`
calls, arithmetic on names assigned above, f-strings, and a `_base_` list of files they inherit
from. `read_config` evaluates exactly those constructs from the syntax tree (nothing is imported
or executed) and refuses anything else, naming the construct and its line. YAML configs (mmengine
reads them too) go through `yaml.safe_load`.

Inheritance follows mmengine's `Config.fromfile`: the `_base_` files (paths relative to the file)
are read first and must not share top-level keys; the file's own keys are then merged over them,
dicts key by key (a dict with `_delete_=True` replaces the base's instead), anything else replaced.
"""
from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .files import CheckpointError

BASE_KEY, DELETE_KEY = "_base_", "_delete_"

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_CALLS: dict[str, Callable[..., Any]] = {"dict": dict, "list": list, "tuple": tuple, "range": range}


def read_config(path: Path) -> dict[str, Any]:
    """The merged config of a `.py`, `.yaml`/`.yml` or `.json` file and its `_base_` files."""
    return _read(Path(path).resolve(), ())


def _read(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path in chain:
        raise CheckpointError(f"{path}: _base_ files include each other: {' -> '.join(map(str, (*chain, path)))}")
    if not path.is_file():
        where = f" (a _base_ of {chain[-1]})" if chain else ""
        raise FileNotFoundError(f"{path}: no such config file{where}")
    own = _read_python(path) if path.suffix == ".py" else _read_yaml(path)
    bases = own.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, (list, tuple)) or not all(isinstance(base, str) for base in bases):
        raise CheckpointError(f"{path}: _base_ must be a file name or a list of them, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        inherited = _read((path.parent / base).resolve(), (*chain, path))
        shared = sorted(set(merged) & set(inherited))
        if shared:
            raise CheckpointError(f"{path}: its _base_ files both set {shared} (mmengine refuses duplicate keys among bases)")
        merged.update(inherited)
    return _merge(own, merged, str(path))


def _merge(child: dict[str, Any], base: dict[str, Any], source: str, where: str = "") -> dict[str, Any]:
    """`child` over `base`, as mmengine's `Config._merge_a_into_b` does."""
    result = dict(base)
    for key, value in child.items():
        name = f"{where}.{key}" if where else str(key)
        if isinstance(value, dict) and key in base and not value.get(DELETE_KEY, False):
            if not isinstance(base[key], dict):
                raise CheckpointError(f"{source}: {name} is a dict here but a {type(base[key]).__name__} in a _base_ "
                                      f"file; set {DELETE_KEY}=True to replace it")
            result[key] = _merge({k: v for k, v in value.items() if k != DELETE_KEY}, base[key], source, name)
        else:
            result[key] = _without_delete(value)
    return result


def _without_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_delete(v) for k, v in value.items() if k != DELETE_KEY}
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise CheckpointError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path}: expected a mapping at the top level")
    return loaded


def _read_python(path: Path) -> dict[str, Any]:
    """The top-level names of an mmengine-style Python config (those not starting with `__`)."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as error:
        raise CheckpointError(f"{path}:{error.lineno}: not valid Python: {error.msg}") from None
    names: dict[str, Any] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
            continue  # a docstring or a bare string
        if not isinstance(statement, ast.Assign) or not all(isinstance(t, ast.Name) for t in statement.targets):
            raise _refused(path, statement, "only assignments to plain names are read at the top level")
        value = _evaluate(statement.value, names, path)
        for target in statement.targets:
            names[target.id] = value
    return {name: value for name, value in names.items() if not name.startswith("__")}


def _evaluate(node: ast.AST, names: dict[str, Any], path: Path) -> Any:
    """The value of an expression built from literals, earlier names, `dict`/`list`/`tuple` calls,
    arithmetic, comparisons, conditionals, subscripts and f-strings."""
    def value(child: ast.AST) -> Any:
        return _evaluate(child, names, path)

    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise _refused(path, node, f"the name {node.id!r} is not assigned above it in this file")
        return names[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        if any(isinstance(element, ast.Starred) for element in node.elts):
            raise _refused(path, node, "starred elements are not read")
        items = [value(element) for element in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise _refused(path, node, "** unpacking in a dict display is not read")
        return {value(key): value(item) for key, item in zip(node.keys, node.values)}
    if isinstance(node, ast.Call):
        return _call(node, value, names, path)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _apply(path, node, _BINARY[type(node.op)], value(node.left), value(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _apply(path, node, _UNARY[type(node.op)], value(node.operand))
    if isinstance(node, ast.Compare) and all(type(op) in _COMPARE for op in node.ops):
        left, result = value(node.left), True
        for op, right_node in zip(node.ops, node.comparators):
            right = value(right_node)
            result = result and _apply(path, node, _COMPARE[type(op)], left, right)
            left = right
        return result
    if isinstance(node, ast.BoolOp):  # short-circuit, as Python does
        for operand in node.values[:-1]:
            result = value(operand)
            if bool(result) != isinstance(node.op, ast.And):
                return result
        return value(node.values[-1])
    if isinstance(node, ast.IfExp):
        return value(node.body) if value(node.test) else value(node.orelse)
    if isinstance(node, ast.Subscript):
        index = node.slice
        key = slice(*(value(part) if part is not None else None for part in (index.lower, index.upper, index.step))) \
            if isinstance(index, ast.Slice) else value(index)
        return _apply(path, node, operator.getitem, value(node.value), key)
    if isinstance(node, ast.JoinedStr):
        return "".join(_formatted(part, value, path) for part in node.values)
    raise _refused(path, node, "configs are read, not executed")


def _call(node: ast.Call, value: Callable[[ast.AST], Any], names: dict[str, Any], path: Path) -> Any:
    if not isinstance(node.func, ast.Name) or node.func.id not in _CALLS or node.func.id in names:
        raise _refused(path, node, "the only calls read are dict(...), list(...), tuple(...) and range(...)")
    if any(isinstance(arg, ast.Starred) for arg in node.args) or any(kw.arg is None for kw in node.keywords):
        raise _refused(path, node, "* and ** arguments are not read")
    keywords = {kw.arg: value(kw.value) for kw in node.keywords}
    result = _apply(path, node, lambda *args: _CALLS[node.func.id](*args, **keywords), *map(value, node.args))
    return list(result) if isinstance(result, range) else result


def _formatted(part: ast.AST, value: Callable[[ast.AST], Any], path: Path) -> str:
    if isinstance(part, ast.Constant):
        return str(part.value)
    if not isinstance(part, ast.FormattedValue):
        raise _refused(path, part, "configs are read, not executed")
    conversion = {-1: lambda x: x, ord("s"): str, ord("r"): repr, ord("a"): ascii}[part.conversion]
    spec = "" if part.format_spec is None else _evaluate_spec(part.format_spec, value, path)
    return format(conversion(value(part.value)), spec)


def _evaluate_spec(spec: ast.AST, value: Callable[[ast.AST], Any], path: Path) -> str:
    if not isinstance(spec, ast.JoinedStr):
        raise _refused(path, spec, "configs are read, not executed")
    return "".join(_formatted(part, value, path) for part in spec.values)


def _apply(path: Path, node: ast.AST, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, ArithmeticError) as error:
        raise CheckpointError(f"{path}:{getattr(node, 'lineno', '?')}: {ast.unparse(node)}: {error}") from None


def _refused(path: Path, node: ast.AST, why: str) -> CheckpointError:
    code = ast.unparse(node).splitlines()[0]
    return CheckpointError(f"{path}:{getattr(node, 'lineno', '?')}: refused {type(node).__name__} `{code[:80]}`: {why}")
