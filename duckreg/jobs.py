"""Batch jobs: handles, listing, lookup and deletion, with state and logs kept in the catalog.

A job runs in a background thread of the process that started it (or blocks, with
``JobSpec(block=True)``). A job left RUNNING by a process that no longer exists reads as FAILED;
running the same ``run_batch`` again resumes it from the parts already written.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from duckreg.artifacts import process_alive

if TYPE_CHECKING:
    from duckreg.registry import Registry

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


class Job:
    """A handle on one batch job (like ``snowflake.ml.jobs.MLJob``)."""

    def __init__(self, registry: Registry, name: str) -> None:
        self._registry = registry
        self._key = name.lower()
        self._name = self._row("name")

    def _row(self, column: str) -> Any:
        rows = self._registry._catalog.query(f"SELECT {column} FROM {{schema}}.jobs WHERE job_key = ?", [self._key])
        if not rows:
            raise ValueError(f"Job {self._key} does not exist or not authorized.")
        return rows[0][0]

    @property
    def name(self) -> str:
        return self._name

    @property
    def id(self) -> str:
        return f"{self._registry.database_name}.{self._registry.schema_name}.{self._name}"

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
        rows = self._registry._catalog.query(
            "SELECT status, message, pid, host FROM {schema}.jobs WHERE job_key = ?", [self._key]
        )
        if not rows:
            raise ValueError(f"Job {self._key} does not exist or not authorized.")
        return _effective_state(self._key, *rows[0])

    @property
    def progress(self) -> tuple[int, int | None]:
        """(rows written, rows in total)."""
        done, total = self._registry._catalog.query(
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
            with _ACTIVE_LOCK:
                entry = _ACTIVE.get(self._key)
            pause = delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic()))
            if entry is not None and entry[0] is not None:
                entry[0].join(pause)
            else:
                time.sleep(pause)
            delay = min(delay * 1.5, 2.0)

    def get_logs(self, limit: int = -1, *, as_list: bool = False) -> str | list[str]:
        """The job's log lines, oldest first (the last ``limit`` when positive)."""
        rows = self._registry._catalog.query(
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
        """Stop the job after the part it is writing; finished parts stay, no ``_SUCCESS`` is written."""
        status = self.status
        if status in TERMINAL:
            return
        with _ACTIVE_LOCK:
            entry = _ACTIVE.get(self._key)
        if entry is None:
            raise RuntimeError(f"Failed to cancel job, error: job {self._name} is not running in this process.")
        entry[1].set()
        set_status(self._registry, self._key, CANCELLING)
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
        with _ACTIVE_LOCK:
            entry = _ACTIVE.get(key)
        return entry is not None and (entry[0] is None or entry[0].is_alive())
    if host != socket.gethostname():
        return True  # another machine: trust the catalog
    return process_alive(pid)


def set_status(registry: Registry, key: str, status: str, message: str | None = None) -> None:
    stamps = {RUNNING: ", started_on = coalesce(started_on, current_timestamp)"}
    finished = ", finished_on = current_timestamp" if status in TERMINAL else ""
    registry._catalog.execute(
        f"UPDATE {{schema}}.jobs SET status = ?, message = coalesce(?, message){stamps.get(status, '')}{finished} "
        "WHERE job_key = ?",
        [status, message, key],
    )


def log(registry: Registry, key: str, line: str) -> None:
    registry._catalog.execute("INSERT INTO {schema}.job_logs (job_key, line) VALUES (?, ?)", [key, line])


def list_jobs(registry: Registry, limit: int = 10) -> pd.DataFrame:
    """The newest jobs first: name, status, message, model, version, function, engine, output, times."""
    rows = registry._catalog.query(
        "SELECT j.job_key, j.name, j.status, j.message, j.pid, j.host, m.name, v.name, j.function_name, j.engine, "
        "j.output_location, j.created_on, j.finished_on FROM {schema}.jobs j "
        "LEFT JOIN {schema}.models m USING (model_key) "
        "LEFT JOIN {schema}.versions v ON v.model_key = j.model_key AND v.version_key = j.version_key "
        "ORDER BY j.created_on DESC" + (f" LIMIT {int(limit)}" if limit > 0 else "")
    )
    records = []
    for key, name, status, message, pid, host, model, version, function, engine, output, created, completed in rows:
        status, message = _effective_state(key, status, message, pid, host)
        records.append(
            {
                "name": name,
                "status": status,
                "message": message,
                "database_name": registry.database_name,
                "schema_name": registry.schema_name,
                "model_name": model,
                "version_name": version,
                "function_name": function,
                "engine": engine,
                "output_location": output,
                "created_time": created,
                "completed_time": completed,
            }
        )
    columns = ["name", "status", "message", "database_name", "schema_name", "model_name", "version_name",
               "function_name", "engine", "output_location", "created_time", "completed_time"]  # fmt: skip
    return pd.DataFrame(records, columns=columns)


def get_job(registry: Registry, job_id: str) -> Job:
    """A job by name or by ``db.schema.name``."""
    return Job(registry, job_id.split(".")[-1].strip('"'))


def delete_job(registry: Registry, job: Job | str) -> None:
    """Forget a finished job (its output files stay); a running job must be cancelled first."""
    handle = job if isinstance(job, Job) else get_job(registry, job)
    if handle.status not in TERMINAL:
        raise RuntimeError(f"Job {handle.name} is {handle.status}; cancel it before deleting it.")
    with registry._catalog.transaction() as cat:
        cat.execute("DELETE FROM {schema}.job_logs WHERE job_key = ?", [handle.name.lower()])
        cat.execute("DELETE FROM {schema}.jobs WHERE job_key = ?", [handle.name.lower()])


def record_failure(registry: Registry, name: str, mv: Any, output_location: str, exc: BaseException) -> None:
    """Make a job that failed before it started visible as FAILED, with the reason."""
    import json

    message = f"{type(exc).__name__}: {exc}"
    key = name.lower()
    exists = registry._catalog.query("SELECT count(*) FROM {schema}.jobs WHERE job_key = ?", [key])[0][0]
    if not exists:
        registry._catalog.execute(
            "INSERT INTO {schema}.jobs (job_key, name, model_key, version_key, function_name, engine, "
            "output_location, spec, status, pid, host, rows_done) VALUES (?, ?, ?, ?, '', 'local', ?, ?, ?, ?, ?, 0)",
            [key, name, mv._model_key, mv._version_key, output_location, json.dumps({}), FAILED, os.getpid(),
             socket.gethostname()],
        )  # fmt: skip
    set_status(registry, key, FAILED, message)
    log(registry, key, f"failed: {message}")
