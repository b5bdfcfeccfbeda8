"""What DuckDB sees of a model function: vectorized Arrow UDFs, their SQL types and the macros over them.

No model logic lives here: a UDF converts Arrow chunks to Python columns, calls the shared
``FunctionRunner``, and converts the results back to Arrow typed from the signature. Which UDFs exist
in a database instance, and for how long, is ``duckdb_ext.connections``' business.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa

from duckreg import row_errors
from duckreg.duckdb_ext.names import create_macro, files_macro_name, table_macro_name
from duckreg.duckdb_ext.types import OutputTypes
from duckreg.identifiers import quote
from duckreg.inference import FunctionRunner, check_on_error
from duckreg.result_cache import SQL_SWITCH

_MISSING = "__duckreg_missing"


def _param_values(array: pa.ChunkedArray) -> list:
    """Python values of one parameter column (the signature checks and coerces them)."""
    if array.null_count == len(array):
        return [None] * len(array)
    return array.to_pylist()


CACHE_SWITCH = f"getvariable('{SQL_SWITCH}')"
"""The next to last argument of every macro's call: the session's ``SET VARIABLE duckreg_cache = false``, or NULL."""
ON_ERROR_VARIABLE = "duckreg_on_error"
ON_ERROR = f"coalesce(on_error, getvariable('{ON_ERROR_VARIABLE}'))"
"""The last argument of every macro's call: the call's ``on_error := 'null'``, else the session's
``SET VARIABLE duckreg_on_error = 'null'``, else NULL (``raise``)."""


def _cache_switch(array: pa.ChunkedArray) -> bool | None:
    """The session's cache switch (None when unset); anything but false, 0 or 'off' leaves the cache on."""
    if array.null_count == len(array):
        return None
    value = array[0].as_py()
    return str(value).strip().lower() not in ("false", "0", "off", "no")


def _on_error(array: pa.ChunkedArray, runner: FunctionRunner) -> str:
    """The call's error policy (one value per call: a macro argument or a session variable)."""
    value = None if array.null_count == len(array) else array[0].as_py()
    try:
        return check_on_error(value)
    except ValueError as exc:
        raise ValueError(f"{runner.context()}: {exc}") from None


LAYOUTS = ("call", "positional")
"""How a UDF takes its arguments.

``call``: every input, every parameter in signature order, the session's cache switch, then the error
policy (``on_error``). Only
duckreg's macros call it (``fn(x, max_new_tokens := 40)``, table macros), so names are checked by
DuckDB before it runs.
``positional``: the required inputs alone, under the function's own SQL name. It is what a connection
without duckreg's macros (a cursor nobody registered) reaches: DuckDB passes named arguments to a Python
function by position, so this form takes no optional input and no parameter that a misspelt name
could land in.
"""


def make_udf(runner: FunctionRunner, output: OutputTypes, layout: str, sql_name: str) -> Callable[..., pa.Array]:
    """An Arrow UDF over the shared ``FunctionRunner`` taking its arguments as ``layout`` says."""
    specs = runner.signature.inputs
    params = runner.signature.params
    if layout == "call":

        def udf_call(*arrays: pa.ChunkedArray) -> pa.Array:
            if len(arrays) != len(specs) + len(params) + 2:
                raise ValueError(
                    f"{runner.context()}: expects {len(specs) + len(params) + 2} arguments, got {len(arrays)}"
                )
            inputs, values, switch = arrays[: len(specs)], arrays[len(specs) : -2], arrays[-2]
            use_cache = _cache_switch(switch)
            errors = {} if _on_error(arrays[-1], runner) == "null" else None
            columns = [a.to_pylist() for a in inputs]
            if not params:
                results = runner.run(columns, use_cache=use_cache, errors=errors)
            else:
                param_columns = {p.name: _param_values(a) for p, a in zip(params, values, strict=True)}
                results = runner.run_with_param_columns(columns, param_columns, use_cache, errors=errors)
            if errors:
                version = runner.version
                row_errors.record(version.model_name, version.version_name, runner.function.name,
                                  [s.name for s in specs], columns, errors)  # fmt: skip
            return output.to_arrow(results)

        return udf_call

    required = runner.required_inputs()
    positions = [i for i, s in enumerate(specs) if s.name in required]

    def udf_positional(*arrays: pa.ChunkedArray) -> pa.Array:
        if len(arrays) != len(required):
            extra = [s.name for s in specs if s.name not in required] + [p.name for p in params]
            hint = (
                f" Optional inputs and parameters ({', '.join(extra)}), and arguments by name, need duckreg's macros"
                " on this connection: open it with duckreg.connect() or call registry.register_functions(con)."
                if extra
                else ""
            )
            raise ValueError(
                f"{runner.context()}: {sql_name} takes {len(required)} argument(s) ({', '.join(required)}) "
                f"here, got {len(arrays)}.{hint}"
            )
        n_rows = len(arrays[0]) if arrays else 0
        columns: list[list] = [[None] * n_rows for _ in specs]
        for position, array in zip(positions, arrays, strict=True):
            columns[position] = array.to_pylist()
        return output.to_arrow(runner.run(columns))

    return udf_positional


def _param_names(runner: FunctionRunner) -> list[str]:
    return [quote(p.name) for p in runner.signature.params]


def scalar_macro_sql(macro_name: str, udf_name: str, runner: FunctionRunner, catalog: str | None = None) -> str:
    """The function as users call it: optional inputs may be left out, parameters go by name.

    ``fn(x, max_new_tokens := 40)``; an unknown name is refused by DuckDB before anything runs.
    """
    declared, passed = [], []
    for spec in runner.signature.inputs:
        optional = spec.name in runner.optional_inputs
        declared.append(quote(spec.name) + (" := NULL" if optional else ""))
        passed.append(quote(spec.name))
    declared += [f"{name} := NULL" for name in _param_names(runner)] + ["on_error := NULL"]
    passed += [*_param_names(runner), CACHE_SWITCH, ON_ERROR]
    return f"{create_macro(macro_name, catalog)}({', '.join(declared)}) AS {quote(udf_name)}({', '.join(passed)})"


def table_macro_sql(
    macro_name: str, udf_name: str, runner: FunctionRunner, output: OutputTypes, catalog: str | None = None
) -> str:
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
    args += [*_param_names(runner), CACHE_SWITCH, ON_ERROR]
    declared = ", ".join(["table_name", *(f"{name} := NULL" for name in _param_names(runner)), "on_error := NULL"])
    call = f"{quote(udf_name)}({', '.join(args)})"
    projection = f"unnest({call})" if len(output.names) > 1 else f"{call} AS {quote(output.names[0])}"
    # An output replaces a column of the same name (conversational's generated_responses).
    # The NULL helper column exists only where an optional input needs it: otherwise a table without an
    # input's column gets DuckDB's own error, naming the table's columns and nothing of duckreg's.
    has_optional = any(spec.name in runner.optional_inputs for spec in runner.signature.inputs)
    hidden = [*([_MISSING.lower()] if has_optional else []), *sorted(runner.function.replaced_columns())]
    keep = "COLUMNS(lambda c: lower(c) NOT IN (" + ", ".join(f"'{n}'" for n in hidden) + "))" if hidden else "*"
    source = (
        f"(SELECT *, NULL AS {_MISSING} FROM query_table(table_name))" if has_optional else "query_table(table_name)"
    )
    return f"{create_macro(macro_name, catalog)}({declared}) AS TABLE SELECT {keep}, {projection} FROM {source}"


class SqlFunction:
    """One SQL name of one function of one model version, with the UDFs and macros that serve it."""

    def __init__(self, sql_name: str, model_key: str, runner: FunctionRunner) -> None:
        self.sql_name = sql_name
        self.model_key = model_key
        self.runner = runner
        self.output = OutputTypes.of(runner.function)
        self._udfs: dict[str, Any] = {}
        signature = runner.signature
        arguments = {
            "positional": [runner.required_inputs(), []],
            "call": [
                [s.name for s in signature.inputs],
                [p.name for p in signature.params],
                [SQL_SWITCH],
                [ON_ERROR_VARIABLE],
            ],
        }
        self._keys = {
            layout: hashlib.sha256(json.dumps([*names, self.output.sql]).encode()).hexdigest()[:12]
            for layout, names in arguments.items()
        }

    def signature_key(self, layout: str) -> str:
        """What a UDF of this layout was created for: its argument names and its SQL return type."""
        return self._keys[layout]

    def udf_name(self, layout: str) -> str:
        if layout == "positional":
            return self.sql_name
        return f"_duckreg_{self.sql_name}_{self.signature_key(layout)}"

    def udf(self, layout: str) -> Any:
        if layout not in self._udfs:
            self._udfs[layout] = make_udf(self.runner, self.output, layout, self.sql_name)
        return self._udfs[layout]

    def macro_statements(self, catalog: str | None = None) -> list[str]:
        """Every macro this function puts on a registered connection (TEMP unless ``catalog`` is given)."""
        call = self.udf_name("call")
        statements = [
            scalar_macro_sql(self.sql_name, call, self.runner, catalog),
            table_macro_sql(table_macro_name(self.sql_name), call, self.runner, self.output, catalog),
        ]
        files = files_macro_sql(files_macro_name(self.sql_name), call, self.runner, self.output, catalog)
        return [*statements, files] if files else statements


def drop_macro_statements(sql_names: Iterable[str]) -> list[str]:
    """Statements removing the TEMP macros of ``sql_names`` (those not present are skipped)."""
    statements = []
    for name in sql_names:
        statements += [
            f"DROP MACRO IF EXISTS temp.{quote(name)}",
            f"DROP MACRO TABLE IF EXISTS temp.{quote(table_macro_name(name))}",
            f"DROP MACRO TABLE IF EXISTS temp.{quote(files_macro_name(name))}",
        ]
    return statements


def files_macro_sql(
    macro_name: str, udf_name: str, runner: FunctionRunner, output: OutputTypes, catalog: str | None = None
) -> str | None:
    """For a function of one file (one BYTES input): ``fn_files('@stage/path', pattern)`` -> file_path + outputs."""
    if runner.function.single_file_input(runner.optional_inputs) is None:
        return None
    args = ["read_stage_file(file_path)"] + ["NULL"] * (len(runner.signature.inputs) - 1)
    args += [*_param_names(runner), CACHE_SWITCH, ON_ERROR]
    declared = ", ".join(["stage_path", "pattern := NULL", *(f"{n} := NULL" for n in _param_names(runner)),
                          "on_error := NULL"])  # fmt: skip
    call = f"{quote(udf_name)}({', '.join(args)})"
    projection = f"unnest({call})" if len(output.names) > 1 else f"{call} AS {quote(output.names[0])}"
    return (
        f"{create_macro(macro_name, catalog)}({declared}) AS TABLE "
        f"SELECT file_path, {projection} FROM stage_files(stage_path, pattern)"
    )
