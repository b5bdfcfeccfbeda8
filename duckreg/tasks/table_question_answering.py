"""table-question-answering: a question over a JSON ``{column: [values]}`` table."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature
from duckreg.tasks.base import InferredFunction, InputError, RunContext, Task, as_result_list, declared, for_row
from duckreg.tasks.limits import check_lengths, max_tokens
from duckreg.values import drop_unset_params, to_python


def parse_table(text: str) -> dict[str, list[str]]:
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError("table", f"is not valid JSON ({exc.msg}); expected {{column: [values]}}") from None
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise InputError("table", "must be a JSON object of the form {column: [values]}")
    lengths = {len(v) for v in table.values()}
    if len(lengths) > 1:
        raise InputError("table", f"columns have different lengths {sorted(lengths)}")
    # TAPAS tokenizes cell text, so every cell is passed as a string.
    return {str(k): ["" if v is None else str(v) for v in values] for k, values in table.items()}


def fit_table(table: dict[str, list[str]], pipeline: Any) -> dict[str, list[str]]:
    """The first rows of ``table`` that can fit the model; TAPAS drops the rest ("drop_rows_to_fit").

    Rows past the model's row ids, or past the point where their words alone (each at least one
    token) exceed what the model reads, are dropped before tokenizing, so a huge table costs no more
    than one that fits.
    """
    vocab_sizes = getattr(pipeline.model.config, "type_vocab_sizes", None) or []
    max_rows = vocab_sizes[2] - 1 if len(vocab_sizes) > 2 else None
    max_columns = vocab_sizes[1] - 1 if len(vocab_sizes) > 1 else None
    if max_columns is not None and len(table) > max_columns:
        raise InputError("table", f"has {len(table)} columns; this model reads at most {max_columns}")
    budget = max_tokens(pipeline.tokenizer)
    n_rows = len(next(iter(table.values()), []))
    words = sum(len(str(name).split()) for name in table)
    keep = 0
    while keep < n_rows and (max_rows is None or keep < max_rows):
        words += sum(len(values[keep].split()) for values in table.values())
        if budget is not None and words > budget:
            break
        keep += 1
    if n_rows and keep == 0:
        raise InputError("table", f"its first row alone is longer than the {budget} tokens this model reads")
    return table if keep == n_rows else {name: values[:keep] for name, values in table.items()}


class TableQuestionAnswering(Task):
    names = ("table-question-answering",)

    def infer(self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]) -> InferredFunction:
        signature = ModelSignature(
            inputs=[FeatureSpec(name="query", dtype=DataType.STRING), FeatureSpec(name="table", dtype=DataType.STRING)],
            outputs=[
                FeatureSpec(name="answer", dtype=DataType.STRING),
                FeatureSpec(name="coordinates", dtype=DataType.INT64, shape=(-1,)),
                FeatureSpec(name="cells", dtype=DataType.STRING, shape=(-1,)),
                FeatureSpec(name="aggregator", dtype=DataType.STRING),
            ],
            params=[
                declared("sequential", DataType.BOOL, False, settings),
                declared("padding", DataType.STRING, None, settings),
                declared("truncation", DataType.STRING, None, settings),
            ],
        )
        # Each coordinate is a (row, column) pair, so SQL holds a list of pairs.
        return InferredFunction(signature, output_shapes={"coordinates": (-1, -1)})

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        # The pipeline batches the queries asked of one table; rows are grouped by table.
        groups: dict[str, list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            groups[row["table"]].append(i)
        out: list[dict[str, Any]] = [{} for _ in rows]
        kwargs = drop_unset_params(ctx.params)
        for table_text, indices in groups.items():
            queries = [rows[i]["query"] for i in indices]
            for position, query in zip(indices, queries, strict=True):
                with for_row(position):  # a question too long for the model is refused before the table is read
                    check_lengths(
                        "query", [query], ctx.model.tokenizer, what="a question must leave room for the table"
                    )
            with for_row(indices[0]):  # the first row holding this table names it
                table = fit_table(parse_table(table_text), ctx.model)
            results = as_result_list(ctx.model(table=table, query=queries, **kwargs))
            for i, r in zip(indices, results, strict=True):
                out[i] = {
                    "answer": r["answer"],
                    "coordinates": to_python(r["coordinates"]),
                    "cells": [str(c) for c in r["cells"]],
                    "aggregator": r.get("aggregator", "NONE"),
                }
        return out


TASK = TableQuestionAnswering()
