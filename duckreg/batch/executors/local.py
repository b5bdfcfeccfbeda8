"""The local executor: one model in this process, one input chunk at a time (memory stays flat)."""

from __future__ import annotations

import os
from collections.abc import Generator

from duckreg import interrupts, model_cache
from duckreg.batch.executors import Placement, Resources, run_parts
from duckreg.batch.plan import BatchJob
from duckreg.batch.specs import JobSpec


def check(placement: Placement, spec: JobSpec, asked: Resources) -> None:
    """Refuse what one process on this machine cannot honour: replicas, workers, GPUs, CPUs or memory it lacks."""
    import torch

    if asked.replicas > 1:
        raise ValueError("replicas > 1 needs the ray engine: inference_engine_options={'engine': 'ray'}.")
    if asked.num_workers > 1:
        raise ValueError("num_workers > 1 needs the ray engine; the local engine runs one model in this process.")
    if asked.gpus and not torch.cuda.is_available():
        raise ValueError(f"gpu_requests={spec.gpu_requests!r}, but no CUDA GPU is available to this process.")
    if asked.cpus is not None and asked.cpus > (os.cpu_count() or 1):
        raise ValueError(f"cpu_requests={spec.cpu_requests!r}, but this machine has {os.cpu_count()} CPUs.")
    if asked.memory is not None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if asked.memory > available:
            raise ValueError(
                f"memory_requests={spec.memory_requests!r}, but this machine has {available / 2**30:.1f} GiB."
            )
    if placement.engine == "vllm" and asked.cpus is not None:
        raise ValueError(
            "cpu_requests is not used by the vllm engine in this process, which sizes its own threads; leave it "
            "out (on Ray, with replicas > 1, it sizes each replica)."
        )


def run(plan: BatchJob) -> None:
    """Compute every missing part here, in order, with ``cpu_requests`` torch threads when given."""

    def compute_missing(missing: list[tuple[int, str, int]]) -> Generator[tuple[int, int, int]]:
        for index, chunk, first_row in missing:
            yield index, *plan.write_part(index, chunk, first_row)

    with model_cache.torch_threads(None if plan.cpus is None else int(plan.cpus)), interrupts.for_job(plan.cancel):
        run_parts(plan, compute_missing)
