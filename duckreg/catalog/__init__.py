"""Registry metadata in DuckDB tables (DDL in ``sql/catalog.sql``), one transaction per change."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import duckdb

from duckreg.identifiers import quote


def catalog_ddl() -> str:
    """The catalog DDL, shipped beside this module."""
    return resources.files(__package__).joinpath("catalog.sql").read_text()


_TABLES = {
    "settings",
    "models",
    "versions",
    "functions",
    "aliases",
    "tags",
    "metrics",
    "stages",
    "jobs",
    "job_logs",
    "indexes",
}


class Catalog:
    """Typed access to the catalog tables through a private cursor of the user's connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, database_name: str, schema_name: str) -> None:
        self._cursor = con.cursor()
        self._lock = threading.RLock()
        self._revision = 0
        self.database_name = database_name
        self.schema_name = schema_name
        self.schema = f"{quote(database_name)}.{quote(schema_name)}"

    def initialise(self) -> None:
        """Create missing catalog tables (a catalog from an older duckreg gains the new ones)."""
        present = {
            row[0]
            for row in self.query(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = ?",
                [self.database_name, self.schema_name],
            )
        }
        if _TABLES <= present:
            self._add_columns()
            return
        try:
            with self._lock:
                self._cursor.execute(catalog_ddl().replace("{schema}", self.schema))
        except duckdb.Error as exc:
            # A read-only database with an older catalog: the registry works without the new tables.
            if "versions" in present:
                return
            if "read-only" in str(exc):
                raise duckdb.InvalidInputException(
                    f"Database {self.database_name} has no duckreg registry (schema {self.schema_name}) and is "
                    "open read-only: open it once writable to create one."
                ) from None
            raise

    def has_column(self, table: str, column: str) -> bool:
        """Whether a catalog table has ``column`` (an older, read-only catalog may lack newer ones)."""
        return bool(
            self.query(
                "SELECT 1 FROM duckdb_columns() WHERE database_name = ? AND schema_name = ? AND table_name = ? "
                "AND column_name = ?",
                [self.database_name, self.schema_name, table, column],
            )
        )

    def _add_columns(self) -> None:
        """Columns newer than a catalog's tables (``jobs.rows_failed``), added where the database is writable."""
        if self.has_column("jobs", "rows_failed"):
            return
        try:
            self.execute("ALTER TABLE {schema}.jobs ADD COLUMN rows_failed BIGINT")
        except duckdb.Error:
            pass  # read-only: the catalog is read as it is, and no job runs here

    @property
    def revision(self) -> int:
        """A number every write through this catalog changes, so a reader that keeps what it read (the HTTP
        door's model lookups) knows when to read again without a query per request."""
        return self._revision

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        with self._lock:
            return self._cursor.execute(sql.replace("{schema}", self.schema), params or []).fetchall()

    def execute(self, sql: str, params: list[Any] | None = None) -> None:
        with self._lock:
            try:
                self._cursor.execute(sql.replace("{schema}", self.schema), params or [])
            finally:
                self._revision += 1

    @contextmanager
    def transaction(self) -> Iterator[Catalog]:
        """All catalog writes inside commit together or not at all."""
        with self._lock:
            self._cursor.execute("BEGIN TRANSACTION")
            try:
                try:
                    yield self
                except BaseException:
                    self._cursor.execute("ROLLBACK")
                    raise
                self._cursor.execute("COMMIT")
            finally:
                self._revision += 1

    def create_function(self, name: str, fn: Any, params: list[str] | None, return_type: str, **kwargs: Any) -> None:
        """Create a NULL-aware UDF through this catalog's private cursor (which alone can remove it)."""
        with self._lock:
            self._cursor.create_function(name, fn, params, return_type, null_handling="special", **kwargs)

    def remove_function(self, name: str) -> bool:
        """Remove a UDF this catalog created; False when it cannot (closed, or not ours)."""
        with self._lock:
            try:
                self._cursor.remove_function(name)
            except duckdb.Error:
                return False
            return True

    def run(self, action: Any) -> Any:
        """``action(cursor)`` on the private cursor, serialised with every other use of it."""
        with self._lock:
            try:
                return action(self._cursor)
            finally:
                self._revision += 1

    def close_at_exit(self) -> None:
        """Close the private cursor as the interpreter exits, unless another thread is using it.

        A connection that created Python functions and is still open at exit makes DuckDB's bindings
        print a long "nanobind: leaked ..." report. The functions stay callable: the callables are
        kept alive by the instance's table (``duckdb_ext.connections``), not by this cursor.
        """
        if not self._lock.acquire(timeout=1):
            return
        try:
            self._cursor.close()
        except duckdb.Error:
            pass
        finally:
            self._lock.release()

    def closed(self) -> bool:
        """Whether the connection this catalog works through has been closed."""
        with self._lock:
            try:
                self._cursor.execute("SELECT 1")
            except duckdb.ConnectionException:
                return True
            return False

    def get_setting(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM {schema}.settings WHERE key = ?", [key])
        return rows[0][0] if rows else None

    def set_setting(self, key: str, value: str) -> None:
        self.execute("INSERT OR REPLACE INTO {schema}.settings VALUES (?, ?)", [key, value])
