"""zero-shot-classification: a sequence and its candidate labels to labels ranked by score."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature
from duckreg.tasks.base import InferredFunction, InputError, RunContext, Task, as_result_list, declared, for_row
from duckreg.tasks.limits import check_lengths
from duckreg.values import drop_unset_params


class ZeroShotClassification(Task):
    names = ("zero-shot-classification",)
    engines = ("torch", "onnxruntime")

    def infer(self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]) -> InferredFunction:
        signature = ModelSignature(
            inputs=[
                FeatureSpec(name="sequences", dtype=DataType.STRING),
                FeatureSpec(name="candidate_labels", dtype=DataType.STRING, shape=(-1,)),
            ],
            outputs=[
                FeatureSpec(name="sequence", dtype=DataType.STRING),
                FeatureSpec(name="labels", dtype=DataType.STRING, shape=(-1,)),
                FeatureSpec(name="scores", dtype=DataType.DOUBLE, shape=(-1,)),
            ],
            params=[
                declared("hypothesis_template", DataType.STRING, "This example is {}.", settings),
                declared("multi_label", DataType.BOOL, False, settings),
            ],
        )
        return InferredFunction(signature)

    def sort_key(self, row: dict[str, Any]) -> int:
        return len(row["sequences"])

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        # Rows sharing a label set go through the pipeline together, in one batched call.
        groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            labels = tuple(row["candidate_labels"])
            if not labels:
                raise InputError("candidate_labels", "is empty; give at least one label", row=i)
            if any(label is None or not label.strip() for label in labels):
                raise InputError("candidate_labels", f"holds a NULL or blank label in {list(labels)!r}", row=i)
            with for_row(i):  # each label becomes a hypothesis read beside the text: one too long fails
                check_lengths("candidate_labels", list(labels), ctx.model.tokenizer,
                              what="a label must leave room for the text it is read beside")  # fmt: skip
            groups[labels].append(i)
        out: list[dict[str, Any]] = [{} for _ in rows]
        kwargs = drop_unset_params(ctx.params)
        for labels, indices in groups.items():
            sequences = [rows[i]["sequences"] for i in indices]
            results = as_result_list(
                ctx.model(sequences, candidate_labels=list(labels), batch_size=ctx.batch_size, **kwargs)
            )
            for i, result in zip(indices, results, strict=True):
                out[i] = {
                    "sequence": result["sequence"],
                    "labels": list(result["labels"]),
                    "scores": [float(s) for s in result["scores"]],
                }
        return out


TASK = ZeroShotClassification()
