"""Any pipeline logged with user signatures: inputs and outputs mapped by the signature's names.

One input column is passed as a list of values; several are passed as one record per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from duckreg.model_signature import DataType, FeatureSpec
from duckreg.tasks.base import InferredFunction, RunContext, Task, as_result_list
from duckreg.values import drop_unset_params, to_json, to_python


class Generic(Task):
    names = ()

    def deterministic(self, params: dict[str, Any], settings: dict[str, Any]) -> bool:
        return False  # a signature of the user's own may wrap any call, sampling ones too

    def infer(
        self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]
    ) -> InferredFunction | None:
        return None

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        specs = ctx.signature.inputs
        if len(specs) == 1:
            items: list[Any] = [_pipeline_value(specs[0], row[specs[0].name]) for row in rows]
        else:
            items = [{s.name: _pipeline_value(s, row[s.name]) for s in specs} for row in rows]
        results = as_result_list(ctx.model(items, **drop_unset_params(ctx.params)))
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


def _pipeline_value(spec: Any, value: Any) -> Any:
    """Numeric arrays (waveforms, pixel values, ...) reach the pipeline as numpy arrays."""
    if isinstance(spec, FeatureSpec) and spec.shape and (spec.dtype.is_float or spec.dtype.is_integer):
        return np.asarray(value, dtype=spec.dtype.as_numpy())
    return value


def _encode(spec: Any, value: Any) -> Any:
    """Nested results for a plain STRING output are stored as JSON text."""
    if isinstance(spec, FeatureSpec) and spec.dtype is DataType.STRING and spec.shape is None:
        if isinstance(value, (list, dict)):
            return to_json(value)
    return to_python(value)


TASK = Generic()
