"""``stage_files``, ``read_stage_file``, ``run_batch`` and ``run_batch_async`` in SQL, served by a registry.

The UDFs belong to the database instance (as model functions do); each call is answered by the most
recently bound registry whose connection is still open. A registry takes part through a
``StageServer``: what it offers, with no DuckDB-side code reaching into the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from duckreg import row_errors
from duckreg.duckdb_ext.names import create_macro

RUN_BATCH_RESULT = (
    'STRUCT(job_name VARCHAR, status VARCHAR, "rows" BIGINT, rows_failed BIGINT, output_location VARCHAR, '
    "files VARCHAR[])"
)
"""The row SQL's ``run_batch`` returns for a finished job."""

INDEX_RESULT = (
    'STRUCT(index_name VARCHAR, version VARCHAR, "rows" BIGINT, embedded BIGINT, removed BIGINT, unchanged BIGINT, '
    "failed BIGINT)"
)
"""The row SQL's ``create_index``, ``refresh_index`` and ``drop_index`` return."""

if TYPE_CHECKING:
    from duckreg.stages import StageCatalog


@dataclass(frozen=True)
class StageServer:
    """What one registry offers the stage and batch SQL functions."""

    connection: duckdb.DuckDBPyConnection
    stages: StageCatalog
    run_job: Callable[..., dict]
    """``run_job(model, query, output_location, mode, job_name, max_batch_rows, on_error)`` -> the finished job's
    summary."""
    start_job: Callable[..., str]
    """The same arguments -> the id of a job left running in the background."""
    closed: Callable[[], bool]
    index_action: Callable[..., dict]
    """``index_action(action, index_name, table, column, key, model, version)`` -> the index's summary row."""


class StageFunctions:
    """The stage and batch SQL functions of an instance, served by its most recent open registry."""

    def __init__(self, server: Callable[[], StageServer]) -> None:
        """``server()`` is the registry answering now (an instance's most recent open one)."""
        self.server = server

    def list_files(self, stage_path: str, pattern: str | None) -> list[str]:
        return self.server().stages.list_files(stage_path, pattern)

    def read_file(self, stage_path: str) -> bytes:
        return self.server().stages.read_bytes(stage_path)

    def list_errors(self) -> list[dict]:
        """``duckreg_errors()``: the rows that failed under ``on_error := 'null'`` in this process."""
        return row_errors.recent()

    # DuckDB counts a Python function's parameters, so each takes the seven SQL arguments by name.
    def run_batch(
        self,
        model: str,
        query: str,
        output_location: str,
        mode: str | None,
        job_name: str | None,
        rows: int | None,
        on_error: str | None,
    ) -> dict:
        """``run_batch(model, query, output_location, mode, job_name, max_batch_rows, on_error)``: run the job,
        return its summary row."""
        return self.server().run_job(model, query, output_location, mode, job_name, rows, on_error)

    def index(
        self,
        action: str,
        index_name: str,
        table: str | None,
        column: str | None,
        key: str | None,
        model: str | None,
        version: str | None,
    ) -> dict:
        """``create_index``, ``refresh_index`` and ``drop_index`` in SQL: the index's summary row afterwards."""
        return self.server().index_action(action, index_name, table, column, key, model, version)

    def run_batch_async(
        self,
        model: str,
        query: str,
        output_location: str,
        mode: str | None,
        job_name: str | None,
        rows: int | None,
        on_error: str | None,
    ) -> str:
        """``run_batch_async(...)``, the same arguments -> the id of a job running in this process's background."""
        return self.server().start_job(model, query, output_location, mode, job_name, rows, on_error)


_RUN_BATCH_PARAMS = ["VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "BIGINT", "VARCHAR"]
STAGE_UDFS = (
    ("duckreg_list_stage_files", "list_files", ["VARCHAR", "VARCHAR"], "VARCHAR[]"),
    ("read_stage_file", "read_file", ["VARCHAR"], "BLOB"),
    ("duckreg_run_batch", "run_batch", _RUN_BATCH_PARAMS, RUN_BATCH_RESULT),
    ("duckreg_run_batch_async", "run_batch_async", _RUN_BATCH_PARAMS, "VARCHAR"),
    ("duckreg_list_errors", "list_errors", [], row_errors.ERRORS_TYPE),
    ("duckreg_index", "index", ["VARCHAR"] * 7, INDEX_RESULT),
)
"""(UDF name, method of ``StageFunctions``, parameter types, return type)."""


def stage_macro_statements(catalog: str | None = None) -> list[str]:
    """``stage_files('@stage/path', pattern)``, ``run_batch(...)`` (a table) and ``run_batch_async(...)``.

    TEMP macros unless ``catalog`` names where every connection of the instance should find them.
    """
    arguments = "model, query, output_location, mode, job_name, max_batch_rows, on_error"
    parameters = (
        "model, query, output_location, mode := 'error', job_name := NULL, max_batch_rows := NULL, on_error := 'raise'"
    )
    return [
        f"{create_macro('stage_files', catalog)}(stage_path, pattern := NULL) AS TABLE "
        "SELECT unnest(duckreg_list_stage_files(stage_path, pattern)) AS file_path",
        # Materialized, so the job runs once (unnest of a struct would otherwise call it once per field).
        f"{create_macro('run_batch', catalog)}({parameters}) AS TABLE WITH job AS MATERIALIZED "
        f"(SELECT duckreg_run_batch({arguments}) AS summary) SELECT unnest(summary) FROM job",
        f"{create_macro('run_batch_async', catalog)}({parameters}) AS duckreg_run_batch_async({arguments})",
        f"{create_macro('duckreg_errors', catalog)}() AS TABLE SELECT unnest(duckreg_list_errors(), recursive := true)",
        *(
            f"{create_macro(name, catalog)}({params}) AS TABLE WITH done AS MATERIALIZED "
            f"(SELECT duckreg_index({arguments}) AS summary) SELECT unnest(summary) FROM done"
            for name, params, arguments in _INDEX_MACROS
        ),
    ]


_INDEX_MACROS = (
    (
        "create_index",
        "index_name, table_name, column_name, key_column, model, version := NULL, if_exists := 'error'",
        "CASE if_exists WHEN 'refresh' THEN 'create_or_refresh' WHEN 'error' THEN 'create' ELSE 'bad if_exists' END, "
        "index_name, table_name, column_name, key_column, model, version",
    ),
    ("refresh_index", "index_name", "'refresh', index_name, NULL, NULL, NULL, NULL, NULL"),
    ("drop_index", "index_name", "'drop', index_name, NULL, NULL, NULL, NULL, NULL"),
)
"""(macro, its parameters, the ``duckreg_index`` arguments it passes)."""
