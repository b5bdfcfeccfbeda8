"""One batch job's output side: the job executors run (its life cycle in one object), its part files, and
claiming the output folder (``batch.layout`` says what lies where; ``batch.inputs`` reads the rows)."""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from duckreg import jobs
from duckreg.batch.inputs import input_columns
from duckreg.batch.layout import ERROR_COLUMN, SUCCESS, WORK_DIR, join_path, part_path, write_atomically
from duckreg.batch.specs import FileEncoding, SaveMode
from duckreg.catalog import Catalog
from duckreg.duckdb_ext.types import OutputTypes
from duckreg.inference import FunctionRunner
from duckreg.stages import Stage


@dataclass
class BatchJob:
    """One job, as every executor runs it: what it computes and where, and its life cycle in one place, as
    Ray Data's ``Datasink`` keeps it (``on_start``, ``write_part`` per input chunk, ``on_part_written``,
    ``on_complete``, ``on_cancelled``, ``on_failed``).

    The hooks that record progress run where the job was submitted; ``write_part`` also runs on Ray actors,
    which receive the job pickled without its catalog, cancel event and progress bar.
    """

    catalog: Catalog
    job_key: str
    version: Any
    """The ``VersionHandle`` the job computes with (on the engine the job asked for)."""
    function: Any
    """The ``FunctionSpec`` it runs."""
    params: dict[str, Any]
    handling: dict[str, FileEncoding]
    stage: Stage
    out_path: str
    replicas: int
    num_workers: int
    cpus: float | None
    gpus: float | None
    memory: int | None
    address: str | None
    cancel: threading.Event
    progress_bar: bool
    stages: dict[str, Stage]
    use_cache: bool | None = None
    """False computes every row afresh (``force_rebuild``); None lets the result cache serve what it holds."""
    keep_going: bool = False
    """``JobSpec(on_error="continue")``: failed rows are written with their error instead of failing the job."""

    _DRIVER_ONLY = ("catalog", "cancel", "_bar", "_runner")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._DRIVER_ONLY}

    @property
    def runner(self) -> FunctionRunner:
        runner = self.__dict__.get("_runner")
        if runner is None:
            runner = self.__dict__["_runner"] = FunctionRunner(self.version, self.function)
        return runner

    @property
    def fs(self) -> Any:
        return self.stage.filesystem

    def path(self, *parts: str) -> str:
        return join_path(self.out_path, *parts)

    def chunk_paths(self) -> list[str]:
        return sorted(p for p in self.fs.find(self.path(WORK_DIR, "input")) if p.endswith(".parquet"))

    def part_path(self, index: int) -> str:
        return part_path(self.out_path, index)

    def log(self, line: str) -> None:
        jobs.log(self.catalog, self.job_key, line)

    # ---------------------------------------------------------------- life cycle
    def on_start(self) -> None:
        """The job runs from now (a resumed one too)."""
        jobs.set_status(self.catalog, self.job_key, jobs.RUNNING)

    def on_progress_known(self, done_rows: int) -> None:
        """Start the progress bar (a blocking job on a terminal) at the rows already written."""
        if self.progress_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=jobs.rows_total(self.catalog, self.job_key), initial=done_rows, unit="rows",
                             desc=self.job_key)  # fmt: skip

    def write_part(self, index: int, chunk: str, first_row: int) -> tuple[int, int]:
        """Predict chunk ``index`` (whose first row is the job's ``first_row``) into its part file, atomically;
        returns its row count and how many of them failed (``on_error="continue"``)."""
        fs = self.stage.filesystem
        with fs.open(chunk, "rb") as handle:
            table = pq.read_table(handle)
        errors: dict[int, str] | None = {} if self.keep_going else None
        columns = input_columns(self.runner, self.handling, self.stages, table, errors)
        results = self.runner.run(columns, self.params, self.use_cache, first_row=first_row, errors=errors)
        out = with_outputs(self.runner, table, results)
        if errors is not None:
            # A row whose file could not be read, or that failed in the model: its error, by row.
            messages = [errors.get(row) for row in range(table.num_rows)]
            out = out.append_column(ERROR_COLUMN, pa.array(messages, pa.string()))
        write_atomically(fs, part_path(self.out_path, index), out)
        return table.num_rows, len(errors or {})

    def on_part_written(
        self, index: int, parts: int, rows: int, done_rows: int, failed: int = 0, failed_rows: int = 0
    ) -> None:
        """Log a finished part and record the running row counts (``failed``: of this part, ``failed_rows``:
        of the job so far)."""
        bar = self.__dict__.get("_bar")
        if bar is not None:
            bar.update(rows)
        self.log(f"part {index + 1}/{parts}: {rows} rows" + (f", {failed} failed" if failed else ""))
        jobs.set_rows_done(self.catalog, self.job_key, done_rows, failed_rows)

    def on_complete(self, rows: int, failed: int = 0) -> None:
        """Remove the work folder, then write ``_SUCCESS`` last: its presence means the output is whole."""
        fs = self.fs
        fs.rm(self.path(WORK_DIR), recursive=True)
        for leftover in fs.ls(self.out_path, detail=False):
            # Temporary files of a process killed mid-write.
            if leftover.rsplit("/", 1)[-1].startswith(".") and leftover.endswith(".tmp"):
                fs.rm(leftover)
        with fs.open(self.path(SUCCESS), "wb"):
            pass
        if failed:
            self.log(f"done: {rows} rows, {failed} of them failed (their errors are in the {ERROR_COLUMN} column)")
            message = f"{rows} rows written, {failed} failed (see the {ERROR_COLUMN} column)."
        else:
            self.log(f"done: {rows} rows")
            message = f"{rows} rows written."
        jobs.set_status(self.catalog, self.job_key, jobs.DONE, message)

    def on_cancelled(self, line: str) -> None:
        """Stopped between parts (or inside one, at a forward batch): the parts written stay for a resume."""
        self.log(line)
        jobs.set_status(self.catalog, self.job_key, jobs.CANCELLED, jobs.cancel_reason(self.job_key))

    def on_failed(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.log(f"failed: {message}")
        jobs.set_status(self.catalog, self.job_key, jobs.FAILED, message)


def with_outputs(runner: FunctionRunner, table: pa.Table, results: list[dict[str, Any]]) -> pa.Table:
    """The input rows plus the function's output columns (an output replaces an input of its name).

    Every executor writes its parts through this, so a job's schema does not depend on where it ran.
    """
    outputs = OutputTypes.of(runner.function)
    arrays = outputs.to_arrow_columns(results, json_as_text=True)
    replaced = runner.function.replaced_columns()
    keep = [c for c in table.column_names if c.lower() not in replaced]
    return pa.Table.from_arrays([table.column(c) for c in keep] + arrays, names=keep + list(outputs.names))


def prepare_location(
    fs: Any, out_path: str, stage_location: str, mode: SaveMode, fingerprint: str
) -> dict[str, Any] | None:
    """Apply the SaveMode; returns the unfinished job that owns the folder when this run resumes it."""
    if not fs.exists(out_path):
        fs.makedirs(out_path, exist_ok=True)
        return None
    existing = fs.find(out_path)
    if not existing:
        return None
    owner_file = join_path(out_path, WORK_DIR, "job.json")
    owner = None
    if fs.exists(owner_file) and not fs.exists(join_path(out_path, SUCCESS)):
        with fs.open(owner_file, "r") as handle:
            owner = json.load(handle)
        if owner.get("fingerprint") == fingerprint:
            return owner
    location = stage_location.rstrip("/") + "/"
    if mode is SaveMode.ERROR and owner is not None:
        raise FileExistsError(
            f"Output stage location '{location}' holds the unfinished job {owner.get('job_name')} (a run_batch "
            "that failed or was interrupted, with another model, function, parameters or input). Run that same "
            "run_batch again to resume and finish it, or pass OutputSpec(mode=SaveMode.OVERWRITE) to replace it."
        )
    if mode is SaveMode.ERROR:
        raise FileExistsError(
            f"Output stage location '{location}' is not empty. Found {len(existing)} existing files. When using "
            "ERROR mode, the output location must be empty. Please clear the existing files or use OVERWRITE mode."
        )
    warnings.warn(
        f"Output stage location '{location}' is not empty. Found {len(existing)} existing files. "
        "OVERWRITE mode will remove all existing files in the output location.",
        UserWarning,
        stacklevel=4,
    )
    try:
        for item in fs.ls(out_path, detail=False):
            fs.rm(item, recursive=True)
    except Exception as exc:
        raise RuntimeError(f"OVERWRITE was specified. However, failed to remove existing files: {exc}") from exc
    return None
