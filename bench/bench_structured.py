"""What holding answers to a JSON schema costs with llguidance and with xgrammar, the two grammar libraries
vLLM ships that take a Hugging Face tokenizer as it is: building the tokenizer's index once, compiling a
schema, and computing the allowed-token mask at each step of a valid answer (a 64-row batch of them).

The tokenizer is a byte-level BPE of ``--vocab`` tokens trained here on random words. outlines-core
is left out: it needs the vocabulary rebuilt as byte strings per token, which neither it nor duckreg does
for an arbitrary tokenizer. Needs both libraries (``.venv-vllm`` of ``scripts/test`` has them):

    .venv-vllm/bin/python bench/bench_structured.py --vocab 8000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from _machine import cpu_description

SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"enum": ["cats", "kitchens", "bread", "rain", "trains", "gardens", "music", "the sea"]},
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "summary": {"type": "string", "maxLength": 40},
    },
    "required": ["topic", "rating", "summary"],
    "additionalProperties": False,
}
ANSWER = '{"topic":"kitchens","rating":4,"summary":"A warm room where bread is made."}'


def timed(function, repeat: int = 1) -> tuple[float, object]:
    start = time.perf_counter()
    for _ in range(repeat):
        result = function()
    return (time.perf_counter() - start) / repeat, result


def llguidance_steps(tokenizer, vocab: int, ids: list[int], rows: int) -> dict[str, float]:
    import llguidance
    import llguidance.hf
    import llguidance.torch

    index_s, ll_tokenizer = timed(lambda: llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab))
    options = {"whitespace_flexible": False}
    compile_s, grammar = timed(lambda: llguidance.LLMatcher.grammar_from_json_schema(SCHEMA, defaults=options), 20)
    matchers = [llguidance.LLMatcher(ll_tokenizer, grammar) for _ in range(rows)]
    bitmask = llguidance.torch.allocate_token_bitmask(rows, ll_tokenizer.vocab_size)
    start = time.perf_counter()
    for token in ids:
        for row, matcher in enumerate(matchers):
            llguidance.torch.fill_next_token_bitmask(matcher, bitmask, row)
        for matcher in matchers:
            assert matcher.consume_token(token), matcher.get_error()
    step_s = (time.perf_counter() - start) / len(ids)
    return {"index": index_s, "compile": compile_s, "step": step_s}


def xgrammar_steps(tokenizer, vocab: int, ids: list[int], rows: int) -> dict[str, float]:
    import xgrammar

    index_s, info = timed(lambda: xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab))
    compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
    compile_s, compiled = timed(
        lambda: compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False, separators=(",", ":")), 20
    )
    matchers = [xgrammar.GrammarMatcher(compiled) for _ in range(rows)]
    bitmask = xgrammar.allocate_token_bitmask(rows, info.vocab_size)
    start = time.perf_counter()
    for token in ids:
        for row, matcher in enumerate(matchers):
            matcher.fill_next_token_bitmask(bitmask, row)
        for matcher in matchers:
            assert matcher.accept_token(token)
    step_s = (time.perf_counter() - start) / len(ids)
    return {"index": index_s, "compile": compile_s, "step": step_s}


def bpe_tokenizer(folder: Path, vocab: int):
    """A GPT-2 style byte-level BPE of about ``vocab`` tokens, trained on random words."""
    import random

    import tokenizers
    import transformers

    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(200_000)]
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(words[i : i + 50]) for i in range(0, len(words), 50)], vocab_size=vocab,
                            min_frequency=1, special_tokens=["<|endoftext|>"])  # fmt: skip
    bpe.save_model(str(folder))
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    tokenizer.eos_token = "<|endoftext|>"
    return tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = bpe_tokenizer(Path(tmp), args.vocab)
        vocab = len(tokenizer)
        ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"]
        print(f"byte-level BPE, {vocab} tokens; an answer of {len(ids)} tokens, {args.rows} rows at each step")
        for name, measure in (("llguidance", llguidance_steps), ("xgrammar", xgrammar_steps)):
            figures = measure(tokenizer, vocab, ids, args.rows)
            print(f"{name:<11} tokenizer index {figures['index'] * 1000:8.1f} ms, schema compile "
                  f"{figures['compile'] * 1000:7.2f} ms, mask + advance {figures['step'] * 1000:6.2f} ms per step "
                  f"({figures['step'] / args.rows * 1e6:6.1f} us per row)")  # fmt: skip


if __name__ == "__main__":
    main()
