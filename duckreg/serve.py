"""``duckreg serve``: every model version callable from any DuckDB client, over DuckDB's Quack protocol.

The server is this process: it opens the database, serves it with ``quack_serve`` and keeps running
until it is stopped. Remote sessions are other connections of the same database instance, so they
see what lives in the instance rather than in one connection:

* the model functions themselves (``sentiment(review)``), which DuckDB keeps instance-wide;
* the macros that take parameters by name, optional inputs and tables (``models.sentiment(review,
  top_k := 2)``, ``FROM models.sentiment_table('reviews')``). TEMP macros would be invisible to
  remote sessions, and macros in the served database would be written into the user's file, so
  they live in an in-memory catalog attached as ``models``.

Models are registered lazily: Quack asks an authorization function about every statement before
it runs, and that function registers the models the statement names (plus, at start, those named
by the database's views). Start-up therefore does not grow with the registry. Remote clients only
ever send SQL; a model call runs under the same limits and errors as a local one.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from duckreg.duckdb_ext import extensions
from duckreg.duckdb_ext.connections import open_database
from duckreg.duckdb_ext.names import models_named_in
from duckreg.duckdb_ext.statements import prepare
from duckreg.identifiers import quote_literal

# The in-memory catalog holding the macros; the second name if the database already uses the first.
MACRO_CATALOGS = ("models", "duckreg_models")
DEFAULT_PORT = 9494
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
AUTHORIZE = "duckreg_authorize"


def require_token_off_loopback(host: str, token: str | None, what: str, error: type[Exception]) -> None:
    """Every server duckreg starts (Quack, HTTP, the UI) refuses to listen beyond this machine's loopback
    without a token; ``error`` is the kind its caller reports."""
    if host not in LOOPBACK and not token:
        raise error(f"{what} on {host} is reachable from other machines, so it needs a token: give it --token or "
                    "--token-file.")  # fmt: skip


class ServeError(RuntimeError):
    """The server cannot start: a missing extension, a refused address, a port in use."""


@contextmanager
def stop_requested() -> Iterator[threading.Event]:
    """An event SIGINT (Ctrl-C) and SIGTERM set, from before the server starts until it has stopped."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _tell(message: str) -> None:
    print(f"duckreg serve: {message}", file=sys.stderr, flush=True)


def _version() -> str:
    return duckdb.__version__


def install_hint() -> str:
    """How to get the quack extension for the DuckDB this process runs."""
    version = _version()
    if version.startswith("1."):
        return (
            f"Install it from PyPI for DuckDB {version} (the versions must match exactly): "
            f"pip install duckdb-extension-quack=={version} duckdb-extension-httpfs=={version}"
        )
    return (
        f"Run INSTALL quack; once on a machine that can reach the DuckDB extension repository, or copy "
        f"quack.duckdb_extension for DuckDB {version} into ~/.duckdb/extensions/v{version}/<platform>/. "
        "DuckDB 1.5.x installs it from PyPI instead (pip install duckdb-extension-quack==<duckdb version>)."
    )


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """Load extension ``name`` (installed, or from its PyPI package); where it was loaded from."""
    try:
        return extensions.load(con, name)
    except LookupError:
        raise ServeError(
            f"The DuckDB extension {name!r} is not available for DuckDB {_version()} in this environment. "
            + install_hint()
        ) from None


def listen_uri(host: str, port: int) -> str:
    """The ``quack:`` URI for ``host`` and ``port`` (IPv6 hosts in brackets)."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"quack:{shown}:{port}"


@dataclass
class Server:
    """One served database: its connection, the models registered so far, and the Quack listener."""

    database: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    read_only: bool = False
    uri: str = ""
    registered: set[str] = field(default_factory=set)
    startup_seconds: float = 0.0
    model_count: int = 0
    macro_catalog: str = MACRO_CATALOGS[0]
    # What a client of the same DuckDB version loads: installed names, or the PyPI packages' files.
    extensions: list[str] = field(default_factory=list)
    _con: Any = None
    _macros: Any = None
    _registry: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def registry(self) -> Any:
        """The served database's registry (for ``duckreg ui`` in the same process)."""
        return self._registry

    def start(self) -> Server:
        """Open the database, make the models callable by remote sessions and start listening."""
        require_token_off_loopback(self.host, self.token, "Serving", ServeError)
        if self.token is not None and len(self.token) < 4:
            raise ServeError("The token must be at least 4 characters long.")
        if not Path(self.database).exists():
            raise ServeError(f"No database file {self.database}: give the path of an existing DuckDB database.")
        started = time.perf_counter()
        from duckreg.registry import Registry

        con = open_database(self.database, read_only=self.read_only)
        try:
            self._load_extensions(con)
            self._registry = Registry(con)
            self.model_count = len(self._registry.model_keys())
            self.macro_catalog = self._free_catalog_name(con)
            con.execute(f"ATTACH ':memory:' AS {self.macro_catalog} (READ_WRITE)")
            self._macros = con.cursor()
            # The stage macros and the models views name, which a statement using the view never names.
            eager = self._models_in_views(con)
            self._registry.register_functions(self._macros, models=eager, macro_catalog=self.macro_catalog)
            self.registered |= eager
            con.create_function(AUTHORIZE, self._authorize, ["VARCHAR", "VARCHAR"], "BOOLEAN", side_effects=True)
            con.execute(f"SET GLOBAL quack_authorization_function = '{AUTHORIZE}'")
            self.uri = listen_uri(self.host, self.port)
            arguments = [quote_literal(self.uri)]
            if self.token:
                arguments.append(f"token := {quote_literal(self.token)}")
            if self.host not in LOOPBACK:
                arguments.append("allow_other_hostname := true")
            try:
                row = con.execute(f"CALL quack_serve({', '.join(arguments)})").fetchall()[0]
            except duckdb.Error as exc:
                raise ServeError(f"Cannot serve on {self.uri}: {exc}") from None
            self.token = row[2] if len(row) > 2 else self.token
        except BaseException:
            con.close()
            raise
        self._con = con
        self.startup_seconds = time.perf_counter() - started
        return self

    @staticmethod
    def _free_catalog_name(con: duckdb.DuckDBPyConnection) -> str:
        """A name for the macro catalog that no database or schema of the instance uses (``a.b`` stays clear)."""
        taken = {r[0].lower() for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
        taken |= {r[0].lower() for r in con.execute("SELECT schema_name FROM duckdb_schemas()").fetchall()}
        for name in MACRO_CATALOGS:
            if name not in taken:
                return name
        raise ServeError(f"The database uses both {' and '.join(MACRO_CATALOGS)} as names; duckreg serve needs one.")

    def _load_extensions(self, con: duckdb.DuckDBPyConnection) -> None:
        # DuckDB 1.5 serves Quack only with httpfs's crypto module loaded.
        names = ["httpfs", "quack"] if _version().startswith("1.") else ["quack"]
        for name in names:
            where = load_extension(con, name)
            self.extensions.append(name if where == "installed" else quote_literal(where))

    def _models_in_views(self, con: duckdb.DuckDBPyConnection) -> set[str]:
        """Models named by the database's views and macros: a statement using those never names them."""
        texts = con.execute(
            "SELECT sql FROM duckdb_views() WHERE NOT internal AND sql IS NOT NULL "
            "UNION ALL SELECT macro_definition FROM duckdb_functions() "
            "WHERE function_type IN ('macro', 'table_macro') AND NOT internal AND macro_definition IS NOT NULL"
        ).fetchall()
        keys = self._registry.model_keys()
        return {model for (text,) in texts for model in models_named_in(text, keys)}

    def _authorize(self, session: str | None, query: str | None) -> bool:
        """Quack's check before each statement: register the models it names. It never refuses.

        Quack answers any exception here with a bare "Authorization failed", so problems are told
        on the server's stderr and the statement goes on to DuckDB, which reports its own error.
        """
        text = query or ""
        try:
            with self._lock:
                rewritten = prepare(self._registry, self._macros, text, self.registered, self.macro_catalog)
            if rewritten != text:
                _tell(
                    "A remote statement used MODEL(...)!method syntax, which only duckreg's own SQL entry points "
                    f"rewrite. Call the function by name instead: {rewritten}"
                )
        except Exception as exc:  # noqa: BLE001 - reported; DuckDB then reports the statement's own error
            _tell(f"Could not prepare a remote statement's models: {exc}")
        return True

    def client_init(self) -> str:
        """Lines for ``duckdb -init FILE``: the extensions (not autoloaded offline), then the server as ``reg``."""
        lines = [f"LOAD {extension};" for extension in self.extensions]
        lines.append(f"ATTACH {quote_literal(self.uri)} AS reg (TOKEN {quote_literal(self.token or '')});")
        if not _version().startswith("1."):
            lines.append("CONNECT reg;")  # DuckDB 2.0: every statement that follows runs on the server
        return "\n".join(lines) + "\n"

    def wait(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set (see ``stop_requested``), then stop listening and close."""
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop listening and close the database (idempotent)."""
        if self._con is None:
            return
        try:
            self._con.execute(f"CALL quack_stop({quote_literal(self.uri)})")
        except duckdb.Error:
            pass
        self._macros.close()
        self._con.close()
        self._con = None
