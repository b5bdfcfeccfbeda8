"""SQL's ``run_batch(...)`` and ``run_batch_async(...)``: a model named in SQL, run as a batch job.

It lives with the registry because it looks the model up by name (``registry.get_model``) and then calls
``ModelVersion.run_batch``, the same path as Python; the batch layer below never sees the registry.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from duckreg import interrupts, jobs
from duckreg.batch.specs import JobSpec, OutputSpec, SaveMode
from duckreg.store import RegistryStore

if TYPE_CHECKING:
    from duckreg.registry.model import Model


class ModelFinder(RegistryStore, Protocol):
    """A registry as SQL's run_batch needs it: its storage, and its models by name."""

    def get_model(self, model_name: str) -> Model: ...


def run_from_sql(
    registry: ModelFinder,
    model: str,
    query: str,
    output_location: str,
    mode: str | None,
    job_name: str | None,
    max_batch_rows: int | None,
    on_error: str | None = None,
    *,
    wait: bool,
) -> dict[str, Any] | str:
    """SQL's ``run_batch(...)`` (``wait``: run the job, return its summary) and ``run_batch_async(...)``.

    Everything that can be checked (model, version, stage, mode, the query's columns) is checked
    before the job is registered, and a failure is the statement's error. The job reads its query on
    a connection of its own (a UDF cannot run SQL on the connection calling it), in a thread this call
    watches: Ctrl-C on the statement cancels a waited-for job before its next forward batch. An
    asynchronous job runs in this process's background and is cancelled when the process exits.
    """
    if not model or not query or not output_location:
        raise ValueError("run_batch(model, query, output_location) needs all three.")
    model_name, _, version_name = model.partition("/")
    found = registry.get_model(model_name)
    mv = found.version(version_name) if version_name else found.default
    try:
        save_mode = SaveMode((mode or "error").lower())
    except ValueError:
        raise ValueError(f"run_batch mode {mode!r}: use 'error' or 'overwrite'.") from None
    name = job_name or f"BATCH_INFERENCE_{uuid.uuid4().hex.upper()}"
    output_spec = OutputSpec(output_location, mode=save_mode)
    job_spec = JobSpec(
        job_name=name, max_batch_rows=int(max_batch_rows or 1024), block=wait, on_error=on_error or "raise"
    )
    job = _run_watched(registry, name, lambda: mv.run_batch(query, output_spec=output_spec, job_spec=job_spec))
    if not wait:
        return job.id
    return _summary(registry, job, output_location)


def _run_watched(registry: ModelFinder, name: str, start: Callable[[], jobs.Job]) -> jobs.Job:
    """``start()`` in a thread this statement watches: Ctrl-C cancels the job before its next forward batch."""
    outcome: list[jobs.Job | BaseException] = []

    def run() -> None:
        try:
            outcome.append(start())
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling statement
            outcome.append(exc)

    worker = threading.Thread(target=run, name=f"duckreg-sql-job-{name}", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
        if interrupts.requested():
            jobs.cancel_here(name.lower(), "Interrupted (Ctrl-C) while run_batch waited for it.")
    if isinstance(outcome[0], BaseException):
        failed = outcome[0]
        records = jobs.job_records(registry, name=name) if isinstance(failed, Exception) else []
        if records and records[0]["status"] == jobs.FAILED:  # it ran: the error names the job to look up or resume
            raise RuntimeError(f"run_batch job {name} FAILED: {failed}") from failed
        raise failed
    return outcome[0]


def _summary(registry: ModelFinder, job: jobs.Job, output_location: str) -> dict[str, Any]:
    """The row SQL's run_batch returns for a job that ran to its end; any other end is the statement's error."""
    status, message = job.status, job.message
    if status == jobs.CANCELLED and interrupts.requested():
        raise interrupts.Interrupted(f"run_batch job {job.name}: interrupted; run the same run_batch to resume it")
    if status != jobs.DONE:
        raise RuntimeError(f"run_batch job {job.name} {status}: {message}")
    files = [f for f in registry.stages.list_files(output_location) if f.endswith(".parquet") and "/_duckreg/" not in f]
    (record,) = jobs.job_records(registry, name=job.name)
    return {
        "job_name": job.name,
        "status": status,
        "rows": job.progress[0],
        "rows_failed": record["rows_failed"],
        "output_location": job.output_location,
        "files": sorted(files),
    }
