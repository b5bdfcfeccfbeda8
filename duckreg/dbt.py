"""dbt-duckdb plugin: every connection and cursor dbt opens gets the registry's SQL functions.

profiles.yml::

    plugins:
      - module: duckreg.dbt
        config:
          duckreg_models: [minilm]          # optional: only these models (default: all)
          duckreg_schema: duckreg           # optional: the registry schema
          duckreg_artifact_location: ...    # optional

dbt-duckdb merges the profile's ``settings:`` into every plugin's config, so only keys starting
with ``duckreg_`` are read here (an unknown ``duckreg_`` key is an error). Materialize models that
call duckreg functions as tables: a view over a Python function fails outside dbt.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from duckreg.registry import Registry

CONFIG_KEYS = frozenset({"duckreg_models", "duckreg_schema", "duckreg_database", "duckreg_artifact_location"})


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        ours = {k: v for k, v in plugin_config.items() if k.startswith("duckreg_")}
        unknown = sorted(set(ours) - CONFIG_KEYS)
        if unknown:
            raise ValueError(f"Unknown duckreg plugin config keys {unknown}; known: {sorted(CONFIG_KEYS)}")
        models = ours.get("duckreg_models")
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        self.models: list[str] | None = models
        self.schema_name: str | None = ours.get("duckreg_schema")
        self.database_name: str | None = ours.get("duckreg_database")
        self.artifact_location: str | None = ours.get("duckreg_artifact_location")
        self._registry: Registry | None = None

    def configure_connection(self, conn: Any) -> None:
        self._registry = Registry(
            conn,
            database_name=self.database_name,
            schema_name=self.schema_name,
            artifact_location=self.artifact_location,
        )
        self._registry.register_functions(conn, models=self.models)

    def configure_cursor(self, cursor: Any) -> None:
        if self._registry is not None:
            # The functions belong to the database instance; a cursor needs its own macros.
            self._registry.register_functions(cursor, models=self.models)
