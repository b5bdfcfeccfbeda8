"""``ModelVersion.run_batch`` and SQL's ``run_batch``: check the request, snapshot the input, start a job.

The output folder's layout and life cycle are ``batch.plan``'s; where rows come from is
``batch.inputs``'; where parts are computed is ``batch.executors``'. Running the same job again (same
model version, function, params and input) into a location without ``_SUCCESS`` resumes it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from duckreg import jobs
from duckreg.batch import executors
from duckreg.batch.inputs import check_apart, input_source, snapshot
from duckreg.batch.layout import WORK_DIR, join_path
from duckreg.batch.plan import BatchJob, prepare_location
from duckreg.batch.specs import FileEncoding, InputSpec, JobSpec, OutputSpec
from duckreg.inference import FunctionRunner, match_columns
from duckreg.stages import Stage, read_stage_bytes

if TYPE_CHECKING:
    from duckreg.catalog import Catalog
    from duckreg.store import RegistryStore


@dataclass(frozen=True)
class BatchTarget:
    """The model version a batch job runs, as ``ModelVersion.run_batch`` hands it over."""

    registry: RegistryStore
    runner_for: Callable[[str | None], FunctionRunner]
    """The runner of a function by name (None: the version's only function)."""
    model_key: str
    version_key: str
    model_name: str
    version_name: str


def run_batch(
    target: BatchTarget,
    X: Any,
    *,
    output_spec: OutputSpec,
    input_spec: InputSpec | None = None,
    job_spec: JobSpec | None = None,
    compute_pool: str | None = None,
    inference_engine_options: dict[str, Any] | None = None,
) -> jobs.Job:
    """Check the request, take the input once into the output folder, register the job and start it."""
    registry = target.registry
    input_spec, job_spec = _checked_specs(output_spec, input_spec, job_spec)
    placement = executors.choose(inference_engine_options, compute_pool, job_spec)
    stages = {row[0].lower(): Stage(row[0], row[1]) for row in registry.stages.rows()}
    runner = _job_runner(target, job_spec, placement, stages, inference_engine_options)
    params = runner.resolve_params(input_spec.params)
    handling = _column_handling(input_spec, runner)
    resources = executors.resources(placement, job_spec)
    new_name = job_spec.new_job_name()
    location = output_spec.location_for(new_name)
    stage, out_path = registry.stages.locate(location)
    fs = stage.filesystem
    check_apart(registry.stages, X, stage, out_path, location)
    input_id, source = _checked_input(registry, X, job_spec, runner)
    fingerprint = _fingerprint(target, runner, input_spec, job_spec, input_id)
    owner = prepare_location(fs, out_path, location, output_spec.mode, fingerprint)
    name = job_spec.job_name or (owner or {}).get("job_name") or new_name
    spec = _spec_record(output_spec, input_spec, job_spec, location, placement.name, fingerprint)
    key = jobs.register(registry.catalog, name, target.model_key, target.version_key, runner.function.name,
                        placement.name, location, spec)  # fmt: skip
    cancel = threading.Event()
    # Running here from the moment its row says so: a poller in this process never takes it for a dead job.
    jobs.track(key, None, cancel)
    try:
        first_run = None if owner else {"job_name": name, "fingerprint": fingerprint}
        total = _take_input(registry.catalog, key, fs, out_path, source, job_spec.max_batch_rows, first_run)
        plan = BatchJob(
            catalog=registry.catalog,
            job_key=key,
            version=runner.version,
            function=runner.function,
            params=params,
            handling=handling,
            stage=stage,
            out_path=out_path,
            address=placement.address,
            cancel=cancel,
            progress_bar=job_spec.block and sys.stderr.isatty(),
            stages=stages,
            use_cache=False if job_spec.force_rebuild else None,
            keep_going=job_spec.on_error == "continue",
            **resources,
        )
        plan.log(f"{'resuming' if owner else 'starting'} {_where(runner, placement)}: {total} rows")
    except BaseException:
        jobs.untrack(key, cancel)
        raise
    return executors.start(plan, placement.executor, block=job_spec.block)


def _checked_specs(
    output_spec: OutputSpec, input_spec: InputSpec | None, job_spec: JobSpec | None
) -> tuple[InputSpec, JobSpec]:
    """The input and job specs (their defaults where not given), each of its class."""
    input_spec = input_spec or InputSpec()
    job_spec = job_spec or JobSpec()
    if not isinstance(output_spec, OutputSpec):
        raise TypeError("output_spec must be a duckreg.batch.OutputSpec")
    if not isinstance(input_spec, InputSpec) or not isinstance(job_spec, JobSpec):
        raise TypeError("input_spec and job_spec must be duckreg.batch.InputSpec and duckreg.batch.JobSpec")
    return input_spec, job_spec


def _where(runner: FunctionRunner, placement: executors.Placement) -> str:
    """Where a job runs, as its log says: in this process or on Ray, and on which engine."""
    engine = runner.version.manifest.options.get("engine")
    return ("in this process" if placement.executor == "local" else "on Ray") + (
        f" on the {engine} engine" if engine else ""
    )


def _take_input(
    catalog: Catalog, key: str, fs: Any, out_path: str, source: Any, max_batch_rows: int,
    first_run: dict[str, str] | None,
) -> int:  # fmt: skip
    """Snapshot the input into the job's folder (after writing ``first_run``, the folder's job record, on a first
    run) and record its row count; a failure fails the job with the reason."""
    try:
        if first_run is not None:
            fs.makedirs(join_path(out_path, WORK_DIR), exist_ok=True)
            with fs.open(join_path(out_path, WORK_DIR, "job.json"), "w") as handle:
                json.dump(first_run, handle)
        total = snapshot(fs, out_path, source, max_batch_rows)
    except Exception as exc:
        jobs.set_status(catalog, key, jobs.FAILED, f"Failed to process input data: {exc}")
        raise RuntimeError(f"Failed to process input data: {exc}") from exc
    jobs.set_rows_total(catalog, key, total)
    return total


def _job_runner(
    target: BatchTarget,
    job_spec: JobSpec,
    placement: executors.Placement,
    stages: dict[str, Stage],
    inference_engine_options: dict[str, Any] | None,
) -> FunctionRunner:
    """The job's runner: its version on the engine the job asked for, reading chat media from the stages as
    they are now (a plain mapping, so Ray can ship it to its actors)."""
    runner = target.runner_for(job_spec.function_name)
    version = replace(
        runner.version,
        read_media=functools.partial(read_stage_bytes, stages),
        media_hosts=executors.media_hosts(inference_engine_options),
    ).with_engine(placement.engine, placement.engine_args)
    if job_spec.force_rebuild:
        version.forget()
    return FunctionRunner(version, runner.function)


def _checked_input(registry: RegistryStore, X: Any, job_spec: JobSpec, runner: FunctionRunner) -> tuple[Any, Any]:
    """(what identifies the input, where its rows come from), once its columns are found to feed the function:
    a missing input column is refused before the job is registered."""
    try:
        input_id, columns, source = input_source(registry.stages, registry.connection, X, job_spec.max_batch_rows)
    except (TypeError, ValueError):
        raise
    except Exception as exc:
        raise RuntimeError(f"Failed to process input data: {exc}") from exc
    match_columns(columns, runner)
    return input_id, source


def _fingerprint(
    target: BatchTarget, runner: FunctionRunner, input_spec: InputSpec, job_spec: JobSpec, input_id: Any
) -> str:
    """What a job computes: a rerun with the same fingerprint resumes the unfinished folder."""
    what = {
        "model": target.model_name.lower(),
        "version": target.version_name.lower(),
        "function": runner.function.name,
        "params": input_spec.params or {},
        "handling": {k.lower(): v["convert_to"].value for k, v in (input_spec.column_handling or {}).items()},
        "max_batch_rows": job_spec.max_batch_rows,
        "input": input_id,
        **({"on_error": job_spec.on_error} if job_spec.on_error != "raise" else {}),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _spec_record(
    output_spec: OutputSpec, input_spec: InputSpec, job_spec: JobSpec, location: str, engine: str, fingerprint: str
) -> dict[str, Any]:
    """The job's specs as the jobs table keeps them."""
    return {
        "output_spec": {"stage_location": location, "mode": output_spec.mode.value},
        "input_spec": {"params": input_spec.params, "column_handling": {
            k: {"input_format": v["input_format"].value, "convert_to": v["convert_to"].value}
            for k, v in (input_spec.column_handling or {}).items()}},
        "job_spec": vars(job_spec),
        "engine": engine,
        "fingerprint": fingerprint,
    }  # fmt: skip


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
