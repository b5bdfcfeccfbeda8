"""The local engine: one model in this process, one input chunk at a time (memory stays flat)."""

from __future__ import annotations

import pyarrow.parquet as pq

from duckreg import jobs
from duckreg.batch.run import SUCCESS, WORK_DIR, BatchPlan, ChunkWork


def run(plan: BatchPlan) -> None:
    """Compute every missing part, then remove the work folder and write ``_SUCCESS``."""
    registry, key, fs = plan.registry, plan.job_key, plan.fs
    jobs.set_status(registry, key, jobs.RUNNING)
    threads = None
    try:
        if plan.cpus is not None:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(max(1, int(plan.cpus)))
        chunks = plan.chunk_paths()
        work = ChunkWork.of(plan)
        done_rows = 0
        bar = _progress(plan)
        for index, chunk in enumerate(chunks):
            if plan.cancel.is_set():
                jobs.log(registry, key, f"cancelled after {index} of {len(chunks)} parts")
                jobs.set_status(registry, key, jobs.CANCELLED, "Cancelled.")
                return
            part = plan.part_path(index)
            computed = not fs.exists(part)
            rows = work.compute(index, chunk) if computed else part_rows(fs, part)
            done_rows += rows
            if computed:
                plan.part_done(index, len(chunks), rows, done_rows)
            if bar is not None:
                bar.update(rows)
        finish(plan, done_rows)
    except Exception as exc:
        plan.fail(exc)
        raise
    finally:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)


def finish(plan: BatchPlan, rows: int) -> None:
    """Remove the work folder, then write ``_SUCCESS`` last: its presence means the output is whole."""
    fs = plan.fs
    fs.rm(plan.path(WORK_DIR), recursive=True)
    for leftover in fs.ls(plan.out_path, detail=False):
        # Temporary files of a process killed mid-write.
        if leftover.rsplit("/", 1)[-1].startswith(".") and leftover.endswith(".tmp"):
            fs.rm(leftover)
    with fs.open(plan.path(SUCCESS), "wb"):
        pass
    jobs.log(plan.registry, plan.job_key, f"done: {rows} rows")
    jobs.set_status(plan.registry, plan.job_key, jobs.DONE, f"{rows} rows written.")


def _progress(plan: BatchPlan):
    if not plan.progress_bar:
        return None
    from tqdm.auto import tqdm

    total = plan.registry._catalog.query("SELECT rows_total FROM {schema}.jobs WHERE job_key = ?", [plan.job_key])
    return tqdm(total=total[0][0], unit="rows", desc=plan.job_key)


def part_rows(fs, part: str) -> int:
    with fs.open(part, "rb") as handle:
        return pq.ParquetFile(handle).metadata.num_rows
