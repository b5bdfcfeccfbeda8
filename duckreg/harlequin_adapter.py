"""Harlequin adapter: ``harlequin -a duckreg shop.duckdb`` opens the terminal SQL IDE with every model callable.

It is Harlequin's own DuckDB adapter (the same options, init script and extensions) with a registry
on the connection. Each query goes through duckreg's statement preparation first, as in the duckreg
shell: only the models a query names are registered (so opening a large registry is fast), and
Snowflake's ``MODEL(m, v1)!predict(...)`` syntax works. The catalog panel lists the registry's
models, their versions and the SQL names to call, and completion offers every model function.

Registered under the ``harlequin.adapter`` entry point group; install with ``duckreg[harlequin]``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar

import duckdb
from harlequin.autocomplete.completion import HarlequinCompletion
from harlequin.catalog import Catalog, InteractiveCatalogItem
from harlequin.exception import HarlequinConnectionError, HarlequinQueryError
from harlequin_duckdb.adapter import DuckDbAdapter, DuckDbConnection, DuckDbCursor
from harlequin_duckdb.interactions import insert_columns_at_cursor

from duckreg.duckdb_ext.statements import prepare
from duckreg.registry import Registry

MODELS_LABEL = "models (duckreg)"


@dataclass
class FunctionItem(InteractiveCatalogItem["DuckregConnection"]):
    """One SQL name of a model version; inserting it puts ``name(`` at the cursor."""

    INTERACTIONS: ClassVar = [("Insert at Cursor", insert_columns_at_cursor)]


@dataclass
class VersionItem(InteractiveCatalogItem["DuckregConnection"]):
    """A model version: its task as the type, its SQL names as children."""

    model: str = ""

    def fetch_children(self) -> list[FunctionItem]:
        if self.connection is None:
            return []
        mv = self.connection.registry.get_model(self.model).version(self.label)
        return [
            FunctionItem(
                qualified_identifier=name, query_name=name, label=name, type_label="fn", connection=self.connection,
                loaded=True,
            )
            for name in mv.sql_names()
        ]  # fmt: skip


@dataclass
class ModelItem(InteractiveCatalogItem["DuckregConnection"]):
    """A logged model: its versions as children."""

    def fetch_children(self) -> list[VersionItem]:
        if self.connection is None:
            return []
        versions = self.connection.registry.get_model(self.label).show_versions()
        return [
            VersionItem(
                qualified_identifier=f"{self.label}.{row['name']}", query_name=self.label, label=row["name"],
                type_label="default" if row.get("is_default_version") else "v", connection=self.connection,
                model=self.label,
            )
            for row in versions.to_dict("records")
        ]  # fmt: skip


@dataclass
class ModelsItem(InteractiveCatalogItem["DuckregConnection"]):
    """The registry's models, shown beside the databases."""

    def fetch_children(self) -> list[ModelItem]:
        if self.connection is None:
            return []
        return [
            ModelItem(
                qualified_identifier=name, query_name=name, label=name, type_label="m", connection=self.connection
            )
            for name in sorted(self.connection.registry.show_models()["name"], key=str.lower)
        ]


class DuckregConnection(DuckDbConnection):
    """Harlequin's DuckDB connection, preparing each query with the registry first."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, registry: Registry, init_message: str = "") -> None:
        super().__init__(conn, init_message=init_message)
        self.registry = registry
        self.bound: set[str] = set()
        self._lock = threading.Lock()

    def execute(self, query: str) -> DuckDbCursor | None:
        """Register the models ``query`` names (and rewrite Snowflake syntax), then run it as Harlequin does."""
        try:
            with self._lock:
                query = prepare(self.registry, self.conn, query, self.bound)
        except (ValueError, duckdb.Error) as exc:
            raise HarlequinQueryError(msg=str(exc), title="duckreg could not prepare your query:") from exc
        return super().execute(query)

    def get_catalog(self) -> Catalog:
        """The databases, then the registry's models."""
        catalog = super().get_catalog()
        models = ModelsItem(
            qualified_identifier="duckreg_models", query_name="", label=MODELS_LABEL, type_label="reg",
            connection=self,
        )  # fmt: skip
        return Catalog(items=[*catalog.items, models])

    def get_completions(self) -> list[HarlequinCompletion]:
        """DuckDB's completions plus every model function, registered yet or not."""
        names = self.registry.function_names()
        return [
            *super().get_completions(),
            *(HarlequinCompletion(label=n, type_label="model", value=n, priority=900, context=None) for n in names),
        ]


class DuckregAdapter(DuckDbAdapter):
    """``-a duckreg``: the DuckDB adapter with a duckreg registry on the connection."""

    ADAPTER_DETAILS = "DuckDB with duckreg: every logged model version is callable from SQL."

    def connect(self) -> DuckregConnection:
        """Connect as ``-a duckdb`` does, then open the registry in the connection's database."""
        base = super().connect()
        try:
            registry = Registry(base.conn)
            registry.register_functions(base.conn, models=[])
        except (ValueError, duckdb.Error) as exc:
            raise HarlequinConnectionError(str(exc), title="duckreg could not open the registry.") from exc
        message = f"duckreg: {len(registry.model_keys())} models, registered as queries name them."
        init = "\n".join(m for m in (base.init_message, message) if m)
        return DuckregConnection(base.conn, registry, init_message=init)
