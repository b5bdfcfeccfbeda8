"""Torch's outputs on sample batches: what every engine and precision is compared against at log time.

The batches hold single texts and text pairs (what question answering and NLI feed), padded, so a
candidate is checked on short, long and padded rows alike. The reference is computed once per log
and reused for every candidate (an export, a fused graph, an int8 step, bf16 weights).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from duckreg.inference_engines.agreement import Agreement
from duckreg.tasks.limits import positions

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
CHECK_BATCH = 8

Reference = list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]
"""Per check batch: the encoded inputs (numpy) and torch's float outputs by name."""


def graph_inputs(module: Any, tokenizer: Any) -> list[str]:
    """The encoder inputs both the module accepts and the tokenizer produces, in a fixed order."""
    accepted = inspect.signature(module.forward).parameters
    produced = set(getattr(tokenizer, "model_input_names", INPUT_NAMES))
    return [name for name in INPUT_NAMES if name in accepted and name in produced]


def encode(
    tokenizer: Any, texts: list[str], pairs: list[str] | None = None, tensors: str = "pt", module: Any = None
) -> Any:
    """A padded batch as encoder engines read it: truncated to what the tokenizer and the model (``module``'s
    positions) take, 512 tokens at most."""
    limit = min(getattr(tokenizer, "model_max_length", 512) or 512, 512)
    if module is not None:
        limit = min(limit, positions(module) or limit)
    return tokenizer(texts, pairs, padding=True, truncation=True, max_length=limit, return_tensors=tensors)


def check_batches(texts: list[str]) -> Iterator[tuple[list[str], list[str] | None]]:
    """Single texts, then text pairs, in small batches."""
    for start in range(0, len(texts), CHECK_BATCH):
        yield texts[start : start + CHECK_BATCH], None
    half = len(texts) // 2
    for start in range(0, half, CHECK_BATCH):
        yield texts[start : min(start + CHECK_BATCH, half)], texts[half + start : half + min(start + CHECK_BATCH, half)]


def torch_outputs(module: Any, tokenizer: Any, texts: list[str]) -> Reference:
    """Torch's outputs on the check batches, computed once for every candidate compared against them."""
    import torch

    inputs = graph_inputs(module, tokenizer)
    reference = []
    with torch.inference_mode():
        for singles, pairs in check_batches(texts):
            batch = encode(tokenizer, singles, pairs, module=module)
            outputs = module(**{name: batch[name] for name in inputs})
            reference.append((
                {name: batch[name].numpy() for name in inputs},
                {name: value.float().numpy() for name, value in outputs.items() if isinstance(value, torch.Tensor)},
            ))  # fmt: skip
    return reference


Forward = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def agreement_with(reference: Reference, forward: Forward) -> dict[str, float]:
    """Run ``forward`` (numpy inputs to numpy outputs by name) on the reference's batches and summarise
    how closely it follows torch; outputs torch gave but ``forward`` does not are not compared."""
    agreement = Agreement()
    for batch, expected in reference:
        produced = forward(batch)
        for name, value in produced.items():
            if name in expected:
                agreement.add(name, expected[name], np.asarray(value, dtype=np.float32), batch["attention_mask"])
    return agreement.summary()


TIMED_LENGTHS = (16, 64, 256)
"""Tokens per row of the batches engines are timed on: a short sentence, a paragraph, a page. Which graph
or precision is faster changes with length (a fused attention loses on short rows and wins on long ones)."""


def length_batches(model: Any, texts: list[str], size: int = 32) -> dict[int, dict[str, np.ndarray]]:
    """One batch of ``size`` rows per timed length (capped at what the model reads), cut from the sample
    texts joined into one long text, so the ids are real tokens."""
    inputs = graph_inputs(model.model, model.tokenizer)
    long_text = " ".join(texts * (1 + 2000 // max(1, len(" ".join(texts).split()))))
    limit = min(getattr(model.tokenizer, "model_max_length", 512) or 512, 512, positions(model.model) or 512)
    batches = {}
    for length in sorted({min(length, limit) for length in TIMED_LENGTHS}):
        encoded = model.tokenizer(
            [long_text] * size, padding=True, truncation=True, max_length=length, return_tensors="np"
        )
        batches[length] = {name: encoded[name] for name in inputs}
    return batches


def speeds_by_length(
    baseline: Forward, candidate: Forward, batches: dict[int, dict[str, np.ndarray]], rounds: int = 3
) -> dict[str, float]:
    """``candidate``'s speed over ``baseline``'s at each timed length, as ``{"16 tokens": 0.87, ...}``."""
    return {
        f"{length} tokens": round(relative_speed(baseline, candidate, [batch], rounds), 3)
        for length, batch in batches.items()
    }


def relative_speed(baseline: Forward, candidate: Forward, batches: list[dict[str, np.ndarray]], rounds: int) -> float:
    """How many times faster ``candidate`` runs ``batches`` than ``baseline`` (best of ``rounds`` turns each,
    taken alternately so a busy moment of the machine falls on both)."""
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for which, forward in enumerate((baseline, candidate)):
            start = time.perf_counter()
            for batch in batches:
                forward(batch)
            best[which] = min(best[which], time.perf_counter() - start)
    return best[0] / best[1]
