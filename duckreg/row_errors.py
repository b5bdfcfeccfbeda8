"""Rows that failed under ``on_error := 'null'`` in this process, for SQL's ``duckreg_errors()``.

A failed row's outputs are NULL in the query; its error is kept here with the row's inputs (as JSON, so
a query can join it back to its rows) for the process's lifetime, the newest ``MAX_KEPT`` of them.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any

MAX_KEPT = 10_000
ERRORS_TYPE = (
    'STRUCT(failed_at TIMESTAMP, model VARCHAR, "version" VARCHAR, "function" VARCHAR, inputs JSON, error VARCHAR)[]'
)
"""The SQL type of the list ``duckreg_errors()`` unnests."""

_RECENT: deque[dict[str, Any]] = deque(maxlen=MAX_KEPT)
_LOCK = threading.Lock()


def record(model: str, version: str, function: str, names: Sequence[str], columns: Sequence[Sequence[Any]],
           errors: dict[int, str]) -> None:  # fmt: skip
    """Keep each failed row (index into ``columns``) with its inputs by name and its message."""
    now = datetime.now()
    rows = []
    for row, message in sorted(errors.items()):
        inputs = {name: column[row] for name, column in zip(names, columns, strict=True)}
        rows.append({"failed_at": now, "model": model, "version": version, "function": function,
                     "inputs": json.dumps(inputs, default=str), "error": message})  # fmt: skip
    with _LOCK:
        _RECENT.extend(rows)


def recent() -> list[dict[str, Any]]:
    """The failed rows kept, oldest first."""
    with _LOCK:
        return list(_RECENT)


def clear() -> None:
    with _LOCK:
        _RECENT.clear()
