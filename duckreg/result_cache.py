"""Results of deterministic model functions, kept across queries, processes and dbt runs.

A logged version never changes, so a function's output is a pure function of the version's
content, the function, its parameters and the input row. Each result is stored under the sha256 of
those (plus the versions of the libraries that compute it) in a SQLite file in the artifact folder,
beside the versions it caches: any process that opens the registry shares it, read-only connections
read it, and it is bounded in size, evicting the least recently used results first.

The cache is an optimisation and never the cause of a failed query: a cache that cannot be opened
or written (a full disk, a read-only folder, another writer holding it) is skipped with one warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as clock
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack

FILE_NAME = "results.sqlite"
DEFAULT_MAX_BYTES = 1024**3
SQL_SWITCH = "duckreg_cache"
"""``SET VARIABLE duckreg_cache = false`` turns the cache off for one DuckDB session."""
_LOOKUP_CHUNK = 500
FORMAT_VERSION = 2
"""Kept in the file's ``user_version``: a file of another format is emptied by a writer, ignored by a reader."""
_SCHEMA = (
    # What each result is and when it was last read; marking a hit rewrites only this narrow row.
    """CREATE TABLE IF NOT EXISTS results (
        key TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        model TEXT NOT NULL,
        version_name TEXT NOT NULL,
        nbytes INTEGER NOT NULL,
        last_used REAL NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS payloads (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS results_last_used ON results (last_used)",
    "CREATE INDEX IF NOT EXISTS results_version ON results (version)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO counters VALUES ('bytes', 0), ('hits', 0), ('misses', 0)",
    # Hits and misses of each model version, for `duckreg cache stats`.
    """CREATE TABLE IF NOT EXISTS version_counters (
        model TEXT NOT NULL,
        version_name TEXT NOT NULL,
        hits INTEGER NOT NULL,
        misses INTEGER NOT NULL,
        PRIMARY KEY (model, version_name)
    )""",
)


# MessagePack extension codes for the values a result may hold besides msgpack's own types.
_EXT_TYPES: tuple[tuple[int, type, Any], ...] = (
    (1, datetime, datetime.fromisoformat),
    (2, date, date.fromisoformat),
    (3, clock, clock.fromisoformat),
    (4, Decimal, Decimal),
)


def _encode_extension(value: Any) -> msgpack.ExtType:
    import pandas as pd

    if isinstance(value, pd.Timestamp):  # nanoseconds and the zone survive only in pandas' own text
        return msgpack.ExtType(5, value.isoformat().encode())
    for code, kind, _ in _EXT_TYPES:
        if isinstance(value, kind):
            return msgpack.ExtType(code, (value.isoformat() if hasattr(value, "isoformat") else str(value)).encode())
    raise TypeError(f"a result holding {type(value).__name__} is not cached")


def _decode_extension(code: int, data: bytes) -> Any:
    if code == 5:
        import pandas as pd

        return pd.Timestamp(data.decode())
    for known, _, parse in _EXT_TYPES:
        if code == known:
            return parse(data.decode())
    raise ValueError(f"unknown value type {code} in the result cache")


def encode_result(value: Any) -> bytes:
    """A result as MessagePack: floats keep all 64 bits, bytes stay bytes, a 384-float vector decodes in
    microseconds. Raises TypeError for a value it cannot store exactly."""
    return msgpack.packb(value, default=_encode_extension, use_bin_type=True, datetime=False)


def decode_result(data: bytes) -> Any:
    """The value ``encode_result`` stored."""
    return msgpack.unpackb(data, ext_hook=_decode_extension, raw=False, strict_map_key=False)


def max_bytes_from_environment() -> int:
    """``DUCKREG_RESULT_CACHE_BYTES`` (0 turns the cache off), else 1 GiB."""
    return int(os.environ.get("DUCKREG_RESULT_CACHE_BYTES", DEFAULT_MAX_BYTES))


def _canonical(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, (Decimal, datetime, date, clock)):
        return {type(value).__name__: str(value)}
    raise TypeError(type(value).__name__)


def digest(*parts: Any) -> str:
    """A stable sha256 of JSON-able parts (bytes by their own hash, decimals and times as text)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=_canonical, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Scope:
    """Whose results a lookup reads and writes: one function of one version content, with its parameters."""

    namespace: str
    version: str
    """The version's content digest: every result of it goes when the version is deleted."""
    model_name: str
    version_name: str

    def key(self, row: Sequence[Any]) -> str:
        return digest(self.namespace, list(row))


class ResultCache:
    """One SQLite file of results; shared by every thread of the process (calls take turns on a lock)."""

    def __init__(self, path: Path, *, max_bytes: int, read_only: bool) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.read_only = read_only
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._broken = False

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "max_bytes": self.max_bytes, "read_only": self.read_only}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], max_bytes=state["max_bytes"], read_only=state["read_only"])  # type: ignore[misc]

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0 and not self._broken

    def _connect(self) -> sqlite3.Connection | None:
        if self._connection is not None:
            return self._connection
        if self.read_only:
            if not self.path.exists():
                return None
            connection = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
            connection.execute("PRAGMA busy_timeout=10000")
            if connection.execute("PRAGMA user_version").fetchone()[0] != FORMAT_VERSION:
                connection.close()
                return None
        else:
            if not self.path.parent.is_dir():
                # No artifact folder (a database moved without it): nothing to cache beside, and no stray folder.
                return None
            connection = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            connection.execute("PRAGMA busy_timeout=10000")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            with _transaction(connection):
                if connection.execute("PRAGMA user_version").fetchone()[0] != FORMAT_VERSION:
                    connection.execute("DROP TABLE IF EXISTS results")
                    connection.execute("DROP TABLE IF EXISTS payloads")
                    connection.execute("DROP TABLE IF EXISTS counters")
                    connection.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
                for statement in _SCHEMA:
                    connection.execute(statement)
        self._connection = connection
        return connection

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection | None]:
        """The open connection (None when there is no cache to read), or None after a warning on any error."""
        with self._lock:
            if not self.enabled:
                yield None
                return
            try:
                yield self._connect()
            except sqlite3.Error as exc:
                self._broken = True
                warnings.warn(
                    f"duckreg result cache {self.path} is unusable ({exc}); results are computed without it",
                    RuntimeWarning,
                    stacklevel=4,
                )
                yield None

    def get_many(self, keys: Sequence[str], scope: Scope | None = None) -> dict[str, Any]:
        """The cached results among ``keys`` (decoded), marking them recently used; hits and misses are
        counted for ``scope``'s model version too."""
        found: dict[str, Any] = {}
        with self._using() as connection:
            if connection is None:
                return found
            unique = list(dict.fromkeys(keys))
            for chunk, marks in _chunks(unique):
                for key, value in connection.execute(f"SELECT key, value FROM payloads WHERE key IN ({marks})", chunk):
                    found[key] = decode_result(value)
            if not self.read_only:
                now = time.time()
                hit_keys = list(found)
                with _transaction(connection):
                    for chunk, marks in _chunks(hit_keys):
                        connection.execute(f"UPDATE results SET last_used = ? WHERE key IN ({marks})", [now, *chunk])
                    _count(connection, hits=len(found), misses=len(unique) - len(found), scope=scope)
        return found

    def put_many(self, scope: Scope, items: Sequence[tuple[str, Any]]) -> None:
        """Store results under their keys, then evict the least recently used beyond the size bound."""
        if self.read_only or not items:
            return
        with self._using() as connection:
            if connection is None:
                return
            now = time.time()
            payloads = []
            for key, value in items:
                try:
                    payloads.append((key, encode_result(value)))
                except (TypeError, ValueError, OverflowError):
                    continue  # a value the cache cannot keep exactly is computed each time instead
            if not payloads:
                return
            owner = (scope.version, scope.model_name, scope.version_name)
            rows = [(key, *owner, len(data), now) for key, data in payloads]
            with _transaction(connection):
                before = _bytes_of(connection, [key for key, _ in payloads])
                connection.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)", rows)
                connection.executemany("INSERT OR REPLACE INTO payloads VALUES (?, ?)", payloads)
                added = sum(len(data) for _, data in payloads) - before
                connection.execute("UPDATE counters SET value = value + ? WHERE name = 'bytes'", [added])
                self._evict(connection)

    def _evict(self, connection: sqlite3.Connection) -> None:
        used = connection.execute("SELECT value FROM counters WHERE name = 'bytes'").fetchone()[0]
        if used <= self.max_bytes:
            return
        target = int(self.max_bytes * 0.8)  # evict in one go down to 80%, not one row per insert
        freed = 0
        doomed = []
        for key, nbytes in connection.execute("SELECT key, nbytes FROM results ORDER BY last_used, key"):
            if used - freed <= target:
                break
            doomed.append((key,))
            freed += nbytes
        connection.executemany("DELETE FROM results WHERE key = ?", doomed)
        connection.executemany("DELETE FROM payloads WHERE key = ?", doomed)
        connection.execute("UPDATE counters SET value = value - ? WHERE name = 'bytes'", [freed])

    def forget_version(self, version: str) -> int:
        """Delete every result of one version content; returns how many went."""
        return self._delete("WHERE version = ?", [version])

    def forget_counters(self, model_name: str, version_name: str) -> None:
        """Drop a deleted version's hit and miss counts, so ``cache stats`` lists only versions that exist."""
        if self.read_only:
            return
        with self._using() as connection:
            if connection is not None:
                connection.execute(
                    "DELETE FROM version_counters WHERE lower(model) = lower(?) AND lower(version_name) = lower(?)",
                    [model_name, version_name],
                )

    def clear(self, model_name: str | None = None) -> int:
        """Delete every result (of one model, when named); returns how many went."""
        if model_name is None:
            return self._delete("", [])
        return self._delete("WHERE lower(model) = lower(?)", [model_name])

    def _delete(self, where: str, args: list[Any]) -> int:
        if self.read_only:
            raise PermissionError(f"the result cache {self.path} is open read-only")
        with self._using() as connection:
            if connection is None:
                return 0
            with _transaction(connection):
                count, nbytes = connection.execute(
                    f"SELECT count(*), coalesce(sum(nbytes), 0) FROM results {where}", args
                ).fetchone()
                connection.execute(f"DELETE FROM payloads WHERE key IN (SELECT key FROM results {where})", args)
                connection.execute(f"DELETE FROM results {where}", args)
                connection.execute("UPDATE counters SET value = value - ? WHERE name = 'bytes'", [nbytes])
            return int(count)

    def stats(self) -> dict[str, Any]:
        """Entries, bytes and the bound, hits and misses so far, and entries, bytes, hits and misses per model
        version."""
        empty = {"path": str(self.path), "entries": 0, "bytes": 0, "max_bytes": self.max_bytes, "hits": 0,
                 "misses": 0, "versions": []}  # fmt: skip
        with self._using() as connection:
            if connection is None:
                return empty
            counters = _counters(connection)
            versions = connection.execute(
                "SELECT model, version_name, count(*), sum(nbytes) FROM results "
                "GROUP BY model, version_name ORDER BY model, version_name"
            ).fetchall()
            counted = {}
            if connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'version_counters'").fetchone():
                counted = {(m, v): (h, n) for m, v, h, n in connection.execute("SELECT * FROM version_counters")}
        entries = {(m, v): (n, b) for m, v, n, b in versions}
        return {
            **empty,
            "entries": sum(v[2] for v in versions),
            "bytes": counters.get("bytes", 0),
            "hits": counters.get("hits", 0),
            "misses": counters.get("misses", 0),
            "versions": [
                {"model": m, "version": v, "entries": entries.get((m, v), (0, 0))[0],
                 "bytes": entries.get((m, v), (0, 0))[1], "hits": counted.get((m, v), (0, 0))[0],
                 "misses": counted.get((m, v), (0, 0))[1]}
                for m, v in sorted(entries.keys() | counted.keys())
            ],
        }  # fmt: skip

    def counters(self) -> dict[str, int]:
        """Bytes held, hits and misses so far: what a metrics scrape reads, without counting the entries."""
        with self._using() as connection:
            return {"bytes": 0, "hits": 0, "misses": 0} if connection is None else _counters(connection)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def _counters(connection: sqlite3.Connection) -> dict[str, int]:
    return dict(connection.execute("SELECT name, value FROM counters").fetchall())


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _chunks(keys: Sequence[str]) -> Iterator[tuple[Sequence[str], str]]:
    """Keys in slices SQLite takes as ``IN (...)`` parameters, each with its ``?,?,...`` placeholders."""
    for start in range(0, len(keys), _LOOKUP_CHUNK):
        chunk = keys[start : start + _LOOKUP_CHUNK]
        yield chunk, ",".join("?" * len(chunk))


def _bytes_of(connection: sqlite3.Connection, keys: list[str]) -> int:
    total = 0
    for chunk, marks in _chunks(keys):
        total += connection.execute(
            f"SELECT coalesce(sum(nbytes), 0) FROM results WHERE key IN ({marks})", chunk
        ).fetchone()[0]
    return total


def _count(connection: sqlite3.Connection, *, hits: int, misses: int, scope: Scope | None = None) -> None:
    connection.execute("UPDATE counters SET value = value + ? WHERE name = 'hits'", [hits])
    connection.execute("UPDATE counters SET value = value + ? WHERE name = 'misses'", [misses])
    if scope is not None:
        connection.execute(
            "INSERT INTO version_counters VALUES (?, ?, ?, ?) ON CONFLICT (model, version_name) "
            "DO UPDATE SET hits = hits + excluded.hits, misses = misses + excluded.misses",
            [scope.model_name, scope.version_name, hits, misses],
        )


_OPEN: dict[tuple[Path, bool], ResultCache] = {}
_OPEN_GUARD = threading.Lock()


def for_folder(folder: Path, *, read_only: bool) -> ResultCache:
    """The process's one cache object for the artifact folder ``folder``."""
    path = (folder / FILE_NAME).resolve()
    with _OPEN_GUARD:
        cache = _OPEN.get((path, read_only))
        if cache is None:
            cache = _OPEN[(path, read_only)] = ResultCache(
                path, max_bytes=max_bytes_from_environment(), read_only=read_only
            )
        return cache
