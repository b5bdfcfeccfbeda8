"""Query results drawn as the DuckDB CLI draws them, for the duckreg shell and the ``duckreg`` commands.

Values are shown in DuckDB's own text (``CAST(... AS VARCHAR)``: FLOAT, lists and structs look as in the
``duckdb`` CLI), in DuckDB's duckbox layout (drawn with rich) or as box, csv, json, markdown or line output.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from typing import Any, TextIO

import duckdb

MODES = ("duckbox", "box", "csv", "json", "markdown", "line")
MAX_ROWS = 40
"""Rows the duckbox mode shows by default: the first and last halves of a longer result."""


def terminal_width(out: TextIO) -> int:
    """The terminal's width, or ``$COLUMNS`` (or 120) when writing to a file or pipe."""
    if out.isatty():
        return shutil.get_terminal_size().columns
    return int(os.environ.get("COLUMNS", "120"))


def _texts(relation: duckdb.DuckDBPyRelation) -> list[tuple[str | None, ...]]:
    """Every value as DuckDB writes it (``CAST(... AS VARCHAR)``: FLOAT 0.735, lists, structs), NULL as None."""
    if not relation.columns:
        return []
    casts = ", ".join(f"CAST(#{i} AS VARCHAR)" for i in range(1, len(relation.columns) + 1))
    return relation.project(casts).fetchall()


def render(
    relation: duckdb.DuckDBPyRelation, mode: str = "duckbox", out: TextIO | None = None, max_rows: int = MAX_ROWS
) -> None:
    """Write a query's rows in ``mode``, as the DuckDB CLI does (duckbox shows at most ``max_rows`` rows)."""
    out = out or sys.stdout
    if mode == "duckbox":
        _duckbox(relation, out, max_rows)
        return
    names = list(relation.columns)
    if mode == "json":
        # A FLOAT goes through its text, so 0.735 stays 0.735 rather than its double 0.7350000143051147.
        tojson = ", ".join(
            f"to_json(CAST(CAST(#{i} AS VARCHAR) AS DOUBLE))" if str(kind) == "FLOAT" else f"to_json(#{i})"
            for i, kind in enumerate(relation.types, start=1)
        )
        rows = [
            "{" + ",".join(f"{json.dumps(n)}:{v if v is not None else 'null'}" for n, v in zip(names, row, strict=True))
            + "}"
            for row in relation.project(tojson).fetchall()
        ]  # fmt: skip
        out.write("[" + ",\n".join(rows) + "]\n" if rows else "")
        return
    rows = _texts(relation)
    if mode == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    elif mode == "markdown":
        out.write("| " + " | ".join(names) + " |\n|" + "|".join("---" for _ in names) + "|\n")
        for row in rows:
            out.write("| " + " | ".join(_markdown_cell(v) for v in row) + " |\n")
    elif mode == "line":
        width = max((len(n) for n in names), default=0)
        records = ["\n".join(f"{n:>{width}} = {'NULL' if v is None else v}" for n, v in zip(names, row, strict=True))
                   for row in rows]  # fmt: skip
        out.write("\n\n".join(records) + ("\n" if records else ""))
    elif mode == "box":
        _table(names, list(rows), out)
    else:
        raise ValueError(f"Unknown mode {mode!r}: choose one of {', '.join(MODES)}.")


def _markdown_cell(value: str | None) -> str:
    return "NULL" if value is None else value.replace("|", "\\|").replace("\n", " ")


_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
            "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL")  # fmt: skip


def _duckbox(relation: duckdb.DuckDBPyRelation, out: TextIO, max_rows: int = MAX_ROWS) -> None:
    """DuckDB's default mode: names and types, one line per row (long values end in …), first and last 20 rows,
    and the middle columns left out when the terminal is too narrow for all of them."""
    names, types = list(relation.columns), [str(t).lower() for t in relation.types]
    rows = _texts(relation)
    shown: list[tuple[str | None, ...] | None] = list(rows)
    if len(rows) > max_rows:
        head = (max_rows + 1) // 2
        shown = [*rows[:head], None, *rows[len(rows) - (max_rows - head) :]]
    width = terminal_width(out)
    natural_all = [
        max([len(name), len(kind), *(len(_text(row[c])) for row in shown if row is not None)])
        for c, (name, kind) in enumerate(zip(names, types, strict=True))
    ]
    keep = _columns_that_fit([min(n, _READABLE_CELL) for n in natural_all], width)
    notes = []
    if len(rows) > max_rows:
        notes.append(f"{len(rows)} rows ({max_rows} shown)")
    if -1 in keep:
        notes.append(f"{len(names)} columns ({len(keep) - 1} shown)")
    pick = [(names[i], types[i]) if i >= 0 else ("…", "") for i in keep]
    cells = [None if row is None else tuple(row[i] if i >= 0 else "…" for i in keep) for row in shown]
    natural = [natural_all[i] if i >= 0 else 1 for i in keep]
    widths = _fit(natural, width - 3 * len(pick) - 1)
    _table([n for n, _ in pick], cells, out, types=[k for _, k in pick], widths=widths, caption="  ".join(notes))


_MIN_CELL = 5
_READABLE_CELL = 12


def _columns_that_fit(needs: list[int], width: int) -> list[int]:
    """Column positions to show, taken from both ends as DuckDB does; -1 marks the left-out middle."""
    if sum(needs) + 3 * len(needs) + 1 <= width:
        return list(range(len(needs)))
    left, right, used = [], [], 1 + 4  # the outer border and the "…" column
    for step in range(len(needs)):
        position = step // 2 if step % 2 == 0 else len(needs) - 1 - step // 2
        if used + needs[position] + 3 > width and (left or right):
            break
        used += needs[position] + 3
        (left if step % 2 == 0 else right).append(position)
    return [*left, -1, *reversed(right)]


def _fit(natural: list[int], budget: int) -> list[int]:
    """Column widths within ``budget``: the widest columns give way first (a common cap), none below 5."""
    low, high = _MIN_CELL, max([_MIN_CELL, *natural])
    while low < high:
        cap = (low + high + 1) // 2
        if sum(min(n, cap) for n in natural) <= budget:
            low = cap
        else:
            high = cap - 1
    return [min(n, low) for n in natural]


def _text(value: str | None) -> str:
    return "NULL" if value is None else value


def _table(
    names: list[str],
    rows: list[tuple[str | None, ...] | None],
    out: TextIO,
    *,
    types: list[str] | None = None,
    widths: list[int] | None = None,
    caption: str | None = None,
) -> None:
    """A box table; with ``types`` and ``widths`` (duckbox) each cell stays on one line of its column's width."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SQUARE, header_style="bold", caption=caption or None, caption_justify="right")
    for position, name in enumerate(names):
        if types is None or widths is None:
            table.add_column(name, overflow="fold")
        else:
            numeric = types[position].split("(")[0].upper() in _NUMERIC
            table.add_column(f"{name}\n[dim]{types[position]}[/dim]", justify="right" if numeric else "left",
                             no_wrap=True, overflow="ellipsis", width=widths[position])  # fmt: skip
    for row in rows:
        table.add_row(*(["·"] * len(names) if row is None else [_cell(v) for v in row]))
    Console(file=out, soft_wrap=False, width=terminal_width(out), highlight=False, emoji=False).print(table)


def _cell(value: str | None) -> str:
    from rich.markup import escape

    return escape(_text(value))


def render_frame(frame: Any, mode: str = "duckbox", out: TextIO | None = None) -> None:
    """A pandas DataFrame through the same renderer (registry listings)."""
    con = duckdb.connect()
    try:
        render(con.from_df(frame), mode, out)
    finally:
        con.close()
