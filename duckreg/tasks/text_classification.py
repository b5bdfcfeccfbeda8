"""text-classification and sentiment-analysis: ``text`` (+ optional ``text_pair``) to a label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature
from duckreg.tasks.base import InferredFunction, RunContext, Task, declared
from duckreg.tasks.limits import check_lengths, truncates
from duckreg.values import drop_unset_params, to_json

FUNCTIONS = ("sigmoid", "softmax", "none")
INPUTS = [FeatureSpec(name="text", dtype=DataType.STRING), FeatureSpec(name="text_pair", dtype=DataType.STRING)]


class TextClassification(Task):
    names = ("text-classification",)
    engines = ("torch", "onnxruntime")
    aliases = ("sentiment-analysis",)
    optional_inputs = frozenset({"text_pair"})

    def infer(self, task, pipeline, settings, options) -> InferredFunction:
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
        function = ctx.params.get("function_to_apply")
        if function is not None and str(function).lower() not in FUNCTIONS:
            raise ValueError(f"Parameter 'function_to_apply' must be one of {FUNCTIONS}, got {function!r}")
        if not truncates(ctx.model):
            check_lengths(
                "text",
                [row["text"] for row in rows],
                ctx.model.tokenizer,
                [row.get("text_pair") or None for row in rows],
                "shorten it, or log the pipeline with truncation=True to cut it",
            )
        items: list[Any] = [
            {"text": row["text"], "text_pair": row["text_pair"]} if row.get("text_pair") else row["text"]
            for row in rows
        ]
        results = ctx.model(items, batch_size=ctx.batch_size, **drop_unset_params(ctx.params))
        if isinstance(results, dict):
            results = [results]
        output_names = [o.name for o in ctx.signature.outputs]
        out = []
        for result in results:
            labels = result if isinstance(result, list) else [result]
            if output_names == ["label", "score"]:
                best = labels[0]
                out.append({"label": best["label"], "score": float(best["score"])})
            else:
                out.append({output_names[0]: to_json(labels)})
        return out


TASK = TextClassification()
