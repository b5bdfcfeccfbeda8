"""The SQL names a model owns, and the rules that keep them from clashing.

A model ``m`` with versions ``v1``, ``v2`` owns ``m`` (its default version), ``m__v1``, ``m__v2``,
``_<method>`` variants of each when a version has several functions (``m_predict``), and a table
macro ``<name>_table`` and a files macro ``<name>_files`` for each of those.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import duckdb

from duckreg.function_spec import FunctionSpec
from duckreg.identifiers import quote

RESERVED_SQL_NAMES = frozenset(
    {
        "stage_files",
        "run_batch",
        "run_batch_async",
        "read_stage_file",
        "duckreg_list_stage_files",
        "duckreg_run_batch",
        "duckreg_run_batch_async",
    }
)
"""SQL names duckreg itself defines in every database it registers functions in."""
_TOKEN = re.compile(r"[a-z_][a-z0-9_]*")


def sql_names(
    model_key: str, version_key: str | None, functions: Sequence[FunctionSpec]
) -> list[tuple[str, FunctionSpec]]:
    """Each function of a version with its SQL name: ``<model>[__<version>]``, plus ``_<method>``
    unless the method is ``__call__`` or the version's only one (``version_key`` None: the default)."""
    base = model_key if version_key is None else f"{model_key}__{version_key}"
    sole = len(functions) == 1
    return [
        (base if f.target_method == "__call__" or sole else f"{base}_{f.target_method.lower()}", f) for f in functions
    ]


def table_macro_name(sql_name: str) -> str:
    return f"{sql_name}_table"


def files_macro_name(sql_name: str) -> str:
    return f"{sql_name}_files"


def create_macro(macro_name: str, catalog: str | None = None) -> str:
    """``CREATE OR REPLACE`` head of a macro: TEMP (this connection only) or in ``catalog`` (every connection).

    TEMP macros are private to the connection that made them; a server whose sessions are other
    connections of the instance (``duckreg serve``) keeps its macros in an in-memory catalog instead.
    """
    if catalog is None:
        return f"CREATE OR REPLACE TEMP MACRO {quote(macro_name)}"
    return f"CREATE OR REPLACE MACRO {quote(catalog)}.main.{quote(macro_name)}"


def with_macros(names: Iterable[str]) -> list[str]:
    """Function names plus the table and files macro names derived from them."""
    names = list(names)
    return names + [table_macro_name(n) for n in names] + [files_macro_name(n) for n in names]


def check_untaken(model_name: str, names: Iterable[str], taken: dict[str, str]) -> None:
    """Refuse ``names`` that another model (``taken``: name -> model) owns already."""
    for name in names:
        if name in taken:
            raise ValueError(
                f"Invalid model_name {model_name!r}: the SQL name {name!r} would clash with model {taken[name]}'s."
            )


def check_model_name_free(
    con: duckdb.DuckDBPyConnection, model_name: str, taken: dict[str, str], ours: set[str]
) -> None:
    """Refuse a model name whose SQL names would shadow a function or collide with another model's.

    ``taken`` maps every other model's SQL names to that model; ``ours`` holds names duckreg itself
    defined in this database (which may be replaced). None may be a keyword or a DuckDB function.
    """
    key = model_name.lower()
    if key in RESERVED_SQL_NAMES or key.startswith(("duckreg_", "_duckreg")):
        raise ValueError(f"Invalid model_name {model_name!r}: duckreg uses that name for its own SQL functions.")
    keywords = {r[0].lower() for r in con.execute("SELECT keyword_name FROM duckdb_keywords()").fetchall()}
    if key in keywords:
        raise ValueError(f"Invalid model_name {model_name!r}: it is an SQL keyword. Choose another name.")
    wanted = [key, table_macro_name(key), files_macro_name(key)]
    check_untaken(model_name, wanted, taken)
    for candidate in wanted:
        clash = con.execute(
            "SELECT count(*) FROM duckdb_functions() WHERE lower(function_name) = ?", [candidate]
        ).fetchall()[0][0]
        if clash and candidate not in ours:
            raise ValueError(
                f"Invalid model_name {model_name!r}: it would shadow the existing SQL function {candidate!r}."
            )


def models_named_in(sql_text: str, model_keys: Iterable[str]) -> set[str]:
    """Models whose SQL names (``m``, ``m__v1``, ``m_table``, ...) appear in ``sql_text``."""
    tokens = set(_TOKEN.findall(sql_text.lower()))
    return {key for key in model_keys if any(t == key or t.startswith((key + "__", key + "_")) for t in tokens)}
