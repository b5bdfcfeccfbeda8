"""Database instances, and the SQL functions duckreg keeps callable in them for as long as they live.

DuckDB keeps a Python function in the catalog of the database *instance*: every connection and cursor
of that instance can call it. But only the connection that created it holds the Python callable, and
only that connection can remove it. Were a user's connection to own a model function, closing it would
free the callable while the catalog still points at it, and the next call from any other connection
would crash the process.

So no connection owns what DuckDB calls. Every callable handed to DuckDB lives here, in a process-wide
table per database instance, and each function is created once per instance and name. What a function
computes is looked up when it is called: logging, re-defaulting or deleting a version updates this
table and never drops a function another connection may be running.

Per-connection objects (TEMP macros for optional inputs, named parameters and table macros) exist only
on connections that registered, and are changed only from the thread that registered them: DuckDB
connections refuse concurrent use, and a statement run from another thread could collide with the
owner's own.
"""

from __future__ import annotations

import atexit
import re
import threading
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import duckdb

from duckreg.duckdb_ext import functions
from duckreg.duckdb_ext.stage_functions import STAGE_UDFS, StageFunctions, StageServer

MARKER = "_duckreg_instance"
_LOCK = threading.Lock()
# Every instance this process has registered functions in, by its marker token. A file-backed
# instance is replaced here when a newer instance of the same file appears (DuckDB keeps one
# instance per file in a process, so the older one is gone); in-memory instances are small.
_INSTANCES: dict[str, Instance] = {}
_BY_PATH: dict[str, str] = {}


class DatabaseLocked(duckdb.IOException):
    """The database file is open in another process: for writing, or read-only while this one wants to write."""


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


def open_database(database: str | None, **kwargs: Any) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` that says what to do when another process holds the database's lock."""
    path = str(database) if database is not None else ":memory:"
    try:
        return duckdb.connect(path, **kwargs)
    except duckdb.IOException as exc:
        found = _LOCK_HOLDER.search(str(exc))
        if found is None:
            raise
        how = "for writing" if kwargs.get("read_only") or _writing_elsewhere(path) else "read-only"
        raise DatabaseLocked(
            f"{path} is open {how} in process {found['pid']} ({found['program']}). DuckDB lets one process "
            "write a database file and lets other processes open it (even read-only) only while none writes. "
            "Close the database in that process (its notebook, service or duckreg shell) and try again."
        ) from None


def _writing_elsewhere(path: str) -> bool:
    """Whether the process holding ``path``'s lock writes it (a read-only holder lets readers in)."""
    try:
        duckdb.connect(path, read_only=True).close()
    except duckdb.IOException:
        return True
    return False


class Gone(Exception):
    """Raised by a function whose model version was deleted or renamed."""


class UdfCallable:
    """The object DuckDB holds for one UDF: it asks the instance what to run at every call."""

    __slots__ = ("instance", "layout", "signature_key", "sql_name")

    def __init__(self, instance: Instance, sql_name: str, layout: str, signature_key: str) -> None:
        self.instance = instance
        self.sql_name = sql_name
        self.layout = layout
        self.signature_key = signature_key

    def __call__(self, *arrays: Any) -> Any:
        return self.instance.call(self, arrays)


@dataclass
class BoundConnection:
    """A connection (or cursor) that registered: it holds duckreg's TEMP macros."""

    connection: weakref.ref
    thread: int
    models: set[str] | None  # None: every model

    def wants(self, model_key: str) -> bool:
        return self.models is None or model_key in self.models


class Instance:
    """duckreg's functions in one DuckDB database instance, and the connections bound to it."""

    def __init__(self, token: str, path: str | None) -> None:
        self.token = token
        self.path = path
        self.lock = threading.RLock()
        self.marker = lambda: token
        # UDF name -> the callable DuckDB holds (kept alive here for the instance's lifetime).
        self.callables: dict[str, Any] = {}
        # Callables replaced or removed while DuckDB may still be running them: never freed.
        self.retired: list[Any] = []
        # UDF name -> the catalog that created it (its private cursor is the one that can remove it).
        self.owners: dict[str, weakref.ref] = {}
        # SQL name -> what it computes now; SQL name -> why it no longer computes anything.
        self.targets: dict[str, functions.SqlFunction] = {}
        self.gone: dict[str, str] = {}
        self.bound: list[BoundConnection] = []
        # (thread that bound it, server) serving the stage and batch functions, most recent last.
        self.servers: list[tuple[int, StageServer]] = []
        # For an in-memory instance duckreg opened itself: the registry on its first connection, which
        # tells when the instance has gone (closing that connection closes every other one).
        self.root: StageServer | None = None
        self.stage_functions = StageFunctions(self.server)

    # -------------------------------------------------------------- calls
    def call(self, udf: UdfCallable, arrays: tuple) -> Any:
        target = self.targets.get(udf.sql_name)
        if target is None:
            reason = self.gone.get(udf.sql_name, f"{udf.sql_name} is not a duckreg function of this database")
            raise Gone(reason)
        if target.signature_key(udf.layout) != udf.signature_key:
            raise ValueError(
                f"{target.runner.context()}: the SQL function {udf.sql_name} now has another signature than "
                "when this connection was bound to it; open a new connection (duckreg.connect) or call "
                "registry.register_functions(con) on this one."
            )
        return target.udf(udf.layout)(*arrays)

    def known_names(self) -> set[str]:
        """SQL names duckreg created in this instance (even ones whose model was since deleted)."""
        with self.lock:
            return {name.lower() for name in self.callables} | set(self.gone) | set(self.targets)

    # --------------------------------------------------------------- UDFs
    def ensure_udf(
        self,
        catalog: Any,
        name: str,
        make: Callable[[], Any],
        matches: Callable[[Any], bool],
        params: list[str] | None,
        return_type: str,
        **kwargs: Any,
    ) -> None:
        """Create UDF ``name`` once in this instance (through ``catalog``'s private cursor).

        An existing UDF whose callable does not ``match`` (another signature) is replaced when its
        creator can still remove it; otherwise it stays and reports the mismatch when called.
        """
        current = self.callables.get(name)
        if current is not None and matches(current):
            return
        if current is not None and not self._remove(name):
            return
        fn = make()
        try:
            catalog.create_function(name, fn, params, return_type, **kwargs)
        except duckdb.CatalogException as exc:
            if "already exists" not in str(exc):
                raise
            raise ValueError(
                f"Cannot create the SQL function {name}: a function of that name that duckreg did not create "
                "exists in this database instance."
            ) from None
        self.callables[name] = fn
        self.owners[name] = weakref.ref(catalog)

    def _remove(self, name: str) -> bool:
        """Drop UDF ``name`` from the instance if the catalog that made it is still open."""
        owner = self.owners.get(name)
        catalog = owner() if owner is not None else None
        if catalog is None or not catalog.remove_function(name):
            return False
        self.retired.append(self.callables.pop(name))
        self.owners.pop(name, None)
        return True

    # ------------------------------------------------------------ targets
    def set_targets(self, catalog: Any, sql_functions: Iterable[functions.SqlFunction]) -> None:
        """Point each function's SQL name at it, creating the UDFs it needs."""
        for target in sql_functions:
            self.targets[target.sql_name] = target
            self.gone.pop(target.sql_name, None)
            for layout in functions.LAYOUTS:
                name = target.udf_name(layout)
                key = target.signature_key(layout)
                self.ensure_udf(
                    catalog,
                    name,
                    lambda target=target, layout=layout, key=key: UdfCallable(self, target.sql_name, layout, key),
                    lambda fn, key=key: isinstance(fn, UdfCallable) and fn.signature_key == key,
                    None,
                    target.output.sql,
                    type="arrow",
                    side_effects=False,
                )

    def retire_targets(self, sql_names: Iterable[str], reason: str) -> None:
        """Make SQL names stop computing: calls fail with ``reason``.

        The function under the SQL name itself is removed where its creator still can, so it is gone
        from ``duckdb_functions()``; the ones macros call stay, so a macro left on another thread's
        connection reports ``reason`` instead of an unknown internal name.
        """
        for sql_name in sql_names:
            target = self.targets.pop(sql_name, None)
            self.gone[sql_name] = f"{sql_name}: {reason}"
            if target is not None:
                self._remove(target.udf_name("positional"))

    # --------------------------------------------------------- connections
    def bind_connection(self, con: duckdb.DuckDBPyConnection, models: set[str] | None) -> None:
        """Remember ``con`` (and the thread that uses it) as holding macros for ``models``."""
        self._prune()
        for record in self.bound:
            if record.connection() is con:
                if record.models is not None:
                    record.models = None if models is None else record.models | models
                record.thread = threading.get_ident()
                return
        self.bound.append(BoundConnection(weakref.ref(con), threading.get_ident(), models))

    def update_macros(self, model_key: str, statements: list[str]) -> None:
        """Run macro statements on the bound connections of this thread that hold ``model_key``'s macros.

        Connections bound in other threads are left alone: a statement from here could collide with
        their own thread's. A closed connection is forgotten.
        """
        me = threading.get_ident()
        for record in list(self.bound):
            con = record.connection()
            if con is None or record.thread != me or not record.wants(model_key):
                continue
            try:
                for statement in statements:
                    con.execute(statement)
            except duckdb.ConnectionException:
                self.bound.remove(record)
            except duckdb.Error as exc:
                warnings.warn(f"duckreg could not update its SQL macros on a connection: {exc}", RuntimeWarning,
                              stacklevel=3)  # fmt: skip

    def _prune(self) -> None:
        self.bound = [r for r in self.bound if r.connection() is not None]

    # ----------------------------------------------------- stage functions
    def ensure_stage_functions(self, catalog: Any) -> None:
        """``read_stage_file``, ``duckreg_list_stage_files`` and ``duckreg_run_batch`` in this instance."""
        for name, method, params, returns in STAGE_UDFS:
            self.ensure_udf(
                catalog,
                name,
                lambda method=method: getattr(self.stage_functions, method),
                lambda fn: True,
                params,
                returns,
                side_effects=name.startswith(("duckreg_run_batch", "duckreg_list_errors", "duckreg_index")),
            )

    def add_server(self, server: StageServer) -> None:
        """Serve the stage functions from ``server``'s registry (one per connection; closed ones are dropped).

        Only servers bound in this thread are checked for being closed: a statement on a cursor of a
        connection another thread is closing at that moment would make that close fail as busy.
        """
        me = threading.get_ident()
        self.servers = [
            (thread, s)
            for thread, s in self.servers
            if s.connection is not server.connection and (thread != me or not s.closed())
        ]
        self.servers.append((me, server))

    def server(self) -> StageServer:
        """The most recently bound registry whose connection is still open (serves stages and jobs)."""
        for _, server in reversed(self.servers):
            if not server.closed():
                return server
        raise duckdb.ConnectionException(
            "Every duckreg registry of this database instance is closed; open one with duckreg.connect()."
        )


def _read_marker(con: duckdb.DuckDBPyConnection) -> str | None:
    try:
        return con.execute(f"SELECT {MARKER}()").fetchall()[0][0]
    except duckdb.CatalogException:
        return None


def _main_path(con: duckdb.DuckDBPyConnection) -> str | None:
    rows = con.execute(
        "SELECT path FROM duckdb_databases() WHERE NOT internal ORDER BY database_oid LIMIT 1"
    ).fetchall()
    return rows[0][0] if rows and rows[0][0] else None


def instance_of(con: duckdb.DuckDBPyConnection) -> Instance:
    """The duckreg state of the database instance ``con`` belongs to (created on first use)."""
    token = _read_marker(con)
    if token is not None and token in _INSTANCES:
        return _INSTANCES[token]
    with _LOCK:
        token = _read_marker(con)
        if token is not None:
            if token not in _INSTANCES:
                _INSTANCES[token] = Instance(token, _main_path(con))
            return _INSTANCES[token]
        path = _main_path(con)
        _forget_closed_memory_instances()
        instance = Instance(uuid.uuid4().hex, path)
        con.create_function(MARKER, instance.marker, [], "VARCHAR", side_effects=False)
        _INSTANCES[instance.token] = instance
        if path is not None:
            # A new instance of this file means the previous one has closed: its state can go.
            previous = _BY_PATH.get(path)
            if previous is not None:
                _INSTANCES.pop(previous, None)
            _BY_PATH[path] = instance.token
        return instance


@atexit.register
def _close_function_owners() -> None:
    """At exit, close the private cursors that created duckreg's functions (see ``Catalog.close_at_exit``)."""
    for instance in list(_INSTANCES.values()):
        catalogs = {id(c): c for c in (owner() for owner in instance.owners.values()) if c is not None}
        for catalog in catalogs.values():
            catalog.close_at_exit()


def _forget_closed_memory_instances() -> None:
    """Drop the state of in-memory instances whose first connection (so every connection) is closed."""
    for token, instance in list(_INSTANCES.items()):
        if instance.path is None and instance.root is not None and instance.root.closed():
            del _INSTANCES[token]
