"""The ``duckreg`` command: a SQL shell and script runner with every model callable, and registry commands.

    duckreg shell shop.duckdb                  interactive SQL (multi-line, history, dot-commands)
    duckreg sql "SELECT ..." --db shop.duckdb  one statement
    duckreg run script.sql --db shop.duckdb    a script, stopping at the first error (with its line)
    duckreg models | versions | functions | log | default | alias | unalias | delete | jobs | stages | snapshot

Every entry point accepts Snowflake model-call syntax (``MODEL(m, v1)!predict(x)``) and registers
only the models a statement names, so starting is fast however many versions the registry holds.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Any

import click

from duckreg import interrupts
from duckreg.shell import fail

DB_ENV = "DUCKREG_DB"
FORMATS = ("duckbox", "box", "csv", "json", "markdown", "line", "table")


def _mode(fmt: str) -> str:
    return "duckbox" if fmt == "table" else fmt


# For the commands that also take the database as their argument (``_one_database`` picks one).
db_or_argument = click.option(
    "--db", "db_option", envvar=DB_ENV, help=f"The DuckDB database file (or ${DB_ENV}); same as DATABASE."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="duckreg")
def main() -> None:
    """duckreg: a model registry for DuckDB. Call logged models from SQL."""


@main.command()
@click.argument("database", required=False)
@db_or_argument
@click.option("--read-only", is_flag=True, help="Open the database read-only.")
@click.option("-c", "--command", "commands", multiple=True, metavar="SQL",
              help="Run SQL (statements or a dot-command) and exit, as `duckdb -c`. Repeatable.")  # fmt: skip
@click.option("--mode", type=click.Choice(FORMATS[:-1]), default="duckbox", show_default=True, help="Output mode.")
def shell(database: str | None, db_option: str | None, read_only: bool, commands: tuple[str, ...], mode: str) -> None:
    """An interactive SQL shell on DATABASE (or --db) with every model callable.

    Statements end with ';' and may span lines. Tab completes keywords, tables, columns and
    functions, models included; history is kept in ~/.duckreg_history. Dot-commands: .mode,
    .timer, .read FILE, .models, .versions MODEL, .functions MODEL [VERSION], .tables, .jobs,
    .help, .quit. Without a database the shell runs on a transient in-memory one, and says so.
    """
    database = _one_database(database, db_option)
    if database is None:
        click.echo(
            "Connected to a transient in-memory database: nothing is kept when the shell exits. "
            "Give a file (duckreg shell FILE, or --db FILE) to use a registry.",
            err=True,
        )
    _check_exists(database, create=True)
    started = time.perf_counter()
    session = _session(database, read_only)
    from duckreg.shell import Shell, interactive, piped

    runner = Shell(session, mode=mode)
    try:
        if commands:
            for command in commands:
                if not runner.run_text(command):
                    break
        elif sys.stdin.isatty() and sys.stdout.isatty():
            interactive(
                runner,
                f"duckreg shell on {session.database} ({len(session.registry.model_keys())} models, ready in "
                f"{time.perf_counter() - started:.2f} s). End statements with ';', .help for commands.",
            )
        else:
            piped(runner, sys.stdin.readline)
    finally:
        runner.session.close()  # .open may have moved the shell to another database
    if runner.failures and (commands or not sys.stdin.isatty()):
        sys.exit(1)


def _one_database(database: str | None, db_option: str | None) -> str | None:
    """The database named by the argument or --db (refusing two different ones)."""
    if database and db_option and Path(database).resolve() != Path(db_option).resolve():
        raise click.UsageError(f"Two databases given: {database} and --db {db_option}; give one.")
    return database or db_option


def _open(database: str | None, read_only: bool = False, *, create: bool = False) -> Any:
    """A session on the database --db names; a typo there must not create a new, empty registry, so a missing
    file is refused unless the command creates registries (``create``), which says that it does."""
    if database is None:
        raise click.UsageError(f"Give the database with --db (or set {DB_ENV}).")
    _check_exists(database, create=create)
    return _session(database, read_only)


def _check_exists(database: str | None, *, create: bool = False) -> None:
    if database is None or database == ":memory:" or Path(database).exists():
        return
    if create:
        click.echo(f"Creating a new database file {database} (no file had that name).", err=True)
        return
    fail(f"No database file {database}. `duckreg shell {database}` creates a new one.")
    sys.exit(1)


def _session(database: str | None, read_only: bool = False) -> Any:
    """Open a session, or exit with the reason the database cannot be opened (locked, missing, ...)."""
    import duckdb

    from duckreg.shell import Session

    try:
        return Session(database, read_only=read_only)
    except duckdb.Error as exc:
        fail(str(exc))
        sys.exit(1)


db_option = click.option("--db", "database", envvar=DB_ENV, help=f"The DuckDB database file (or ${DB_ENV}).")
format_option = click.option("--format", "fmt", type=click.Choice(FORMATS), default="duckbox", show_default=True,
                             help="Output mode, as the shell's .mode (table is duckbox).")  # fmt: skip


@main.command("sql")
@click.argument("query")
@db_option
@format_option
def sql_command(query: str, database: str | None, fmt: str) -> None:
    """Run QUERY (one or more statements) and print the last result."""
    from duckreg.shell import interrupt_on_ctrl_c, split_statements
    from duckreg.tables import render

    _check_exists(database)
    session = _session(database)
    try:
        statements = [statement for _, statement in split_statements(query)]
        with interrupt_on_ctrl_c(session.con):
            for statement in statements[:-1]:
                session.run(statement)
            result = session.execute(statements[-1]) if statements else None
            if result is not None:
                render(result, _mode(fmt))
    except Exception as exc:  # noqa: BLE001 - exit status carries the failure
        fail(interrupts.describe(exc))
        sys.exit(1)
    finally:
        session.close()


@main.command()
@click.argument("script", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@db_option
@format_option
def run(script: str, database: str | None, fmt: str) -> None:
    """Run a SQL SCRIPT statement by statement, like `duckdb DATABASE < SCRIPT`.

    Results of queries are printed; the first failing statement stops the script with its line.
    """
    from duckreg.shell import interrupt_on_ctrl_c, split_statements
    from duckreg.tables import render

    text = sys.stdin.read() if script == "-" else Path(script).read_text()
    _check_exists(database)
    session = _session(database)
    try:
        for line, statement in split_statements(text):
            try:
                with interrupt_on_ctrl_c(session.con):
                    result = session.execute(statement)
                    if result is not None:
                        render(result, _mode(fmt))
            except Exception as exc:  # noqa: BLE001 - exit status carries the failure
                fail(f"{script}:{line}: {interrupts.describe(exc)}")
                sys.exit(1)
    finally:
        session.close()


@main.command()
@db_option
@format_option
def models(database: str | None, fmt: str) -> None:
    """List the logged models."""
    from duckreg.shell import print_models

    session = _open(database, read_only=True)
    _guard(lambda: print_models(session, _mode(fmt)), session)


@main.command()
@click.argument("model")
@db_option
@format_option
def versions(model: str, database: str | None, fmt: str) -> None:
    """List the versions of MODEL."""
    from duckreg.shell import print_versions

    session = _open(database, read_only=True)
    _guard(lambda: print_versions(session, model, _mode(fmt)), session)


@main.command()
@click.argument("model")
@click.option("--version", "version", help="A version or alias (default: the default version).")
@db_option
@format_option
def functions(model: str, version: str | None, database: str | None, fmt: str) -> None:
    """Show MODEL's functions: each input, output and parameter with its DuckDB type, and the SQL names."""
    from duckreg.shell import print_functions

    session = _open(database, read_only=True)
    _guard(lambda: print_functions(session, model, version, sys.stdout, _mode(fmt)), session)


def _key_values(items: tuple[str, ...], hint: str) -> dict[str, Any]:
    """``KEY=VALUE`` items as a dict; a value that parses as JSON is that JSON (2, true, [1, 2])."""
    import json

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=hint)
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def _check_task(task: str) -> None:
    """Refuse a task duckreg does not run, listing those it does (not transformers' own list)."""
    from duckreg.tasks import TASK_ALIASES, TASKS, get_task

    if get_task(task) is None:
        import difflib

        known = sorted({*TASKS, *TASK_ALIASES})
        close = difflib.get_close_matches(task, known, n=1)
        raise click.BadParameter(
            (f"did you mean {close[0]!r}? " if close else "") + f"duckreg runs these tasks: {', '.join(known)}",
            param_hint=f"--task {task!r}",
        )


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--task", required=True, help="The pipeline task, e.g. text-classification or summarization.")
@click.option("--name", "model_name", required=True, help="The model name (an SQL identifier).")
@click.option("--version", "version_name", help="The version name (generated when left out).")
@click.option("--comment")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="A pipeline setting, e.g. top_k=2.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A log option, as log_model(options=...): pooling=mean, engine=onnxruntime, quantize=int8, "
                   "precision=bf16, graph=fused, "
                   "max_batch_size=64, ... Values are JSON where they parse.")  # fmt: skip
@click.option("--default/--no-default", "make_default", default=None,
              help="Make the new version the model's default (a model's first version always is).")  # fmt: skip
@db_option
def log(
    folder: str,
    task: str,
    model_name: str,
    version_name: str | None,
    comment: str | None,
    settings: tuple[str, ...],
    options: tuple[str, ...],
    make_default: bool | None,
    database: str | None,
) -> None:
    """Log the model saved in FOLDER (save_pretrained output) as a new version.

    \b
      duckreg log ./all-MiniLM-L6-v2 --task feature-extraction --name minilm --option pooling=mean
      duckreg log ./distilbert-sst2 --task text-classification --name sentiment --set top_k=2 \\
          --option engine=onnxruntime --option quantize=int8
    """
    from duckreg.huggingface import TransformersPipeline

    _check_task(task)
    kwargs = _key_values(settings, "--set")
    log_options = _key_values(options, "--option")
    _quiet_transformers()
    session = _open(database, create=True)

    def do() -> None:
        mv = session.registry.log_model(
            TransformersPipeline(model=folder, task=task, **kwargs),
            model_name=model_name,
            version_name=version_name,
            comment=comment,
            options=log_options or None,
        )
        if make_default:
            session.registry.get_model(model_name).default = mv.version_name
        click.echo(f"Logged {mv.model_name} version {mv.version_name}: SQL {', '.join(mv.sql_names())}")

    _guard(do, session)


def _quiet_transformers() -> None:
    """No progress bars or load reports from transformers and the hub: the command prints its own line."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


@main.command()
@click.argument("model")
@click.argument("version")
@db_option
def default(model: str, version: str, database: str | None) -> None:
    """Make VERSION (a version or alias) the default version of MODEL, which `MODEL(...)` calls in SQL."""
    session = _open(database)

    def do() -> None:
        handle = session.registry.get_model(model)
        handle.default = handle.version(version).version_name
        click.echo(f"{handle.name}: default version {handle.default.version_name}")

    _guard(do, session)


@main.command()
@click.argument("model")
@click.argument("version")
@click.argument("alias")
@db_option
def alias(model: str, version: str, alias: str, database: str | None) -> None:
    """Give VERSION of MODEL the alias ALIAS (taken from another version that has it).

    \b
      duckreg alias sentiment v2 prod      # MODEL(sentiment, prod)!__call__(...) calls v2
    """
    session = _open(database)

    def do() -> None:
        handle = session.registry.get_model(model)
        mv = handle.version(version)
        mv.set_alias(alias)
        click.echo(f"{handle.name}: alias {alias} -> version {mv.version_name}")

    _guard(do, session)


@main.command()
@click.argument("model")
@click.argument("alias")
@db_option
def unalias(model: str, alias: str, database: str | None) -> None:
    """Remove the alias ALIAS from MODEL."""
    session = _open(database)

    def do() -> None:
        handle = session.registry.get_model(model)
        handle.version(alias).unset_alias(alias)
        click.echo(f"{handle.name}: alias {alias} removed")

    _guard(do, session)


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

    _guard(do, session)


def listening_options(default_port: int, clients: str) -> Any:
    """--host, --port, --token and --token-file: the options of every command that serves the database.

    The command receives ``token`` already read from ``--token-file`` when one was given.
    """

    def apply(command: Any) -> Any:
        @functools.wraps(command)
        def with_token(*args: Any, token: str | None, token_file: Any, **kwargs: Any) -> Any:
            if token_file is not None:
                token = token_file.readline().strip()
            return command(*args, token=token, **kwargs)

        options = [
            click.option("--host", default="127.0.0.1", show_default=True,
                         help="Address to listen on (loopback by default)."),
            click.option("--port", default=default_port, show_default=True, type=click.IntRange(1, 65535)),
            click.option("--token", envvar="DUCKREG_TOKEN",
                         help=f"The token {clients} must present (or $DUCKREG_TOKEN)."),
            click.option("--token-file", type=click.File("r"), help="Read the token from this file's first line."),
        ]  # fmt: skip
        for option in reversed(options):
            with_token = option(with_token)
        return with_token

    return apply


@main.command()
@click.argument("database", required=False)
@db_or_argument
@listening_options(9494, "clients")
@click.option("--read-only", is_flag=True, help="Open the database read-only.")
@click.option("--client-init", type=click.Path(dir_okay=False, writable=True),
              help="Write a file for `duckdb -init FILE` that attaches this server as reg.")  # fmt: skip
@click.option("--ui-port", type=click.IntRange(1, 65535),
              help="Also serve `duckreg ui` on this port (same host and token), over the same database.")  # fmt: skip
@click.option("--http", "http_port", type=click.IntRange(1, 65535),
              help="Also serve every model over HTTP on this port: OpenAI-compatible /v1/embeddings, "
                   "/v1/chat/completions and /v1/models, and MLflow-style invocations (same host and "
                   "token).")  # fmt: skip
@click.option("--quack/--no-quack", default=True, show_default=True,
              help="Serve SQL over DuckDB's Quack protocol; --no-quack serves only --http and --ui-port.")  # fmt: skip
@click.option("--batch-window-ms", type=click.FloatRange(0), default=5.0, show_default=True,
              help="HTTP: how long a request waits for others to share its forward batch (0: each runs "
                   "alone).")  # fmt: skip
@click.option("--batch-max-rows", type=click.IntRange(1), default=256, show_default=True,
              help="HTTP: the most rows one forward batch gathers across requests.")  # fmt: skip
@click.option("--max-body-mb", type=click.FloatRange(0, min_open=True), default=16.0, show_default=True,
              help="HTTP: refuse request bodies larger than this (413).")  # fmt: skip
def serve(
    database: str | None,
    db_option: str | None,
    host: str,
    port: int,
    token: str | None,
    read_only: bool,
    client_init: str | None,
    ui_port: int | None,
    http_port: int | None,
    quack: bool,
    batch_window_ms: float,
    batch_max_rows: int,
    max_body_mb: float,
) -> None:
    """Serve DATABASE over DuckDB's Quack protocol, with every model callable by remote clients.

    The clients (the DuckDB CLI) must run the same DuckDB version as this server, down to the patch,
    and the database file must be in a format that version reads: `duckreg snapshot DB COPY
    --storage-version v1.5.0` writes a copy for a DuckDB 1.5 server. From the CLI:

    \b
      ATTACH 'quack:127.0.0.1:9494' AS reg (TOKEN '...');
      CONNECT reg;                                   -- DuckDB 2.0: plain SQL runs on the server
      FROM reg.query('SELECT MODEL(INPUT) FROM t');  -- DuckDB 1.5: each statement as a string

    The banner shows a call of one of the database's own models. Parameters by name and table
    functions are in the models catalog: models.MODEL(INPUT, PARAM := VALUE), FROM
    models.MODEL_table('t'); `duckreg functions MODEL` lists a model's inputs and parameters.
    """
    import duckdb

    from duckreg.serve import ServeError, Server, stop_requested

    database = _one_database(database, db_option)
    if database is None:
        raise click.UsageError(f"Give the database to serve (duckreg serve FILE, --db FILE or ${DB_ENV}).")
    if not quack and not (http_port or ui_port):
        raise click.UsageError("--no-quack serves nothing by itself: give --http PORT or --ui-port PORT.")
    from duckreg.http_server import HttpSettings

    http_settings = HttpSettings(token=token, max_body_bytes=int(max_body_mb * 1024 * 1024),
                                 batch_window=batch_window_ms / 1000, batch_max_rows=batch_max_rows)  # fmt: skip
    if not quack:
        _serve_without_quack(database, host, http_port, ui_port, read_only, http_settings)
        return
    server = Server(database, host=host, port=port, token=token, read_only=read_only)
    with stop_requested() as stop:
        try:
            server.start()
        except (ServeError, duckdb.Error) as exc:
            fail(str(exc))
            sys.exit(1)
        if client_init:
            Path(client_init).write_text(server.client_init())
        click.echo(_serve_banner(server, database, token is not None))
        if client_init:
            click.echo(f"Client init file: duckdb -init {client_init}")
        page = (
            _serve_ui(server.registry, host, ui_port, read_only, server.token, token is not None) if ui_port else None
        )
        http_settings.token = server.token
        api = _serve_http(server.registry, host, http_port, http_settings, token is not None) if http_port else None
        click.echo("Ctrl-C stops the server.")
        sys.stdout.flush()
        try:
            server.wait(stop)
        finally:
            _stop_all(api, page)
    click.echo("Server stopped.")


def _serve_without_quack(
    database: str, host: str, http_port: int | None, ui_port: int | None, read_only: bool, settings: Any
) -> None:
    """``duckreg serve --no-quack``: the HTTP door and/or the UI over the database, until Ctrl-C or SIGTERM,
    which let the requests in flight finish."""
    from duckreg.duckdb_ext.connections import open_database
    from duckreg.registry import Registry
    from duckreg.serve import require_token_off_loopback, stop_requested

    try:
        require_token_off_loopback(host, settings.token, "Serving", ValueError)
    except ValueError as exc:
        fail(str(exc))
        sys.exit(1)
    with stop_requested() as stop:
        registry = Registry(open_database(database, read_only=read_only))
        token_given = settings.token is not None
        page = _serve_ui(registry, host, ui_port, read_only, settings.token, token_given) if ui_port else None
        api = _serve_http(registry, host, http_port, settings, token_given) if http_port else None
        click.echo("Ctrl-C stops the server.")
        sys.stdout.flush()
        try:
            while not stop.wait(0.5):  # woken often, so Ctrl-C and SIGTERM are seen at once
                pass
        finally:
            _stop_all(api, page)
            registry.connection.close()
    click.echo("Server stopped.")


def _stop_all(*running: Any) -> None:
    """Stop the servers that started (None: one that did not), each after its requests in flight."""
    for server in running:
        if server is not None:
            server.stop()


def _serve_http(registry: Any, host: str, port: int, settings: Any, token_given: bool) -> Any:
    """The HTTP door beside the server, its access log on stderr; None (having said why) when it cannot start."""
    import logging

    from duckreg import http_server

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    http_server.LOG.addHandler(handler)
    http_server.LOG.setLevel(logging.INFO)
    try:
        api = http_server.start(registry, host=host, port=port, settings=settings)
    except (ImportError, OSError, RuntimeError, ValueError) as exc:
        fail(f"Cannot serve HTTP on port {port}: {exc}")
        return None
    token = "" if settings.token is None else " (token: " + ("from --token" if token_given else settings.token) + ")"
    click.echo(f"HTTP at {api.url}/v1 (OpenAI-compatible) and {api.url}/models/<model>/versions/<v>/invocations{token}")
    return api


def _serve_banner(server: Any, database: str, token_given: bool) -> str:
    """What a client needs: the address, the DuckDB version to match, the token, and a call to paste."""
    import duckdb

    given = "the token from --token or --token-file" if token_given else f"this token: {server.token}"
    example = _example_call(server.registry)
    if duckdb.__version__.startswith("1."):
        run_there = f"  FROM reg.query('SELECT {example.replace(chr(39), chr(39) * 2)}');"
    else:
        run_there = f"  CONNECT reg;\n  SELECT {example};"
    return (
        f"Serving {database} ({server.model_count} models) at {server.uri}, "
        f"ready in {server.startup_seconds:.2f} s.\n"
        f"Clients need DuckDB {duckdb.__version__} (the CLI and its quack extension) and {given}\n"
        f"  ATTACH '{server.uri}' AS reg (TOKEN '...');\n"
        f"{run_there}"
    )


def _serve_ui(registry: Any, host: str, port: int, read_only: bool, token: str | None, token_given: bool) -> Any:
    """The UI beside the server, on the server's token; None (having said why) when it cannot start."""
    from duckreg import ui as web

    try:
        page = web.start(registry, host=host, port=port, read_only=read_only, token=token)
    except (ImportError, OSError, RuntimeError, ValueError) as exc:
        fail(f"Cannot serve the UI on port {port}: {exc}")
        return None
    click.echo(f"UI at {page.url if not token_given else page.url.split('?')[0] + '?token=...'}")
    return page


def _example_call(registry: Any) -> str:
    """A call of one of the registry's models with its first input named, for the banner (or a placeholder)."""
    for model in registry.models():
        first_input = model.default.show_functions()[0]["signature"].inputs[0].name
        return f"{model.name}({first_input}) FROM your_table"
    return "1 -- (no models logged yet)"


@main.command()
@click.argument("database")
@click.argument("target")
@click.option("--storage-version", help="Write the copy in this DuckDB file format, e.g. v1.5.0 for DuckDB 1.5.")
def snapshot(database: str, target: str, storage_version: str | None) -> None:
    """Copy DATABASE's registry to TARGET, a consistent copy that shares the artifact folders.

    Readers open the copy while a writer keeps the original; with --storage-version v1.5.0 a DuckDB 1.5
    process (`duckreg serve` for the DuckDB 1.5 CLI) can open it too.
    """
    session = _open(database)

    def do() -> None:
        written = session.registry.snapshot(target, storage_version=storage_version)
        click.echo(f"Wrote {written}" + (f" (DuckDB storage {storage_version})" if storage_version else ""))

    _guard(do, session)


@main.command()
@click.argument("database", required=False)
@db_or_argument
@listening_options(9595, "browsers")
@click.option("--read-only", is_flag=True, help="Open the database read-only and hide every write action.")
def ui(database: str | None, db_option: str | None, host: str, port: int, token: str | None, read_only: bool) -> None:
    """Browse DATABASE's models, versions, metrics, jobs and stages in a web browser, and try the models.

    Works offline (every asset ships with duckreg). Loopback only unless --host is given, which needs
    --token: then open the printed address, which carries the token once.
    """
    try:
        from duckreg import ui as web
        from duckreg.ui import app  # noqa: F401 - fails here, with the hint, when the web libraries are missing
    except ImportError as exc:
        fail(f"duckreg ui needs its web libraries ({exc}): pip install 'duckreg[ui]'")
        sys.exit(1)

    database = _one_database(database, db_option)
    if database is None:
        raise click.UsageError(f"Give the database to browse (duckreg ui FILE, --db FILE or ${DB_ENV}).")
    if database != ":memory:" and not Path(database).exists():
        fail(f"No database file {database}: give the path of an existing DuckDB database.")
        sys.exit(1)
    from duckreg.serve import require_token_off_loopback

    try:
        require_token_off_loopback(host, token, "The UI", ValueError)
    except ValueError as exc:
        fail(str(exc))
        sys.exit(1)
    session = _open(database, read_only=read_only)
    try:
        web.serve(session.registry, host=host, port=port, read_only=read_only, token=token,
                  announce=lambda line: (click.echo(line), sys.stdout.flush()))  # fmt: skip
    except OSError as exc:
        fail(f"Cannot listen on {host}:{port}: {exc.strerror or exc}")
        sys.exit(1)
    finally:
        session.close()
    click.echo("UI stopped.")


@main.command("jobs")
@click.argument("action", type=click.Choice(["list", "show", "logs", "cancel"]), default="list")
@click.argument("job", required=False)
@db_option
@format_option
def jobs_command(action: str, job: str | None, database: str | None, fmt: str) -> None:
    """Batch jobs: `list` (the newest 20), `show JOB`, `logs JOB`, `cancel JOB`.

    A job runs in the process that started it (a Python process, a notebook, `duckreg shell`), and
    only that process can cancel it; a job whose process exited reads as CANCELLED (or FAILED, when the
    process died) and resumes when the same run_batch runs again.
    """
    from duckreg.shell import job_command

    if (action == "list") != (job is None):
        raise click.UsageError("list takes no JOB; show, logs and cancel take one.")
    session = _open(database, read_only=True)
    _guard(lambda: job_command(session, [action, *([job] if job else [])], _mode(fmt)), session)


@main.command("stages")
@click.argument("action", type=click.Choice(["list", "create", "drop"]), default="list")
@click.argument("name", required=False)
@click.argument("url", required=False)
@click.option("--comment")
@db_option
@format_option
def stages_command(
    action: str, name: str | None, url: str | None, comment: str | None, database: str | None, fmt: str
) -> None:
    """Stages, the named folders batch jobs read and write: `list`, `create NAME FOLDER_OR_URL`, `drop NAME`.

    \b
      duckreg stages create lake ./lake --db shop.duckdb    # @lake/... in run_batch and stage_files
    A relative folder is taken from the current directory; its files stay when the stage is dropped.
    """
    from duckreg.tables import render_frame

    wanted = {"list": (False, False), "create": (True, True), "drop": (True, False)}[action]
    if (name is not None, url is not None) != wanted:
        raise click.UsageError("list takes no arguments, create takes NAME and FOLDER_OR_URL, drop takes NAME.")
    session = _open(database, read_only=action == "list")

    def do() -> None:
        registry = session.registry
        if action == "create":
            target = url if "://" in url else str(Path(url).expanduser().resolve())
            click.echo(f"Created {registry.create_stage(name, target, comment=comment)} at {target}")
        elif action == "drop":
            registry.drop_stage(name)
            click.echo(f"Dropped @{name} (its files are kept)")
        else:
            render_frame(registry.show_stages().astype("string"), _mode(fmt))

    _guard(do, session)


@main.group("index")
def index_group() -> None:
    """Semantic indexes: a table column's embeddings, kept in the database and searched by meaning.

    \b
      duckreg index create docs_idx --table docs --column body --key id --model minilm --db shop.duckdb
      duckreg index search docs_idx "what is the man eating?" -k 5 --db shop.duckdb
    In SQL: FROM docs_idx_search('what is the man eating?', k := 5).
    """


@index_group.command("create")
@click.argument("name")
@click.option("--table", required=True, help="The table whose column is indexed.")
@click.option("--column", required=True, help="The text column to embed.")
@click.option("--key", required=True, help="The column that identifies a row (unique, not NULL).")
@click.option("--model", "model_name", required=True, help="The embedding model.")
@click.option("--version", "version_name", help="A version or alias (the model's default when left out).")
@click.option("--no-refresh", is_flag=True, help="Create it empty; `duckreg index refresh` embeds the rows.")
@db_option
def index_create(
    name: str, table: str, column: str, key: str, model_name: str, version_name: str | None, no_refresh: bool,
    database: str | None,
) -> None:  # fmt: skip
    """Create index NAME over TABLE.COLUMN and embed every row (one transaction)."""
    session = _open(database)

    def do() -> None:
        index = session.registry.create_index(name, table=table, column=column, key=key, model=model_name,
                                              version=version_name, refresh=not no_refresh)  # fmt: skip
        shown = index.show()
        click.echo(f"Created {shown['name']}: {shown['rows']} rows by {shown['model']} version {shown['version']}; "
                   f"SQL {shown['search']}(query, k := 10)")  # fmt: skip

    _guard(do, session)


@index_group.command("refresh")
@click.argument("name")
@db_option
def index_refresh(name: str, database: str | None) -> None:
    """Embed rows that are new or changed since the last refresh and drop deleted ones (one transaction)."""
    session = _open(database)

    def do() -> None:
        counts = session.registry.get_index(name).refresh()
        click.echo(", ".join(f"{what} {count}" for what, count in counts.items()))

    _guard(do, session)


@index_group.command("search")
@click.argument("name")
@click.argument("query")
@click.option("-k", "k", type=int, default=10, show_default=True, help="How many rows.")
@click.option("--filter", "condition", help="A SQL condition on the table's columns, applied before ranking.")
@click.option(
    "--mode",
    type=click.Choice(["vector", "keyword", "hybrid"]),
    default="vector",
    show_default=True,
    help="Rank by meaning, by BM25 over the words (needs fts), or both fused by reciprocal rank fusion.",
)
@click.option(
    "--vector-weight", type=float, default=1.0, show_default=True, help="The vector ranking's weight (hybrid)."
)
@click.option(
    "--keyword-weight", type=float, default=1.0, show_default=True, help="The BM25 ranking's weight (hybrid)."
)
@db_option
@format_option
def index_search(
    name: str, query: str, k: int, condition: str | None, mode: str, vector_weight: float, keyword_weight: float,
    database: str | None, fmt: str,
) -> None:  # fmt: skip
    """The K rows of the indexed table that best match QUERY, with their scores."""
    from duckreg.tables import render_frame

    session = _open(database, read_only=True)
    index = session.registry.get_index
    _guard(lambda: render_frame(index(name).search(query, k, filter=condition, mode=mode, vector_weight=vector_weight,
                                                   keyword_weight=keyword_weight), _mode(fmt)), session)  # fmt: skip


@index_group.command("list")
@db_option
@format_option
def index_list(database: str | None, fmt: str) -> None:
    """Every index with its table, column, model version, rows and last refresh."""
    from duckreg.tables import render_frame

    session = _open(database, read_only=True)
    _guard(lambda: render_frame(session.registry.show_indexes().astype("string"), _mode(fmt)), session)


@index_group.command("compare")
@click.argument("name")
@click.argument("version")
@click.option("--sample", type=int, default=2000, show_default=True, help="Rows compared (0: every row).")
@db_option
def index_compare(name: str, version: str, sample: int, database: str | None) -> None:
    """How many of each row's ten nearest rows would change if NAME moved to VERSION (nothing is changed)."""
    import json

    session = _open(database, read_only=True)
    _guard(lambda: click.echo(json.dumps(session.registry.get_index(name).compare(version, sample=sample or None),
                                         indent=2)), session)  # fmt: skip


@index_group.command("switch")
@click.argument("name")
@click.argument("version")
@db_option
def index_switch(name: str, version: str, database: str | None) -> None:
    """Re-embed every row of NAME with VERSION and switch to it in one transaction."""
    session = _open(database)

    def do() -> None:
        counts = session.registry.get_index(name).switch_version(version)
        click.echo(f"{name} now holds version {version}'s vectors: {counts['embedded']} rows")

    _guard(do, session)


@index_group.command("drop")
@click.argument("name")
@db_option
def index_drop(name: str, database: str | None) -> None:
    """Delete index NAME and its vectors (the table is untouched)."""
    session = _open(database)
    _guard(lambda: (session.registry.drop_index(name), click.echo(f"Dropped {name}")), session)


@main.group()
def cache() -> None:
    """The result cache of deterministic model functions (results.sqlite in the artifact folder)."""


@cache.command("stats")
@db_option
def cache_stats(database: str | None) -> None:
    """Show the cache's size, bound, hits and misses, and its entries per model version."""
    import pandas as pd

    from duckreg.tables import render_frame
    from duckreg.values import human_size

    session = _open(database, read_only=True)
    stats = session.registry.result_cache.stats()
    click.echo(f"{stats['path']}")
    click.echo(
        f"entries {stats['entries']}, {human_size(stats['bytes'])} of {human_size(stats['max_bytes'])}, "
        f"hits {stats['hits']}, misses {stats['misses']}"
    )
    if stats["versions"]:
        render_frame(pd.DataFrame(stats["versions"]))


@cache.command("clear")
@click.option("--model", "model_name", help="Clear only this model's results.")
@db_option
def cache_clear(model_name: str | None, database: str | None) -> None:
    """Delete cached results (every model's, or one model's)."""
    session = _open(database)
    _guard(lambda: click.echo(f"{session.registry.result_cache.clear(model_name)} results removed"), session)


def _guard(action: Any, session: Any = None) -> None:
    """Run a command's action: its failure is one error line and exit status 1; the session is closed either way."""
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - exit status carries the failure
        fail(str(exc))
        sys.exit(1)
    finally:
        if session is not None:
            session.close()


if __name__ == "__main__":
    main()
