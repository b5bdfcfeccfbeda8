"""The Ray executor: the same job on Ray Data, for when one process is not enough.

Input chunks become a Ray dataset of chunk references; ``map_batches`` runs them on a pool of actors
(``replicas`` x ``num_workers``), each loading the model once, on the job's engine (a vLLM replica with
``inference_engine_options={"engine": "vllm"}``), after checking its files' hashes on its node. Ray Data's
own ``ray.data.llm`` is not used: it drives vLLM's GPU engine processes and OpenAI-style prompts of its own,
where these actors call the one inference core, so the rows get the same checks, cache and columns as in
this process. An actor writes the part for each chunk it is given (atomically, same names as the local
executor), so the output contract is the same: every input row once, ``_SUCCESS`` last, and a rerun
resumes. Actors ask for
``cpu_requests`` CPUs (default 0.5, so a small machine keeps a CPU for Ray's own tasks and cannot
deadlock), ``gpu_requests`` GPUs and ``memory_requests`` bytes.

Without ``address`` a local Ray is started for the job (and stopped after); with one
(``inference_engine_options={"engine": "ray", "address": "ray://head:10001"}`` or
``compute_pool="ray://head:10001"``) the job runs on that cluster, whose workers must reach the
stage (an object store, or a shared file system) and have duckreg installed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from typing import Any

from duckreg.batch.executors import Placement, Resources, run_parts
from duckreg.batch.plan import BatchJob
from duckreg.batch.specs import JobSpec

DEFAULT_ACTOR_CPUS = 0.5


def check(placement: Placement, spec: JobSpec, asked: Resources) -> None:
    """Refuse a Ray job where Ray is not installed; the cluster itself sizes replicas against what it has."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ValueError("The ray engine needs Ray: pip install 'duckreg[ray]'.") from None


class _RayPartWriter:
    """A Ray Data actor: loads the model once, then turns chunk references into part files."""

    def __init__(self, job: BatchJob) -> None:
        self.job = job
        self.job.runner.version.shared_model()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        parts = zip(batch["index"], batch["chunk"], batch["first_row"], strict=True)
        counts = [self.job.write_part(int(index), str(chunk), int(first)) for index, chunk, first in parts]
        return {"index": list(batch["index"]), "rows": [c[0] for c in counts], "failed": [c[1] for c in counts]}


def run(plan: BatchJob) -> None:
    """Compute the missing parts on Ray actors (a local Ray is started, and stopped, when none runs)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("The ray engine needs Ray: pip install 'duckreg[ray]'") from None
    started_here = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if plan.address:
                ray.init(address=plan.address, **options)
            else:
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **options)
                started_here = True
        except Exception as exc:
            plan.on_failed(exc)
            raise
    try:
        ray.data.DataContext.get_current().enable_progress_bars = plan.progress_bar
        run_parts(plan, lambda missing: _compute_on_actors(plan, missing))
    finally:
        if started_here:
            ray.shutdown()


def _compute_on_actors(plan: BatchJob, missing: list[tuple[int, str, int]]) -> Generator[tuple[int, int, int]]:
    import ray

    actors = plan.replicas * plan.num_workers
    plan.log(
        f"ray: {len(missing)} parts to compute on {actors} actor(s) "
        f"({plan.cpus or DEFAULT_ACTOR_CPUS} CPU, {plan.gpus or 0} GPU each)"
    )
    if not missing:
        return
    options: dict[str, Any] = {"num_cpus": plan.cpus or DEFAULT_ACTOR_CPUS}
    if plan.gpus:
        options["num_gpus"] = plan.gpus
    if plan.memory:
        options["memory"] = plan.memory
    items = [{"index": index, "chunk": chunk, "first_row": first_row} for index, chunk, first_row in missing]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _RayPartWriter,
        fn_constructor_args=(plan,),
        batch_size=1,
        concurrency=actors,
        **options,
    )
    rows = dataset.iter_rows()
    try:
        for row in rows:
            yield int(row["index"]), int(row["rows"]), int(row["failed"])
    finally:
        close = getattr(rows, "close", None)
        if callable(close):
            close()  # shuts the dataset's actors down now, not when the iterator is collected
