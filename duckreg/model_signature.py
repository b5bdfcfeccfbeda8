"""Model signatures: the typed contract between a model version and its callers.

The classes mirror ``snowflake.ml.model.model_signature`` so that code written for the Snowflake
Model Registry reads the same here. A signature is stored in the catalog as JSON and drives input
validation, output formatting and the SQL types of every front door.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import numpy as np

__all__ = ["DataType", "FeatureGroupSpec", "FeatureSpec", "ModelSignature", "ParamGroupSpec", "ParamSpec"]


class DataType(enum.Enum):
    """Scalar element types a feature or parameter can hold."""

    INT8 = "int8"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    UINT8 = "uint8"
    UINT16 = "uint16"
    UINT32 = "uint32"
    UINT64 = "uint64"
    FLOAT = "float"
    DOUBLE = "double"
    BOOL = "bool"
    STRING = "string"
    BYTES = "bytes"
    TIMESTAMP_NTZ = "datetime64[ns]"

    def __repr__(self) -> str:
        return f"DataType.{self.name}"

    @property
    def is_integer(self) -> bool:
        return self.name.startswith(("INT", "UINT"))

    @property
    def is_float(self) -> bool:
        return self in (DataType.FLOAT, DataType.DOUBLE)

    def as_numpy(self) -> np.dtype:
        """The numpy dtype of one non-null element."""
        if self is DataType.STRING:
            return np.dtype(object)
        if self is DataType.BYTES:
            return np.dtype(object)
        if self is DataType.FLOAT:
            return np.dtype(np.float32)
        if self is DataType.DOUBLE:
            return np.dtype(np.float64)
        if self is DataType.BOOL:
            return np.dtype(np.bool_)
        return np.dtype(self.value)


def _check_shape(shape: Sequence[int] | None) -> tuple[int, ...] | None:
    if shape is None:
        return None
    if not isinstance(shape, tuple):
        raise TypeError("Shape should be a tuple if presented.")
    if not shape or any(not isinstance(d, int) or (d < 1 and d != -1) for d in shape):
        raise ValueError(f"Invalid shape {shape!r}: use positive sizes, or -1 for a variable length.")
    return shape


def _check_name(name: str, kind: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"A {kind} needs a non-empty string name, got {name!r}.")
    return name


class FeatureSpec:
    """One named input or output column: a scalar, or an array of ``shape``."""

    def __init__(self, name: str, dtype: DataType, shape: tuple[int, ...] | None = None, nullable: bool = True) -> None:
        self.name = _check_name(name, "feature")
        if not isinstance(dtype, DataType):
            raise TypeError(f"Feature {name!r}: dtype must be a DataType, got {dtype!r}.")
        self.dtype = dtype
        self.shape = _check_shape(shape)
        # False: a NULL here is an error naming the column (an input) or the model's output, not a NULL row.
        self.nullable = bool(nullable)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureSpec) and (self.name, self.dtype, self.shape) == (
            other.name,
            other.dtype,
            other.shape,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.dtype, self.shape))

    def __repr__(self) -> str:
        shape = f", shape={self.shape!r}" if self.shape is not None else ""
        nullable = "" if self.nullable else ", nullable=False"
        return f"FeatureSpec(dtype={self.dtype!r}, name={self.name!r}{shape}{nullable})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.dtype.name, "name": self.name, "nullable": self.nullable}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        shape = tuple(data["shape"]) if data.get("shape") is not None else None
        # Signatures stored before nullable existed allowed NULLs: a missing key keeps that meaning.
        return cls(name=data["name"], dtype=DataType[data["type"]], shape=shape, nullable=data.get("nullable", True))


class FeatureGroupSpec:
    """A named group of features: one struct per row, or a list of structs with ``shape``."""

    def __init__(
        self,
        name: str,
        specs: Sequence[FeatureSpec | FeatureGroupSpec],
        shape: tuple[int, ...] | None = None,
    ) -> None:
        self.name = _check_name(name, "feature group")
        self.specs = list(specs)
        if not self.specs:
            raise ValueError("No children feature specs.")
        names = [s.name.lower() for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"Feature group {name!r} has duplicate child names.")
        self.shape = _check_shape(shape)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeatureGroupSpec) and (self.name, self.specs, self.shape) == (
            other.name,
            other.specs,
            other.shape,
        )

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.specs), self.shape))

    def __repr__(self) -> str:
        inner = ",\n".join(_indent(repr(s), 4) for s in self.specs)
        shape = f", shape={self.shape!r}" if self.shape is not None else ""
        return f"FeatureGroupSpec(\n    name={self.name!r},\n    specs=[\n{_indent(inner, 4)}\n    ]{shape}\n)"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "specs": [s.to_dict() for s in self.specs]}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureGroupSpec:
        shape = tuple(data["shape"]) if data.get("shape") is not None else None
        return cls(name=data["name"], specs=[_feature_from_dict(s) for s in data["specs"]], shape=shape)


def _feature_from_dict(data: dict[str, Any]) -> FeatureSpec | FeatureGroupSpec:
    return FeatureGroupSpec.from_dict(data) if "specs" in data else FeatureSpec.from_dict(data)


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line for line in text.splitlines())


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


INVALID = _Sentinel("INVALID")
"""What ``check_value`` returns for a value that does not fit the type or shape."""
NOT_UNICODE = _Sentinel("NOT_UNICODE")
"""What ``check_value`` returns for text holding a lone surrogate (bytes decoded with ``surrogateescape``)."""


def valid_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode (a lone surrogate, from undecodable bytes, is not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_scalar(value: Any, dtype: DataType) -> Any:
    if dtype is DataType.STRING:
        if not isinstance(value, str):
            return INVALID
        return value if value.isascii() or valid_unicode(value) else NOT_UNICODE
    if dtype is DataType.BYTES:
        return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else INVALID
    if dtype is DataType.BOOL:
        return bool(value) if isinstance(value, (bool, np.bool_)) else INVALID
    if isinstance(value, (bool, np.bool_)):
        return INVALID  # bools are never numbers
    if dtype.is_integer:
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating, Decimal)) and value == int(value):
            return int(value)  # 3.0, and SQL's DECIMAL literal 3.0
        return INVALID
    if dtype.is_float:
        # SQL literals such as 0.7 arrive as decimals.
        return float(value) if isinstance(value, (int, float, np.integer, np.floating, Decimal)) else INVALID
    return value


def _leaves(value: Any) -> Iterator[Any]:
    """The scalars inside nested lists, tuples and arrays (``value`` itself when it is one)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _first_problem(values: Iterable[Any], checked: Any) -> Any:
    """``INVALID``/``NOT_UNICODE`` if any of ``values`` is one, else ``checked``."""
    return next((v for v in values if v is INVALID or v is NOT_UNICODE), checked)


def _check_shaped(value: Any, shape: tuple[int, ...] | None, check_one: Callable[[Any, Any], Any], of: Any) -> Any:
    """``check_one(element, of)`` over ``value`` nested ``shape`` deep (lists of the given lengths)."""
    if value is None:
        return None
    if not shape:
        return check_one(value, of)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or (shape[0] != -1 and len(value) != shape[0]):
        return INVALID
    items = [_check_shaped(v, shape[1:] or None, check_one, of) for v in value]
    return _first_problem(items, items)


def check_value(value: Any, dtype: DataType, shape: tuple[int, ...] | None = None) -> Any:
    """``value`` coerced to ``dtype`` and ``shape`` (None stays None), or ``INVALID``/``NOT_UNICODE``.

    The one rule for inputs, outputs and parameters: ints and integral floats or decimals fit
    integer types, any number fits float types, bools are never numbers.
    """
    return _check_shaped(value, shape, _check_scalar, dtype)


def _check_struct(value: Any, spec: FeatureGroupSpec) -> Any:
    if not isinstance(value, dict):
        return INVALID
    fields = {child.name: check_feature(value.get(child.name), child, child.shape) for child in spec.specs}
    return _first_problem(fields.values(), fields)


def check_feature(value: Any, spec: FeatureSpec | FeatureGroupSpec, shape: tuple[int, ...] | None) -> Any:
    """``check_value`` for a feature, structs (``FeatureGroupSpec``) included; ``shape`` overrides the spec's."""
    if isinstance(spec, FeatureGroupSpec):
        return _check_shaped(value, shape, _check_struct, spec)
    return _check_shaped(value, shape, _check_scalar, spec.dtype)


def _shape_problem(value: Any, shape: tuple[int, ...] | None, dimension: int = 0) -> str | None:
    """What is wrong with ``value``'s shape for ``shape`` (None when it fits), in Snowflake's words."""
    is_array = isinstance(value, (list, tuple, np.ndarray))
    if not shape:
        return f"Expected scalar value, got {type(value).__name__}" if is_array and dimension == 0 else None
    if not is_array:
        return f"Expected {len(shape)}-dimensional value, got {type(value).__name__}"
    if shape[0] != -1 and len(value) != shape[0]:
        return f"Dimension {dimension}: expected {shape[0]}, got {len(value)}"
    for item in value:
        if shape[1:]:
            problem = _shape_problem(item, shape[1:], dimension + 1)
            if problem:
                return problem
    return None


class ParamSpec:
    """A named runtime parameter with a default, passed by name rather than per row."""

    def __init__(self, name: str, dtype: DataType, default_value: Any, shape: tuple[int, ...] | None = None) -> None:
        self.name = _check_name(name, "parameter")
        if not isinstance(dtype, DataType):
            raise TypeError(f"Parameter {name!r}: dtype must be a DataType, got {dtype!r}.")
        self.dtype = dtype
        self.shape = _check_shape(shape)
        if dtype.is_integer and any(isinstance(v, (float, np.floating, Decimal)) for v in _leaves(default_value)):
            # Strict, as Snowflake's specs: a float default is never an integer parameter's (a value at run time
            # may still be SQL's DECIMAL 3.0).
            wrong = next(v for v in _leaves(default_value) if isinstance(v, (float, np.floating, Decimal)))
            raise ValueError(
                f"Parameter {name!r}: default value {default_value!r} is not compatible with dtype {dtype!r}: "
                f"value {wrong!r} (type: {type(wrong).__name__}) is not an int."
            )
        coerced = check_value(default_value, dtype, self.shape)
        if coerced is INVALID or coerced is NOT_UNICODE:
            problem = _shape_problem(default_value, self.shape)
            raise ValueError(
                f"Parameter {name!r}: default value {default_value!r} is not compatible with dtype "
                f"{dtype!r} and shape {self.shape!r}." + (f" {problem}." if problem else "")
            )
        self.default_value = coerced

    def validate(self, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise a ``ValueError`` naming it."""
        if value is None:
            return self.default_value
        problem = _shape_problem(value, self.shape)
        if problem:
            raise ValueError(f"Parameter {self.name!r}: {problem}.")
        coerced = check_value(value, self.dtype, self.shape)
        if coerced is INVALID or coerced is NOT_UNICODE:
            raise ValueError(
                f"Parameter {self.name!r}: value {value!r} is not compatible with dtype "
                f"{self.dtype!r} and shape {self.shape!r}."
            )
        return coerced

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamSpec) and (
            self.name,
            self.dtype,
            self.default_value,
            self.shape,
        ) == (other.name, other.dtype, other.default_value, other.shape)

    def __hash__(self) -> int:
        return hash((self.name, self.dtype, self.shape))

    def __repr__(self) -> str:
        shape = f", shape={self.shape!r}" if self.shape is not None else ""
        return f"ParamSpec(name={self.name!r}, dtype={self.dtype!r}, default_value={self.default_value!r}{shape})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype.name, "default_value": self.default_value}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParamSpec:
        shape = tuple(data["shape"]) if data.get("shape") is not None else None
        return cls(data["name"], DataType[data["dtype"]], data.get("default_value"), shape)


Feature = FeatureSpec | FeatureGroupSpec


class ParamGroupSpec:
    """Parameters passed together as one struct (``watermarking_config``, ``response_format``).

    A value is a dict of the children's names (a list of them with ``shape``); a child left out
    takes its own default. A group whose ``default_value`` is None is not passed at all unless given.
    """

    def __init__(
        self,
        name: str,
        specs: Sequence[ParamSpec | ParamGroupSpec],
        default_value: dict[str, Any] | None = None,
        shape: tuple[int, ...] | None = None,
    ) -> None:
        self.name = _check_name(name, "parameter group")
        self.specs = list(specs)
        if not self.specs:
            raise ValueError(f"Parameter group {name!r} has no child parameters.")
        if not all(isinstance(spec, (ParamSpec, ParamGroupSpec)) for spec in self.specs):
            raise TypeError(f"Parameter group {name!r}: children must be ParamSpec or ParamGroupSpec.")
        names = [spec.name.lower() for spec in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"Parameter group {name!r} has duplicate child names.")
        self.shape = _check_shape(shape)
        self.default_value = None
        self.default_value = self.validate(default_value)

    def validate(self, value: Any) -> Any:
        """The group's value with every child validated and defaulted, or a ``ValueError`` naming it."""
        if value is None:
            return self.default_value
        if self.shape:
            problem = _shape_problem(value, self.shape)
            if problem:
                raise ValueError(f"Parameter {self.name!r}: {problem}.")
            return [self._one(item) for item in value]
        return self._one(value)

    def _one(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError(
                f"Parameter {self.name!r}: expected a struct of {[s.name for s in self.specs]}, "
                f"got {type(value).__name__}"
            )
        by_name = {spec.name.lower(): spec for spec in self.specs}
        unknown = sorted(k for k in value if str(k).lower() not in by_name)
        if unknown:
            raise ValueError(f"Parameter {self.name!r}: unknown field(s) {unknown}; it has {list(by_name)}")
        given = {str(k).lower(): v for k, v in value.items()}
        return {spec.name: spec.validate(given.get(spec.name.lower())) for spec in self.specs}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParamGroupSpec) and (self.name, self.specs, self.default_value, self.shape) == (
            other.name,
            other.specs,
            other.default_value,
            other.shape,
        )

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.specs), self.shape))

    def __repr__(self) -> str:
        specs = ",\n".join(_indent(repr(s), 4) for s in self.specs)
        shape = f", shape={self.shape!r}" if self.shape is not None else ""
        default = f", default_value={self.default_value!r}" if self.default_value is not None else ""
        return f"ParamGroupSpec(\n  name={self.name!r},\n  specs=[\n{specs}\n  ]{default}{shape}\n)"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "specs": [s.to_dict() for s in self.specs],
            "default_value": self.default_value,
        }
        if self.shape is not None:
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParamGroupSpec:
        shape = tuple(data["shape"]) if data.get("shape") is not None else None
        specs = [param_from_dict(s) for s in data["specs"]]
        return cls(data["name"], specs, default_value=data.get("default_value"), shape=shape)


def param_from_dict(data: dict[str, Any]) -> ParamSpec | ParamGroupSpec:
    return ParamGroupSpec.from_dict(data) if "specs" in data else ParamSpec.from_dict(data)


class ModelSignature:
    """Inputs, outputs and runtime parameters of one model function."""

    def __init__(
        self,
        inputs: Sequence[Feature],
        outputs: Sequence[Feature],
        params: Sequence[ParamSpec | ParamGroupSpec] | None = (),
    ) -> None:
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.params = list(params or ())
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [s.name.lower() for s in specs]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(
                    f"Found duplicate {kind} feature(s): {dupes}. Names must be distinct (case-insensitive)."
                )
        # Names are echoed as the user wrote them (the first spelling of each).
        spelled: dict[str, str] = {}
        dupes = []
        for param in self.params:
            if param.name.lower() in spelled and spelled[param.name.lower()] not in dupes:
                dupes.append(spelled[param.name.lower()])
            spelled.setdefault(param.name.lower(), param.name)
        if dupes:
            raise ValueError(
                f"Found duplicate parameter named resolved as {', '.join(dupes)}. "
                "Parameters must have distinct names (case-insensitive)."
            )
        clash = [p.name for p in self.params if p.name.lower() in {s.name.lower() for s in self.inputs}]
        if clash:
            raise ValueError(
                f"Found parameter(s) with the same name as input feature(s): {', '.join(clash)}. "
                "Parameters and inputs must have distinct names (case-insensitive)."
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelSignature) and (self.inputs, self.outputs, self.params) == (
            other.inputs,
            other.outputs,
            other.params,
        )

    def __hash__(self) -> int:
        return hash((tuple(self.inputs), tuple(self.outputs), tuple(self.params)))

    def __repr__(self) -> str:
        parts = []
        for label, specs in (("inputs", self.inputs), ("outputs", self.outputs), ("params", self.params)):
            if label == "params" and not specs:
                continue
            body = ",\n".join(_indent(repr(s), 8) for s in specs)
            parts.append(f"    {label}=[\n{body}\n    ]" if specs else f"    {label}=[]")
        return "ModelSignature(\n" + ",\n".join(parts) + "\n)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "params": [p.to_dict() for p in self.params],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSignature:
        return cls(
            inputs=[_feature_from_dict(s) for s in data["inputs"]],
            outputs=[_feature_from_dict(s) for s in data["outputs"]],
            params=[param_from_dict(p) for p in data.get("params", [])],
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> ModelSignature:
        return cls.from_dict(json.loads(text))

    def resolve_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """Validate user params against the ParamSpecs and fill every default, keyed by spec name."""
        params = dict(params or {})
        if params and not self.params:
            raise ValueError(
                f"Parameters were provided ({sorted(params)}), but this method does not accept any parameters."
            )
        lowered = [k.lower() for k in params]
        dupes = sorted({k for k in params if lowered.count(k.lower()) > 1})
        if dupes:
            raise ValueError(
                f"Duplicate parameter(s) provided with different cases: {dupes}. Parameter names are case-insensitive."
            )
        by_name = {p.name.lower(): p for p in self.params}
        unknown = sorted(k for k in params if k.lower() not in by_name)
        if unknown:
            raise ValueError(f"Unknown parameter(s): {unknown}. Valid parameters are: {[p.name for p in self.params]}")
        resolved = {p.name: p.default_value for p in self.params}
        for key, value in params.items():
            spec = by_name[key.lower()]
            resolved[spec.name] = spec.validate(value)
        return resolved
