"""``ModelVersion.run_batch``: snapshot the input, then predict it part by part into a stage.

Layout of an output location while a job runs::

    part-000000.parquet ...      one part per input chunk of max_batch_rows rows (written atomically)
    _duckreg/job.json            which job owns the folder, and a fingerprint of what it computes
    _duckreg/input/chunk-*.parquet, _duckreg/input/_COMPLETE
                                 the input, taken once, so a resumed job reads exactly the same rows

When every part exists the ``_duckreg`` folder is removed and ``_SUCCESS`` is written, last.
Running the same job again (same model version, function, params and input) into a location
without ``_SUCCESS`` resumes it: parts already written are kept, the others are computed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import os
import re
import socket
import sys
import threading
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from duckreg import jobs
from duckreg.batch.specs import FileEncoding, InputSpec, JobSpec, OutputSpec, SaveMode, parse_count, parse_memory
from duckreg.batch.stages import Stage, parse_stage_path, read_stage_bytes
from duckreg.binding import OutputTypes
from duckreg.inference import FunctionRunner, valid_unicode

if TYPE_CHECKING:
    from duckreg.registry import ModelVersion, Registry

WORK_DIR = "_duckreg"
SUCCESS = "_SUCCESS"
ENGINES = ("local", "ray", "vllm")


@dataclass
class BatchPlan:
    """Everything an engine needs to run (or resume) one job."""

    registry: Registry
    job_key: str
    runner: FunctionRunner
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

    @property
    def fs(self) -> Any:
        return self.stage.filesystem

    def path(self, *parts: str) -> str:
        return _join(self.out_path, *parts)

    def chunk_paths(self) -> list[str]:
        return sorted(p for p in self.fs.find(self.path(WORK_DIR, "input")) if p.endswith(".parquet"))

    def part_path(self, index: int) -> str:
        return part_path(self.out_path, index)

    def log(self, line: str) -> None:
        jobs.log(self.registry, self.job_key, line)

    def part_done(self, index: int, parts: int, rows: int, done_rows: int) -> None:
        """Log a finished part and record the running row count."""
        self.log(f"part {index + 1}/{parts}: {rows} rows")
        self.registry._catalog.execute(
            "UPDATE {schema}.jobs SET rows_done = ? WHERE job_key = ?", [done_rows, self.job_key]
        )

    def fail(self, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        self.log(f"failed: {message}")
        jobs.set_status(self.registry, self.job_key, jobs.FAILED, message)


def run_batch(
    mv: ModelVersion,
    X: Any,
    *,
    output_spec: OutputSpec,
    input_spec: InputSpec | None = None,
    job_spec: JobSpec | None = None,
    compute_pool: str | None = None,
    inference_engine_options: dict[str, Any] | None = None,
) -> jobs.Job:
    registry = mv._registry
    input_spec = input_spec or InputSpec()
    job_spec = job_spec or JobSpec()
    if not isinstance(output_spec, OutputSpec):
        raise TypeError("output_spec must be a duckreg.batch.OutputSpec")
    if not isinstance(input_spec, InputSpec) or not isinstance(job_spec, JobSpec):
        raise TypeError("input_spec and job_spec must be duckreg.batch.InputSpec and duckreg.batch.JobSpec")
    engine, address = _engine(mv, inference_engine_options, compute_pool)
    function = mv.get_function(job_spec.function_name)
    runner = FunctionRunner(mv._handle(), function)
    if job_spec.force_rebuild:
        runner.version.forget()
    params = runner.resolve_params(input_spec.params)
    handling = _column_handling(input_spec, runner)
    resources = _resources(engine, job_spec)
    new_name = job_spec.new_job_name()
    location = output_spec.location_for(new_name)
    stage, out_path = registry.stages.locate(location)
    fs = stage.filesystem
    _check_apart(registry, X, stage, out_path, location)
    try:
        input_id, source = _input_source(registry, X, job_spec.max_batch_rows)
    except (TypeError, ValueError):
        raise
    except Exception as exc:
        raise RuntimeError(f"Failed to process input data: {exc}") from exc
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "model": mv.model_name.lower(),
                "version": mv.version_name.lower(),
                "function": function.name,
                "params": input_spec.params or {},
                "handling": {k.lower(): v["convert_to"].value for k, v in (input_spec.column_handling or {}).items()},
                "max_batch_rows": job_spec.max_batch_rows,
                "input": input_id,
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()
    owner = _prepare_location(fs, out_path, location, output_spec.mode, fingerprint)
    name = job_spec.job_name or (owner or {}).get("job_name") or new_name
    key = name.lower()
    spec = {
        "output_spec": {"stage_location": location, "mode": output_spec.mode.value},
        "input_spec": {"params": input_spec.params, "column_handling": {
            k: {"input_format": v["input_format"].value, "convert_to": v["convert_to"].value}
            for k, v in (input_spec.column_handling or {}).items()}},
        "job_spec": vars(job_spec),
        "engine": engine,
        "fingerprint": fingerprint,
    }  # fmt: skip
    _register_job(registry, key, name, mv, function.name, engine, location, spec)
    try:
        if owner is None:
            fs.makedirs(_join(out_path, WORK_DIR), exist_ok=True)
            with fs.open(_join(out_path, WORK_DIR, "job.json"), "w") as handle:
                json.dump({"job_name": name, "fingerprint": fingerprint}, handle)
        total = _snapshot(fs, out_path, source, job_spec.max_batch_rows)
    except Exception as exc:
        jobs.set_status(registry, key, jobs.FAILED, f"Failed to process input data: {exc}")
        raise RuntimeError(f"Failed to process input data: {exc}") from exc
    registry._catalog.execute("UPDATE {schema}.jobs SET rows_total = ? WHERE job_key = ?", [total, key])
    plan = BatchPlan(
        registry=registry,
        job_key=key,
        runner=runner,
        params=params,
        handling=handling,
        stage=stage,
        out_path=out_path,
        address=address,
        cancel=threading.Event(),
        progress_bar=job_spec.block and sys.stderr.isatty(),
        stages={row[0].lower(): Stage(row[0], row[1]) for row in registry.stages.rows()},
        **resources,
    )
    jobs.log(registry, key, f"{'resuming' if owner else 'starting'} on the {engine} engine: {total} rows")
    return _start(plan, engine, block=job_spec.block)


def _join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts)


def part_path(out_path: str, index: int) -> str:
    """Where the output of input chunk ``index`` goes."""
    return _join(out_path, f"part-{index:06d}.parquet")


def _engine(mv: ModelVersion, options: dict[str, Any] | None, compute_pool: str | None) -> tuple[str, str | None]:
    options = dict(options or {})
    unknown = set(options) - {"engine", "address", "engine_args_override"}
    if unknown:
        raise ValueError(f"Unknown inference_engine_options keys {sorted(unknown)}; known: engine, address.")
    if options and "engine" not in options:
        raise ValueError("'engine' field is required in inference_engine_options")
    engine = str(getattr(options.get("engine"), "value", options.get("engine") or "local")).lower()
    if engine == "python_generic":
        engine = "local"
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; duckreg runs 'local' (default), 'ray' or 'vllm'.")
    if options.get("engine_args_override"):
        raise ValueError("engine_args_override applies to vLLM, which this installation cannot run.")
    if engine == "vllm":
        if mv.task != "text-generation":
            raise ValueError(f"The vllm engine runs text-generation models; {mv.model_name} is {mv.task!r}.")
        try:
            import torch
            import vllm  # noqa: F401
        except ImportError:
            raise ValueError("The vllm engine needs the vllm package and a GPU; neither is installed here.") from None
        if not torch.cuda.is_available():
            raise ValueError("The vllm engine needs a CUDA GPU; none is available.")
        raise ValueError("The vllm engine is not available in this duckreg build; use 'local' or 'ray'.")
    address = options.get("address")
    if engine == "local":
        if compute_pool not in (None, "local") or address:
            raise ValueError(
                f"compute_pool {compute_pool!r}: the local engine runs in this process. To run on a Ray "
                "cluster pass inference_engine_options={'engine': 'ray', 'address': 'ray://host:10001'}."
            )
        return engine, None
    address = address or (compute_pool if compute_pool not in (None, "local") else None)
    if address is not None and not re.fullmatch(r"auto|ray://\S+|[\w.-]+:\d+", address):
        raise ValueError(
            f"Ray address {address!r}: use 'auto', 'ray://host:10001' or 'host:6379' (or leave it out to start a "
            "local Ray for the job)."
        )
    return engine, address


def _resources(engine: str, spec: JobSpec) -> dict[str, Any]:
    """Check every JobSpec field against what the engine can honour."""
    import torch

    cpus = parse_count(spec.cpu_requests, "cpu_requests") if spec.cpu_requests is not None else None
    gpus = parse_count(spec.gpu_requests, "gpu_requests") if spec.gpu_requests is not None else None
    memory = parse_memory(spec.memory_requests) if spec.memory_requests is not None else None
    replicas = spec.replicas or 1
    num_workers = spec.num_workers or 1
    if engine == "local":
        if replicas > 1:
            raise ValueError("replicas > 1 needs the ray engine: inference_engine_options={'engine': 'ray'}.")
        if num_workers > 1:
            raise ValueError("num_workers > 1 needs the ray engine; the local engine runs one model in this process.")
        if gpus and not torch.cuda.is_available():
            raise ValueError(f"gpu_requests={spec.gpu_requests!r}, but no CUDA GPU is available to this process.")
        if cpus is not None and cpus > (os.cpu_count() or 1):
            raise ValueError(f"cpu_requests={spec.cpu_requests!r}, but this machine has {os.cpu_count()} CPUs.")
        if memory is not None:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            if memory > available:
                raise ValueError(
                    f"memory_requests={spec.memory_requests!r}, but this machine has {available / 2**30:.1f} GiB."
                )
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("The ray engine needs Ray: pip install 'duckreg[ray]'.") from None
    return {"replicas": replicas, "num_workers": num_workers, "cpus": cpus, "gpus": gpus, "memory": memory}


def _check_apart(registry: Registry, X: Any, stage: Stage, out_path: str, output_location: str) -> None:
    """Refuse an output location that holds the input, or lies inside it (OVERWRITE would delete it)."""
    if not (isinstance(X, str) and X.startswith("@")):
        return
    in_stage, in_path = registry.stages.locate(X)
    if in_stage.filesystem.protocol != stage.filesystem.protocol:
        return

    def normal(path: str, local: bool) -> str:
        return (os.path.realpath(path) if local else path).rstrip("/")

    a, b = normal(in_path, in_stage.is_local), normal(out_path, stage.is_local)
    if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
        raise ValueError(
            f"The output location {output_location!r} overlaps the input {X!r}: the job would read its own "
            "output, and OVERWRITE would delete its input. Write to a location outside the input."
        )


def _input_source(registry: Registry, X: Any, rows: int) -> tuple[Any, Iterator[pa.RecordBatch]]:
    """An identity for the fingerprint, and a lazy stream of record batches of the input."""
    import duckdb

    if isinstance(X, str) and X.startswith("@"):
        files = [f for f in registry.stages.list_files(X) if f.endswith(".parquet")]
        if not files:
            raise ValueError(f"No parquet files under {X}.")
        stage, _ = registry.stages.locate(X)
        fs = stage.filesystem
        paths = [stage.resolve(parse_stage_path(f)[1]) for f in files]
        infos = [fs.info(path) for path in paths]
        identity = [[f, i.get("size"), str(i.get("mtime") or i.get("LastModified") or "")] for f, i in
                    zip(files, infos, strict=True)]  # fmt: skip

        def from_stage() -> Iterator[pa.RecordBatch]:
            for path in paths:
                with fs.open(path, "rb") as handle:
                    yield from pq.ParquetFile(handle).iter_batches(batch_size=rows)

        return identity, from_stage()
    if isinstance(X, str):
        cursor = registry.connection.cursor()
        relation = cursor.sql(X)
        if relation is None:
            raise ValueError("X must be a query that returns rows.")
        return X, iter(relation.to_arrow_reader(rows))
    if isinstance(X, duckdb.DuckDBPyRelation):
        return X.sql_query(), iter(X.to_arrow_reader(rows))
    if isinstance(X, pd.DataFrame):
        try:
            table = pa.Table.from_pandas(X, preserve_index=False)
        except UnicodeEncodeError:
            raise ValueError(_not_unicode(X)) from None
        return _table_digest(table), iter(table.to_batches(max_chunksize=rows))
    if isinstance(X, pa.Table):
        return _table_digest(X), iter(X.to_batches(max_chunksize=rows))
    raise TypeError(
        "X must be a DuckDB relation, a SQL query, a pandas DataFrame, a pyarrow Table or a stage path "
        f"('@stage/path/') of parquet files; got {type(X).__name__}."
    )


def _table_digest(table: pa.Table) -> str:
    """What identifies in-memory input for resuming: its schema and every value (lists and structs too)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def _not_unicode(frame: pd.DataFrame) -> str:
    """Where a DataFrame holds text that is not valid Unicode (a lone surrogate), for the error."""
    for column in frame.columns:
        for row, value in enumerate(frame[column].tolist()):
            if isinstance(value, str) and not valid_unicode(value):
                return (
                    f"Column {column!r}, row {row} of the input is not valid Unicode text (it holds a lone "
                    "surrogate, as bytes decoded with errors='surrogateescape' do); decode it properly first."
                )
    return "The input holds text that is not valid Unicode."


def _rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``rows`` rows (the last may be shorter), whatever sizes come in."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def _prepare_location(
    fs: Any, out_path: str, stage_location: str, mode: SaveMode, fingerprint: str
) -> dict[str, Any] | None:
    """Apply the SaveMode; returns the unfinished job that owns the folder when this run resumes it."""
    if not fs.exists(out_path):
        fs.makedirs(out_path, exist_ok=True)
        return None
    existing = fs.find(out_path)
    if not existing:
        return None
    owner_file = _join(out_path, WORK_DIR, "job.json")
    owner = None
    if fs.exists(owner_file) and not fs.exists(_join(out_path, SUCCESS)):
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


def _snapshot(fs: Any, out_path: str, source: Iterator[pa.RecordBatch], rows: int) -> int:
    """Write the input once as chunk files; a complete snapshot from an earlier run is reused."""
    folder = _join(out_path, WORK_DIR, "input")
    complete = _join(folder, "_COMPLETE")
    if fs.exists(complete):
        with fs.open(complete, "r") as handle:
            return int(json.load(handle)["rows"])
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
    fs.makedirs(folder, exist_ok=True)
    total = 0
    for index, table in enumerate(_rechunk(source, rows)):
        write_atomically(fs, _join(folder, f"chunk-{index:06d}.parquet"), table)
        total += table.num_rows
    with fs.open(complete, "w") as handle:
        json.dump({"rows": total}, handle)
    return total


def write_atomically(fs: Any, path: str, table: pa.Table) -> None:
    """Write under a temporary name in the same folder, then rename: readers never see half a file."""
    folder, _, name = path.rpartition("/")
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    with fs.open(temporary, "wb") as handle:
        pq.write_table(table, handle)
    fs.mv(temporary, path)


def _register_job(
    registry: Registry, key: str, name: str, mv: ModelVersion, function: str, engine: str, output: str, spec: dict
) -> None:
    existing = registry._catalog.query("SELECT status FROM {schema}.jobs WHERE job_key = ?", [key])
    if existing:
        current = jobs.Job(registry, name).status
        if current not in jobs.TERMINAL:
            raise ValueError(f"Job {name} is already {current}.")
        registry._catalog.execute(
            "UPDATE {schema}.jobs SET status = ?, message = NULL, pid = ?, host = ?, spec = ?, engine = ?, "
            "finished_on = NULL WHERE job_key = ?",
            [jobs.PENDING, os.getpid(), socket.gethostname(), json.dumps(spec, default=str), engine, key],
        )
        return
    registry._catalog.execute(
        "INSERT INTO {schema}.jobs (job_key, name, model_key, version_key, function_name, engine, output_location, "
        "spec, status, pid, host, rows_done) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
        [key, name, mv._model_key, mv._version_key, function, engine, output, json.dumps(spec, default=str),
         jobs.PENDING, os.getpid(), socket.gethostname()],
    )  # fmt: skip


def _column_handling(input_spec: InputSpec, runner: FunctionRunner) -> dict[str, FileEncoding]:
    """Column handling keyed by signature input name (keys match case-insensitively)."""
    by_lower = {s.name.lower(): s.name for s in runner.signature.inputs}
    handling = {}
    for column, options in (input_spec.column_handling or {}).items():
        name = by_lower.get(column.lower())
        if name is None:
            raise ValueError(
                f"{runner.context()}: column_handling names column {column!r}, which is not an input of the "
                f"function (inputs: {list(by_lower.values())})."
            )
        handling[name] = options["convert_to"]
    return handling


@dataclass
class ChunkWork:
    """What it takes to turn one input chunk into one part, without the registry (Ray ships it to actors)."""

    version: Any
    function: Any
    params: dict[str, Any]
    handling: dict[str, FileEncoding]
    stages: dict[str, Stage]
    stage: Stage
    out_path: str

    @classmethod
    def of(cls, plan: BatchPlan) -> ChunkWork:
        return cls(plan.runner.version, plan.runner.function, plan.params, plan.handling, plan.stages, plan.stage,
                   plan.out_path)  # fmt: skip

    @property
    def runner(self) -> FunctionRunner:
        runner = self.__dict__.get("_runner")
        if runner is None:
            runner = self.__dict__["_runner"] = FunctionRunner(self.version, self.function)
        return runner

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_runner"}

    def compute(self, index: int, chunk: str) -> int:
        """Predict chunk ``index`` into its part file (atomically); returns its row count."""
        fs = self.stage.filesystem
        with fs.open(chunk, "rb") as handle:
            table = pq.read_table(handle)
        write_atomically(fs, part_path(self.out_path, index), predict_table(self, table))
        return table.num_rows


def predict_table(plan: BatchPlan | ChunkWork, table: pa.Table) -> pa.Table:
    """One chunk of input rows -> the same rows plus the function's output columns."""
    runner = plan.runner
    columns_by_lower = {name.lower(): name for name in table.column_names}
    values = []
    for spec in runner.signature.inputs:
        column = columns_by_lower.get(spec.name.lower())
        if column is None:
            if spec.name in runner.optional_inputs:
                values.append([None] * table.num_rows)
                continue
            raise ValueError(
                f"{runner.context(spec.name)}: the input has no such column. Available columns are "
                f"{table.column_names}."
            )
        data = table.column(column).to_pylist()
        encoding = plan.handling.get(spec.name)
        if encoding is not None:
            data = [None if path is None else _read_file(plan, runner, spec.name, path, encoding) for path in data]
        values.append(data)
    results = runner.run(values, plan.params)
    output_names = [o.name for o in runner.signature.outputs]
    arrays = output_arrays(runner, results)
    keep = [c for c in table.column_names if c.lower() not in {n.lower() for n in output_names}]
    return pa.Table.from_arrays([table.column(c) for c in keep] + arrays, names=keep + output_names)


def output_arrays(runner: FunctionRunner, results: list[dict | None]) -> list[pa.Array]:
    """Output columns typed from the signature (JSON outputs as plain strings for parquet)."""
    types = OutputTypes.of(runner.function)
    arrays = []
    for name, arrow in zip(types.names, types.columns, strict=True):
        if isinstance(arrow, pa.ExtensionType):
            arrow = arrow.storage_type
        arrays.append(pa.array([None if r is None else r[name] for r in results], type=arrow))
    return arrays


def _read_file(
    plan: BatchPlan | ChunkWork, runner: FunctionRunner, column: str, path: Any, encoding: FileEncoding
) -> Any:
    if not isinstance(path, str):
        raise ValueError(f"{runner.context(column)}: expected a stage path such as '@stage/file.png', got {path!r}")
    try:
        data = read_stage_bytes(plan.stages, path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{runner.context(column)}: cannot read {path}: {exc}") from None
    if encoding is FileEncoding.RAW_BYTES:
        return data
    encoded = base64.b64encode(data).decode("ascii")
    if encoding is FileEncoding.BASE64_DATA_URL:
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return f"data:{mime};base64,{encoded}"
    return encoded


def _start(plan: BatchPlan, engine: str, *, block: bool) -> jobs.Job:
    from duckreg.batch import local

    target = local.run if engine == "local" else _ray_runner()
    job = jobs.Job(plan.registry, plan.job_key)
    if block:
        with jobs._ACTIVE_LOCK:
            jobs._ACTIVE[plan.job_key] = (None, plan.cancel)
        try:
            target(plan)
        finally:
            with jobs._ACTIVE_LOCK:
                jobs._ACTIVE.pop(plan.job_key, None)
        return job
    thread = threading.Thread(target=_guarded, args=(target, plan), name=f"duckreg-job-{plan.job_key}", daemon=True)
    with jobs._ACTIVE_LOCK:
        jobs._ACTIVE[plan.job_key] = (thread, plan.cancel)
    thread.start()
    return job


def _guarded(target: Any, plan: BatchPlan) -> None:
    try:
        target(plan)
    except Exception:  # noqa: BLE001 - the engine has recorded the failure in the job
        pass
    finally:
        with jobs._ACTIVE_LOCK:
            jobs._ACTIVE.pop(plan.job_key, None)


def _ray_runner() -> Any:
    from duckreg.batch import ray_engine

    return ray_engine.run
