"""token-classification (alias ner): a string to a JSON list of tagged tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duckreg.tasks.base import InferredFunction, RunContext, Task, as_nested_result_list, string_to_json
from duckreg.tasks.limits import check_lengths, truncates
from duckreg.values import to_json


class TokenClassification(Task):
    names = ("token-classification",)
    engines = ("torch", "onnxruntime")
    aliases = ("ner",)

    def infer(self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]) -> InferredFunction:
        return string_to_json()

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        texts = [row["inputs"] for row in rows]
        if not truncates(ctx.model):
            check_lengths(
                "inputs",
                texts,
                ctx.model.tokenizer,
                what="shorten it or log the pipeline with a stride",
            )
        results = as_nested_result_list(ctx.model(texts, batch_size=ctx.batch_size), len(texts))
        return [{"outputs": to_json(result)} for result in results]


TASK = TokenClassification()
