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
MODES = ("vector", "keyword", "hybrid")
RRF_K = 60
"""Reciprocal rank fusion's constant: a row at rank ``r`` of a list adds ``weight / (RRF_K + r)`` to its score."""
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
        """The table macro that searches this index from SQL: ``<index>_search(query, k := 10, mode := 'vector')``."""
        return f"{self._key}{SEARCH_SUFFIX}"

    def show(self) -> dict[str, Any]:
        """What the index covers, which version made its vectors, how many it holds, when it was refreshed, and
        how a top-``k`` search runs in this process (``method``: ``"hnsw"`` or ``"exact"``, and why), and whether
        keyword and hybrid searches run here (``keyword``: ``"bm25"`` or ``"unavailable"``, and why)."""
        record = self._record()
        method, reason = self._registry._indexes.copies.method(record)
        keyword, keyword_reason = self._registry._indexes.copies.keyword_method()
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
            "keyword": keyword,
            "keyword_reason": keyword_reason,
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

    def search(
        self,
        query: str,
        k: int | None = 10,
        *,
        filter: str | None = None,
        mode: str = "vector",
        vector_weight: float = 1.0,
        keyword_weight: float = 1.0,
        rrf_k: float = RRF_K,
    ) -> pd.DataFrame:
        """The ``k`` source rows that best match ``query`` (all of them with ``k=None``), best first, with their
        ``score``. ``mode="vector"`` ranks by cosine similarity of the embeddings; ``"keyword"`` by BM25 over the
        texts (rows without a query term are left out); ``"hybrid"`` fuses both rankings by reciprocal rank
        fusion, a row scoring ``vector_weight / (rrf_k + vector rank) + keyword_weight / (rrf_k + BM25 rank)``.
        Keyword and hybrid modes need DuckDB's fts extension and say so where it cannot load. ``filter`` is a
        SQL condition on the source table's columns, applied before the ranking, so ``k`` rows come back
        whenever ``k`` rows match."""
        return self._registry._indexes.search(self._key, query, k, filter, mode, vector_weight, keyword_weight, rrf_k)

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
HNSW_EF_SEARCH = 128
"""Candidates an HNSW search keeps (vss's default is 64): recall@10 above 0.95 on 100,000 sentence embeddings
for a few milliseconds more per query (bench/bench_search.py)."""


class SearchCopies:
    """In-memory copies of index data that DuckDB's extensions search: an HNSW index (vss) over the vectors and
    a BM25 index (fts) over the indexed texts, one of each per index, built in this process.

    The user's database file never holds either: vss persists an HNSW index only experimentally, and a crash
    can leave the file unreadable (duckdb-vss #65, #81); an fts index is a snapshot that would go stale in the
    file. A copy lives in an in-memory catalog attached to the registry's database instance, built from the
    index on first use. When the index was refreshed since (in this process or another), the HNSW copy takes
    the changed rows and the BM25 copy, which fts cannot update, is built again.
    """

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._built: dict[tuple[str, str], Any] = {}
        self._deleted: dict[str, int] = {}
        self._missing: dict[str, str | None] = {}

    def unavailable(self, extension: str) -> str | None:
        """Why ``extension`` (``"vss"`` or ``"fts"``) cannot load in this process (None: it can)."""
        if extension not in self._missing:
            cursor = self._connection.cursor()
            try:
                extensions.load(cursor, extension)
                self._missing[extension] = None
            except (LookupError, duckdb.Error) as exc:
                self._missing[extension] = str(exc)
            finally:
                cursor.close()
        return self._missing[extension]

    def check_available(self) -> None:
        """A ``ValueError`` saying why vss cannot load here, if it cannot."""
        reason = self.unavailable("vss")
        if reason:
            raise ValueError(f"ann='hnsw' needs DuckDB's vss extension: {reason}")

    def method(self, record: IndexRecord) -> tuple[str, str]:
        """How a vector search of ``record`` runs here, ``"hnsw"`` or ``"exact"``, and why."""
        if record.ann == "exact":
            return "exact", "ann='exact'"
        if record.ann == "auto" and record.rows < ANN_MIN_ROWS:
            return "exact", f"fewer than {ANN_MIN_ROWS} rows (ann='auto')"
        missing = self.unavailable("vss")
        if missing:
            return "exact", f"vss cannot be loaded: {missing}"
        return "hnsw", "an HNSW index in memory, built from the vectors in this process"

    def keyword_method(self) -> tuple[str, str]:
        """Whether keyword and hybrid search run here: ``("bm25", ...)`` or ``("unavailable", why)``."""
        missing = self.unavailable("fts")
        if missing:
            return "unavailable", f"fts cannot be loaded: {missing}"
        return "bm25", "a BM25 index (fts) in memory over the indexed texts, built in this process"

    def vector_table(self, record: IndexRecord, vectors: str) -> str | None:
        """The in-memory copy with an HNSW index for ``record`` (built, or brought up to date, now when needed),
        or None when the index is searched exactly here."""
        if self.method(record)[0] != "hnsw":
            return None
        copy = f"{ANN_CATALOG}.{quote(record.vectors)}"

        def build(cursor: Any) -> None:
            cursor.execute(f"CREATE OR REPLACE TABLE {copy} AS SELECT key, content_hash, embedding FROM {vectors}")
            faults.point("index_ann:building")
            cursor.execute(
                f"CREATE INDEX {quote(record.vectors + '_hnsw')} ON {copy} USING HNSW (embedding) "
                f"WITH (metric = 'cosine', ef_search = {HNSW_EF_SEARCH})"
            )
            self._deleted[record.vectors] = 0

        def update(cursor: Any) -> bool:
            """Apply a refresh's changes to the HNSW index (vss updates it row by row), unless deletions since the
            build reach a tenth of the rows: vss only marks deleted nodes, and the graph then answers worse."""
            deleted = cursor.execute(
                f"DELETE FROM {copy} c WHERE NOT EXISTS (SELECT 1 FROM {vectors} v WHERE v.key = c.key "
                "AND v.content_hash = c.content_hash)"
            ).fetchone()[0]
            self._deleted[record.vectors] += deleted
            if self._deleted[record.vectors] * 10 > max(record.rows, 1):
                return False
            cursor.execute(
                f"INSERT INTO {copy} SELECT key, content_hash, embedding FROM {vectors} v "
                f"WHERE NOT EXISTS (SELECT 1 FROM {copy} c WHERE c.key = v.key)"
            )
            return True

        self._build("hnsw", record, build, update)
        return copy

    def keyword_table(self, record: IndexRecord, vectors: str) -> tuple[str, str] | None:
        """The in-memory copy of the indexed texts with a BM25 index for ``record`` (built or rebuilt now when
        needed) and its scoring macro, or None where fts cannot load."""
        if self.keyword_method()[0] != "bm25":
            return None
        name = f"{record.vectors}__text"
        copy = f"{ANN_CATALOG}.main.{name}"

        def build(cursor: Any) -> None:
            cursor.execute(
                f"CREATE OR REPLACE TABLE {copy} AS SELECT v.key, s.body FROM {vectors} v "
                f"JOIN {_source(record)} s ON s.key = v.key"
            )
            faults.point("index_keyword:building")
            cursor.execute(f"PRAGMA create_fts_index('{copy}', 'key', 'body', overwrite = 1)")

        self._build("bm25", record, build)
        return copy, f"{ANN_CATALOG}.fts_main_{name}.match_bm25"

    def _build(self, kind: str, record: IndexRecord, build: Any, update: Any = None) -> None:
        """Make ``kind``'s copy of ``record`` current: nothing when it is, ``update`` (which may decline) when an
        older copy exists, else ``build``."""
        built = self._built.get((kind, record.vectors), "absent")
        if built == record.refreshed_on:
            return
        cursor = self._connection.cursor()
        try:
            attached = {row[0] for row in cursor.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
            if ANN_CATALOG not in attached:
                cursor.execute(f"ATTACH ':memory:' AS {ANN_CATALOG} (READ_WRITE)")  # also when the file is read-only
            if built == "absent" or update is None or not update(cursor):
                build(cursor)
        finally:
            cursor.close()
        self._built[(kind, record.vectors)] = record.refreshed_on

    def rebuild(self, record: IndexRecord, vectors: str) -> None:
        """After a refresh here: copies this process built follow the new data at once, so the search functions
        bound to them stay exact-as-of-now (a copy never built stays unbuilt until needed)."""
        if ("hnsw", record.vectors) in self._built:
            self.vector_table(record, vectors)  # the changed rows only, as the refresh did
        if ("bm25", record.vectors) in self._built:
            self.keyword_table(record, vectors)

    def forget(self, vectors_table: str) -> None:
        """Drop the copies of a vectors table that is gone (the index moved to another version, or was dropped)."""
        built = [kind for kind in ("hnsw", "bm25") if self._built.pop((kind, vectors_table), "absent") != "absent"]
        self._deleted.pop(vectors_table, None)
        if not built:
            return
        cursor = self._connection.cursor()
        try:
            if "hnsw" in built:
                cursor.execute(f"DROP TABLE IF EXISTS {ANN_CATALOG}.{quote(vectors_table)}")
            if "bm25" in built:
                cursor.execute(f"DROP SCHEMA IF EXISTS {ANN_CATALOG}.fts_main_{vectors_table}__text CASCADE")
                cursor.execute(f"DROP TABLE IF EXISTS {ANN_CATALOG}.main.{vectors_table}__text")
        finally:
            cursor.close()


class IndexStore:
    """The catalog side of indexes: their records, their vector tables, refresh and search."""

    def __init__(self, registry: Any) -> None:
        """``registry``: the ``Registry`` whose catalog holds the indexes and whose models embed them."""
        self._registry = registry
        self._catalog = registry._catalog
        self.copies = SearchCopies(registry.connection)

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
            self.copies.check_available()
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
        self.copies.forget(record.vectors)

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
        self.copies.rebuild(self.record(key), vectors)
        return counts

    @staticmethod
    def _apply_changes(cursor: Any, vectors: str, source: str, function: str) -> dict[str, int]:
        """Delete vectors whose key left or whose text changed, then embed every source row without a vector."""
        removed = cursor.execute(
            f"DELETE FROM {vectors} v WHERE NOT EXISTS (SELECT 1 FROM {source} s WHERE s.key = v.key "
            "AND md5(s.body) = v.content_hash)"
        ).fetchone()[0]
        faults.point("index_refresh:after_delete")
        # The rows to embed, gathered first: scattered through the table, they would reach the model a few
        # per DuckDB vector, in batches too small to run fast.
        pending = "duckreg_index_pending"
        wanted = cursor.execute(
            f"CREATE OR REPLACE TEMP TABLE {pending} AS SELECT s.key, s.body FROM {source} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {vectors} v WHERE v.key = s.key)"
        ).fetchone()[0]
        embedded = cursor.execute(
            f"INSERT INTO {vectors} SELECT key, md5(body), embedding FROM (SELECT p.key, p.body, "
            f"{quote(function)}(p.body, on_error := 'null') AS embedding FROM {pending} p) WHERE embedding IS NOT NULL"
        ).fetchone()[0]
        cursor.execute(f"DROP TABLE {pending}")
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
        self.copies.forget(record.vectors)
        return counts

    # ----------------------------------------------------------------- search
    def search(
        self, key: str, query: str, k: int | None, condition: str | None, mode: str = "vector",
        vector_weight: float = 1.0, keyword_weight: float = 1.0, rrf_k: float = RRF_K,
    ) -> pd.DataFrame:  # fmt: skip
        record = self.record(key)
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ValueError(f"k must be a positive integer or None, got {k!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        for name, value in (("vector_weight", vector_weight), ("keyword_weight", keyword_weight)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if isinstance(rrf_k, bool) or not isinstance(rrf_k, int | float) or rrf_k <= 0:
            raise ValueError(f"rrf_k must be a number > 0, got {rrf_k!r}")
        con = self._registry.register_functions(models=[record.model_key], with_indexes=False)
        vectors = f"{self._catalog.schema}.{quote(record.vectors)}"
        keyword = None
        if mode != "vector":
            keyword = self.copies.keyword_table(record, vectors)
            if keyword is None:
                raise ValueError(_keyword_refusal(record, mode, self.copies.keyword_method()[1]))
        ann = self.copies.vector_table(record, vectors) if mode == "vector" and not condition and k else None
        lists = Rankings(record, vectors, "$query", condition)
        if mode == "vector":
            ranking = lists.vector(ann, str(k))
        elif mode == "keyword":
            ranking = lists.keyword(keyword)
        else:
            weights = (repr(float(w)) for w in (vector_weight, keyword_weight, rrf_k))
            ranking = lists.hybrid(keyword, *weights)
        return con.execute(rows_sql(record, ranking, None if k is None else str(int(k))), {"query": query}).df()


class Rankings:
    """The SQL of an index's rankings, each a relation of ``(key, score)`` over the indexed rows: by cosine
    similarity to the query's vector, by BM25 over the texts, and both fused by reciprocal rank fusion.
    ``query`` is a SQL expression (a macro parameter or a prepared one); ``condition`` a SQL condition on the
    source table's columns that every list applies before ranking."""

    def __init__(self, record: IndexRecord, vectors: str, query: str, condition: str | None = None) -> None:
        self._record = record
        self._vectors = vectors
        self._query = query
        self._allowed = ""
        if condition:
            key = quote(record.key_column)
            self._allowed = f" WHERE key IN (SELECT {key} FROM {record.table} WHERE {condition})"

    def vector(self, ann: str | None = None, k: str | None = None) -> str:
        """By cosine similarity, exactly; or the ``k`` nearest from ``ann``, a copy with an HNSW index, which
        DuckDB's vss answers for ``ORDER BY array_cosine_distance(...) LIMIT k`` and nothing more."""
        embedded = f"{quote(self._record.function)}({self._query})"
        if ann is not None:
            return (
                f"SELECT key, 1 - distance AS score FROM (SELECT key, array_cosine_distance(embedding, {embedded}) "
                f"AS distance FROM {ann} ORDER BY distance LIMIT {k})"
            )
        similarity = f"array_cosine_similarity(embedding, {embedded})"
        return f"SELECT key, {similarity} AS score FROM {self._vectors}{self._allowed}"

    def keyword(self, keyword: tuple[str, str]) -> str:
        """By BM25 (fts's ``match_bm25``) over ``keyword``'s copy of the texts; rows without a query term are out."""
        table, bm25 = keyword
        return (
            f"SELECT key, score FROM (SELECT key, {bm25}(key, {self._query}) AS score FROM {table}{self._allowed}) "
            "WHERE score IS NOT NULL"
        )

    def hybrid(self, keyword: tuple[str, str], vector_weight: str, keyword_weight: str, rrf_k: str) -> str:
        """Reciprocal rank fusion: each row scores ``vector_weight / (rrf_k + its vector rank)`` plus
        ``keyword_weight / (rrf_k + its BM25 rank)`` (a row without a query term has no BM25 rank). Both lists
        rank every row, so the top ``k`` of the fused list is the same whatever ``k`` is."""

        def ranked(ranking: str, weight: str) -> str:
            rank = "row_number() OVER (ORDER BY score DESC, key)"
            return f"SELECT key, {weight} / ({rrf_k} + {rank}) AS part FROM ({ranking})"

        return (
            f"SELECT key, sum(part) AS score FROM ({ranked(self.vector(), vector_weight)} UNION ALL "
            f"{ranked(self.keyword(keyword), keyword_weight)}) GROUP BY key"
        )


def rows_sql(record: IndexRecord, ranking: str, k: str | None) -> str:
    """The source rows of ``ranking`` (a relation of ``key, score``) with their score, best first; the ``k``
    best when ``k`` (a SQL expression) is given."""
    limit = f" LIMIT {k}" if k is not None else ""
    return (
        f"SELECT score, s.* FROM ({ranking}) r JOIN {record.table} s ON s.{quote(record.key_column)} = r.key "
        f"ORDER BY score DESC, r.key{limit}"
    )


def macro_statement(
    record: IndexRecord,
    vectors: str,
    create_macro_head: str,
    ann: str | None = None,
    keyword: tuple[str, str] | None = None,
    keyword_missing: str = "",
) -> str:
    """``<index>_search(query, k := 10, mode := 'vector', vector_weight := 1.0, keyword_weight := 1.0,
    rrf_k := 60)``: the ``k`` best rows (every row with ``k := NULL``, for a WHERE that must not cut the top
    ``k`` short: filter, then ``ORDER BY score DESC LIMIT k`` yourself). ``mode`` picks the ranking; the other
    rankings' branches fold away before the query runs. With ``ann`` a vector search with a given ``k`` is
    answered by the HNSW index; without ``keyword`` (fts cannot load) keyword and hybrid modes raise
    ``keyword_missing``."""
    lists = Rankings(record, vectors, "query")
    branches = [f"SELECT key, score FROM ({lists.vector(ann, 'k') if ann else lists.vector()}) WHERE mode = 'vector'"]
    if keyword is not None:
        fused = lists.hybrid(keyword, "vector_weight", "keyword_weight", "rrf_k")
        branches.append(f"SELECT key, score FROM ({lists.keyword(keyword)}) WHERE mode = 'keyword'")
        branches.append(f"SELECT key, score FROM ({fused}) WHERE mode = 'hybrid'")
    else:
        before, after = _keyword_refusal(record, "\0", keyword_missing).split("\0")
        branches.append(
            f"SELECT NULL, NULL WHERE mode IN ('keyword', 'hybrid') AND "
            f"error({_literal(before)} || mode || {_literal(after)})"
        )
    branches.append(
        "SELECT NULL, NULL WHERE mode NOT IN ('vector', 'keyword', 'hybrid') AND "
        f"error({_literal('mode must be vector, keyword or hybrid, got ')} || mode)"
    )
    ranking = " UNION ALL ".join(branches)
    return (
        f"{create_macro_head}(query, k := 10, mode := 'vector', vector_weight := 1.0, keyword_weight := 1.0, "
        f"rrf_k := {RRF_K}) AS TABLE {rows_sql(record, ranking, 'k')}"
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _keyword_refusal(record: IndexRecord, mode: str, why: str) -> str:
    return (
        f"Index {record.name}: mode {mode} ranks by BM25, which needs DuckDB's fts extension, and {why} "
        "(mode vector works here)"
    )


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


def vector_function(mv: Any) -> Any:
    """The version's function from one text to one vector (a ``FunctionSpec``), or None when it has none."""
    for spec in mv.function_specs():
        outputs = spec.signature.outputs
        inputs = [i for i in spec.signature.inputs if i.name not in mv.optional_inputs(spec.name)]
        if len(outputs) == 1 and outputs[0].shape and len(outputs[0].shape) == 1 and len(inputs) == 1:
            return spec
    return None


def _embedding_function(mv: Any) -> str:
    """The version's SQL function that returns one vector per text, or a ``ValueError`` saying what is wrong."""
    spec = vector_function(mv)
    if spec is not None:
        return mv.sql_function_names()[spec.name]
    raise ValueError(
        f"Model {mv.model_name} version {mv.version_name} has no function from one text to one vector; an index "
        "needs an embedding model (feature-extraction logged with options={'pooling': 'mean'})"
    )


def _dimension(mv: Any) -> int:
    """The length of the vectors ``_embedding_function`` returns (called after it, which refuses a version
    without one)."""
    return int(vector_function(mv).signature.outputs[0].shape[0])
