"""Batch jobs: handles, listing, lookup and deletion, with state and logs kept in the catalog.

A job runs in a background thread of the process that started it (or blocks, with
``JobSpec(block=True)``). A job left RUNNING by a process that no longer exists reads as FAILED;
running the same ``run_batch`` again resumes it from the parts already written.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from duckreg.artifacts import process_alive
from duckreg.catalog import Catalog

if TYPE_CHECKING:
    from duckreg.store import RegistryStore

PENDING, RUNNING, DONE, FAILED, CANCELLING, CANCELLED = (
    "PENDING",
    "RUNNING",
    "DONE",
    "FAILED",
    "CANCELLING",
    "CANCELLED",
)
TERMINAL = frozenset({DONE, FAILED, CANCELLED})

# Jobs running in this process: job key -> (thread, cancel event).
_ACTIVE: dict[str, tuple[threading.Thread | None, threading.Event]] = {}
_ACTIVE_LOCK = threading.Lock()
_CANCEL_REASONS: dict[str, str] = {}


def track(key: str, thread: threading.Thread | None, cancel: threading.Event) -> None:
    """Record a job as running in this process (``thread`` None: it runs in the caller's thread)."""
    with _ACTIVE_LOCK:
        _ACTIVE[key] = (thread, cancel)


def untrack(key: str, cancel: threading.Event) -> None:
    """The run of a job whose cancel event is ``cancel`` no longer runs in this process (a later run of the same
    job, started while this one was winding down, stays tracked)."""
    with _ACTIVE_LOCK:
        entry = _ACTIVE.get(key)
        if entry is not None and entry[1] is cancel:
            del _ACTIVE[key]
            _CANCEL_REASONS.pop(key, None)


def cancel_here(key: str, reason: str = "Cancelled.") -> bool:
    """Ask a job running in this process to stop before its next forward batch; False if none runs here.

    ``reason`` becomes the job's message once it has stopped.
    """
    with _ACTIVE_LOCK:
        entry = _ACTIVE.get(key)
        if entry is None:
            return False
        _CANCEL_REASONS.setdefault(key, reason)
    entry[1].set()
    return True


def cancel_reason(key: str) -> str:
    """Why a cancelled job was stopped (its message), forgotten once read."""
    with _ACTIVE_LOCK:
        return _CANCEL_REASONS.pop(key, "Cancelled.")


def stop_background_jobs() -> None:
    """Cancel and wait for the jobs this process runs in background threads (called as it exits).

    A background job lives only as long as its process: each one stops before its next forward
    batch and reads CANCELLED with the reason, instead of being killed half-way in a daemon thread
    (which could take the process down in native code while it exits).
    """
    with _ACTIVE_LOCK:
        running = [(key, thread) for key, (thread, _) in _ACTIVE.items() if thread is not None and thread.is_alive()]
    for key, _ in running:
        cancel_here(
            key,
            "Cancelled: the process that ran it exited (run_batch_async and block=False jobs run only as long as "
            "their process). Run the same run_batch again to resume from the parts already written.",
        )
    for key, thread in running:
        print(f"duckreg: stopping batch job {key} before this process exits ...", file=sys.stderr)
        thread.join()


def _active(key: str) -> tuple[threading.Thread | None, threading.Event] | None:
    with _ACTIVE_LOCK:
        return _ACTIVE.get(key)


class Job:
    """A handle on one batch job (like ``snowflake.ml.jobs.MLJob``)."""

    def __init__(self, catalog: Catalog, name: str) -> None:
        self._catalog = catalog
        self._key = name.lower()
        self._name = self._row("name")

    def _row(self, column: str) -> Any:
        rows = self._catalog.query(f"SELECT {column} FROM {{schema}}.jobs WHERE job_key = ?", [self._key])
        if not rows:
            raise ValueError(f"Job {self._key} does not exist or not authorized.")
        return rows[0][0]

    @property
    def name(self) -> str:
        return self._name

    @property
    def id(self) -> str:
        return f"{self._catalog.database_name}.{self._catalog.schema_name}.{self._name}"

    @property
    def output_location(self) -> str:
        return self._row("output_location")

    @property
    def status(self) -> str:
        """PENDING, RUNNING, DONE, FAILED, CANCELLING or CANCELLED."""
        return self._state()[0]

    @property
    def message(self) -> str | None:
        return self._state()[1]

    def _state(self) -> tuple[str, str | None]:
        rows = self._catalog.query(
            "SELECT status, message, pid, host FROM {schema}.jobs WHERE job_key = ?", [self._key]
        )
        if not rows:
            raise ValueError(f"Job {self._key} does not exist or not authorized.")
        return _effective_state(self._key, *rows[0])

    @property
    def progress(self) -> tuple[int, int | None]:
        """(rows written, rows in total)."""
        done, total = self._catalog.query(
            "SELECT rows_done, rows_total FROM {schema}.jobs WHERE job_key = ?", [self._key]
        )[0]
        return int(done or 0), total

    def wait(self, timeout: float = -1) -> str:
        """Block until the job ends and return its status; ``TimeoutError`` past ``timeout`` seconds."""
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        delay = 0.05
        while True:
            status = self.status
            if status in TERMINAL:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Job {self._name} did not complete within {timeout} seconds")
            entry = _active(self._key)
            pause = delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic()))
            if entry is not None and entry[0] is not None:
                entry[0].join(pause)
            else:
                time.sleep(pause)
            delay = min(delay * 1.5, 2.0)

    def get_logs(self, limit: int = -1, *, as_list: bool = False) -> str | list[str]:
        """The job's log lines, oldest first (the last ``limit`` when positive)."""
        rows = self._catalog.query(
            "SELECT strftime(logged_on, '%Y-%m-%d %H:%M:%S') || ' ' || line FROM {schema}.job_logs "
            "WHERE job_key = ? ORDER BY logged_on, rowid",
            [self._key],
        )
        lines = [r[0] for r in rows]
        if limit is not None and limit > 0:
            lines = lines[-limit:]
        return lines if as_list else "\n".join(lines)

    def show_logs(self, limit: int = -1) -> None:
        print(self.get_logs(limit))

    def cancel(self) -> None:
        """Stop the job (before its next forward batch on the local engine, after the running part on Ray and
        vLLM); finished parts stay, no ``_SUCCESS`` is written."""
        status = self.status
        if status in TERMINAL:
            return
        if not cancel_here(self._key):
            pid, host = self._catalog.query("SELECT pid, host FROM {schema}.jobs WHERE job_key = ?", [self._key])[0]
            raise RuntimeError(
                f"Failed to cancel job, error: job {self._name} is not running in this process; it runs in process "
                f"{pid} on {host}, and only that process can cancel it (.jobs cancel in its shell, job.cancel() in "
                "Python), or stop that process."
            )
        set_status(self._catalog, self._key, CANCELLING)
        self.wait()

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, status={self.status!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id


def _effective_state(
    key: str, status: str, message: str | None, pid: int | None, host: str | None
) -> tuple[str, str | None]:
    """The stored status and message, except that an unfinished job whose process is gone is FAILED."""
    if status in (RUNNING, PENDING, CANCELLING) and not _runs_somewhere(key, pid, host):
        return FAILED, (
            f"The process running this job (pid {pid}) exited before it finished. "
            "Run the same run_batch again to resume from the parts already written."
        )
    return status, message


def _runs_somewhere(key: str, pid: int | None, host: str | None) -> bool:
    if pid is None:
        return False
    if pid == os.getpid() and host == socket.gethostname():
        entry = _active(key)
        return entry is not None and (entry[0] is None or entry[0].is_alive())
    if host != socket.gethostname():
        return True  # another machine: trust the catalog
    return process_alive(pid)


def set_status(catalog: Catalog, key: str, status: str, message: str | None = None) -> None:
    """Record a job's status (RUNNING stamps its start, a terminal status its end)."""
    stamps = {RUNNING: ", started_on = coalesce(started_on, current_timestamp)"}
    finished = ", finished_on = current_timestamp" if status in TERMINAL else ""
    catalog.execute(
        f"UPDATE {{schema}}.jobs SET status = ?, message = coalesce(?, message){stamps.get(status, '')}{finished} "
        "WHERE job_key = ?",
        [status, message, key],
    )


def log(catalog: Catalog, key: str, line: str) -> None:
    """Append a line to a job's log."""
    catalog.execute(
        "INSERT INTO {schema}.job_logs (job_key, line, logged_on) VALUES (?, ?, current_timestamp)", [key, line]
    )


def job_records(registry: RegistryStore, limit: int = 10, *, name: str | None = None) -> list[dict[str, Any]]:
    """The newest jobs first (or the job ``name``), one query: ``list_jobs``' fields plus ``rows_done``,
    ``rows_total``, ``rows_failed`` (``on_error="continue"``) and ``runs_here`` (this process runs it, so can
    cancel it)."""
    where, params = ("WHERE j.job_key = ? ", [name.lower()]) if name is not None else ("", [])
    failed_column = "j.rows_failed" if registry.catalog.has_column("jobs", "rows_failed") else "NULL"
    rows = registry.catalog.query(
        "SELECT j.job_key, j.name, j.status, j.message, j.pid, j.host, m.name, v.name, j.function_name, j.engine, "
        f"j.output_location, j.created_on, j.finished_on, j.rows_done, j.rows_total, {failed_column} "
        "FROM {schema}.jobs j "
        "LEFT JOIN {schema}.models m USING (model_key) "
        "LEFT JOIN {schema}.versions v ON v.model_key = j.model_key AND v.version_key = j.version_key "
        + where
        + "ORDER BY j.created_on DESC"
        + (f" LIMIT {int(limit)}" if limit > 0 else ""),
        params,
    )
    records = []
    for (key, job_name, status, message, pid, host, model, version, function, engine, output, created, completed,
         done, total, failed) in rows:  # fmt: skip
        status, message = _effective_state(key, status, message, pid, host)
        records.append(
            {
                "name": job_name,
                "status": status,
                "message": message,
                "database_name": registry.catalog.database_name,
                "schema_name": registry.catalog.schema_name,
                "model_name": model,
                "version_name": version,
                "function_name": function,
                "engine": engine,
                "output_location": output,
                "created_time": created,
                "completed_time": completed,
                "rows_done": int(done or 0),
                "rows_total": total,
                "rows_failed": int(failed or 0),
                "runs_here": _active(key) is not None,
            }
        )
    return records


def list_jobs(registry: RegistryStore, limit: int = 10) -> pd.DataFrame:
    """The newest jobs first: name, status, message, model, version, function, engine, output, times."""
    columns = ["name", "status", "message", "database_name", "schema_name", "model_name", "version_name",
               "function_name", "engine", "output_location", "created_time", "completed_time"]  # fmt: skip
    return pd.DataFrame(job_records(registry, limit), columns=columns)


def get_job(registry: RegistryStore, job_id: str) -> Job:
    """A job by name or by ``db.schema.name``."""
    return Job(registry.catalog, job_id.split(".")[-1].strip('"'))


def find_job(registry: RegistryStore, text: str) -> Job:
    """A job by its name, or by the start of it as a narrow table shows it (``BATCH_INFERENCE_8DB3…``)."""
    name = text.split(".")[-1].strip('"').rstrip("…").lower()
    rows = registry.catalog.query("SELECT job_key FROM {schema}.jobs WHERE job_key = ?", [name])
    if not rows:
        rows = registry.catalog.query(
            "SELECT job_key FROM {schema}.jobs WHERE starts_with(job_key, ?) ORDER BY job_key LIMIT 2", [name]
        )
        if len(rows) > 1:
            raise ValueError(f"Job {text} is the start of more than one job's name; give more of it.")
    return Job(registry.catalog, rows[0][0] if rows else name)


def delete_job(registry: RegistryStore, job: Job | str) -> None:
    """Forget a finished job (its output files stay); a running job must be cancelled first."""
    handle = job if isinstance(job, Job) else get_job(registry, job)
    if handle.status not in TERMINAL:
        raise RuntimeError(f"Job {handle.name} is {handle.status}; cancel it before deleting it.")
    with registry.catalog.transaction() as cat:
        cat.execute("DELETE FROM {schema}.job_logs WHERE job_key = ?", [handle.name.lower()])
        cat.execute("DELETE FROM {schema}.jobs WHERE job_key = ?", [handle.name.lower()])


def register(
    catalog: Catalog,
    name: str,
    model_key: str,
    version_key: str,
    function_name: str,
    engine: str,
    output_location: str,
    spec: dict[str, Any],
) -> str:
    """Record a job as PENDING in this process; a finished job of the same name is run again. Returns its key.

    A job of that name that has not finished is refused.
    """
    key = name.lower()
    owner = [os.getpid(), socket.gethostname()]
    if catalog.query("SELECT 1 FROM {schema}.jobs WHERE job_key = ?", [key]):
        current = Job(catalog, name).status
        if current not in TERMINAL:
            raise ValueError(f"Job {name} is already {current}.")
        catalog.execute(
            "UPDATE {schema}.jobs SET status = ?, message = NULL, pid = ?, host = ?, spec = ?, engine = ?, "
            "finished_on = NULL WHERE job_key = ?",
            [PENDING, *owner, json.dumps(spec, default=str), engine, key],
        )
        return key
    catalog.execute(
        "INSERT INTO {schema}.jobs (job_key, name, model_key, version_key, function_name, engine, output_location, "
        "spec, status, pid, host, rows_done, created_on) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, current_timestamp)",
        [key, name, model_key, version_key, function_name, engine, output_location, json.dumps(spec, default=str),
         PENDING, *owner],
    )  # fmt: skip
    return key


def set_rows_total(catalog: Catalog, key: str, rows: int) -> None:
    catalog.execute("UPDATE {schema}.jobs SET rows_total = ? WHERE job_key = ?", [rows, key])


def set_rows_done(catalog: Catalog, key: str, rows: int, failed: int = 0) -> None:
    """The rows written so far, and how many of them failed (``on_error="continue"``)."""
    catalog.execute("UPDATE {schema}.jobs SET rows_done = ?, rows_failed = ? WHERE job_key = ?", [rows, failed, key])


def rows_total(catalog: Catalog, key: str) -> int | None:
    rows = catalog.query("SELECT rows_total FROM {schema}.jobs WHERE job_key = ?", [key])
    return rows[0][0] if rows else None
