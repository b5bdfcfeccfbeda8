"""text-classification and sentiment-analysis: ``text`` (+ optional ``text_pair``) to a label."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature
from duckreg.tasks.base import InferredFunction, RunContext, Task, declared, no_grad, tensor_kind, to_numpy
from duckreg.tasks.limits import check_lengths, truncates
from duckreg.values import to_json

FUNCTIONS = ("sigmoid", "softmax", "none")
INPUTS = [FeatureSpec(name="text", dtype=DataType.STRING), FeatureSpec(name="text_pair", dtype=DataType.STRING)]


class TextClassification(Task):
    names = ("text-classification",)
    engines = ("torch", "onnxruntime")
    aliases = ("sentiment-analysis",)
    optional_inputs = frozenset({"text_pair"})

    def infer(self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]) -> InferredFunction:
        function_to_apply = declared("function_to_apply", DataType.STRING, None, settings)
        if settings.get("top_k") is not None:
            # Any explicit top_k, even 1, asks for a list of labels per row; top_k may change per call.
            signature = ModelSignature(
                inputs=INPUTS,
                outputs=[FeatureSpec(name="outputs", dtype=DataType.STRING)],
                params=[declared("top_k", DataType.INT64, 1, settings), function_to_apply],
            )
            return InferredFunction(signature, json_outputs=frozenset({"outputs"}))
        # One label per row: a top_k at call time could not fit the label and score columns.
        signature = ModelSignature(
            inputs=INPUTS,
            outputs=[
                FeatureSpec(name="label", dtype=DataType.STRING),
                FeatureSpec(name="score", dtype=DataType.DOUBLE),
            ],
            params=[function_to_apply],
        )
        return InferredFunction(signature)

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        pipe = ctx.model
        function = _scoring_function(pipe, ctx.params.get("function_to_apply"))
        if not truncates(pipe):
            check_lengths(
                "text",
                [row["text"] for row in rows],
                pipe.tokenizer,
                [row.get("text_pair") or None for row in rows],
                "shorten it, or log the pipeline with truncation=True to cut it",
            )
        scores = _scores(pipe, rows, ctx.batch_size, function)
        id2label = pipe.model.config.id2label
        output_names = [o.name for o in ctx.signature.outputs]
        if output_names == ["label", "score"]:
            best = scores.argmax(axis=1)
            return [{"label": id2label[int(i)], "score": float(s[i])} for i, s in zip(best, scores, strict=True)]
        # The pipeline's top_k form: every label by descending score (ties in label order), cut to top_k.
        top_k = ctx.params.get("top_k")
        if top_k is None:
            top_k = (getattr(pipe, "_postprocess_params", None) or {}).get("top_k")
        if top_k is not None and top_k < 1:
            raise ValueError(f"Parameter 'top_k' must be at least 1, got {top_k}")
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        return [
            {output_names[0]: to_json([{"label": id2label[int(i)], "score": float(s[i])} for i in ranks])}
            for ranks, s in zip(order, scores, strict=True)
        ]


def _scoring_function(pipe: Any, requested: Any) -> str:
    """The function the pipeline would apply to the logits: the call's, the logged one, else by config."""
    if requested is None:
        requested = (getattr(pipe, "_postprocess_params", None) or {}).get("function_to_apply")
    if requested is not None:
        name = str(getattr(requested, "value", requested)).lower()
        if name not in FUNCTIONS:
            raise ValueError(f"Parameter 'function_to_apply' must be one of {FUNCTIONS}, got {requested!r}")
        return name
    config = pipe.model.config
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    if config.problem_type == "single_label_classification" or config.num_labels > 1:
        return "softmax"
    return str(getattr(getattr(config, "function_to_apply", None), "value", "none") or "none").lower()


def _scores(pipe: Any, rows: Sequence[dict[str, Any]], batch_size: int, function: str) -> np.ndarray:
    """Scores [rows, labels] from padded batches, as the pipeline computes them one row at a time.

    Rows with a ``text_pair`` are tokenized as pairs; the runtime hands rows sorted by length, so a
    batch pads little.
    """
    tensors = tensor_kind(pipe)
    tokenizer_kwargs = {"padding": True, **(getattr(pipe, "_preprocess_params", None) or {})}
    forward_kwargs = {"use_cache": False} if "use_cache" in inspect.signature(pipe.model.forward).parameters else {}
    logits = np.empty((len(rows), pipe.model.config.num_labels), dtype=np.float32)
    paired = [i for i, row in enumerate(rows) if row.get("text_pair")]
    single = [i for i, row in enumerate(rows) if not row.get("text_pair")]
    with no_grad():
        for indices in (single, paired):
            for start in range(0, len(indices), batch_size):
                batch = indices[start : start + batch_size]
                texts = [rows[i]["text"] for i in batch]
                pairs = [rows[i]["text_pair"] for i in batch] if indices is paired else None
                encoded = pipe.tokenizer(texts, text_pair=pairs, return_tensors=tensors, **tokenizer_kwargs)
                if tensors == "pt":
                    encoded = encoded.to(pipe.model.device)
                logits[batch] = to_numpy(pipe.model(**encoded, **forward_kwargs)["logits"])
    if function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    if function == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    return logits


TASK = TextClassification()
