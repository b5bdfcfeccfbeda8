"""The Ray engine: the same job on Ray Data, for when one process is not enough.

Input chunks become a Ray dataset of chunk references; ``map_batches`` runs them on a pool of
actors (``replicas`` x ``num_workers``), each loading the model once. An actor writes the part for
each chunk it is given (atomically, same names as the local engine), so the output contract is the
same: every input row once, ``_SUCCESS`` last, and a rerun resumes. Actors ask for
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
from typing import Any

from duckreg import jobs
from duckreg.batch.local import finish, part_rows
from duckreg.batch.run import BatchPlan, ChunkWork

DEFAULT_ACTOR_CPUS = 0.5


class _PartWriter:
    """A Ray Data actor: loads the model once, then turns chunk references into part files."""

    def __init__(self, work: ChunkWork) -> None:
        self.work = work
        self.work.runner.version.load()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        rows = [self.work.compute(int(i), str(c)) for i, c in zip(batch["index"], batch["chunk"], strict=True)]
        return {"index": list(batch["index"]), "rows": rows}


def run(plan: BatchPlan) -> None:
    registry, key, fs = plan.registry, plan.job_key, plan.fs
    jobs.set_status(registry, key, jobs.RUNNING)
    started_here = False
    try:
        try:
            import ray
        except ImportError:
            raise RuntimeError("The ray engine needs Ray: pip install 'duckreg[ray]'") from None
        if not ray.is_initialized():
            if plan.address:
                ray.init(address=plan.address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(
                    num_cpus=os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
                started_here = True
        ray.data.DataContext.get_current().enable_progress_bars = plan.progress_bar
        chunks = plan.chunk_paths()
        done_rows = 0
        pending = []
        for index, chunk in enumerate(chunks):
            part = plan.part_path(index)
            if fs.exists(part):
                done_rows += part_rows(fs, part)
            else:
                pending.append({"index": index, "chunk": chunk})
        actors = plan.replicas * plan.num_workers
        jobs.log(
            registry,
            key,
            f"ray: {len(pending)} of {len(chunks)} parts to compute on {actors} actor(s) "
            f"({plan.cpus or DEFAULT_ACTOR_CPUS} CPU, {plan.gpus or 0} GPU each)",
        )
        if pending:
            options: dict[str, Any] = {"num_cpus": plan.cpus or DEFAULT_ACTOR_CPUS}
            if plan.gpus:
                options["num_gpus"] = plan.gpus
            if plan.memory:
                options["memory"] = plan.memory
            dataset = ray.data.from_items(pending, override_num_blocks=len(pending)).map_batches(
                _PartWriter,
                fn_constructor_args=(ChunkWork.of(plan),),
                batch_size=1,
                concurrency=actors,
                **options,
            )
            for row in dataset.iter_rows():
                if plan.cancel.is_set():
                    jobs.log(registry, key, "cancelled")
                    jobs.set_status(registry, key, jobs.CANCELLED, "Cancelled.")
                    return
                done_rows += int(row["rows"])
                plan.part_done(int(row["index"]), len(chunks), int(row["rows"]), done_rows)
        finish(plan, done_rows)
    except Exception as exc:
        plan.fail(exc)
        raise
    finally:
        if started_here:
            import ray

            ray.shutdown()
