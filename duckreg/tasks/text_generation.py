"""text-generation: a prompt to a JSON list of ``{generated_text}`` objects."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import ModelSignature
from duckreg.tasks._generation import GENERATION_PARAMS, cap_new_tokens, generation_params, greedy
from duckreg.tasks.base import InferredFunction, RunContext, Task, string_to_json
from duckreg.tasks.limits import positions, too_long, word_count
from duckreg.values import to_json


class TextGeneration(Task):
    names = ("text-generation",)
    needs_pad_token = True

    def deterministic(self, params: dict[str, Any], settings: dict[str, Any]) -> bool:
        return greedy(params, settings)

    def infer(self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]) -> InferredFunction:
        inferred = string_to_json()
        signature = ModelSignature(
            inputs=inferred.signature.inputs, outputs=inferred.signature.outputs, params=GENERATION_PARAMS
        )
        return InferredFunction(signature, json_outputs=inferred.json_outputs)

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        # Prompts of the same token length batch without padding, so each result equals
        # what the model gives for that prompt alone.
        tokenizer = ctx.model.tokenizer
        prompts = [row["inputs"] for row in rows]
        limit = positions(ctx.model.model)
        room = "a prompt must leave room for the answer"
        for row, prompt in enumerate(prompts):
            if limit is not None and (words := word_count(prompt)) >= limit:
                raise too_long("inputs", prompt, words, limit, room, at_least=True, row=row)
        lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        for row, (prompt, length) in enumerate(zip(prompts, lengths, strict=True)):
            if limit is not None and length >= limit:
                raise too_long("inputs", prompt, length, limit, room, row=row)
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, length in enumerate(lengths):
            buckets[length].append(i)
        out: list[dict[str, Any]] = [{} for _ in rows]
        kwargs = generation_params(ctx.params)
        for length, indices in buckets.items():
            batch = [prompts[i] for i in indices]
            capped = dict(kwargs)
            if capped.get("max_new_tokens") is not None:  # answers stop where the model's positions end
                capped["max_new_tokens"] = cap_new_tokens(limit, length, int(capped["max_new_tokens"]))
            if limit is not None and capped.get("max_length") is not None:
                capped["max_length"] = min(int(capped["max_length"]), limit)
            results = ctx.model(batch, batch_size=min(ctx.batch_size, len(batch)), **capped)
            for i, result in zip(indices, results, strict=True):
                out[i] = {"outputs": to_json(result if isinstance(result, list) else [result])}
        return out


TASK = TextGeneration()
