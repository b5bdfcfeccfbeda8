"""fill-mask: a string with a mask token to a JSON list of candidate fillings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import DataType, ModelSignature
from duckreg.tasks.base import (
    InferredFunction,
    InputError,
    RunContext,
    Task,
    as_nested_result_list,
    declared,
    string_to_json,
)
from duckreg.tasks.limits import check_lengths, truncates
from duckreg.values import drop_unset_params, to_json


class FillMask(Task):
    names = ("fill-mask",)
    engines = ("torch", "onnxruntime")

    def infer(self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]) -> InferredFunction:
        inferred = string_to_json()
        signature = ModelSignature(
            inputs=inferred.signature.inputs,
            outputs=inferred.signature.outputs,
            params=[
                declared("targets", DataType.STRING, None, settings, shape=(-1,)),
                declared("top_k", DataType.INT64, None, settings),
            ],
        )
        return InferredFunction(signature, json_outputs=inferred.json_outputs)

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        mask = ctx.model.tokenizer.mask_token
        texts = [row["inputs"] for row in rows]
        for text in texts:
            if mask not in text:
                raise InputError("inputs", f"no {mask} token in {text[:60]!r}; fill-mask needs one to fill")
        if not truncates(ctx.model):
            check_lengths("inputs", texts, ctx.model.tokenizer, what="shorten it (cutting it could cut the mask)")
        results = as_nested_result_list(
            ctx.model(texts, batch_size=ctx.batch_size, **drop_unset_params(ctx.params)), len(texts)
        )
        return [{"outputs": to_json(result)} for result in results]


TASK = FillMask()
