"""pandas in and out of the inference core, for ``ModelVersion.run``."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from duckreg.inference import FunctionRunner, match_columns
from duckreg.model_signature import DataType, FeatureSpec, ModelSignature
from duckreg.values import cell_to_python


def to_pandas(X: Any) -> pd.DataFrame:
    """Accept a pandas DataFrame, a pyarrow Table or a DuckDB relation."""
    if isinstance(X, pd.DataFrame):
        return X
    if hasattr(X, "to_pandas"):
        return X.to_pandas()
    if hasattr(X, "df"):
        return X.df()
    raise TypeError(f"run() takes a pandas DataFrame, a pyarrow Table or a DuckDB relation, got {type(X).__name__}")


def input_columns(frame: pd.DataFrame, runner: FunctionRunner) -> list[list[Any]]:
    """The signature's input columns as lists, matched by name (or by position for integer labels)."""
    specs = runner.signature.inputs
    if frame.shape[1] == 0:
        raise ValueError(f"{runner.context()}: Data Validation Error: Empty data is found.")
    labels = list(frame.columns)
    if all(isinstance(c, (int, np.integer)) for c in labels):
        if not len(runner.required_inputs()) <= len(labels) <= len(specs):
            raise ValueError(
                f"{runner.context()}: Data does not have the same number of features as signature. Signature requires "
                f"{len(specs)} features, but have {len(labels)} in input data."
            )
        frame = frame.set_axis([s.name for s in specs[: len(labels)]], axis=1)
    columns = []
    for spec, label in zip(specs, match_columns(list(frame.columns), runner), strict=True):
        if label is None:
            columns.append([None] * len(frame))
            continue
        values = [cell_to_python(v) for v in frame[label].tolist()]
        if spec.name not in runner.optional_inputs and any(v is None for v in values):
            warnings.warn(
                f"Null value detected in column {spec.name}: those rows get null outputs ({runner.context()}).",
                UserWarning,
                stacklevel=3,
            )
        columns.append(values)
    return columns


def output_frame(results: list[dict[str, Any] | None], signature: ModelSignature, index: pd.Index) -> pd.DataFrame:
    """One column per signature output, typed from the signature, rows in input order."""
    data = {}
    for spec in signature.outputs:
        values = [None if r is None else r[spec.name] for r in results]
        data[spec.name] = pd.Series(values, index=index, dtype=_dtype(spec, values))
    return pd.DataFrame(data, index=index)


def _dtype(spec: Any, values: list[Any]) -> Any:
    if not isinstance(spec, FeatureSpec) or spec.shape is not None:
        return object
    if spec.dtype is DataType.STRING:
        return "str"
    if spec.dtype.is_float:
        return spec.dtype.as_numpy()
    has_null = any(v is None for v in values)
    if spec.dtype.is_integer:
        return pd.Int64Dtype() if has_null else spec.dtype.as_numpy()
    if spec.dtype is DataType.BOOL:
        return pd.BooleanDtype() if has_null else np.bool_
    return object
