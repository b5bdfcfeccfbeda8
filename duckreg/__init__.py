"""duckreg: a model registry for DuckDB that makes every logged model version callable from SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from duckreg.duckdb_ext.connections import DatabaseLocked
from duckreg.registry import Model, ModelVersion, Registry
from duckreg.registry.registry import open_registry

__version__ = "0.1.0"


def connect(database: str | Path | None = None, **kwargs: Any) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB connection with every logged model's SQL functions registered.

    ``kwargs`` go to ``duckdb.connect`` (``read_only=True``, ``config=...``). The registry options
    ``database_name``, ``schema_name`` and ``artifact_location`` are taken out first.
    """
    registry_kwargs = {k: kwargs.pop(k) for k in ("database_name", "schema_name", "artifact_location") if k in kwargs}
    registry = open_registry(database, kwargs, registry_kwargs)
    return registry.register_functions()


def list_stage_files(
    registry_or_connection: Registry | duckdb.DuckDBPyConnection,
    stage_path: str,
    *,
    pattern: str | None = None,
    column_name: str = "FILE_PATH",
) -> Any:
    """Full stage paths (``@stage/dir/file.png``) of the files under ``stage_path``, as a one-column DataFrame.

    ``pattern`` is a regular expression the whole stage path must match (as in Snowflake's LIST).
    The result can be passed straight to ``run_batch`` with ``InputFormat.FULL_STAGE_PATH``.
    """
    import pandas as pd

    registry = (
        registry_or_connection if isinstance(registry_or_connection, Registry) else Registry(registry_or_connection)
    )
    files = registry.stages.list_files(stage_path, pattern)
    return pd.DataFrame({column_name: pd.Series(files, dtype=object)})


def sql(con: duckdb.DuckDBPyConnection, query: str, *, registry: Registry | None = None) -> Any:
    """Run ``query`` on ``con`` like ``con.sql``, accepting Snowflake model-call syntax.

    ``MODEL(m, v1)!predict(x)``, ``m!predict(*)``, ``WITH mv AS MODEL m VERSION v1 ...`` and
    ``result:field`` are rewritten to duckreg functions (see ``duckreg.duckdb_ext.snowflake_syntax``); plain DuckDB SQL
    runs as written. The models the statement names are registered on ``con`` first.
    """
    from duckreg.duckdb_ext.statements import prepare

    registry = registry or Registry(con)
    return con.sql(prepare(registry, con, query))


__all__ = [
    "DatabaseLocked",
    "Model",
    "ModelVersion",
    "Registry",
    "__version__",
    "connect",
    "list_stage_files",
    "sql",
]
