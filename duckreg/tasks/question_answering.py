"""question-answering: the best span of ``context`` that answers ``question``.

duckreg runs extractive QA on ``AutoModelForQuestionAnswering`` itself, with the transformers 4
pipeline's algorithm: contexts longer than ``max_seq_len`` are split into overlapping windows
(``doc_stride``), start/end scores are softmaxed over context tokens, spans are at most
``max_answer_len`` tokens, and token spans map back to whole words of the original context.
``top_k`` unset or 1 gives ``score``/``start``/``end``/``answer`` columns; larger gives ``outputs``,
a JSON list of such objects.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature, ParamSpec
from duckreg.tasks.base import InferredFunction, InputError, RunContext, Task, TaskModel, declared
from duckreg.tasks.limits import too_long, word_count
from duckreg.values import drop_unset_params, to_json

INPUTS = [FeatureSpec(name="question", dtype=DataType.STRING), FeatureSpec(name="context", dtype=DataType.STRING)]
# The defaults the question-answering pipeline (and Snowflake) declare. max_seq_len and doc_stride
# stay None: the pipeline derives them from the tokenizer (min(its maximum, 384), then at most half of
# that), which a fixed default would break for models that read fewer tokens.
DEFAULTS = {
    "doc_stride": (DataType.INT64, None),
    "max_answer_len": (DataType.INT64, 15),
    "max_seq_len": (DataType.INT64, None),
    "max_question_len": (DataType.INT64, 64),
    "handle_impossible_answer": (DataType.BOOL, False),
    "align_to_words": (DataType.BOOL, True),
}


def _params(settings: dict[str, Any], with_top_k: bool) -> list[ParamSpec]:
    specs = [declared(name, dtype, default, settings) for name, (dtype, default) in DEFAULTS.items()]
    return [declared("top_k", DataType.INT64, 1, settings), *specs] if with_top_k else specs


def _top_k(settings: dict[str, Any]) -> int:
    top_k = settings.get("top_k", settings.get("topk"))
    return 1 if top_k is None else int(top_k)


class QuestionAnswering(Task):
    names = ("question-answering",)
    engines = ("torch", "onnxruntime")

    def model_class(self, config: Any) -> str:
        return "AutoModelForQuestionAnswering"

    def infer(self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]) -> InferredFunction:
        top_k = _top_k(settings)
        if top_k < 1:
            raise ValueError(f"top_k parameter should be >= 1 (got {top_k})")
        if top_k == 1:
            outputs = [
                FeatureSpec(name="score", dtype=DataType.DOUBLE),
                FeatureSpec(name="start", dtype=DataType.INT64),
                FeatureSpec(name="end", dtype=DataType.INT64),
                FeatureSpec(name="answer", dtype=DataType.STRING),
            ]
            # One answer per row: a top_k at call time could not fit the answer columns.
            return InferredFunction(ModelSignature(inputs=INPUTS, outputs=outputs, params=_params(settings, False)))
        signature = ModelSignature(
            inputs=INPUTS, outputs=[FeatureSpec(name="outputs", dtype=DataType.STRING)], params=_params(settings, True)
        )
        return InferredFunction(signature, json_outputs=frozenset({"outputs"}))

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        task_model: TaskModel = ctx.model
        settings = {**task_model.settings, **drop_unset_params(ctx.params)}
        tokenizer, model = task_model.tokenizer, task_model.model
        if not tokenizer.is_fast:
            raise RuntimeError("question-answering needs a fast tokenizer (one with offset mappings)")
        max_seq_len = settings.get("max_seq_len") or min(tokenizer.model_max_length, 384)
        _check_rows(rows, tokenizer, max_seq_len)
        doc_stride = settings.get("doc_stride") or min(max_seq_len // 2, 128)
        if doc_stride > max_seq_len:
            raise ValueError(f"`doc_stride` ({doc_stride}) is larger than `max_seq_len` ({max_seq_len})")
        top_k = _top_k(settings)
        max_answer_len = int(settings.get("max_answer_len") or 15)
        if max_answer_len < 1:
            raise ValueError(f"max_answer_len parameter should be >= 1 (got {max_answer_len})")
        align_to_words = settings.get("align_to_words", True) is not False
        question_first = tokenizer.padding_side == "right"
        questions = [row["question"] for row in rows]
        contexts = [row["context"] for row in rows]
        encoded = tokenizer(
            text=questions if question_first else contexts,
            text_pair=contexts if question_first else questions,
            truncation="only_second" if question_first else "only_first",
            max_length=max_seq_len,
            stride=doc_stride,
            return_token_type_ids=True,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        pre_top_k = top_k * 2 + 10 if align_to_words else top_k
        candidates, null_scores = _candidates(model, tokenizer, encoded, ctx.batch_size, question_first, pre_top_k,
                                              max_answer_len)  # fmt: skip
        handle_impossible = bool(settings.get("handle_impossible_answer", False))
        out = []
        for sample, row in enumerate(rows):
            answers = _answers(encoded, candidates[sample], row["context"], 1 if question_first else 0, align_to_words)
            if handle_impossible:
                answers.append({"score": null_scores.get(sample, 0.0), "start": 0, "end": 0, "answer": ""})
            answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
            if top_k == 1:
                out.append(answers[0] if answers else {"score": 0.0, "start": 0, "end": 0, "answer": ""})
            else:
                out.append({"outputs": to_json(answers)})
        return out


def _check_rows(rows: Sequence[dict[str, Any]], tokenizer: Any, max_seq_len: int) -> None:
    """Refuse an empty question or context, and a question that leaves no room for its context."""
    for position, row in enumerate(rows):
        for column in ("question", "context"):
            if not row[column]:
                raise InputError(column, f"`{column}` cannot be empty", row=position)
    room = max_seq_len - 4  # the special tokens and at least one token of context
    for position, row in enumerate(rows):
        question = row["question"]
        # A word is a token at least: a megabyte question is refused without encoding it.
        words = word_count(question)
        count = words if words > room or len(question) <= room else len(tokenizer(question)["input_ids"])
        if count > room:
            raise too_long("question", question, count, room, "the context is read beside it, in spans of "
                           f"max_seq_len={max_seq_len} tokens", at_least=words > room, row=position)  # fmt: skip


def _candidates(
    model: Any, tokenizer: Any, encoded: Any, batch_size: int, question_first: bool, pre_top_k: int,
    max_answer_len: int,
) -> tuple[dict[int, list[tuple[int, int, int, float]]], dict[int, float]]:  # fmt: skip
    """The best (span, start, end, score) answers of every row across its windows, and each row's null score."""
    n_spans = len(encoded["input_ids"])
    sample_of_span = encoded.get("overflow_to_sample_mapping", list(range(n_spans)))
    start_logits, end_logits = _span_logits(model, tokenizer, encoded, batch_size)
    candidates: dict[int, list[tuple[int, int, int, float]]] = defaultdict(list)
    null_scores: dict[int, float] = {}
    context_id = 1 if question_first else 0
    for span in range(n_spans):
        # Only context tokens (and CLS, for the null answer) can be picked.
        allowed = np.array([s == context_id for s in encoded.sequence_ids(span)], dtype=np.int64)
        if tokenizer.cls_token_id is not None:
            allowed[np.array(encoded["input_ids"][span]) == tokenizer.cls_token_id] = 1
        start, end, null = _normalise(start_logits[span], end_logits[span], allowed)
        sample = sample_of_span[span]
        null_scores[sample] = min(null_scores.get(sample, 1e6), null)
        for s, e, score in _best_spans(start, end, pre_top_k, max_answer_len, allowed):
            candidates[sample].append((span, s, e, score))
    return candidates, null_scores


def _span_logits(model: Any, tokenizer: Any, encoded: Any, batch_size: int) -> tuple[list, list]:
    """Start and end logits per window, computed in length-sorted padded batches."""

    names = [n for n in tokenizer.model_input_names if n in encoded]
    n_spans = len(encoded["input_ids"])
    order = sorted(range(n_spans), key=lambda i: len(encoded["input_ids"][i]))
    starts: list[Any] = [None] * n_spans
    ends: list[Any] = [None] * n_spans
    for first in range(0, n_spans, batch_size):
        chunk = order[first : first + batch_size]
        features = [{n: encoded[n][i] for n in names} for i in chunk]
        batch = tokenizer.pad(features, return_tensors="pt")
        batch = {k: v.to(model.device) for k, v in batch.items()}
        output = model(**batch)
        start = output.start_logits.float().cpu().numpy()
        end = output.end_logits.float().cpu().numpy()
        for row, index in enumerate(chunk):
            length = len(encoded["input_ids"][index])
            starts[index] = start[row, :length]
            ends[index] = end[row, :length]
    return starts, ends


def _normalise(start: np.ndarray, end: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax over allowed tokens; returns the probabilities (CLS zeroed) and the null-answer score."""
    masked = allowed == 0
    start = np.where(masked, -10000.0, start)[None]
    end = np.where(masked, -10000.0, end)[None]
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    null = float(start[0, 0] * end[0, 0])
    start[0, 0] = end[0, 0] = 0.0
    return start, end, null


def _best_spans(
    start: np.ndarray, end: np.ndarray, top_k: int, max_answer_len: int, allowed: np.ndarray
) -> list[tuple[int, int, float]]:
    """The top spans with start <= end < start + max_answer_len, both ends on allowed tokens."""
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    flat = candidates.flatten()
    if top_k == 1:
        order = np.array([np.argmax(flat)])
    elif len(flat) < top_k:
        order = np.argsort(-flat)
    else:
        top = np.argpartition(-flat, top_k)[0:top_k]
        order = top[np.argsort(-flat[top])]
    starts, ends = np.unravel_index(order, candidates.shape)[1:]
    keep = np.isin(starts, allowed.nonzero()) & np.isin(ends, allowed.nonzero())
    starts, ends = starts[keep], ends[keep]
    scores = candidates[0, starts, ends]
    return [(int(s), int(e), float(v)) for s, e, v in zip(starts, ends, scores, strict=True)]


def _answers(
    encoded: Any,
    spans: list[tuple[int, int, int, float]],
    context: str,
    sequence_index: int,
    align_to_words: bool,
) -> list[dict[str, Any]]:
    """Character offsets and text per candidate; equal answers (ignoring case) add their scores."""
    answers: list[dict[str, Any]] = []
    for span, s, e, score in spans:
        encoding = encoded.encodings[span]
        start_char, end_char = _char_span(encoding, s, e, sequence_index, align_to_words)
        text = context[start_char:end_char]
        same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
        if same is not None:
            same["score"] += score
        else:
            answers.append({"score": score, "start": start_char, "end": end_char, "answer": text})
    return answers


def _char_span(encoding: Any, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    if align_to_words:
        try:
            start_word = encoding.token_to_word(s)
            end_word = encoding.token_to_word(e)
            return (
                encoding.word_to_chars(start_word, sequence_index=sequence_index)[0],
                encoding.word_to_chars(end_word, sequence_index=sequence_index)[1],
            )
        except Exception:  # noqa: BLE001 - tokens without a word fall back to raw offsets
            pass
    return encoding.offsets[s][0], encoding.offsets[e][1]


TASK = QuestionAnswering()
