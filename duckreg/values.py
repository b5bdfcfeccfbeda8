"""Plain Python values from numpy and pandas ones, JSON as the seeds write it, and hashable row keys.

Models, pandas and Arrow hand back numpy scalars, arrays and tuples; the signature, SQL and JSON
want plain ``int``/``float``/``list``/``dict``. Every door converts through these functions.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd


def to_python(value: Any) -> Any:
    """Numpy scalars and arrays, tuples and ``pd.NA`` as plain Python values, recursively."""
    if isinstance(value, dict):
        return {k: to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if value is pd.NA:
        return None
    return value


def cell_to_python(value: Any) -> Any:
    """One cell of a user's DataFrame as an input value: every missing marker (NaN, NaT, NA) is None."""
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return to_python(value)
    try:
        missing = pd.isna(value)
    except (TypeError, ValueError):
        return value
    return None if isinstance(missing, (bool, np.bool_)) and missing else to_python(value)


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars and arrays become plain Python values."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def to_json(value: Any) -> str:
    """JSON with ``json.dumps`` defaults; float32 scores widen to their exact double value."""
    return json.dumps(value, default=json_default)


def freeze(value: Any) -> Any:
    """A hashable form of a value (lists become tuples, dicts sorted item tuples), for grouping rows."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    return value


def human_size(nbytes: float) -> str:
    """A byte count as people read it: ``803 B``, ``163.7 KiB``, ``1.2 GiB``."""
    if nbytes < 1024:
        return f"{nbytes:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        nbytes /= 1024
        if nbytes < 1024 or unit == "GiB":
            break
    return f"{nbytes:.1f} {unit}"


def drop_unset_params(params: dict[str, Any]) -> dict[str, Any]:
    """Runtime params that were actually set (None, or NULL from SQL, means 'use the default')."""
    return {k: v for k, v in params.items() if v is not None}
