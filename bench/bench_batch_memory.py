"""Peak memory and throughput of run_batch (local engine) over parquet stage input of growing size.

Each size runs in a fresh process that logs a tiny text classifier, writes the input rows as
parquet files into a stage, runs the job to ``_SUCCESS`` and reports its peak RSS. The local engine
streams the input in ``max_batch_rows`` chunks, so peak memory should not grow with the row count.

    .venv/bin/python bench/bench_batch_memory.py --rows 20000 200000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _machine import cpu_description

CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import duckdb, transformers
transformers.utils.logging.set_verbosity_error()
import tiny_models, duckreg
from duckreg.batch import JobSpec, OutputSpec

rows = {rows}
root = Path(tempfile.mkdtemp())
registry = duckreg.Registry(str(root / "bench.duckdb"))
folder = tiny_models.bert_text_classification(root / "model")
mv = registry.log_model(transformers.pipeline("text-classification", model=str(folder)), model_name="sentiment")
registry.create_stage("data", str(root / "data"))
registry.create_stage("out", str(root / "out"))
duckdb.execute(
    "COPY (SELECT i AS id, 'I like you number ' || (i % 997) || ' and ' || (i % 13) AS text "
    f"FROM range({{rows}}) t(i)) TO '{{root}}/data/input' (FORMAT parquet, FILE_SIZE_BYTES '2MB')"
)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
job = mv.run_batch(
    "@data/input/", output_spec=OutputSpec("@out/run/"), job_spec=JobSpec(max_batch_rows=1024, block=True)
)
elapsed = time.perf_counter() - start
assert job.status == "DONE", job.message
written = duckdb.sql(f"SELECT count(*) FROM read_parquet('{{root}}/out/run/*.parquet')").fetchall()[0][0]
assert written == rows and (root / "out" / "run" / "_SUCCESS").exists()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"rows": rows, "seconds": elapsed, "peak_mib": peak / 1024, "before_mib": before / 1024}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    results = []
    for rows in args.rows:
        done = subprocess.run(
            [sys.executable, "-c", CHILD.format(tests=tests, rows=rows)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            sys.exit(done.stderr)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(
            f"{rows:>9} rows: {result['seconds']:7.1f} s, {rows / result['seconds']:8.0f} rows/s, "
            f"peak RSS {result['peak_mib']:6.0f} MiB (before the job {result['before_mib']:.0f} MiB)",
            flush=True,
        )
    if len(results) > 1:
        print(f"peak RSS ratio largest/smallest: {results[-1]['peak_mib'] / results[0]['peak_mib']:.2f}x")


if __name__ == "__main__":
    main()
