"""Semantic indexes: a table column's embeddings kept in the database, tied to the model version that made them.

``registry.create_index("docs_idx", table="docs", column="body", key="id", model="minilm")`` stores one row per
source row in a table of the registry's schema: the key, an md5 of the text, and the vector the named model
version computed through its SQL function (so batching, de-duplication and the result cache apply). A
``refresh`` embeds only rows that are new or whose text changed, and drops rows whose key left the source,
all in one transaction: a search never sees half a refresh, and a process killed midway leaves the index
as it was. Searching ranks by cosine similarity, exactly; ``<index>_search(query, k)`` does it in SQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from duckreg import faults
from duckreg.duckdb_ext import extensions
from duckreg.identifiers import check_identifier, normalize, quote
from duckreg.inference_engines.agreement import NEIGHBOURS, neighbour_changes

SEARCH_SUFFIX = "_search"
_SAFE = re.compile(r"[^a-z0-9_]")


@dataclass(frozen=True)
class IndexRecord:
    """One index as the catalog holds it."""

    name: str
    table: str
    column: str
    key_column: str
    model_key: str
    model_ref: str | None
    version_key: str
    function: str
    vectors: str
    dimension: int
    created_on: datetime
    refreshed_on: datetime | None
    rows: int
    ann: str


class SemanticIndex:
    """A named embedding index over one text column of a table (see the module docstring)."""

    def __init__(self, registry: Any, key: str) -> None:
        self._registry = registry
        self._key = key

    def _record(self) -> IndexRecord:
        return self._registry._indexes.record(self._key)

    @property
    def name(self) -> str:
        """The index's name as created."""
        return self._record().name

    @property
    def version(self) -> Any:
        """The model version whose vectors the index holds (a ``ModelVersion``)."""
        record = self._record()
        return self._registry.get_model(record.model_key).version(record.version_key)

    @property
    def sql_name(self) -> str:
        """The table macro that searches this index from SQL: ``<index>_search(query, k := 10)``."""
        return f"{self._key}{SEARCH_SUFFIX}"

    def show(self) -> dict[str, Any]:
        """What the index covers, which version made its vectors, how many it holds, when it was refreshed, and
        how a top-``k`` search runs in this process (``method``: ``"hnsw"`` or ``"exact"``, and why)."""
        record = self._record()
        method, reason = self._registry._indexes.ann.method(record)
        return {
            "name": record.name,
            "table": record.table,
            "column": record.column,
            "key": record.key_column,
            "model": self._registry.get_model(record.model_key).name,
            "model_ref": record.model_ref,
            "version": self.version.version_name,
            "dimension": record.dimension,
            "rows": record.rows,
            "created_on": record.created_on,
            "refreshed_on": record.refreshed_on,
            "search": self.sql_name,
            "ann": record.ann,
            "method": method,
            "method_reason": reason,
        }

    def refresh(self) -> dict[str, int]:
        """Embed the rows that are new or changed and drop the ones whose key left the table, in one transaction.

        Returns the counts: ``embedded`` (new or changed rows given a vector), ``removed`` (deleted or changed
        rows whose old vector went), ``unchanged``, and ``failed`` (rows the model refused, such as a text
        longer than it reads; they are tried again at the next refresh and never indexed).
        """
        return self._registry._indexes.refresh(self._key)

    def pending_changes(self) -> int:
        """How many rows a refresh would embed or drop now (0: the index is fresh)."""
        return self._registry._indexes.pending(self._key)

    def search(self, query: str, k: int | None = 10, *, filter: str | None = None) -> pd.DataFrame:
        """The ``k`` source rows most similar to ``query`` (all of them with ``k=None``), best first, with their
        ``score`` (cosine similarity). ``filter`` is a SQL condition on the source table's columns, applied
        before the ranking, so ``k`` rows come back whenever ``k`` rows match."""
        return self._registry._indexes.search(self._key, query, k, filter)

    def compare(self, version: str, *, sample: int | None = 2000, k: int = NEIGHBOURS) -> dict[str, Any]:
        """What moving to ``version`` (a name or alias of the same model) would do to search results, before any
        vector changes: over ``sample`` indexed rows (every row with None), each row's ``k`` nearest rows by the
        index's vectors and by ``version``'s, and how many of them change (the int8 gate's neighbour overlap)."""
        return self._registry._indexes.compare(self._key, version, sample, k)

    def switch_version(self, version: str) -> dict[str, int]:
        """Re-embed every row with ``version`` and make it the index's, in one transaction: searches see the old
        index until the new one is whole, and a process killed midway leaves the old one."""
        counts = self._registry._indexes.switch(self._key, version)
        self._registry._refresh_sql(self._record().model_key)
        return counts

    def __repr__(self) -> str:
        return f"SemanticIndex(name={self.name!r})"


ANN_CHOICES = ("auto", "hnsw", "exact")
ANN_MIN_ROWS = 10_000
"""With ``ann="auto"`` an index of at least this many rows is searched through an HNSW index where vss loads."""
ANN_CATALOG = "duckreg_ann"


class AnnCopies:
    """HNSW indexes over in-memory copies of index vectors, one per index, built in this process.

    The user's database file never holds an HNSW index: vss persists one only experimentally, and a crash
    can leave the file unreadable (duckdb-vss #65, #81). The copy lives in an in-memory catalog attached to
    the registry's database instance, built from the vectors table on first use and again whenever the index
    was refreshed since (in this process or another).
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._built: dict[str, Any] = {}
        self._missing: str | None = None
        self._loaded = False

    def check_available(self) -> None:
        """A ``ValueError`` saying why vss cannot load here, if it cannot."""
        reason = self.unavailable()
        if reason:
            raise ValueError(f"ann='hnsw' needs DuckDB's vss extension: {reason}")

    def unavailable(self) -> str | None:
        """Why vss cannot load in this process (None: it can)."""
        if not self._loaded and self._missing is None:
            cursor = self._connection.cursor()
            try:
                extensions.load(cursor, "vss")
                self._loaded = True
            except (LookupError, duckdb.Error) as exc:
                self._missing = str(exc)
            finally:
                cursor.close()
        return self._missing

    def method(self, record: IndexRecord) -> tuple[str, str]:
        """How ``record`` is searched here, ``"hnsw"`` or ``"exact"``, and why."""
        if record.ann == "exact":
            return "exact", "ann='exact'"
        if record.ann == "auto" and record.rows < ANN_MIN_ROWS:
            return "exact", f"fewer than {ANN_MIN_ROWS} rows (ann='auto')"
        missing = self.unavailable()
        if missing:
            return "exact", f"vss cannot be loaded: {missing}"
        return "hnsw", "an HNSW index in memory, built from the vectors in this process"

    def table(self, record: IndexRecord, vectors: str) -> str | None:
        """The in-memory copy with an HNSW index for ``record`` (built or rebuilt now when needed), or None
        when the index is searched exactly here."""
        if self.method(record)[0] != "hnsw":
            return None
        copy = f"{ANN_CATALOG}.{quote(record.vectors)}"
        if record.vectors in self._built and self._built[record.vectors] == record.refreshed_on:
            return copy
        cursor = self._connection.cursor()
        try:
            attached = {row[0] for row in cursor.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
            if ANN_CATALOG not in attached:
                cursor.execute(f"ATTACH ':memory:' AS {ANN_CATALOG}")
            cursor.execute(f"CREATE OR REPLACE TABLE {copy} AS SELECT key, embedding FROM {vectors}")
            faults.point("index_ann:building")
            cursor.execute(
                f"CREATE INDEX {quote(record.vectors + '_hnsw')} ON {copy} USING HNSW (embedding) "
                "WITH (metric = 'cosine')"
            )
        finally:
            cursor.close()
        self._built[record.vectors] = record.refreshed_on
        return copy

    def rebuild(self, record: IndexRecord, vectors: str) -> None:
        """After a refresh here: a copy this process built follows the new vectors at once, so the search
        functions bound to it stay exact-as-of-now (a copy never built stays unbuilt until needed)."""
        if record.vectors in self._built:
            self.table(record, vectors)

    def forget(self, vectors_table: str) -> None:
        """Drop the copy of a vectors table that is gone (the index moved to another version, or was dropped)."""
        if self._built.pop(vectors_table, "absent") == "absent":
            return
        cursor = self._connection.cursor()
        try:
            cursor.execute(f"DROP TABLE IF EXISTS {ANN_CATALOG}.{quote(vectors_table)}")
        finally:
            cursor.close()


class IndexStore:
    """The catalog side of indexes: their records, their vector tables, refresh and search."""

    def __init__(self, registry: Any) -> None:
        """``registry``: the ``Registry`` whose catalog holds the indexes and whose models embed them."""
        self._registry = registry
        self._catalog = registry._catalog
        self.ann = AnnCopies(registry.connection)

    # ----------------------------------------------------------------- records
    def record(self, key: str) -> IndexRecord:
        rows = self._catalog.query(
            "SELECT name, table_name, column_name, key_column, model_key, model_ref, version_key, function_name, "
            "vectors_table, dimension, created_on, refreshed_on, row_count, ann FROM {schema}.indexes "
            "WHERE index_key = ?",
            [key],
        )
        if not rows:
            raise ValueError(f"Unable to find index {key}")
        return IndexRecord(*rows[0])

    def keys(self) -> list[str]:
        """Every index's key, oldest first (none in an older, read-only catalog without the indexes table)."""
        try:
            return [row[0] for row in self._catalog.query("SELECT index_key FROM {schema}.indexes ORDER BY created_on")]
        except duckdb.CatalogException:
            return []

    def create(
        self,
        name: str,
        table: str,
        column: str,
        key: str,
        model: str,
        version: str | None,
        if_exists: str = "error",
        ann: str = "auto",
    ) -> str:
        """Record a new index over ``table.column`` and create its (empty) vector table; its key. With
        ``if_exists="refresh"`` an index of that name and the same definition is kept (the caller refreshes it)."""
        check_identifier(name, "index name")
        if if_exists not in ("error", "refresh"):
            raise ValueError(f"if_exists must be 'error' or 'refresh', got {if_exists!r}")
        if ann not in ANN_CHOICES:
            raise ValueError(f"ann must be one of {ANN_CHOICES}, got {ann!r}")
        if ann == "hnsw":
            self.ann.check_available()
        index_key = normalize(name)
        handle = self._registry.get_model(model)
        mv = handle.default if version is None else handle.version(version)
        if index_key in self.keys():
            record = self.record(index_key)
            same = (record.table, record.column, record.key_column, record.model_key, record.version_key) == (
                table, column, key, mv._model_key, mv._version_key)  # fmt: skip
            if if_exists == "refresh" and same:
                return index_key
            raise ValueError(
                f"Index {name} already exists"
                + ("" if if_exists == "error" else " with another definition")
                + f"; drop_index({name!r}) first, pick another name, or pass if_exists='refresh' to keep and "
                "refresh an index of the same definition"
            )
        function = _embedding_function(mv)
        columns = self._source_columns(table)
        for wanted, what in ((column, "column"), (key, "key")):
            if wanted.lower() not in columns:
                raise ValueError(
                    f"Table {table} has no column {wanted!r} (the index's {what}); it has {sorted(columns)}"
                )
        key_type = columns[key.lower()]
        dimension = _dimension(mv)
        vectors = _vectors_table(index_key, mv._version_key)
        with self._catalog.transaction() as catalog:
            catalog.execute(_create_vectors(f"{{schema}}.{quote(vectors)}", key_type, dimension))
            catalog.execute(
                "INSERT INTO {schema}.indexes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, current_timestamp, NULL, 0, ?)",
                [index_key, name, table, column, key, mv._model_key, version or "default", mv._version_key, function,
                 vectors, dimension, ann],
            )  # fmt: skip
        return index_key

    def drop(self, key: str) -> None:
        record = self.record(key)
        with self._catalog.transaction() as catalog:
            catalog.execute(f"DROP TABLE IF EXISTS {{schema}}.{quote(record.vectors)}")
            catalog.execute("DELETE FROM {schema}.indexes WHERE index_key = ?", [key])
        self.ann.forget(record.vectors)

    def _source_columns(self, table: str) -> dict[str, str]:
        cursor = self._registry.connection.cursor()  # SQL's create_index runs inside a query on the connection
        try:
            described = cursor.execute(f"DESCRIBE {table}").fetchall()
        except duckdb.Error as exc:
            raise ValueError(f"Cannot index table {table}: {exc}") from None
        finally:
            cursor.close()
        return {row[0].lower(): row[1] for row in described}

    # ----------------------------------------------------------------- refresh
    @contextmanager
    def _writing(self, model_key: str) -> Iterator[Any]:
        """A cursor in a transaction, with ``model_key``'s SQL functions (their macros take ``on_error`` by name):
        committed when the block ends, rolled back when it raises (or the process dies)."""
        cursor = self._registry.connection.cursor()
        try:
            self._registry.register_functions(cursor, models=[model_key], with_indexes=False)
            cursor.execute("BEGIN TRANSACTION")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
        finally:
            cursor.close()

    def refresh(self, key: str) -> dict[str, int]:
        record = self.record(key)
        vectors = f"{self._catalog.schema}.{quote(record.vectors)}"
        with self._writing(record.model_key) as cursor:
            counts = self._apply_changes(cursor, vectors, _source(record), record.function)
            total = cursor.execute(f"SELECT count(*) FROM {vectors}").fetchone()[0]
            faults.point("index_refresh:before_commit")
            cursor.execute(
                f"UPDATE {self._catalog.schema}.indexes SET refreshed_on = current_timestamp, row_count = ? "
                "WHERE index_key = ?",
                [total, key],
            )
        self.ann.rebuild(self.record(key), vectors)
        return counts

    @staticmethod
    def _apply_changes(cursor: Any, vectors: str, source: str, function: str) -> dict[str, int]:
        """Delete vectors whose key left or whose text changed, then embed every source row without a vector."""
        removed = cursor.execute(
            f"DELETE FROM {vectors} v WHERE NOT EXISTS (SELECT 1 FROM {source} s WHERE s.key = v.key "
            "AND md5(s.body) = v.content_hash)"
        ).fetchone()[0]
        faults.point("index_refresh:after_delete")
        pending = (
            f"(SELECT s.key, s.body FROM {source} s WHERE NOT EXISTS (SELECT 1 FROM {vectors} v WHERE v.key = s.key))"
        )
        wanted = cursor.execute(f"SELECT count(*) FROM {pending}").fetchone()[0]
        embedded = cursor.execute(
            f"INSERT INTO {vectors} SELECT key, md5(body), embedding FROM (SELECT p.key, p.body, "
            f"{quote(function)}(p.body, on_error := 'null') AS embedding FROM {pending} p) WHERE embedding IS NOT NULL"
        ).fetchone()[0]
        unchanged = cursor.execute(f"SELECT count(*) FROM {vectors}").fetchone()[0] - embedded
        return {"embedded": embedded, "removed": removed, "unchanged": unchanged, "failed": wanted - embedded}

    def pending(self, key: str) -> int:
        record = self.record(key)
        vectors = f"{self._catalog.schema}.{quote(record.vectors)}"
        source = _source(record)
        stale = f"SELECT count(*) FROM {vectors} v WHERE NOT EXISTS (SELECT 1 FROM {source} s WHERE s.key = v.key " \
                "AND md5(s.body) = v.content_hash)"  # fmt: skip
        missing = f"SELECT count(*) FROM {source} s WHERE NOT EXISTS (SELECT 1 FROM {vectors} v WHERE v.key = s.key " \
                  "AND v.content_hash = md5(s.body))"  # fmt: skip
        cursor = self._registry.connection.cursor()
        try:
            return int(cursor.execute(f"SELECT ({stale}) + ({missing})").fetchone()[0])
        finally:
            cursor.close()

    # ----------------------------------------------------------------- versions
    def compare(self, key: str, version: str, sample: int | None, k: int) -> dict[str, Any]:
        record = self.record(key)
        mv = self._registry.get_model(record.model_key).version(version)
        function = _embedding_function(mv)
        vectors = f"{self._catalog.schema}.{quote(record.vectors)}"
        limit = "" if sample is None else f" ORDER BY hash(v.key), v.key LIMIT {int(sample)}"
        cursor = self._registry.connection.cursor()
        try:
            self._registry.register_functions(cursor, models=[record.model_key], with_indexes=False)
            rows = cursor.execute(
                f"SELECT v.embedding, {quote(function)}(s.{quote(record.column)}, on_error := 'null') FROM {vectors} v "
                f"JOIN {record.table} s ON s.{quote(record.key_column)} = v.key{limit}"
            ).fetchall()
        finally:
            cursor.close()
        pairs = [(old, new) for old, new in rows if new is not None]
        if len(pairs) < 2:
            raise ValueError(f"Index {record.name} has fewer than two rows both versions embed; nothing to compare")
        old, new = (_unit(np.asarray([pair[i] for pair in pairs], dtype=np.float64)) for i in (0, 1))
        changes = neighbour_changes(old, new, k)
        shown = min(k, len(pairs) - 1)
        return {
            "index": record.name,
            "from_version": self._registry.get_model(record.model_key).version(record.version_key).version_name,
            "to_version": mv.version_name,
            "rows": len(pairs),
            "k": shown,
            "neighbour_overlap": round(float(1 - changes.mean() / shown), 6),
            "rows_with_changes": int((changes > 0).sum()),
            "changed_neighbours": {str(n): int((changes == n).sum()) for n in range(shown + 1)},
        }

    def switch(self, key: str, version: str) -> dict[str, int]:
        record = self.record(key)
        mv = self._registry.get_model(record.model_key).version(version)
        if mv._version_key == record.version_key:
            raise ValueError(f"Index {record.name} already holds version {mv.version_name}'s vectors")
        function = _embedding_function(mv)
        dimension = _dimension(mv)
        table = _vectors_table(key, mv._version_key)
        schema = self._catalog.schema
        key_type = self._source_columns(record.table)[record.key_column.lower()]
        with self._writing(record.model_key) as cursor:
            cursor.execute(_create_vectors(f"{schema}.{quote(table)}", key_type, dimension))
            counts = self._apply_changes(cursor, f"{schema}.{quote(table)}", _source(record), function)
            faults.point("index_switch:before_commit")
            cursor.execute(
                f"UPDATE {schema}.indexes SET version_key = ?, model_ref = ?, function_name = ?, vectors_table = ?, "
                "dimension = ?, refreshed_on = current_timestamp, row_count = ? WHERE index_key = ?",
                [mv._version_key, version, function, table, dimension, counts["embedded"], key],
            )
            cursor.execute(f"DROP TABLE {schema}.{quote(record.vectors)}")
        self.ann.forget(record.vectors)
        return counts

    # ----------------------------------------------------------------- search
    def search(self, key: str, query: str, k: int | None, condition: str | None) -> pd.DataFrame:
        record = self.record(key)
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ValueError(f"k must be a positive integer or None, got {k!r}")
        con = self._registry.register_functions(models=[record.model_key])
        vectors = f"{self._catalog.schema}.{quote(record.vectors)}"
        ann = self.ann.table(record, vectors) if condition is None and k is not None else None
        sql = search_sql(record, vectors, "?", condition, ann=ann, k=str(int(k)) if k is not None else None)
        return con.execute(sql, [query]).df()


def search_sql(
    record: IndexRecord,
    vectors: str,
    query: str,
    condition: str | None = None,
    *,
    ann: str | None = None,
    k: str | None = None,
) -> str:
    """The indexed source rows with their cosine similarity to ``query`` (a SQL expression), best first; the
    ``k`` best (a SQL expression) when given. With ``ann`` (a table with an HNSW index) the ``k`` nearest come
    from the index, which DuckDB uses for ``ORDER BY array_cosine_distance(...) LIMIT k`` over it."""
    where = f" WHERE {condition}" if condition else ""
    key = quote(record.key_column)
    embedded = f"{quote(record.function)}({query})"
    if ann is not None:
        # vss rewrites only ORDER BY <distance> LIMIT k over the scan; the score is derived outside it.
        nearest = (
            f"SELECT key, 1 - distance AS score FROM (SELECT key, array_cosine_distance(embedding, {embedded}) "
            f"AS distance FROM {ann} ORDER BY distance LIMIT {k})"
        )
    else:
        nearest = f"SELECT key, array_cosine_similarity(embedding, {embedded}) AS score FROM {vectors}"
    limit = f" LIMIT {k}" if k is not None else ""
    return (
        f"SELECT score, s.* FROM ({nearest}) r JOIN {record.table} s ON s.{key} = r.key{where} "
        f"ORDER BY score DESC, r.key{limit}"
    )


def macro_statement(record: IndexRecord, vectors: str, create_macro_head: str, ann: str | None = None) -> str:
    """``<index>_search(query, k := 10)``: the ``k`` best rows (every row with ``k := NULL``, for a WHERE
    that must not cut the top ``k`` short: filter, then ``ORDER BY score DESC LIMIT k`` yourself). With
    ``ann`` a given ``k`` is answered by the HNSW index; ``k := NULL`` ranks every row of the copy exactly."""
    return f"{create_macro_head}(query, k := 10) AS TABLE {search_sql(record, vectors, 'query', ann=ann, k='k')}"


def _source(record: IndexRecord) -> str:
    """The indexed rows of the source table as ``(key, body)``: rows with a NULL text or key are not indexed."""
    key, column = quote(record.key_column), quote(record.column)
    return (
        f"(SELECT {key} AS key, {column} AS body FROM {record.table} WHERE {column} IS NOT NULL AND {key} IS NOT NULL)"
    )


def _vectors_table(index_key: str, version_key: str) -> str:
    """The table of one index's vectors by one version (a new version's vectors go to a new table)."""
    return f"index_{_SAFE.sub('_', index_key)}__{_SAFE.sub('_', version_key)}"


def _create_vectors(table: str, key_type: str, dimension: int) -> str:
    return (
        f"CREATE TABLE {table} (key {key_type} PRIMARY KEY, content_hash VARCHAR NOT NULL, "
        f"embedding FLOAT[{dimension}] NOT NULL)"
    )


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def _embedding_function(mv: Any) -> str:
    """The version's SQL function that returns one vector per text, or a ``ValueError`` saying what is wrong."""
    for spec in mv.function_specs():
        outputs = spec.signature.outputs
        inputs = [i for i in spec.signature.inputs if i.name not in mv.optional_inputs(spec.name)]
        if len(outputs) == 1 and outputs[0].shape and len(outputs[0].shape) == 1 and len(inputs) == 1:
            return mv.sql_function_names()[spec.name]
    raise ValueError(
        f"Model {mv.model_name} version {mv.version_name} has no function from one text to one vector; an index "
        "needs an embedding model (feature-extraction logged with options={'pooling': 'mean'})"
    )


def _dimension(mv: Any) -> int:
    for spec in mv.function_specs():
        outputs = spec.signature.outputs
        if len(outputs) == 1 and outputs[0].shape:
            return int(outputs[0].shape[0])
    raise ValueError(f"Model {mv.model_name} version {mv.version_name} returns no vector")
