"""One statement on its way to DuckDB: Snowflake model-call syntax rewritten, the models it names registered.

``duckreg.sql()`` and the ``duckreg`` shell both send statements through ``prepare``, so a statement
behaves the same in Python and in the shell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from duckreg.duckdb_ext.names import models_named_in
from duckreg.duckdb_ext.snowflake_syntax import rewrite

if TYPE_CHECKING:
    from duckreg.registry import Registry


def prepare(
    registry: Registry,
    con: duckdb.DuckDBPyConnection,
    statement: str,
    bound: set[str] | None = None,
    macro_catalog: str | None = None,
) -> str:
    """The statement as DuckDB runs it, after registering on ``con`` the models it uses.

    ``bound`` holds the models already registered on ``con`` (updated here), so a session registers
    each model once; without it every model the statement names is registered again. ``macro_catalog``
    is passed on to ``register_functions`` (``duckreg serve`` keeps its macros there).
    """
    text, used = rewrite(statement, registry.resolve_model_call)
    indexes = {f"index:{key}" for key in registry.indexes_named_in(text)}
    needed = used | models_named_in(text, registry.model_keys()) | registry.index_models_named_in(text)
    if bound is not None:
        needed -= bound
        indexes -= bound
    if needed or bound is None:
        registry.register_functions(con, models=needed, macro_catalog=macro_catalog)
    if indexes:  # an index created after its model was bound here
        registry.register_index_macros(con, {name.removeprefix("index:") for name in indexes}, macro_catalog)
    if bound is not None:
        bound |= needed | indexes
    return text
