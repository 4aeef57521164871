"""Load a ``torch.export`` archive (``.pt2``) without running code from the file.

``torch.export.load`` unpickles the archive's sample inputs (falling back to
``weights_only=False``), unpickles tensor subclasses and custom objects, ``eval``\\ s the
symbolic-shape expressions through sympy, compiles the guard code and resolves any
``torch.*`` callable named by a graph node: a crafted archive runs whatever it wants. Here
the archive's members are read directly instead:

* the graph (``models/<name>.json``) is checked before torch's deserializer sees it: every
  node target and operator argument must be a registered operator (``torch.ops...``) or a
  symbolic-size operation; every shape expression may only combine numbers, symbols and
  known sympy functions; every name that ends up in generated Python code must be a plain
  name; node metadata (stack traces, annotations) and the guard code are dropped;
* weights and constants are read as raw tensor bytes (the format ``torch.export.save``
  writes); pickled ones are refused;
* the sample inputs are never read.

Anything this cannot load safely is refused with :class:`UnsafeArchiveError`, whose message
points at ``--trust-model`` (which loads with ``torch.export.load``).
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["UnsafeArchiveError", "load_exported_module"]

_NAME = re.compile(r"[A-Za-z0-9_.]*\Z")  # names FX may put into generated code
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Keys whose string values are data (repr'd, never code) or are checked on their own.
_FREE_TEXT = {"as_string", "as_strings", "torch_version"}
_FLOAT_WORDS = {"Infinity", "-Infinity", "NaN"}
# Functions a symbolic shape expression may call (sympy's and torch's integer functions).
_SYMPY_CALLS = {
    "Symbol", "Integer", "Rational", "Float", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge",
    "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality",
    "And", "Or", "Not", "Mod", "floor", "ceiling", "sqrt", "Piecewise",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat",
    "Identity",
}
_SYMPY_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name, ast.Constant,
                ast.keyword, ast.Load, ast.operator, ast.unaryop, ast.boolop, ast.cmpop)
_TREESPEC_TYPES = {None, "builtins.tuple", "builtins.list", "builtins.dict"}


class UnsafeArchiveError(ValueError):
    """The archive holds something that only loads by running code from it (or is malformed)."""


def load_exported_module(path: str | Path) -> nn.Module:
    """The module of a ``torch.export`` archive, loaded without unpickling or evaluating its contents.

    Args:
        path: a file written by ``torch.export.save`` holding one exported program.

    Returns:
        The program's module (``ExportedProgram.module()``), on the CPU.

    Raises:
        UnsafeArchiveError: pickled weights, constants or custom objects, unknown callables,
            code in shape expressions or names, or a malformed archive (the message says why).
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.split("/", 1)[1]: name for name in archive.namelist() if "/" in name}
            program = _read_program(path, archive, members)
        return program.module()
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError, OSError) as err:
        raise UnsafeArchiveError(f"{path} is not a readable torch.export archive ({type(err).__name__}: "
                                 f"{err})") from None


def _read_program(path: Path, archive: zipfile.ZipFile, members: dict[str, str]):
    from torch._export.serde import schema
    from torch._export.serde.serialize import (
        ExportedProgramDeserializer,
        SerializeError,
        _dict_to_dataclass,
    )

    def read(name: str) -> bytes:
        return archive.read(members[name])

    if read("archive_format").decode().strip() != "pt2":
        raise UnsafeArchiveError(f"{path}: not a torch.export archive (archive_format is not pt2)")
    if "byteorder" in members and read("byteorder").decode().strip() != sys.byteorder:
        raise UnsafeArchiveError(f"{path}: written on a {read('byteorder').decode().strip()}-endian machine")
    models = sorted(n for n in members if n.startswith("models/") and n.endswith(".json"))
    if len(models) != 1:
        raise UnsafeArchiveError(f"{path}: expected one exported program, found {len(models)}")
    name = models[0][len("models/"):-len(".json")]
    program = json.loads(read(models[0]))
    _sanitize_program(path, program)
    state_dict = _read_payloads(path, read, members, f"data/weights/{name}_weights_config.json", "data/weights/")
    constants = _read_payloads(path, read, members, f"data/constants/{name}_constants_config.json",
                               "data/constants/")
    try:
        serialized = _dict_to_dataclass(schema.ExportedProgram, program)
        # No sample inputs: torch would unpickle them, and the scan does not need them.
        return ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, None)
    except (SerializeError, AssertionError, TypeError, ValueError, KeyError, AttributeError, RuntimeError) as err:
        raise UnsafeArchiveError(f"{path}: the exported program does not deserialize ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0] if str(err) else ''})") from None


def _read_payloads(path: Path, read, members: dict[str, str], config_name: str, folder: str) -> dict[str, Any]:
    """Weights or constants as raw tensors (the format of ``torch.export.save``); pickles refused."""
    from torch._export.serde import schema
    from torch._export.serde.serialize import (
        _dict_to_dataclass,
        deserialize_scalar_type,
        deserialize_size,
        deserialize_storage_offset,
        deserialize_stride,
    )

    if config_name not in members:
        legacy = [n for n in members if n.startswith(folder) and n.endswith(".pt")]
        if legacy:
            raise UnsafeArchiveError(f"{path}: weights in the legacy pickled format ({legacy[0]})")
        raise UnsafeArchiveError(f"{path}: no {config_name}")
    config = _dict_to_dataclass(schema.PayloadConfig, json.loads(read(config_name)))
    storages: dict[str, torch.Tensor] = {}
    out: dict[str, Any] = {}
    for fqn, meta in config.config.items():
        if meta.use_pickle or not meta.path_name.startswith(("weight_", "tensor_")) or meta.tensor_meta is None:
            raise UnsafeArchiveError(f"{path}: {fqn} is stored as a pickle or custom object ({meta.path_name})")
        if not _NAME.match(fqn) or not _NAME.match(meta.path_name):
            raise UnsafeArchiveError(f"{path}: odd tensor name {fqn!r}")
        tm = meta.tensor_meta
        dtype = deserialize_scalar_type(tm.dtype)
        try:
            if meta.path_name not in storages:
                data = bytearray(read(folder + meta.path_name))
                storages[meta.path_name] = torch.frombuffer(data, dtype=dtype) if data else torch.zeros(0, dtype=dtype)
            tensor = torch.as_strided(storages[meta.path_name], deserialize_size(tm.sizes),
                                      deserialize_stride(tm.strides), deserialize_storage_offset(tm.storage_offset))
        except (RuntimeError, ValueError) as err:
            raise UnsafeArchiveError(f"{path}: tensor {fqn} does not fit its stored bytes ({err})") from None
        out[fqn] = nn.Parameter(tensor, requires_grad=tm.requires_grad) if meta.is_param else tensor
    return out


def _sanitize_program(path: Path, program: dict[str, Any]) -> None:
    """Check the program's JSON in place (module docstring): refuse code, drop metadata and guards."""
    program["guards_code"] = []

    def walk(value: Any, key: str | None) -> None:
        if isinstance(value, dict):
            if "target" in value and "inputs" in value and "outputs" in value:
                value["metadata"] = {}  # a node: stack traces and annotations become comments in FX code
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str):
            _check_string(path, key, value)

    walk(program, None)


def _check_string(path: Path, key: str | None, value: str) -> None:
    if key in _FREE_TEXT:
        return
    if key in ("target", "as_operator"):
        _check_operator(path, value)
    elif key == "expr_str":
        _check_expression(path, value)
    elif key in ("in_spec", "out_spec"):
        _check_treespec(path, value)
    elif key == "forward_arg_names":
        if not _IDENTIFIER.match(value):
            raise UnsafeArchiveError(f"{path}: input name {value!r} is not a plain name")
    elif key in ("as_float", "as_floats") and value in _FLOAT_WORDS:
        return
    elif not _NAME.match(value):
        raise UnsafeArchiveError(f"{path}: {key} {value[:60]!r} is not a plain name")


def _check_operator(path: Path, target: str) -> None:
    from torch._export.serde.serialize import _SYM_OPS

    resolved: Any = None
    if target.startswith("torch.ops."):
        resolved = torch.ops
        for part in target.split(".")[2:]:
            resolved = getattr(resolved, part, None) if _IDENTIFIER.match(part) else None
            if resolved is None:
                break
        if isinstance(resolved, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
            return
    elif target.count(".") == 1 and target.split(".")[0] in ("_operator", "math", "torch"):
        module = {"_operator": __import__("operator"), "math": __import__("math"), "torch": torch}[target.split(".")[0]]
        resolved = getattr(module, target.split(".")[1], None)
        if resolved is not None and resolved in _SYM_OPS:
            return
    raise UnsafeArchiveError(f"{path}: the graph calls {target[:80]!r}, which is not a registered operator")


def _check_expression(path: Path, text: str) -> None:
    """Shape expressions go through sympy's ``eval``: allow only numbers, symbols and known functions."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        raise UnsafeArchiveError(f"{path}: shape expression {text[:60]!r} does not parse") from None
    for node in ast.walk(tree):
        ok = isinstance(node, _SYMPY_NODES)
        if isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS
        elif isinstance(node, ast.Name):
            ok = _IDENTIFIER.match(node.id) is not None and not node.id.startswith("_")
        elif isinstance(node, ast.Constant):
            ok = isinstance(node.value, (int, float, bool)) or (
                isinstance(node.value, str) and _IDENTIFIER.match(node.value) is not None)
        elif isinstance(node, ast.keyword):
            ok = node.arg is not None and _IDENTIFIER.match(node.arg) is not None
        if not ok:
            raise UnsafeArchiveError(f"{path}: shape expression {text[:60]!r} holds {type(node).__name__}, "
                                     "which is not allowed")


def _check_treespec(path: Path, text: str) -> None:
    """Input/output structures: tuples, lists and dicts with plain-name keys (keys reach FX code)."""
    try:
        _, root = json.loads(text)
    except (ValueError, TypeError):
        raise UnsafeArchiveError(f"{path}: malformed input/output structure") from None
    stack = [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or node.get("type") not in _TREESPEC_TYPES:
            raise UnsafeArchiveError(f"{path}: unsupported input/output structure "
                                     f"{node.get('type') if isinstance(node, dict) else node!r}")
        if node["type"] == "builtins.dict":
            keys = json.loads(node.get("context") or "[]")
            if not all(isinstance(k, str) and _IDENTIFIER.match(k) for k in keys):
                raise UnsafeArchiveError(f"{path}: input/output names {keys!r} are not plain names")
        stack.extend(node.get("children_spec") or [])
