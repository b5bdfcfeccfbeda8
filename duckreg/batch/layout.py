"""The layout of a batch job's output location, shared by its input side and its output side::

    part-000000.parquet ...      one part per input chunk of max_batch_rows rows (written atomically)
    _duckreg/job.json            which job owns the folder, and a fingerprint of what it computes
    _duckreg/input/chunk-*.parquet, _duckreg/input/_COMPLETE
                                 the input, taken once, so a resumed job reads exactly the same rows

When every part exists the ``_duckreg`` folder is removed and ``_SUCCESS`` is written, last.
"""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

ERROR_COLUMN = "_error"
"""The column a ``JobSpec(on_error="continue")`` job writes each failed row's error into (NULL elsewhere)."""
WORK_DIR = "_duckreg"
SUCCESS = "_SUCCESS"


def join_path(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts)


def part_path(out_path: str, index: int) -> str:
    """Where the output of input chunk ``index`` goes."""
    return join_path(out_path, f"part-{index:06d}.parquet")


def write_atomically(fs: Any, path: str, table: pa.Table) -> None:
    """Write under a temporary name in the same folder, then rename: readers never see half a file."""
    folder, _, name = path.rpartition("/")
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    with fs.open(temporary, "wb") as handle:
        pq.write_table(table, handle)
    fs.mv(temporary, path)


def part_rows(fs: Any, part: str) -> int:
    """The row count of a part file already written (read from its footer)."""
    with fs.open(part, "rb") as handle:
        return pq.ParquetFile(handle).metadata.num_rows


def part_counts(fs: Any, part: str) -> tuple[int, int]:
    """(rows, failed rows) of a part already written, read in one open: its footer, and its ``_error``
    values when it has that column."""
    with fs.open(part, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        rows = parquet.metadata.num_rows
        if ERROR_COLUMN not in parquet.schema_arrow.names:
            return rows, 0
        column = parquet.read(columns=[ERROR_COLUMN]).column(0)
        return rows, len(column) - column.null_count
