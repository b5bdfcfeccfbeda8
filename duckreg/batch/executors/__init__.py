"""Where a batch job's parts are computed: in this process, or on Ray actors. Each executor is one module here.

An executor never answers rows itself: it hands each part to the one inference core, on the version's
engine or the one the job asked for (``inference_engine_options={"engine": "vllm"}``). ``choose`` maps
Snowflake's ``inference_engine_options`` onto an executor and an engine and checks them; ``start`` runs a
plan; the loop every executor shares (skip what exists, compute the rest, cancel between parts, finish) is
``run_parts``, so an executor only says how missing parts are computed.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import re
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from duckreg import interrupts, jobs
from duckreg.batch.layout import part_counts, part_rows
from duckreg.batch.plan import BatchJob
from duckreg.batch.specs import JobSpec, parse_count, parse_memory

EXECUTORS = ("local", "ray")
ENGINE_NAMES = ("local", "ray", "vllm")
"""The names ``inference_engine_options["engine"]`` takes (Snowflake's ``InferenceEngine``, plus ray)."""


@dataclass(frozen=True)
class Placement:
    """Where a job runs and what computes its rows."""

    executor: str
    """``local`` (this process) or ``ray`` (actors on a Ray cluster)."""
    address: str | None
    """The Ray cluster's address (None: a local Ray started for the job)."""
    engine: str | None
    """The engine the job computes with (None: the version's own), e.g. ``vllm``."""
    engine_args: dict[str, Any] | None
    """``vllm.LLM`` arguments (``engine_args_override``)."""
    name: str
    """What the job row records as its engine: the name the user chose."""


def choose(options: dict[str, Any] | None, compute_pool: str | None, spec: JobSpec) -> Placement:
    """The executor and engine ``inference_engine_options``, ``compute_pool`` and the job's replicas ask for.

    ``{"engine": "vllm"}`` runs the job on the vLLM engine, in this process, or on Ray actors when it asks
    for more than one replica or worker, or names a Ray ``address``.
    """
    options = dict(options or {})
    unknown = set(options) - {"engine", "address", "engine_args_override", "allowed_media_domains"}
    if unknown:
        raise ValueError(
            f"Unknown inference_engine_options keys {sorted(unknown)}; known: engine, address, engine_args_override, "
            "allowed_media_domains."
        )
    if options and "engine" not in options:
        raise ValueError("'engine' field is required in inference_engine_options")
    name = str(getattr(options.get("engine"), "value", options.get("engine") or "local")).lower()
    if name == "python_generic":
        name = "local"
    if name not in ENGINE_NAMES:
        raise ValueError(f"Unknown engine {name!r}; duckreg runs 'local' (default), 'ray' or 'vllm'.")
    overrides = options.get("engine_args_override")
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f"engine_args_override must be a dict of vllm.LLM arguments, got {overrides!r}")
    if overrides and name != "vllm":
        raise ValueError("engine_args_override holds vllm.LLM arguments; it applies to the vllm engine only.")
    address = options.get("address") or (compute_pool if compute_pool not in (None, "local") else None)
    engine = "vllm" if name == "vllm" else None
    if name == "local":
        if address:
            raise ValueError(
                f"compute_pool {compute_pool!r}: the local engine runs in this process. To run on a Ray "
                "cluster pass inference_engine_options={'engine': 'ray', 'address': 'ray://host:10001'}."
            )
        executor = "local"
    elif name == "ray":
        executor = "ray"
    else:
        executor = "ray" if address or (spec.replicas or 1) > 1 or (spec.num_workers or 1) > 1 else "local"
    if address is not None and not re.fullmatch(r"auto|ray://\S+|[\w.-]+:\d+", address):
        raise ValueError(
            f"Ray address {address!r}: use 'auto', 'ray://host:10001' or 'host:6379' (or leave it out to start a "
            "local Ray for the job)."
        )
    return Placement(executor, address if executor == "ray" else None, engine, overrides or None, name)


def media_hosts(options: dict[str, Any] | None) -> tuple[str, ...]:
    """The web hosts whose pictures, videos and audio a chat job may fetch (``allowed_media_domains``)."""
    hosts = (options or {}).get("allowed_media_domains") or ()
    if isinstance(hosts, str) or not all(isinstance(h, str) and h and "/" not in h for h in hosts):
        raise ValueError(
            f"allowed_media_domains must be a list of host names such as ['images.example.com'], got {hosts!r}"
        )
    return tuple(h.lower() for h in hosts)


@dataclass(frozen=True)
class Resources:
    """What a job asks of the machines that run it, parsed from its ``JobSpec``."""

    replicas: int
    num_workers: int
    cpus: float | None
    gpus: float | None
    memory: int | None
    """Bytes."""


def resources(placement: Placement, spec: JobSpec) -> dict[str, Any]:
    """Every JobSpec field parsed, and checked by the executor (and engine) the job runs on."""
    asked = Resources(
        replicas=spec.replicas or 1,
        num_workers=spec.num_workers or 1,
        cpus=parse_count(spec.cpu_requests, "cpu_requests") if spec.cpu_requests is not None else None,
        gpus=parse_count(spec.gpu_requests, "gpu_requests") if spec.gpu_requests is not None else None,
        memory=parse_memory(spec.memory_requests) if spec.memory_requests is not None else None,
    )
    _executor_module(placement.executor).check(placement, spec, asked)
    return vars(asked)


def start(plan: BatchJob, executor: str, *, block: bool) -> jobs.Job:
    """Run the plan on ``executor``: here and now (``block``), or in a background thread."""
    target = _executor_module(executor).run
    job = jobs.Job(plan.catalog, plan.job_key)
    if block:
        jobs.track(plan.job_key, None, plan.cancel)
        try:
            target(plan)
        finally:
            jobs.untrack(plan.job_key, plan.cancel)
        return job
    thread = threading.Thread(
        target=_run_in_background, args=(target, plan), name=f"duckreg-job-{plan.job_key}", daemon=True
    )
    jobs.track(plan.job_key, thread, plan.cancel)
    _stop_jobs_at_exit()
    thread.start()
    return job


@functools.cache
def _stop_jobs_at_exit() -> None:
    """Once per process, before DuckDB's connections close at exit: background jobs stop cleanly."""
    atexit.register(jobs.stop_background_jobs)


def _run_in_background(target: Callable[[BatchJob], None], plan: BatchJob) -> None:
    try:
        target(plan)
    except Exception:  # noqa: BLE001 - the executor has recorded the failure in the job
        pass
    finally:
        jobs.untrack(plan.job_key, plan.cancel)


def _executor_module(executor: str) -> Any:
    """Each executor is one module of this package; only the one a job uses is imported (Ray is optional)."""
    return importlib.import_module(f"{__name__}.{executor}")


def run_parts(
    plan: BatchJob, compute_missing: Callable[[list[tuple[int, str, int]]], Generator[tuple[int, int, int]]]
) -> None:
    """The loop every executor shares: skip parts already written, compute the others, finish or cancel.

    ``compute_missing`` gets the (index, chunk path, first row) of every part to compute (its first row
    counted in the whole job, so an error names the row as the input counts it) and yields (index, rows) as
    each one is written, with how many of its rows failed; the job is cancelled between parts.
    """
    plan.on_start()
    done_rows = failed_rows = 0
    try:
        chunks = plan.chunk_paths()
        missing = []
        first_row = 0
        for index, chunk in enumerate(chunks):
            part = plan.part_path(index)
            if plan.fs.exists(part):
                rows, failed = part_counts(plan.fs, part)
                done_rows, failed_rows = done_rows + rows, failed_rows + failed
            else:
                missing.append((index, chunk, first_row))
            first_row += part_rows(plan.fs, chunk)
        plan.on_progress_known(done_rows)
        if missing and plan.cancel.is_set():
            plan.on_cancelled(f"cancelled before computing {len(missing)} parts")
            return
        computed = compute_missing(missing)
        for position, (index, rows, failed) in enumerate(computed, 1):
            done_rows += rows
            failed_rows += failed
            plan.on_part_written(index, len(chunks), rows, done_rows, failed, failed_rows)
            if position < len(missing) and plan.cancel.is_set():
                computed.close()  # the executor stops its workers before the job reads as cancelled
                plan.on_cancelled(f"cancelled after part {index + 1} of {len(chunks)}")
                return
        plan.on_complete(done_rows, failed_rows)
    except interrupts.Interrupted:
        plan.on_cancelled(f"cancelled while computing a part ({done_rows} rows written)")
    except Exception as exc:
        plan.on_failed(exc)
        raise
