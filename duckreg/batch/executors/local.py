"""The local executor: one model in this process, one input chunk at a time (memory stays flat)."""

from __future__ import annotations

from collections.abc import Generator

from duckreg import interrupts, model_cache
from duckreg.batch.executors import run_parts
from duckreg.batch.plan import BatchPlan, PartWriter


def run(plan: BatchPlan) -> None:
    """Compute every missing part here, in order, with ``cpu_requests`` torch threads when given."""
    writer = PartWriter.of(plan)

    def compute_missing(missing: list[tuple[int, str, int]]) -> Generator[tuple[int, int, int]]:
        for index, chunk, first_row in missing:
            yield index, *writer.compute(index, chunk, first_row)

    with model_cache.torch_threads(None if plan.cpus is None else int(plan.cpus)), interrupts.for_job(plan.cancel):
        run_parts(plan, compute_missing)
