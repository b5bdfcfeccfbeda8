"""Binding of model functions to DuckDB: vectorized Arrow UDFs and table macros.

No model logic lives here: a UDF converts Arrow chunks to Python columns, calls the shared
``FunctionRunner``, and converts the results back to Arrow typed from the signature.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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


def _param_values(array: pa.ChunkedArray) -> list:
    """Python values of one parameter column; SQL decimals (``0.7``) become floats."""
    if array.null_count == len(array):
        return [None] * len(array)
    if pa.types.is_decimal(array.type):
        array = array.cast(pa.float64())
    return array.to_pylist()


def make_udf(runner: FunctionRunner, output: OutputTypes):
    """An Arrow UDF taking the signature's inputs positionally (trailing optional ones may be left out).

    A function with parameters is called through its macro, which always passes every input and
    then every parameter in signature order.
    """
    specs = runner.signature.inputs
    params = runner.signature.params
    n_required = len(runner.required_inputs())
    names = ", ".join(s.name for s in specs)

    if params:

        def udf_with_params(*arrays: pa.ChunkedArray) -> pa.Array:
            inputs, values = arrays[: len(specs)], arrays[len(specs) :]
            columns = [a.to_pylist() for a in inputs]
            param_columns = {p.name: _param_values(a) for p, a in zip(params, values, strict=True)}
            return output.to_arrow(runner.run_with_param_columns(columns, param_columns))

        return udf_with_params

    def udf(*arrays: pa.ChunkedArray) -> pa.Array:
        if not n_required <= len(arrays) <= len(specs):
            expected = str(len(specs)) if n_required == len(specs) else f"{n_required} to {len(specs)}"
            raise ValueError(f"{runner.context()}: expects {expected} arguments ({names}), got {len(arrays)}")
        n_rows = len(arrays[0]) if arrays else 0
        columns = [a.to_pylist() for a in arrays] + [[None] * n_rows for _ in specs[len(arrays) :]]
        return output.to_arrow(runner.run(columns))

    return udf


def _param_names(runner: FunctionRunner) -> list[str]:
    return [quote(p.name) for p in runner.signature.params]


def scalar_macro_sql(macro_name: str, udf_name: str, runner: FunctionRunner) -> str:
    """A macro that takes parameters by name (``fn(x, max_new_tokens := 40)``) over the UDF."""
    declared, passed = [], []
    for spec in runner.signature.inputs:
        optional = spec.name in runner.optional_inputs
        declared.append(quote(spec.name) + (" := NULL" if optional else ""))
        passed.append(quote(spec.name))
    declared += [f"{name} := NULL" for name in _param_names(runner)]
    passed += _param_names(runner)
    return (
        f"CREATE OR REPLACE TEMP MACRO {quote(macro_name)}({', '.join(declared)}) AS "
        f"{quote(udf_name)}({', '.join(passed)})"
    )


def table_macro_sql(macro_name: str, udf_name: str, runner: FunctionRunner, output: OutputTypes) -> str:
    """A table macro: every column of the named table plus the function's output columns.

    Parameters are passed by name as in the scalar call: ``fn_table('docs', num_beams := 2)``.
    """
    args = []
    for spec in runner.signature.inputs:
        if spec.name in runner.optional_inputs:
            # An optional input column may be absent from the table: fall back to NULL.
            args.append(f"coalesce(*COLUMNS('(?i)^({spec.name}|{_MISSING})$'))")
        else:
            args.append(quote(spec.name))
    args += _param_names(runner)
    declared = ", ".join(["table_name", *(f"{name} := NULL" for name in _param_names(runner))])
    call = f"{quote(udf_name)}({', '.join(args)})"
    projection = f"unnest({call})" if len(output.names) > 1 else f"{call} AS {quote(output.names[0])}"
    # An output named like an input (conversational's generated_responses) replaces that column.
    inputs = {s.name.lower() for s in runner.signature.inputs}
    hidden = [_MISSING.lower(), *(n.lower() for n in output.names if n.lower() in inputs)]
    keep = "COLUMNS(lambda c: lower(c) NOT IN (" + ", ".join(f"'{n}'" for n in hidden) + "))"
    return (
        f"CREATE OR REPLACE TEMP MACRO {quote(macro_name)}({declared}) AS TABLE "
        f"SELECT {keep}, {projection} "
        f"FROM (SELECT *, NULL AS {_MISSING} FROM query_table(table_name))"
    )


@dataclass(frozen=True)
class Binding:
    """One SQL name bound to one function of one version."""

    sql_name: str
    runner: FunctionRunner


def table_macro_name(sql_name: str) -> str:
    return f"{sql_name}_table"


def udf_name(sql_name: str, has_params: bool) -> str:
    """Functions with parameters are macros over an internal UDF of this name."""
    return f"_duckreg_{sql_name}" if has_params else sql_name


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


def _create_udf(con: duckdb.DuckDBPyConnection, instance: str, name: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    """Create a NULL-aware UDF on ``con`` and remember ``con`` as its owner (the one that can remove it)."""
    try:
        con.create_function(name, fn, *args, null_handling="special", **kwargs)
        _OWNERS[(instance, name)] = weakref.ref(con)
    except duckdb.CatalogException as exc:
        # Registered through a connection this process cannot reach (e.g. a cursor's parent):
        # it is already callable here.
        if "already exists" not in str(exc):
            raise


def bind(con: duckdb.DuckDBPyConnection, bindings: Iterable[Binding], *, replace: bool = True) -> None:
    """Create (or replace) the UDF and macros of every binding on ``con``.

    With ``replace=False`` UDFs already in the database instance are kept as they are and only the
    per-connection macros are created (what a cursor needs; the UDFs stay with their owner).
    """
    instance = _instance_key(con)
    for binding in bindings:
        output = OutputTypes.of(binding.runner.function)
        has_params = bool(binding.runner.signature.params)
        name = udf_name(binding.sql_name, has_params)
        if replace:
            _drop(con, instance, binding.sql_name)
        _create_udf(
            con,
            instance,
            name,
            make_udf(binding.runner, output),
            None,
            output.sql,
            type="arrow",
            side_effects=False,
        )
        if has_params:
            con.execute(scalar_macro_sql(binding.sql_name, name, binding.runner))
        con.execute(table_macro_sql(table_macro_name(binding.sql_name), name, binding.runner, output))
        files_macro = files_macro_sql(files_macro_name(binding.sql_name), name, binding.runner, output)
        if files_macro:
            con.execute(files_macro)


def _drop(con: duckdb.DuckDBPyConnection, instance: str, sql_name: str) -> None:
    """Remove every object a binding of ``sql_name`` may have created, whatever its kind was."""
    _remove_udf(con, instance, sql_name)
    _remove_udf(con, instance, udf_name(sql_name, True))
    con.execute(f"DROP MACRO IF EXISTS temp.{quote(sql_name)}")
    con.execute(f"DROP MACRO TABLE IF EXISTS temp.{quote(table_macro_name(sql_name))}")
    con.execute(f"DROP MACRO TABLE IF EXISTS temp.{quote(files_macro_name(sql_name))}")


def files_macro_name(sql_name: str) -> str:
    return f"{sql_name}_files"


def files_macro_sql(macro_name: str, udf_name: str, runner: FunctionRunner, output: OutputTypes) -> str | None:
    """For a function of one file (one BYTES input): ``fn_files('@stage/path', pattern)`` -> file_path + outputs."""
    required = [s for s in runner.signature.inputs if s.name not in runner.optional_inputs]
    if len(required) != 1 or not isinstance(required[0], FeatureSpec) or required[0].dtype is not DataType.BYTES:
        return None
    if required[0].shape is not None:
        return None
    args = ["read_stage_file(file_path)"] + ["NULL"] * (len(runner.signature.inputs) - 1)
    args += _param_names(runner)
    declared = ", ".join(["stage_path", "pattern := NULL", *(f"{n} := NULL" for n in _param_names(runner))])
    call = f"{quote(udf_name)}({', '.join(args)})"
    projection = f"unnest({call})" if len(output.names) > 1 else f"{call} AS {quote(output.names[0])}"
    return (
        f"CREATE OR REPLACE TEMP MACRO {quote(macro_name)}({declared}) AS TABLE "
        f"SELECT file_path, {projection} FROM stage_files(stage_path, pattern)"
    )


def bind_stage_functions(con: duckdb.DuckDBPyConnection, stages: Any, start_job: Any, *, replace: bool = True) -> None:
    """SQL access to stages and batch jobs on ``con``.

    ``stage_files('@stage/path', pattern)`` lists files, ``read_stage_file(path)`` reads one, and
    ``run_batch(model, query, output_location, ...)`` starts a background job and returns its id.
    """
    instance = _instance_key(con)

    def list_files(stage_path: str, pattern: str | None) -> list[str]:
        return stages.list_files(stage_path, pattern)

    def read_file(stage_path: str) -> bytes:
        return stages.read_bytes(stage_path)

    functions = [
        ("duckreg_list_stage_files", list_files, ["VARCHAR", "VARCHAR"], "VARCHAR[]"),
        ("read_stage_file", read_file, ["VARCHAR"], "BLOB"),
        ("duckreg_run_batch", start_job, ["VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "BIGINT"], "VARCHAR"),
    ]
    for name, fn, params, returns in functions:
        if replace:
            _remove_udf(con, instance, name)
        _create_udf(con, instance, name, fn, params, returns, side_effects=name.endswith("batch"))
    con.execute(
        "CREATE OR REPLACE TEMP MACRO stage_files(stage_path, pattern := NULL) AS TABLE "
        "SELECT unnest(duckreg_list_stage_files(stage_path, pattern)) AS file_path"
    )
    con.execute(
        "CREATE OR REPLACE TEMP MACRO run_batch(model, query, output_location, mode := 'error', job_name := NULL, "
        "max_batch_rows := NULL) AS duckreg_run_batch(model, query, output_location, mode, job_name, max_batch_rows)"
    )


def unbind(con: duckdb.DuckDBPyConnection, sql_names: Iterable[str]) -> None:
    """Remove UDFs and macros by name; names not bound are skipped."""
    instance = _instance_key(con)
    for name in sql_names:
        _drop(con, instance, name)
