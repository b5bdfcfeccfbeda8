"""pandas in and out of the inference core, for ``ModelVersion.run``."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from duckreg.inference import FunctionRunner
from duckreg.model_signature import DataType, FeatureSpec, ModelSignature


def to_pandas(X: Any) -> pd.DataFrame:
    """Accept a pandas DataFrame, a pyarrow Table or a DuckDB relation."""
    if isinstance(X, pd.DataFrame):
        return X
    if hasattr(X, "to_pandas"):
        return X.to_pandas()
    if hasattr(X, "df"):
        return X.df()
    raise TypeError(f"run() takes a pandas DataFrame, a pyarrow Table or a DuckDB relation, got {type(X).__name__}")


def _cell(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple, dict)):
        return value
    if isinstance(value, np.generic):
        return None if pd.isna(value) else value.item()
    try:
        return None if pd.isna(value) else value
    except (TypeError, ValueError):
        return value


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
        labels = list(frame.columns)
    by_lower = {str(c).lower(): c for c in labels}
    columns = []
    for spec in specs:
        label = spec.name if spec.name in labels else by_lower.get(spec.name.lower())
        if label is None:
            if spec.name in runner.optional_inputs:
                columns.append([None] * len(frame))
                continue
            raise ValueError(
                f"{runner.context(spec.name)}: Data Validation Error: feature {spec.name} does not exist in data. "
                f"Available columns are {labels}."
            )
        values = [_cell(v) for v in frame[label].tolist()]
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
