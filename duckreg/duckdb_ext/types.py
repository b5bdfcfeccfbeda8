"""DuckDB and Arrow types of model functions, from their signatures."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from duckreg.function_spec import FunctionSpec
from duckreg.identifiers import quote
from duckreg.model_signature import DataType, FeatureGroupSpec, FeatureSpec, ParamGroupSpec, ParamSpec

_SCALARS: dict[DataType, tuple[str, pa.DataType]] = {
    DataType.INT8: ("TINYINT", pa.int8()),
    DataType.INT16: ("SMALLINT", pa.int16()),
    DataType.INT32: ("INTEGER", pa.int32()),
    DataType.INT64: ("BIGINT", pa.int64()),
    DataType.UINT8: ("UTINYINT", pa.uint8()),
    DataType.UINT16: ("USMALLINT", pa.uint16()),
    DataType.UINT32: ("UINTEGER", pa.uint32()),
    DataType.UINT64: ("UBIGINT", pa.uint64()),
    DataType.FLOAT: ("FLOAT", pa.float32()),
    DataType.DOUBLE: ("DOUBLE", pa.float64()),
    DataType.BOOL: ("BOOLEAN", pa.bool_()),
    DataType.STRING: ("VARCHAR", pa.string()),
    DataType.BYTES: ("BLOB", pa.binary()),
    DataType.TIMESTAMP_NTZ: ("TIMESTAMP", pa.timestamp("us")),
}
_JSON_ARROW = pa.json_(pa.string())


def feature_types(
    spec: FeatureSpec | FeatureGroupSpec, *, is_json: bool = False, shape: tuple[int, ...] | None = None
) -> tuple[str, pa.DataType]:
    """DuckDB type text and Arrow type of one feature (``shape`` overrides the spec's)."""
    if isinstance(spec, FeatureGroupSpec):
        children = [(child.name, *feature_types(child, shape=child.shape)) for child in spec.specs]
        sql = "STRUCT(" + ", ".join(f"{quote(n)} {t}" for n, t, _ in children) + ")"
        arrow: pa.DataType = pa.struct([pa.field(n, a) for n, _, a in children])
    elif is_json:
        sql, arrow = "JSON", _JSON_ARROW
    else:
        sql, arrow = _SCALARS[spec.dtype]
    for dim in reversed(shape or ()):
        sql += "[]" if dim == -1 else f"[{dim}]"
        arrow = pa.list_(arrow, dim)
    return sql, arrow


def output_types(function: FunctionSpec) -> list[tuple[str, pa.DataType]]:
    """DuckDB type text and Arrow type of each output of ``function`` (JSON outputs, stored shapes)."""
    return [
        feature_types(o, is_json=o.name in function.json_outputs, shape=function.output_shape(o.name))
        for o in function.signature.outputs
    ]


def param_type(param: ParamSpec | ParamGroupSpec) -> str:
    """A parameter's DuckDB type: its scalar type with its shape, or a STRUCT of its children."""
    if isinstance(param, ParamGroupSpec):
        sql = "STRUCT(" + ", ".join(f"{quote(c.name)} {param_type(c)}" for c in param.specs) + ")"
    else:
        sql = _SCALARS[param.dtype][0]
    return sql + "".join("[]" if d == -1 else f"[{d}]" for d in param.shape or ())


@dataclass(frozen=True)
class OutputTypes:
    """The SQL return type of a function and how to build it from result rows."""

    sql: str
    arrow: pa.DataType
    names: tuple[str, ...]
    columns: tuple[pa.DataType, ...]

    @classmethod
    def of(cls, function: FunctionSpec) -> OutputTypes:
        typed = output_types(function)
        names = tuple(o.name for o in function.signature.outputs)
        if len(typed) == 1:
            return cls(typed[0][0], typed[0][1], names, (typed[0][1],))
        sql = "STRUCT(" + ", ".join(f"{quote(n)} {t}" for n, (t, _) in zip(names, typed, strict=True)) + ")"
        arrow = pa.struct([pa.field(n, a) for n, (_, a) in zip(names, typed, strict=True)])
        return cls(sql, arrow, names, tuple(a for _, a in typed))

    def to_arrow_columns(self, results: list[dict | None], *, json_as_text: bool = False) -> list[pa.Array]:
        """One Arrow array per output; ``json_as_text`` gives JSON outputs as plain strings (for parquet)."""
        arrays = []
        for name, arrow in zip(self.names, self.columns, strict=True):
            if json_as_text and isinstance(arrow, pa.BaseExtensionType):
                arrow = arrow.storage_type
            arrays.append(pa.array([None if r is None else r[name] for r in results], type=arrow))
        return arrays

    def to_arrow(self, results: list[dict | None]) -> pa.Array:
        """What a UDF returns: the one output's array, or a struct array of all (NULL for a NULL row)."""
        columns = self.to_arrow_columns(results)
        if len(columns) == 1:
            return columns[0]
        mask = pa.array([r is None for r in results], type=pa.bool_())
        return pa.StructArray.from_arrays(columns, fields=list(self.arrow), mask=mask)
