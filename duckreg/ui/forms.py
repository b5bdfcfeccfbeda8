"""What the UI's forms send, typed by the function's signature, and what its JSON answers hold.

The browser sends text (a number field, a JSON list, a base64 upload); here each value becomes the type the
signature declares (``model_signature``), so the registry checks it exactly as it checks Python and SQL input.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
from typing import Any

import numpy as np
import pandas as pd

from duckreg.function_spec import FunctionSpec
from duckreg.identifiers import quote
from duckreg.model_signature import DataType, FeatureGroupSpec, FeatureSpec
from duckreg.values import to_python


def form_value(spec: FeatureSpec | FeatureGroupSpec, raw: Any, what: str) -> Any:
    """A form value as the signature's type: numbers and booleans from text, JSON for lists and structs,
    ``{"base64": ...}`` for file uploads; an empty field is NULL."""
    if raw is None or raw == "":
        return None
    if isinstance(spec, FeatureGroupSpec) or getattr(spec, "shape", None) or getattr(spec, "specs", None):
        if isinstance(raw, str):
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{what} {spec.name}: not valid JSON ({exc.msg} at character {exc.pos})") from None
        return raw
    dtype = spec.dtype
    if dtype is DataType.BYTES:
        if isinstance(raw, dict) and "base64" in raw:
            return base64.b64decode(raw["base64"])
        return str(raw).encode()
    if dtype is DataType.BOOL:
        return raw if isinstance(raw, bool) else str(raw).lower() in ("true", "1", "yes", "on")
    if dtype is DataType.STRING or not isinstance(raw, str):
        return raw
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"{what} {spec.name}: {raw!r} is not a number") from None
    return number if dtype in (DataType.FLOAT, DataType.DOUBLE) or not number.is_integer() else int(number)


def mapped_query(table: str, columns: list[str], mapping: dict[str, Any]) -> str:
    """``SELECT`` over ``table`` with each function input a mapping names fed from the column it names
    (``{"inputs": "body"}``), so a table whose columns are named otherwise can be scored as it is."""
    if not isinstance(mapping, dict):
        raise ValueError("columns must map each function input to a column of the table.")
    renamed = {str(k): str(v) for k, v in mapping.items() if v and str(v) != str(k)}
    for source in renamed.values():
        if source not in columns:
            raise ValueError(f"Column {source!r} is not in {table} (columns: {columns}).")
    replaced = [c for c in columns if c.lower() in {k.lower() for k in renamed}]
    keep = "*" + (f" EXCLUDE ({', '.join(quote(c) for c in replaced)})" if replaced else "")
    extra = "".join(f", {quote(source)} AS {quote(target)}" for target, source in renamed.items())
    return f"SELECT {keep}{extra} FROM " + ".".join(quote(part) for part in table.split("."))


def input_frame(function: FunctionSpec, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows the form sent, typed by the function's signature."""
    if not rows:
        raise ValueError("Give at least one row.")
    if not all(isinstance(row, dict) for row in rows):
        raise ValueError("Each row must be an object of column names and values.")
    specs = {s.name: s for s in function.signature.inputs}
    # A form row left blank arrives with no fields; a JSON row may name a NULL on purpose.
    for number, row in enumerate(rows, start=1):
        if all(value == "" for value in row.values()):
            raise ValueError(f"Row {number} is empty: fill in {', '.join(specs)}.")
    names = list(dict.fromkeys(name for row in rows for name in row))
    # Columns the signature does not know are passed on, so the registry's own matching reports them.
    return pd.DataFrame(
        {
            name: [form_value(specs[name], row.get(name), "input") if name in specs else row.get(name) for row in rows]
            for name in names
        }
    )


def form_params(function: FunctionSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The parameters the form filled in (empty fields keep their defaults)."""
    specs = {p.name: p for p in function.signature.params}
    out = {}
    for name, raw in given.items():
        if name not in specs:
            out[name] = raw  # refused by the registry with its own message
        elif raw not in (None, ""):
            out[name] = form_value(specs[name], raw, "parameter")
    return out


def plain(value: Any) -> Any:
    """A result value as JSON: arrays as lists, bytes as their size, NaN and NA as null, times as text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    value = to_python(value)  # numpy scalars and pd.NA
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (datetime.datetime, datetime.date, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value
