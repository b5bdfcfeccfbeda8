"""The duckreg shell: DuckDB's shell as its users know it, with every model callable.

Results are drawn by ``duckreg.tables``, as the ``duckdb`` CLI draws them. Line editing, history
and completion (keywords, tables, columns, functions and every model function) come from
prompt_toolkit. Ctrl-C during a statement interrupts the query through DuckDB, never inside Python
code that is running (a first model call may be importing torch); at the prompt it clears the line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import duckdb

from duckreg import interrupts
from duckreg.duckdb_ext.types import feature_types, output_types, param_type
from duckreg.tables import MAX_ROWS, MODES, render, render_frame, terminal_width

# Statements whose result is printed (as the DuckDB shell does); others run silently.
QUERIES = frozenset({"SELECT", "WITH", "FROM", "VALUES", "SHOW", "DESCRIBE", "SUMMARIZE", "PRAGMA", "EXPLAIN",
                     "CALL", "TABLE", "PIVOT", "UNPIVOT"})  # fmt: skip
HISTORY_ENV = "DUCKREG_HISTORY"
HELP = """\
.help                        this list
.mode [MODE]                 show or set the output mode: duckbox, box, csv, json, markdown, line
.timer on|off                print how long each statement takes
.read FILE                   run the statements and dot-commands in FILE
.models                      logged models
.versions MODEL              versions of a model
.functions MODEL [VERSION]   SQL functions and signatures
.tables                      tables and views (the registry's own tables are left out)
.schema [PATTERN]            their CREATE statements (names matching the LIKE pattern)
.open [--readonly] [FILE]    close this database and open FILE (a new in-memory one without)
.maxrows N                   rows duckbox shows (the first and last halves; 40 by default)
.jobs [list|show|logs|cancel] [JOB]
                             batch jobs: the newest, one job's state, its log, or cancel one run here
.quit                        leave the shell"""


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

    def execute(self, statement: str) -> duckdb.DuckDBPyRelation | None:
        """One statement; a query's rows as a relation that runs when it is read (rendered), or None
        for other statements, which run here."""
        first = statement.lstrip("( \n\t").split(None, 1)[0].upper() if statement.strip() else ""
        if first not in QUERIES:
            self.run(statement)
            return None
        return self.con.sql(self.prepare(statement))

    def run(self, statement: str) -> None:
        """Run one statement whose rows nobody reads (a query's are fetched and dropped)."""
        self.con.execute(self.prepare(statement)).fetchall()

    def close(self) -> None:
        """Close the database once the background jobs this process started have stopped (they use it)."""
        from duckreg import jobs

        jobs.stop_background_jobs()
        self.con.close()


def split_statements(script: str) -> Iterator[tuple[int, str]]:
    """(line, statement) for each ``;``-terminated statement, honouring quotes and comments.

    The line is where the statement's first token is; comments before it are not part of it.
    """
    line, i = 1, 0
    begin: int | None = None
    begin_line = 1
    quote_char: str | None = None
    while i < len(script):
        ch = script[i]
        if quote_char:
            if ch == quote_char:
                quote_char = None
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
                quote_char = ch
        elif ch in ("'", '"'):
            quote_char = ch
        if ch == "\n":
            line += 1
        i += 1
    if begin is not None and script[begin:].strip():
        yield begin_line, script[begin:].strip()


# ------------------------------------------------------------------------------------ interrupts
@contextmanager
def interrupt_on_ctrl_c(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """While a statement runs, Ctrl-C asks DuckDB to interrupt it instead of raising in Python.

    A KeyboardInterrupt raised inside a model call could land in the middle of ``import torch`` and
    leave the module half-initialised for the rest of the process. Instead DuckDB is interrupted and
    the model calls of the statement stop before their next forward batch (``duckreg.interrupts``);
    a model being loaded finishes loading first.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(*_: Any) -> None:
        interrupts.request()
        con.interrupt()

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        with interrupts.statement_interrupt():
            yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------------------------------ shell
class Shell:
    """Statements and dot-commands, fed line by line from a terminal, a pipe, ``-c`` or ``.read``."""

    def __init__(self, session: Session, *, mode: str = "duckbox", out: TextIO | None = None) -> None:
        self.session = session
        self.mode = mode
        self.timer = False
        self.max_rows = MAX_ROWS
        self.out = out or sys.stdout
        self.failures = 0
        self.buffer: list[str] = []
        self._words: list[str] | None = None

    def feed(self, line: str) -> bool:
        """One input line; False when it asks to leave the shell."""
        if not self.buffer and line.strip().startswith("."):
            return self.dot_command(line.strip())
        self.buffer.append(line)
        text = "\n".join(self.buffer)
        if not text.rstrip().endswith(";"):
            return True
        self.buffer = []
        for _, statement in split_statements(text):
            self.failures += not self.run_statement(statement)
        return True

    def run_text(self, text: str) -> bool:
        """Several lines (``-c``, ``.read``); an unterminated last statement runs as well."""
        for line in text.splitlines():
            if not self.feed(line):
                return False
        return self.finish()

    def finish(self) -> bool:
        """Run a last statement its input left without ``;`` (as the DuckDB shell does at end of input)."""
        if self.buffer and "".join(self.buffer).strip():
            return self.feed(";")
        return True

    def run_statement(self, statement: str) -> bool:
        """Run and print one statement; errors are reported and the shell goes on."""
        started, cpu = time.perf_counter(), os.times()
        self._words = None
        try:
            with interrupt_on_ctrl_c(self.session.con):
                relation = self.session.execute(statement)
                if relation is not None:
                    render(relation, self.mode, self.out, self.max_rows)
        except Exception as exc:  # noqa: BLE001 - the shell reports every error and goes on
            self.out.flush()
            fail(interrupts.describe(exc))
            return False
        finally:
            if self.timer:
                now = os.times()
                self.out.write(
                    f"Run Time (s): real {time.perf_counter() - started:.3f} user {now.user - cpu.user:.6f} "
                    f"sys {now.system - cpu.system:.6f}\n"
                )
        return True

    def dot_command(self, line: str) -> bool:
        """A dot-command; False for ``.quit``."""
        parts = line.split()
        command, args = parts[0].lower(), parts[1:]
        if command in (".quit", ".exit", ".q"):
            return False
        try:
            outcome = self._session_command(command, args)
            if outcome is None:
                outcome = self._catalog_command(command, args)
        except Exception as exc:  # noqa: BLE001 - report and stay in the shell
            fail(str(exc))
            self.failures += 1
            return True
        if outcome is None:
            fail(f"unknown command or arguments {line!r}; .help lists the commands")
            self.failures += 1
            return True
        return outcome

    def _session_command(self, command: str, args: list[str]) -> bool | None:
        """The commands that set up the session; True when done, False to quit, None when none fits."""
        if command == ".help":
            self.out.write(HELP + "\n")
        elif command == ".mode":
            self._set_mode(args)
        elif command == ".timer" and len(args) == 1 and args[0].lower() in ("on", "off"):
            self.timer = args[0].lower() == "on"
        elif command == ".read" and len(args) == 1:
            return self.run_text(Path(args[0]).expanduser().read_text())
        elif command == ".maxrows" and len(args) == 1 and args[0].isdigit() and int(args[0]) > 0:
            self.max_rows = int(args[0])
        elif command == ".open" and len(args) <= 2 and (len(args) < 2 or args[0] == "--readonly"):
            self._open(
                args[-1] if args and args[-1] != "--readonly" else None,
                read_only=bool(args) and args[0] == "--readonly",
            )
        else:
            return None
        return True

    def _catalog_command(self, command: str, args: list[str]) -> bool | None:
        """The commands that show what the database holds; True when done, None when none fits."""
        if command == ".models":
            print_models(self.session, self.mode, self.out)
        elif command == ".versions" and len(args) == 1:
            print_versions(self.session, args[0], self.mode, self.out)
        elif command == ".functions" and len(args) in (1, 2):
            print_functions(self.session, args[0], args[1] if len(args) == 2 else None, self.out, self.mode)
        elif command == ".schema" and len(args) <= 1:
            self._schema(args[0] if args else None)
        elif command == ".tables":
            self._tables()
        elif not (command == ".jobs" and job_command(self.session, args, self.mode, self.out)):
            return None
        return True

    def _schema(self, pattern: str | None) -> None:
        """The CREATE statements of tables and views (names matching the LIKE ``pattern``), as DuckDB's ``.schema``;
        the registry's own tables are left out."""
        schema = self.session.registry.schema_name
        rows = self.session.con.execute(
            "SELECT sql FROM (SELECT schema_name, table_name AS name, sql FROM duckdb_tables() WHERE NOT internal "
            "UNION ALL SELECT schema_name, view_name, sql FROM duckdb_views() WHERE NOT internal) "
            "WHERE schema_name <> ? AND (? IS NULL OR name ILIKE ?) ORDER BY schema_name, name",
            [schema, pattern, pattern],
        ).fetchall()
        for (sql,) in rows:
            self.out.write(sql.rstrip().rstrip(";") + ";\n")

    def _open(self, database: str | None, *, read_only: bool) -> None:
        """Leave this database for ``database`` (a new in-memory one when None); on failure stay where we are."""
        opened = Session(database, read_only=read_only)
        self.session.close()
        self.session = opened
        self._words = None
        self.out.write(f"Opened {opened.database}" + (" (read-only)" if read_only else "") + "\n")

    def _set_mode(self, args: list[str]) -> None:
        if not args:
            self.out.write(f"current output mode: {self.mode}\n")
        elif args[0].lower() in MODES:
            self.mode = args[0].lower()
        else:
            raise ValueError(f"unknown mode {args[0]!r}: choose one of {', '.join(MODES)}")

    def _tables(self) -> None:
        """Table and view names in columns, as DuckDB's ``.tables``, without the registry's own tables."""
        registry = self.session.registry
        names = [r[0] for r in self.session.con.execute(
            "SELECT CASE WHEN schema_name = 'main' THEN name ELSE schema_name || '.' || name END AS shown "
            "FROM (SELECT database_name, schema_name, table_name AS name FROM duckdb_tables() "
            "      WHERE NOT internal AND NOT temporary "
            "      UNION ALL SELECT database_name, schema_name, view_name FROM duckdb_views() "
            "      WHERE NOT internal AND NOT temporary) "
            "WHERE NOT (database_name = ? AND schema_name = ?) ORDER BY shown",
            [registry.database_name, registry.schema_name],
        ).fetchall()]  # fmt: skip
        if names:
            width = max(len(n) for n in names) + 2
            per_line = max(1, terminal_width(self.out) // width)
            for start in range(0, len(names), per_line):
                self.out.write("".join(n.ljust(width) for n in names[start : start + per_line]).rstrip() + "\n")

    # ------------------------------------------------------------------------------- completion
    def completion_words(self) -> list[str]:
        """Keywords, tables, views, columns, functions and every model function (refreshed after statements)."""
        if self._words is None:
            schema = self.session.registry.schema_name
            rows = self.session.con.execute(
                "SELECT keyword_name FROM duckdb_keywords() "
                "UNION SELECT table_name FROM duckdb_tables() WHERE schema_name <> ? "
                "UNION SELECT view_name FROM duckdb_views() WHERE NOT internal "
                "UNION SELECT column_name FROM duckdb_columns() WHERE schema_name <> ? "
                "UNION SELECT function_name FROM duckdb_functions() WHERE NOT starts_with(function_name, '_')",
                [schema, schema],
            ).fetchall()
            words = {r[0] for r in rows} | set(self.session.registry.function_names())
            self._words = sorted(words, key=str.lower)
        return self._words


def fail(message: str) -> None:
    """An error line on stderr, as every duckreg command (and the shell) reports one."""
    import click

    click.echo(click.style("Error: ", fg="red", bold=True) + message, err=True)


def print_models(session: Session, mode: str = "duckbox", out: TextIO | None = None) -> None:
    """The logged models, in the columns a reader needs first (``registry.show_models()`` has them all)."""
    frame = session.registry.show_models()
    columns = {"name": "name", "default_version": "default_version_name", "versions": "versions",
               "comment": "comment", "created_on": "created_on"}  # fmt: skip
    _render_listing(frame, columns, mode, out)


def print_versions(session: Session, model: str, mode: str = "duckbox", out: TextIO | None = None) -> None:
    """A model's versions with their aliases (``Model.show_versions()`` has every column)."""
    frame = session.registry.get_model(model).show_versions()
    columns = {"name": "name", "aliases": "aliases", "comment": "comment", "created_on": "created_on"}
    _render_listing(frame, columns, mode, out)


def _render_listing(frame: Any, columns: dict[str, str], mode: str, out: TextIO | None) -> None:
    """Registry listing columns (shown name -> frame column) as text: lists joined, times to the minute."""
    import pandas as pd

    def readable(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return ", ".join(map(str, value))
        if value is None or (isinstance(value, float) and value != value):
            return ""
        return str(value)[:16] if isinstance(value, pd.Timestamp) else str(value)

    listing = pd.DataFrame(
        {shown: [readable(v) for v in frame[source]] for shown, source in columns.items()}, dtype="string"
    )
    render_frame(listing, mode, out)


def print_functions(session: Session, model: str, version: str | None, out: TextIO, mode: str = "duckbox") -> None:
    """A version's functions: each input, output and parameter with its DuckDB type, then the SQL names."""
    import pandas as pd

    handle = session.registry.get_model(model)
    mv = handle.version(version) if version else handle.default
    rows = []
    for function in mv.function_specs():
        for spec in function.signature.inputs:
            not_null = "NOT NULL" if not getattr(spec, "nullable", True) else ""
            rows.append((function.name, "input", spec.name, feature_types(spec, shape=spec.shape)[0], not_null))
        for spec, (sql_type, _) in zip(function.signature.outputs, output_types(function), strict=True):
            rows.append((function.name, "output", spec.name, sql_type, ""))
        for param in function.signature.params:
            default = json.dumps(param.default_value, default=str)
            rows.append((function.name, "param", param.name, param_type(param), f"default {default}"))
    columns = ["function", "kind", "name", "type", "detail"]
    render_frame(pd.DataFrame(rows, columns=columns, dtype="string"), mode, out)
    names = ", ".join(mv.sql_names())
    if mode == "duckbox":
        out.write(f"SQL: {names}" + ("" if version else f" (default version: {handle.name}(...))") + "\n")


def job_command(session: Session, args: list[str], mode: str = "duckbox", out: TextIO | None = None) -> bool:
    """``.jobs`` and ``duckreg jobs``: list, show JOB, logs JOB, cancel JOB; False for other arguments."""
    from duckreg import jobs

    out = out or sys.stdout
    action, names = (args[0].lower(), args[1:]) if args else ("list", [])
    if action == "list" and not names:
        records = jobs.job_records(session.registry, 20)
        columns = ["name", "status", "model_name", "version_name", "rows_done", "rows_total", "output_location",
                   "created_time"]  # fmt: skip
        import pandas as pd

        frame = pd.DataFrame(records, columns=columns)
        columns_shown = {c if c not in ("model_name", "version_name") else c.split("_")[0]: c for c in columns}
        _render_listing(frame, columns_shown, mode, out)
        return True
    if len(names) != 1 or action not in ("show", "logs", "cancel"):
        return False
    job = jobs.find_job(session.registry, names[0])
    if action == "logs":
        out.write(job.get_logs() + "\n")
    elif action == "cancel":
        job.cancel()
        out.write(f"{job.name}: {job.status}\n")
    else:
        record = jobs.job_records(session.registry, name=job.name)[0]
        done, total = record["rows_done"], record["rows_total"]
        fields = {"name": record["name"], "status": record["status"], "message": record["message"],
                  "model": f"{record['model_name']} version {record['version_name']}",
                  "function": record["function_name"], "engine": record["engine"],
                  "output": record["output_location"],
                  "rows": f"{done} of {total if total is not None else '?'}"
                          + (f", {record['rows_failed']} failed" if record["rows_failed"] else ""),
                  "created": record["created_time"], "completed": record["completed_time"]}  # fmt: skip
        for key, value in fields.items():
            out.write(f"{key:>9}: {'' if value is None else value}\n")
    return True


# -------------------------------------------------------------------------------------- terminal
def interactive(shell: Shell, banner: str) -> None:
    """The prompt loop on a terminal: line editing, history, completion; Ctrl-C clears, Ctrl-D leaves."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.completion import WordCompleter
    from prompt_toolkit.history import FileHistory

    history = Path(os.environ.get(HISTORY_ENV, Path.home() / ".duckreg_history"))
    try:
        history.touch(exist_ok=True)
        stored: Any = FileHistory(str(history))
    except OSError:
        from prompt_toolkit.history import InMemoryHistory

        stored = InMemoryHistory()
    completer = WordCompleter(shell.completion_words, ignore_case=True, WORD=False)
    prompt: PromptSession = PromptSession(history=stored, completer=completer, complete_while_typing=False)
    shell.out.write(banner + "\n")
    while True:
        try:
            line = prompt.prompt("D " if not shell.buffer else "· ")
        except KeyboardInterrupt:
            shell.buffer = []
            continue
        except EOFError:
            break
        if not shell.feed(line):
            break


def piped(shell: Shell, lines: Callable[[], str]) -> None:
    """Lines from a pipe or file, without a prompt (``duckreg shell db < script.sql``)."""
    while True:
        line = lines()
        if not line:
            break
        if not shell.feed(line.rstrip("\n")):
            return
    shell.finish()
