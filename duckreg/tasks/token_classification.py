"""token-classification (alias ner): a string to a JSON list of tagged tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature
from duckreg.tasks.base import InferredFunction, RunContext, Task, per_item_list, to_json


class TokenClassification(Task):
    names = ("token-classification", "ner")

    def infer(self, task, pipeline, settings, options) -> InferredFunction:
        signature = ModelSignature(
            inputs=[FeatureSpec(name="inputs", dtype=DataType.STRING)],
            outputs=[FeatureSpec(name="outputs", dtype=DataType.STRING)],
        )
        return InferredFunction(signature, json_outputs=frozenset({"outputs"}))

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        texts = [row["inputs"] for row in rows]
        results = per_item_list(ctx.pipeline(texts, batch_size=ctx.batch_size), len(texts))
        return [{"outputs": to_json(result)} for result in results]


TASK = TokenClassification()
