"""token-classification (alias ner): a string to a JSON list of tagged tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duckreg.tasks.base import InferredFunction, RunContext, Task, per_item_list, string_to_json, to_json
from duckreg.tasks.limits import check_lengths, truncates


class TokenClassification(Task):
    names = ("token-classification", "ner")

    def infer(self, task, pipeline, settings, options) -> InferredFunction:
        return string_to_json()

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        texts = [row["inputs"] for row in rows]
        if not truncates(ctx.pipeline):
            check_lengths(
                "inputs",
                texts,
                ctx.pipeline.tokenizer,
                what="shorten it or log the pipeline with a stride",
            )
        results = per_item_list(ctx.pipeline(texts, batch_size=ctx.batch_size), len(texts))
        return [{"outputs": to_json(result)} for result in results]


TASK = TokenClassification()
