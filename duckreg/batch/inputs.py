"""One batch job's input side: where rows come from, and the snapshot a resumed job reads again."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from duckreg.batch.layout import WORK_DIR, join_path, write_atomically
from duckreg.batch.specs import FileEncoding
from duckreg.inference import FunctionRunner, match_columns
from duckreg.model_signature import valid_unicode
from duckreg.stages import Stage, StageCatalog, parse_stage_path, read_stage_bytes
from duckreg.tasks.messages import data_url

if TYPE_CHECKING:
    import duckdb


def check_apart(stages: StageCatalog, X: Any, stage: Stage, out_path: str, output_location: str) -> None:
    """Refuse an output location that holds the input, or lies inside it (OVERWRITE would delete it)."""
    if not (isinstance(X, str) and X.startswith("@")):
        return
    in_stage, in_path = stages.locate(X)
    if in_stage.filesystem.protocol != stage.filesystem.protocol:
        return

    def normal(path: str, local: bool) -> str:
        return (os.path.realpath(path) if local else path).rstrip("/")

    a, b = normal(in_path, in_stage.is_local), normal(out_path, stage.is_local)
    if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
        raise ValueError(
            f"The output location {output_location!r} overlaps the input {X!r}: the job would read its own "
            "output, and OVERWRITE would delete its input. Write to a location outside the input."
        )


def input_source(
    stages: StageCatalog, connection: duckdb.DuckDBPyConnection, X: Any, rows: int
) -> tuple[Any, list[str], Iterator[pa.RecordBatch]]:
    """An identity for the fingerprint, the input's column names (checked before a job is registered),
    and a lazy stream of record batches of the input."""
    import duckdb

    if isinstance(X, str) and X.startswith("@"):
        files = [f for f in stages.list_files(X) if f.endswith(".parquet")]
        if not files:
            raise ValueError(f"No parquet files under {X}.")
        stage, _ = stages.locate(X)
        fs = stage.filesystem
        paths = [stage.resolve(parse_stage_path(f)[1]) for f in files]
        infos = [fs.info(path) for path in paths]
        identity = [[f, i.get("size"), str(i.get("mtime") or i.get("LastModified") or "")] for f, i in
                    zip(files, infos, strict=True)]  # fmt: skip

        def from_stage() -> Iterator[pa.RecordBatch]:
            for path in paths:
                with fs.open(path, "rb") as handle:
                    yield from pq.ParquetFile(handle).iter_batches(batch_size=rows)

        with fs.open(paths[0], "rb") as handle:
            columns = pq.ParquetFile(handle).schema_arrow.names
        return identity, columns, from_stage()
    if isinstance(X, str):
        cursor = connection.cursor()
        relation = cursor.sql(X)
        if relation is None:
            raise ValueError("X must be a query that returns rows.")
        return X, relation.columns, iter(relation.to_arrow_reader(rows))
    if isinstance(X, duckdb.DuckDBPyRelation):
        return X.sql_query(), X.columns, iter(X.to_arrow_reader(rows))
    if isinstance(X, pd.DataFrame):
        try:
            table = pa.Table.from_pandas(X, preserve_index=False)
        except UnicodeEncodeError:
            raise ValueError(_not_unicode(X)) from None
        return _table_digest(table), table.column_names, iter(table.to_batches(max_chunksize=rows))
    if isinstance(X, pa.Table):
        return _table_digest(X), X.column_names, iter(X.to_batches(max_chunksize=rows))
    raise TypeError(
        "X must be a DuckDB relation, a SQL query, a pandas DataFrame, a pyarrow Table or a stage path "
        f"('@stage/path/') of parquet files; got {type(X).__name__}."
    )


def _table_digest(table: pa.Table) -> str:
    """What identifies in-memory input for resuming: its schema and every value (lists and structs too)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def _not_unicode(frame: pd.DataFrame) -> str:
    """Where a DataFrame holds text that is not valid Unicode (a lone surrogate), for the error."""
    for column in frame.columns:
        for row, value in enumerate(frame[column].tolist(), start=1):
            if isinstance(value, str) and not valid_unicode(value):
                return (
                    f"Column {column!r}, row {row} of the input is not valid Unicode text (it holds a lone "
                    "surrogate, as bytes decoded with errors='surrogateescape' do); decode it properly first."
                )
    return "The input holds text that is not valid Unicode."


def rechunk(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Tables of exactly ``rows`` rows (the last may be shorter), whatever sizes come in."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def snapshot(fs: Any, out_path: str, source: Iterator[pa.RecordBatch], rows: int) -> int:
    """Write the input once as chunk files; a complete snapshot from an earlier run is reused."""
    folder = join_path(out_path, WORK_DIR, "input")
    complete = join_path(folder, "_COMPLETE")
    if fs.exists(complete):
        with fs.open(complete, "r") as handle:
            return int(json.load(handle)["rows"])
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
    fs.makedirs(folder, exist_ok=True)
    total = 0
    for index, table in enumerate(rechunk(source, rows)):
        write_atomically(fs, join_path(folder, f"chunk-{index:06d}.parquet"), table)
        total += table.num_rows
    with fs.open(complete, "w") as handle:
        json.dump({"rows": total}, handle)
    return total


def input_columns(
    runner: FunctionRunner,
    handling: dict[str, FileEncoding],
    stages: dict[str, Stage],
    table: pa.Table,
    errors: dict[int, str] | None = None,
) -> list[list[Any]]:
    """A chunk's values for each signature input, in signature order, as the core takes them: NULLs for a
    missing optional column, stage files read per ``column_handling``. With ``errors``, a file that cannot
    be read is that row's error (its value NULL) instead of the chunk's."""
    values = []
    for spec, column in zip(runner.signature.inputs, match_columns(table.column_names, runner), strict=True):
        if column is None:
            values.append([None] * table.num_rows)
            continue
        data = table.column(column).to_pylist()
        encoding = handling.get(spec.name)
        if encoding is not None:
            read = []
            for row, path in enumerate(data):
                try:
                    read.append(None if path is None else _read_file(stages, runner, spec.name, path, encoding))
                except ValueError as exc:
                    if errors is None:
                        raise
                    errors.setdefault(row, str(exc))
                    read.append(None)
            data = read
        values.append(data)
    return values


def _read_file(stages: dict[str, Stage], runner: FunctionRunner, column: str, path: Any, encoding: FileEncoding) -> Any:
    if not isinstance(path, str):
        raise ValueError(f"{runner.context(column)}: expected a stage path such as '@stage/file.png', got {path!r}")
    try:
        data = read_stage_bytes(stages, path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{runner.context(column)}: cannot read {path}: {exc}") from None
    if encoding is FileEncoding.RAW_BYTES:
        return data
    if encoding is FileEncoding.BASE64_DATA_URL:
        return data_url(path, data)
    return base64.b64encode(data).decode("ascii")
