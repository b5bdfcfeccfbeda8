"""The ``duckreg`` command: a SQL shell and script runner with every model callable, and registry commands.

    duckreg shell shop.duckdb                  interactive SQL (multi-line, history, dot-commands)
    duckreg sql "SELECT ..." --db shop.duckdb  one statement
    duckreg run script.sql --db shop.duckdb    a script, stopping at the first error (with its line)
    duckreg models | versions | functions | log | delete

Every entry point accepts Snowflake model-call syntax (``MODEL(m, v1)!predict(x)``) and registers
only the models a statement names, so starting is fast however many versions the registry holds.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

DB_ENV = "DUCKREG_DB"
# Statements whose result is printed (as the DuckDB shell does); others run silently.
_QUERIES = frozenset({"SELECT", "WITH", "FROM", "VALUES", "SHOW", "DESCRIBE", "SUMMARIZE", "PRAGMA", "EXPLAIN",
                      "CALL", "TABLE", "PIVOT", "UNPIVOT"})  # fmt: skip
MAX_ROWS = 40


class Session:
    """One database, its registry, and the models already registered on the connection."""

    def __init__(self, database: str | None, *, read_only: bool = False) -> None:
        from duckreg.duckdb_ext.connections import open_database
        from duckreg.registry import Registry

        self.database = database or ":memory:"
        self.con = open_database(self.database, read_only=read_only)
        self.registry = Registry(self.con)
        self.registry.register_functions(self.con, models=[])
        self.bound: set[str] = set()

    def prepare(self, statement: str) -> str:
        """Rewrite model-call syntax and register the models the statement names (once per session)."""
        from duckreg.duckdb_ext.statements import prepare

        return prepare(self.registry, self.con, statement, self.bound)

    def execute(self, statement: str) -> tuple[list[str], list[str], list[tuple]] | None:
        """Run one statement; the rows of a query, or None for statements that return no table."""
        cursor = self.con.execute(self.prepare(statement))
        first = statement.lstrip("( \n\t").split(None, 1)[0].upper() if statement.strip() else ""
        if cursor.description is None or first not in _QUERIES:
            return None
        names = [d[0] for d in cursor.description]
        types = [str(d[1]) for d in cursor.description]
        return names, types, cursor.fetchall()

    def close(self) -> None:
        self.con.close()


def split_statements(script: str) -> Iterator[tuple[int, str]]:
    """(line, statement) for each ``;``-terminated statement, honouring quotes and comments.

    The line is where the statement's first token is; comments before it are not part of it.
    """
    line, i = 1, 0
    begin: int | None = None
    begin_line = 1
    quote: str | None = None
    while i < len(script):
        ch = script[i]
        if quote:
            if ch == quote:
                quote = None
        elif script.startswith("--", i) or script.startswith("/*", i):
            closing = "\n" if ch == "-" else "*/"
            end = script.find(closing, i + 2)
            end = len(script) if end < 0 else end + (0 if ch == "-" else 2)
            line += script.count("\n", i, end)
            i = end
            continue
        elif ch == ";":
            if begin is not None:
                yield begin_line, script[begin:i].strip()
            begin = None
        elif not ch.isspace() and begin is None:
            begin, begin_line = i, line
            if ch in ("'", '"'):
                quote = ch
        elif ch in ("'", '"'):
            quote = ch
        if ch == "\n":
            line += 1
        i += 1
    if begin is not None and script[begin:].strip():
        yield begin_line, script[begin:].strip()


def _render(value: Any) -> str:
    if value is None:
        return "NULL"
    return str(value)


def print_result(result: tuple[list[str], list[str], list[tuple]], *, fmt: str = "table") -> None:
    """Rows as a box table like the DuckDB shell (first and last rows of long results), or CSV/JSON."""
    names, types, rows = result
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return
    if fmt == "json":
        import json

        print(json.dumps([dict(zip(names, row, strict=True)) for row in rows], default=str))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.ROUNDED, show_lines=False, header_style="bold")
    for name, kind in zip(names, types, strict=True):
        table.add_column(f"{name}\n[dim]{kind.lower()}[/dim]", overflow="fold")
    shown = rows if len(rows) <= MAX_ROWS else [*rows[: MAX_ROWS // 2], None, *rows[-MAX_ROWS // 2 :]]
    for row in shown:
        table.add_row(*(["·"] * len(names) if row is None else [_render(v) for v in row]))
    if len(rows) > MAX_ROWS:
        table.caption = f"{len(rows)} rows ({MAX_ROWS} shown)"
    elif len(rows) != 1:
        table.caption = f"{len(rows)} rows"
    Console(soft_wrap=False, width=None if sys.stdout.isatty() else 240).print(table)


def _fail(message: str) -> None:
    click.echo(click.style("Error: ", fg="red", bold=True) + message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="duckreg")
def main() -> None:
    """duckreg: a model registry for DuckDB. Call logged models from SQL."""


@main.command()
@click.argument("database", required=False)
@click.option("--db", "db_option", envvar=DB_ENV, help=f"The DuckDB database file (or ${DB_ENV}); same as DATABASE.")
@click.option("--read-only", is_flag=True, help="Open the database read-only.")
def shell(database: str | None, db_option: str | None, read_only: bool) -> None:
    """An interactive SQL shell on DATABASE (or --db) with every model callable.

    Statements end with ';' and may span lines. Dot-commands: .models, .versions MODEL,
    .functions MODEL [VERSION], .tables, .help, .quit. Without a database the shell runs on a
    transient in-memory one, and says so.
    """
    database = _one_database(database, db_option)
    if database is None:
        click.echo(
            "Connected to a transient in-memory database: nothing is kept when the shell exits. "
            "Give a file (duckreg shell FILE, or --db FILE) to use a registry.",
            err=True,
        )
    started = time.perf_counter()
    session = _session(database, read_only)
    interactive = sys.stdin.isatty()
    if interactive:
        _enable_history()
        click.echo(
            f"duckreg shell on {session.database} ({len(session.registry.model_keys())} models, ready in "
            f"{time.perf_counter() - started:.2f} s). End statements with ';', .help for commands."
        )
    buffer: list[str] = []
    failures = 0
    while True:
        try:
            line = input(("D " if not buffer else "· ") if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            buffer = []
            click.echo()
            continue
        if not buffer and line.strip().startswith("."):
            if _dot_command(session, line.strip()) == "quit":
                break
            continue
        buffer.append(line)
        text = "\n".join(buffer)
        statements = list(split_statements(text))
        if not text.rstrip().endswith(";"):
            continue
        buffer = []
        for _, statement in statements:
            failures += not _run_statement(session, statement)
    session.close()
    if failures and not interactive:
        sys.exit(1)


def _one_database(database: str | None, db_option: str | None) -> str | None:
    """The database named by the argument or --db (refusing two different ones)."""
    if database and db_option and Path(database).resolve() != Path(db_option).resolve():
        raise click.UsageError(f"Two databases given: {database} and --db {db_option}; give one.")
    return database or db_option


def _enable_history() -> None:
    try:
        import atexit
        import readline
    except ImportError:
        return
    history = Path(os.environ.get("DUCKREG_HISTORY", Path.home() / ".duckreg_history"))
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    atexit.register(lambda: _save_history(readline, history))


def _save_history(readline: Any, history: Path) -> None:
    try:
        readline.write_history_file(history)
    except OSError:
        pass


def _run_statement(session: Session, statement: str) -> bool:
    try:
        result = session.execute(statement)
    except Exception as exc:  # noqa: BLE001 - the shell reports every error and goes on
        _fail(str(exc))
        return False
    if result is not None:
        print_result(result)
    return True


def _dot_command(session: Session, line: str) -> str | None:
    parts = line.split()
    command, args = parts[0].lower(), parts[1:]
    try:
        if command in (".quit", ".exit", ".q"):
            return "quit"
        if command == ".help":
            click.echo(
                ".models                      logged models\n"
                ".versions MODEL              versions of a model\n"
                ".functions MODEL [VERSION]   SQL functions and signatures\n"
                ".tables                      tables and views\n"
                ".quit                        leave the shell"
            )
        elif command == ".models":
            print_result(_frame(session.registry.show_models()))
        elif command == ".versions" and len(args) == 1:
            print_result(_frame(session.registry.get_model(args[0]).show_versions()))
        elif command == ".functions" and len(args) in (1, 2):
            _print_functions(session, args[0], args[1] if len(args) == 2 else None)
        elif command == ".tables":
            print_result(session.execute("SELECT table_schema, table_name, table_type FROM information_schema.tables"))
        else:
            _fail(f"unknown command {line!r}; .help lists the commands")
    except Exception as exc:  # noqa: BLE001 - report and stay in the shell
        _fail(str(exc))
    return None


def _frame(frame: Any) -> tuple[list[str], list[str], list[tuple]]:
    return list(map(str, frame.columns)), [str(t) for t in frame.dtypes], list(frame.itertuples(index=False))


def _print_functions(session: Session, model: str, version: str | None) -> None:
    handle = session.registry.get_model(model)
    mv = handle.version(version) if version else handle.default
    for function in mv.show_functions():
        click.echo(f"{function['name']} ({function['target_method']})")
        click.echo(repr(function["signature"]))
    names = ", ".join(mv.sql_names())
    click.echo(f"SQL: {names}" + ("" if version else f" (default version: {handle.name}(...))"))


def _open(database: str | None, read_only: bool = False) -> Session:
    if database is None:
        raise click.UsageError(f"Give the database with --db (or set {DB_ENV}).")
    return _session(database, read_only)


def _session(database: str | None, read_only: bool = False) -> Session:
    """Open a session, or exit with the reason the database cannot be opened (locked, missing, ...)."""
    import duckdb

    try:
        return Session(database, read_only=read_only)
    except duckdb.Error as exc:
        _fail(str(exc))
        sys.exit(1)


db_option = click.option("--db", "database", envvar=DB_ENV, help=f"The DuckDB database file (or ${DB_ENV}).")


@main.command("sql")
@click.argument("query")
@db_option
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def sql_command(query: str, database: str | None, fmt: str) -> None:
    """Run QUERY (one or more statements) and print the last result."""
    session = _session(database)
    try:
        result = None
        for _, statement in split_statements(query):
            result = session.execute(statement)
        if result is not None:
            print_result(result, fmt=fmt)
    except Exception as exc:  # noqa: BLE001 - exit status carries the failure
        _fail(str(exc))
        sys.exit(1)
    finally:
        session.close()


@main.command()
@click.argument("script", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@db_option
def run(script: str, database: str | None) -> None:
    """Run a SQL SCRIPT statement by statement, like `duckdb DATABASE < SCRIPT`.

    Results of queries are printed; the first failing statement stops the script with its line.
    """
    text = sys.stdin.read() if script == "-" else Path(script).read_text()
    session = _session(database)
    try:
        for line, statement in split_statements(text):
            try:
                result = session.execute(statement)
            except Exception as exc:  # noqa: BLE001 - exit status carries the failure
                _fail(f"{script}:{line}: {exc}")
                sys.exit(1)
            if result is not None:
                print_result(result)
    finally:
        session.close()


@main.command()
@db_option
def models(database: str | None) -> None:
    """List the logged models."""
    session = _open(database, read_only=True)
    print_result(_frame(session.registry.show_models()))


@main.command()
@click.argument("model")
@db_option
def versions(model: str, database: str | None) -> None:
    """List the versions of MODEL."""
    session = _open(database, read_only=True)
    _guard(lambda: print_result(_frame(session.registry.get_model(model).show_versions())))


@main.command()
@click.argument("model")
@click.option("--version", "version", help="A version or alias (default: the default version).")
@db_option
def functions(model: str, version: str | None, database: str | None) -> None:
    """Show MODEL's functions, signatures and SQL names."""
    session = _open(database, read_only=True)
    _guard(lambda: _print_functions(session, model, version))


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--task", required=True, help="The pipeline task, e.g. text-classification or summarization.")
@click.option("--name", "model_name", required=True, help="The model name (an SQL identifier).")
@click.option("--version", "version_name", help="The version name (generated when left out).")
@click.option("--comment")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="A pipeline setting, e.g. top_k=2.")
@db_option
def log(
    folder: str,
    task: str,
    model_name: str,
    version_name: str | None,
    comment: str | None,
    settings: tuple[str, ...],
    database: str | None,
) -> None:
    """Log the model saved in FOLDER (save_pretrained output) as a new version."""
    import json

    from duckreg.huggingface import TransformersPipeline

    kwargs: dict[str, Any] = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--set")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    session = _open(database)

    def do() -> None:
        mv = session.registry.log_model(
            TransformersPipeline(model=folder, task=task, **kwargs),
            model_name=model_name,
            version_name=version_name,
            comment=comment,
        )
        click.echo(f"Logged {mv.model_name} version {mv.version_name}: SQL {', '.join(mv.sql_names())}")

    _guard(do)
    session.close()


@main.command()
@click.argument("model")
@click.option("--version", "version_name", help="Delete only this version.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@db_option
def delete(model: str, version_name: str | None, yes: bool, database: str | None) -> None:
    """Delete MODEL (or one version of it) with its artifacts."""
    session = _open(database)
    what = f"{model} version {version_name}" if version_name else f"model {model} and all its versions"
    if not yes:
        click.confirm(f"Delete {what}?", abort=True)

    def do() -> None:
        if version_name:
            session.registry.get_model(model).delete_version(version_name)
        else:
            session.registry.delete_model(model)
        click.echo(f"Deleted {what}.")

    _guard(do)
    session.close()


@main.command()
@click.argument("database", required=False)
@click.option("--db", "db_option", envvar=DB_ENV, help=f"The DuckDB database file (or ${DB_ENV}); same as DATABASE.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=9494, show_default=True, type=click.IntRange(1, 65535))
@click.option("--token", envvar="DUCKREG_TOKEN", help="The token clients must present (or $DUCKREG_TOKEN).")
@click.option("--token-file", type=click.File("r"), help="Read the token from this file's first line.")
@click.option("--read-only", is_flag=True, help="Open the database read-only.")
@click.option("--client-init", type=click.Path(dir_okay=False, writable=True),
              help="Write a file for `duckdb -init FILE` that attaches this server as reg.")  # fmt: skip
def serve(
    database: str | None,
    db_option: str | None,
    host: str,
    port: int,
    token: str | None,
    token_file: Any,
    read_only: bool,
    client_init: str | None,
) -> None:
    """Serve DATABASE over DuckDB's Quack protocol, with every model callable by remote clients.

    From the DuckDB CLI (the same DuckDB version as this server):

    \b
      ATTACH 'quack:127.0.0.1:9494' AS reg (TOKEN '...');
      CONNECT reg;                                            -- DuckDB 2.0: plain SQL runs here
      FROM reg.query('SELECT sentiment(review) FROM reviews'); -- DuckDB 1.5

    Parameters by name and table functions are in the models catalog:
    models.sentiment(review, top_k := 2), FROM models.sentiment_table('reviews').
    """
    import duckdb

    from duckreg.serve import ServeError, Server, stop_requested

    database = _one_database(database, db_option)
    if database is None:
        raise click.UsageError(f"Give the database to serve (duckreg serve FILE, --db FILE or ${DB_ENV}).")
    if token_file is not None:
        token = token_file.readline().strip()
    server = Server(database, host=host, port=port, token=token, read_only=read_only)
    with stop_requested() as stop:
        try:
            server.start()
        except (ServeError, duckdb.Error) as exc:
            _fail(str(exc))
            sys.exit(1)
        if client_init:
            Path(client_init).write_text(server.client_init())
        given = "the token from --token or --token-file" if token else f"this token: {server.token}"
        click.echo(
            f"Serving {database} ({server.model_count} models) at {server.uri}, "
            f"ready in {server.startup_seconds:.2f} s.\n"
            f"Clients need DuckDB {duckdb.__version__} and {given}\n"
            f"  ATTACH '{server.uri}' AS reg (TOKEN '...');\n"
            "  CONNECT reg;                                              -- DuckDB 2.0\n"
            "  FROM reg.query('SELECT sentiment(review) FROM reviews');  -- DuckDB 1.5"
        )
        if client_init:
            click.echo(f"Client init file: duckdb -init {client_init}")
        click.echo("Ctrl-C stops the server.")
        sys.stdout.flush()
        server.wait(stop)
    click.echo("Server stopped.")


@main.group()
def cache() -> None:
    """The result cache of deterministic model functions (results.sqlite in the artifact folder)."""


@cache.command("stats")
@db_option
def cache_stats(database: str | None) -> None:
    """Show the cache's size, bound, hits and misses, and its entries per model version."""
    import pandas as pd

    session = _open(database, read_only=True)
    stats = session.registry.result_cache.stats()
    click.echo(f"{stats['path']}")
    click.echo(
        f"entries {stats['entries']}, {_size(stats['bytes'])} of {_size(stats['max_bytes'])}, "
        f"hits {stats['hits']}, misses {stats['misses']}"
    )
    if stats["versions"]:
        print_result(_frame(pd.DataFrame(stats["versions"])))


@cache.command("clear")
@click.option("--model", "model_name", help="Clear only this model's results.")
@db_option
def cache_clear(model_name: str | None, database: str | None) -> None:
    """Delete cached results (every model's, or one model's)."""
    session = _open(database)
    _guard(lambda: click.echo(f"{session.registry.result_cache.clear(model_name)} results removed"))


def _size(nbytes: float) -> str:
    if nbytes < 1024:
        return f"{nbytes:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "GiB":
            break
    return f"{nbytes:.1f} {unit}"


def _guard(action: Any) -> None:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - exit status carries the failure
        _fail(str(exc))
        sys.exit(1)


if __name__ == "__main__":
    main()
