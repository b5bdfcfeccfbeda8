"""``stage_files``, ``read_stage_file`` and ``run_batch`` in SQL, served by a registry of the instance.

The UDFs belong to the database instance (as model functions do); each call is answered by the most
recently bound registry whose connection is still open. A registry takes part through a
``StageServer``: what it offers, with no DuckDB-side code reaching into the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from duckreg.duckdb_ext.names import create_macro

if TYPE_CHECKING:
    from duckreg.batch.stages import StageCatalog
    from duckreg.duckdb_ext.connections import Instance


@dataclass(frozen=True)
class StageServer:
    """What one registry offers the stage and batch SQL functions."""

    connection: duckdb.DuckDBPyConnection
    stages: StageCatalog
    start_job: Callable[..., str]
    """``start_job(model, query, output_location, mode, job_name, max_batch_rows)`` -> the job's id."""
    closed: Callable[[], bool]


class StageFunctions:
    """The stage and batch SQL functions of an instance, served by its most recent open registry."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    def list_files(self, stage_path: str, pattern: str | None) -> list[str]:
        return self.instance.server().stages.list_files(stage_path, pattern)

    def read_file(self, stage_path: str) -> bytes:
        return self.instance.server().stages.read_bytes(stage_path)

    def run_batch(
        self,
        model: str,
        query: str,
        output_location: str,
        mode: str | None,
        job_name: str | None,
        max_batch_rows: int | None,
    ) -> str:
        """``run_batch(model, query, output_location, mode, job_name, max_batch_rows)`` -> the job's id."""
        return self.instance.server().start_job(model, query, output_location, mode, job_name, max_batch_rows)


STAGE_UDFS = (
    ("duckreg_list_stage_files", "list_files", ["VARCHAR", "VARCHAR"], "VARCHAR[]"),
    ("read_stage_file", "read_file", ["VARCHAR"], "BLOB"),
    ("duckreg_run_batch", "run_batch", ["VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "BIGINT"], "VARCHAR"),
)
"""(UDF name, method of ``StageFunctions``, parameter types, return type)."""


def stage_macro_statements(catalog: str | None = None) -> list[str]:
    """``stage_files('@stage/path', pattern)`` and ``run_batch(model, query, output_location, ...)``.

    TEMP macros unless ``catalog`` names where every connection of the instance should find them.
    """
    return [
        f"{create_macro('stage_files', catalog)}(stage_path, pattern := NULL) AS TABLE "
        "SELECT unnest(duckreg_list_stage_files(stage_path, pattern)) AS file_path",
        f"{create_macro('run_batch', catalog)}(model, query, output_location, mode := 'error', job_name := NULL, "
        "max_batch_rows := NULL) AS duckreg_run_batch(model, query, output_location, mode, job_name, max_batch_rows)",
    ]
