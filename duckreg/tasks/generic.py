"""Any pipeline logged with user signatures: inputs and outputs mapped by the signature's names.

One input column is passed as a list of values; several are passed as one record per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import DataType, FeatureSpec
from duckreg.tasks.base import InferredFunction, RunContext, Task, generation_kwargs, per_item, plain, to_json


class Generic(Task):
    names = ()

    def infer(self, task, pipeline, settings, options) -> InferredFunction | None:
        return None

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        names = [spec.name for spec in ctx.signature.inputs]
        items: list[Any] = [row[names[0]] for row in rows] if len(names) == 1 else list(rows)
        results = per_item(ctx.pipeline(items, **generation_kwargs(ctx.params)), len(items))
        outputs = ctx.signature.outputs
        out = []
        for result in results:
            if isinstance(result, dict) and all(o.name in result for o in outputs):
                out.append({o.name: _encode(o, result[o.name]) for o in outputs})
            elif len(outputs) == 1:
                out.append({outputs[0].name: _encode(outputs[0], result)})
            else:
                raise ValueError(
                    f"the pipeline returned {type(result).__name__}, which has no fields "
                    f"{[o.name for o in outputs]} named by the signature"
                )
        return out


def _encode(spec: Any, value: Any) -> Any:
    """Nested results for a plain STRING output are stored as JSON text."""
    if isinstance(spec, FeatureSpec) and spec.dtype is DataType.STRING and spec.shape is None:
        if isinstance(value, (list, dict)):
            return to_json(value)
    return plain(value)


TASK = Generic()
