"""Binding of model functions to DuckDB: vectorized Arrow UDFs and table macros.

No model logic lives here: a UDF converts Arrow chunks to Python columns, calls the shared
``FunctionRunner``, and converts the results back to Arrow typed from the signature.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from duckreg.inference import FunctionRunner, FunctionSpec
from duckreg.model_signature import DataType, FeatureGroupSpec, FeatureSpec

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
_MISSING = "__duckreg_missing"


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


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


@dataclass(frozen=True)
class OutputTypes:
    """The SQL return type of a function and how to build it from result rows."""

    sql: str
    arrow: pa.DataType
    names: tuple[str, ...]
    columns: tuple[pa.DataType, ...]

    @classmethod
    def of(cls, function: FunctionSpec) -> OutputTypes:
        typed = [
            feature_types(o, is_json=o.name in function.json_outputs, shape=function.sql_shapes.get(o.name, o.shape))
            for o in function.signature.outputs
        ]
        names = tuple(o.name for o in function.signature.outputs)
        if len(typed) == 1:
            return cls(typed[0][0], typed[0][1], names, (typed[0][1],))
        sql = "STRUCT(" + ", ".join(f"{quote(n)} {t}" for n, (t, _) in zip(names, typed, strict=True)) + ")"
        arrow = pa.struct([pa.field(n, a) for n, (_, a) in zip(names, typed, strict=True)])
        return cls(sql, arrow, names, tuple(a for _, a in typed))

    def to_arrow(self, results: list[dict | None]) -> pa.Array:
        columns = [
            pa.array([None if r is None else r[name] for r in results], type=arrow)
            for name, arrow in zip(self.names, self.columns, strict=True)
        ]
        if len(columns) == 1:
            return columns[0]
        mask = pa.array([r is None for r in results], type=pa.bool_())
        return pa.StructArray.from_arrays(columns, fields=list(self.arrow), mask=mask)


def make_udf(runner: FunctionRunner, output: OutputTypes):
    """An Arrow UDF taking the signature's inputs positionally (trailing optional ones may be left out)."""
    specs = runner.signature.inputs
    n_required = len(runner.required_inputs())
    names = ", ".join(s.name for s in specs)

    def udf(*arrays: pa.ChunkedArray) -> pa.Array:
        if not n_required <= len(arrays) <= len(specs):
            expected = str(len(specs)) if n_required == len(specs) else f"{n_required} to {len(specs)}"
            raise ValueError(f"{runner.context()}: expects {expected} arguments ({names}), got {len(arrays)}")
        n_rows = len(arrays[0]) if arrays else 0
        columns = [a.to_pylist() for a in arrays] + [[None] * n_rows for _ in specs[len(arrays) :]]
        return output.to_arrow(runner.run(columns))

    return udf


def table_macro_sql(macro_name: str, function_name: str, runner: FunctionRunner, output: OutputTypes) -> str:
    """A table macro: every column of the named table plus the function's output columns."""
    args = []
    for spec in runner.signature.inputs:
        if spec.name in runner.optional_inputs:
            # An optional input column may be absent from the table: fall back to NULL.
            args.append(f"coalesce(*COLUMNS('(?i)^({spec.name}|{_MISSING})$'))")
        else:
            args.append(quote(spec.name))
    call = f"{quote(function_name)}({', '.join(args)})"
    projection = f"unnest({call})" if len(output.names) > 1 else f"{call} AS {quote(output.names[0])}"
    return (
        f"CREATE OR REPLACE TEMP MACRO {quote(macro_name)}(table_name) AS TABLE "
        f"SELECT * EXCLUDE ({_MISSING}), {projection} "
        f"FROM (SELECT *, NULL::VARCHAR AS {_MISSING} FROM query_table(table_name))"
    )


@dataclass(frozen=True)
class Binding:
    """One SQL name bound to one function of one version."""

    sql_name: str
    runner: FunctionRunner


def table_macro_name(sql_name: str) -> str:
    return f"{sql_name}_table"


# DuckDB keeps a Python UDF in the database instance's catalog, but only the connection that created
# it can remove it. Remember that connection per (database, name) so any bound connection can
# replace or drop the function.
_OWNERS: dict[tuple[str, str], weakref.ref] = {}


def _instance_key(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
    return rows[0][0] if rows and rows[0][0] else f"memory:{id(con)}"


def _remove_udf(con: duckdb.DuckDBPyConnection, instance: str, name: str) -> None:
    owner_ref = _OWNERS.get((instance, name))
    for candidate in (con, owner_ref() if owner_ref else None):
        if candidate is None:
            continue
        try:
            candidate.remove_function(name)
            _OWNERS.pop((instance, name), None)
            return
        except Exception:  # noqa: BLE001 - not registered through this connection
            continue


def bind(con: duckdb.DuckDBPyConnection, bindings: Iterable[Binding]) -> None:
    """Create (or replace) the UDF and table macro of every binding on ``con``."""
    instance = _instance_key(con)
    for binding in bindings:
        output = OutputTypes.of(binding.runner.function)
        _remove_udf(con, instance, binding.sql_name)
        try:
            con.create_function(
                binding.sql_name,
                make_udf(binding.runner, output),
                None,
                output.sql,
                type="arrow",
                null_handling="special",
                side_effects=False,
            )
            _OWNERS[(instance, binding.sql_name)] = weakref.ref(con)
        except duckdb.CatalogException as exc:
            # Registered through a connection this process cannot reach (e.g. a cursor's parent):
            # it is already callable here.
            if "already exists" not in str(exc):
                raise
        con.execute(table_macro_sql(table_macro_name(binding.sql_name), binding.sql_name, binding.runner, output))


def unbind(con: duckdb.DuckDBPyConnection, sql_names: Iterable[str]) -> None:
    """Remove UDFs and table macros by name; names not bound are skipped."""
    instance = _instance_key(con)
    for name in sql_names:
        _remove_udf(con, instance, name)
        con.execute(f"DROP MACRO TABLE IF EXISTS temp.{quote(table_macro_name(name))}")
