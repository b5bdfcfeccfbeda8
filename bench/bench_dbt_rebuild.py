"""A dbt project that embeds its reviews, built twice: cold, then again with unchanged inputs, in one run.

The example project (examples/dbt) with ``--rows`` generated reviews: ``dbt build`` seeds them, builds
``review_embeddings`` (``minilm(review)`` for every row) and ``review_sentiment`` on top, and runs the
data tests. The second build finds every embedding in the result cache beside the database, so the
model step costs lookups instead of forward passes. Per-model times come from dbt's own
``run_results.json``; the whole build's wall time includes dbt's start-up and the seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_description
from bench_embeddings import make_texts

ROOT = Path(__file__).resolve().parents[1]
MODEL = "model.duckreg_shop.review_embeddings"


def build(project: Path, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Run ``dbt build``; its wall time and the execute time of each model."""
    dbt = str(Path(sys.executable).with_name("dbt"))
    start = time.perf_counter()
    done = subprocess.run(
        [dbt, "build", "--project-dir", str(project), "--profiles-dir", str(project)],
        capture_output=True,
        text=True,
        env=env,
        cwd=project,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stdout[-3000:])
    results = json.loads((project / "target" / "run_results.json").read_text())
    return wall, {r["unique_id"]: float(r["execution_time"]) for r in results["results"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="duckreg-bench-"))
    project = work / "dbt"
    shutil.copytree(ROOT / "examples" / "dbt", project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    seed = project / "seeds" / "reviews.csv"
    examples = seed.read_text().splitlines()  # the project's own reviews stay: its data tests read them
    with seed.open("a", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        for i, text in enumerate(make_texts(args.rows - len(examples) + 1, 5, 60), start=len(examples)):
            writer.writerow([i, ("ramen", "coffee", "bakery")[i % 3], text])
    db = project / "shop.duckdb"
    subprocess.run([sys.executable, str(project / "log_models.py"), "--db", str(db)], check=True, capture_output=True)
    env = {**os.environ, "DUCKREG_DBT_DB": str(db), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    print(f"rows: {args.rows}, words per review: 5-60\n", flush=True)

    cold_wall, cold = build(project, env)
    warm_wall, warm = build(project, env)
    print(f"{'':<34}{'cold':>10}{'warm':>10}{'ratio':>10}")
    print(f"{'review_embeddings (dbt execute)':<34}{cold[MODEL]:>9.2f}s{warm[MODEL]:>9.2f}s"
          f"{cold[MODEL] / warm[MODEL]:>9.0f}x")  # fmt: skip
    print(f"{'whole dbt build (wall)':<34}{cold_wall:>9.2f}s{warm_wall:>9.2f}s{cold_wall / warm_wall:>9.1f}x")


if __name__ == "__main__":
    main()
