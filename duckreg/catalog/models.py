"""Every statement on the model tables (models, versions, functions, aliases, tags, metrics), by name.

The registry's API classes hold no SQL: they call these operations, each one statement or one
transaction. Keys are lower-cased names (``identifiers.normalize``); names are stored as written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from duckreg import faults
from duckreg.catalog import Catalog
from duckreg.function_spec import FunctionSpec

MODEL_TABLES = ("functions", "metrics", "aliases", "tags", "versions", "models")
"""Tables holding a model's rows, children first (the order a delete goes in)."""
VERSION_TABLES = ("functions", "metrics", "aliases", "versions")
"""Tables holding a version's rows, children first."""


@dataclass(frozen=True)
class ModelRow:
    key: str
    name: str
    comment: str | None
    default_version_key: str
    created_on: datetime


@dataclass(frozen=True)
class VersionRow:
    model_key: str
    key: str
    name: str
    comment: str | None
    task: str | None
    artifact_path: str
    manifest: str
    created_on: datetime
    seq: int


_VERSION_COLUMNS = "model_key, version_key, name, comment, task, artifact_path, manifest, created_on, seq"


@dataclass(frozen=True)
class NewVersion:
    """A version about to be committed: its rows in every table."""

    model_key: str
    model_name: str
    version_key: str
    version_name: str
    comment: str | None
    task: str | None
    model_type: str
    artifact_path: str
    manifest: str
    functions: list[FunctionSpec]
    metrics: dict[str, Any]


class ModelStore:
    """Named operations on the model tables of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # ---------------------------------------------------------------- models
    def model(self, model_key: str) -> ModelRow | None:
        rows = self.catalog.query(
            "SELECT model_key, name, comment, default_version_key, created_on FROM {schema}.models WHERE model_key = ?",
            [model_key],
        )
        return ModelRow(*rows[0]) if rows else None

    def model_keys(self, *, by_creation: bool = False) -> list[str]:
        order = "created_on, model_key" if by_creation else "model_key"
        return [key for (key,) in self.catalog.query(f"SELECT model_key FROM {{schema}}.models ORDER BY {order}")]

    def show_models(self, database_name: str, schema_name: str) -> list[tuple]:
        """One row per model in ``Registry.show_models()``'s column order."""
        return self.catalog.query(
            """
            SELECT m.created_on, m.name, coalesce(any_value(v.model_type), 'huggingface_pipeline'),
                   ?, ?, m.comment, dv.name,
                   list(v.name ORDER BY v.seq) FILTER (WHERE v.name IS NOT NULL),
                   coalesce((SELECT list(a.alias ORDER BY a.alias) FROM {schema}.aliases a
                             WHERE a.model_key = m.model_key), [])
            FROM {schema}.models m
            LEFT JOIN {schema}.versions v ON v.model_key = m.model_key
            LEFT JOIN {schema}.versions dv ON dv.model_key = m.model_key AND dv.version_key = m.default_version_key
            GROUP BY ALL ORDER BY m.created_on, m.name
            """,
            [database_name, schema_name],
        )

    def set_model_comment(self, model_key: str, comment: str | None) -> None:
        self.catalog.execute("UPDATE {schema}.models SET comment = ? WHERE model_key = ?", [comment, model_key])

    def set_default_version(self, model_key: str, version_key: str) -> None:
        self.catalog.execute(
            "UPDATE {schema}.models SET default_version_key = ? WHERE model_key = ?", [version_key, model_key]
        )

    def delete_model(self, model_key: str) -> None:
        """Every row of the model, in one transaction."""
        with self.catalog.transaction() as cat:
            for table in MODEL_TABLES:
                cat.execute(f"DELETE FROM {{schema}}.{table} WHERE model_key = ?", [model_key])
            faults.point("delete:in_transaction")

    def rename_model(self, model_key: str, new_key: str, new_name: str) -> None:
        """The model and every row that refers to it, in one transaction."""
        with self.catalog.transaction() as cat:
            cat.execute(
                "UPDATE {schema}.models SET model_key = ?, name = ? WHERE model_key = ?", [new_key, new_name, model_key]
            )
            for table in MODEL_TABLES[:-1]:
                cat.execute(f"UPDATE {{schema}}.{table} SET model_key = ? WHERE model_key = ?", [new_key, model_key])

    # -------------------------------------------------------------- versions
    def version(self, model_key: str, version_key: str) -> VersionRow | None:
        rows = self.catalog.query(
            f"SELECT {_VERSION_COLUMNS} FROM {{schema}}.versions WHERE model_key = ? AND version_key = ?",
            [model_key, version_key],
        )
        return VersionRow(*rows[0]) if rows else None

    def versions(self, model_key: str) -> list[VersionRow]:
        """Every version of a model, oldest first."""
        rows = self.catalog.query(
            f"SELECT {_VERSION_COLUMNS} FROM {{schema}}.versions WHERE model_key = ? ORDER BY seq", [model_key]
        )
        return [VersionRow(*row) for row in rows]

    def version_names(self, model_key: str, version_key: str) -> tuple[str, str] | None:
        """(model name, version name) as the user wrote them."""
        rows = self.catalog.query(
            "SELECT m.name, v.name FROM {schema}.versions v JOIN {schema}.models m USING (model_key) "
            "WHERE v.model_key = ? AND v.version_key = ?",
            [model_key, version_key],
        )
        return rows[0] if rows else None

    def end_version_key(self, model_key: str, *, last: bool) -> str | None:
        """The first (or last) logged version's key."""
        order = "DESC" if last else "ASC"
        rows = self.catalog.query(
            f"SELECT version_key FROM {{schema}}.versions WHERE model_key = ? ORDER BY seq {order} LIMIT 1",
            [model_key],
        )
        return rows[0][0] if rows else None

    def artifact_paths(self) -> list[str]:
        """The artifact folder of every version in the catalog."""
        return [path for (path,) in self.catalog.query("SELECT artifact_path FROM {schema}.versions")]

    def set_version_comment(self, model_key: str, version_key: str, comment: str | None) -> None:
        self.catalog.execute(
            "UPDATE {schema}.versions SET comment = ? WHERE model_key = ? AND version_key = ?",
            [comment, model_key, version_key],
        )

    def insert_version(self, new: NewVersion, *, create_model: bool, on_commit: Callable[[Catalog], None]) -> None:
        """The version's rows in every table (and the model's, for its first version) in one transaction.

        ``on_commit`` runs last inside the transaction (the registry records its artifact location).
        """
        with self.catalog.transaction() as cat:
            if create_model:
                cat.execute(
                    "INSERT INTO {schema}.models (model_key, name, default_version_key, created_on) "
                    "VALUES (?, ?, ?, current_timestamp)",
                    [new.model_key, new.model_name, new.version_key],
                )
            cat.execute(
                "INSERT INTO {schema}.versions (model_key, version_key, name, seq, comment, task, model_type, "
                "artifact_path, manifest, created_on) "
                "VALUES (?, ?, ?, nextval('{schema}.version_seq'), ?, ?, ?, ?, ?, current_timestamp)",
                [new.model_key, new.version_key, new.version_name, new.comment, new.task, new.model_type,
                 new.artifact_path, new.manifest],
            )  # fmt: skip
            faults.point("log_model:in_transaction")
            for function in new.functions:
                cat.execute(
                    "INSERT INTO {schema}.functions VALUES (?, ?, ?, ?, ?)",
                    [new.model_key, new.version_key, function.name, function.target_method,
                     json.dumps(function.to_record())],
                )  # fmt: skip
            for name, value in new.metrics.items():
                cat.execute(
                    "INSERT INTO {schema}.metrics VALUES (?, ?, ?, ?)",
                    [new.model_key, new.version_key, name, json.dumps(value)],
                )
            on_commit(cat)

    def replace_version_files(
        self, model_key: str, version_key: str, artifact_path: str, manifest: str, metrics: dict[str, Any | None]
    ) -> None:
        """Point a version at a new artifact folder and manifest, and set (or, for None, delete) metrics:
        one transaction, so a reader sees the old files or the new ones, never a mix."""
        with self.catalog.transaction() as cat:
            cat.execute(
                "UPDATE {schema}.versions SET artifact_path = ?, manifest = ? WHERE model_key = ? AND version_key = ?",
                [artifact_path, manifest, model_key, version_key],
            )
            faults.point("set_engine:in_transaction")
            for name, value in metrics.items():
                cat.execute(
                    "DELETE FROM {schema}.metrics WHERE model_key = ? AND version_key = ? AND name = ?",
                    [model_key, version_key, name],
                )
                if value is not None:
                    cat.execute(
                        "INSERT INTO {schema}.metrics VALUES (?, ?, ?, ?)",
                        [model_key, version_key, name, json.dumps(value)],
                    )

    def delete_version(self, model_key: str, version_key: str) -> None:
        """Every row of the version, in one transaction."""
        with self.catalog.transaction() as cat:
            for table in VERSION_TABLES:
                cat.execute(
                    f"DELETE FROM {{schema}}.{table} WHERE model_key = ? AND version_key = ?", [model_key, version_key]
                )
            faults.point("delete:in_transaction")

    # ------------------------------------------------------------- functions
    def functions(self, model_key: str, version_key: str) -> list[FunctionSpec]:
        rows = self.catalog.query(
            "SELECT spec FROM {schema}.functions WHERE model_key = ? AND version_key = ? ORDER BY name",
            [model_key, version_key],
        )
        return [FunctionSpec.from_record(json.loads(spec)) for (spec,) in rows]

    def functions_by_version(self, model_key: str) -> dict[str, list[FunctionSpec]]:
        """Every version's functions in one query: version key -> functions (by name)."""
        rows = self.catalog.query(
            "SELECT version_key, spec FROM {schema}.functions WHERE model_key = ? ORDER BY version_key, name",
            [model_key],
        )
        found: dict[str, list[FunctionSpec]] = {}
        for version_key, spec in rows:
            found.setdefault(version_key, []).append(FunctionSpec.from_record(json.loads(spec)))
        return found

    # --------------------------------------------------------------- aliases
    def alias_target(self, model_key: str, alias_key: str) -> str | None:
        """The version key a user alias points at."""
        rows = self.catalog.query(
            "SELECT version_key FROM {schema}.aliases WHERE model_key = ? AND alias_key = ?", [model_key, alias_key]
        )
        return rows[0][0] if rows else None

    def aliases_by_version(self, model_key: str) -> dict[str, list[str]]:
        """version key -> its user aliases, sorted."""
        rows = self.catalog.query(
            "SELECT version_key, alias FROM {schema}.aliases WHERE model_key = ? ORDER BY alias", [model_key]
        )
        found: dict[str, list[str]] = {}
        for version_key, alias in rows:
            found.setdefault(version_key, []).append(alias)
        return found

    def set_alias(self, model_key: str, alias_key: str, alias: str, version_key: str) -> None:
        self.catalog.execute(
            "INSERT OR REPLACE INTO {schema}.aliases VALUES (?, ?, ?, ?)", [model_key, alias_key, alias, version_key]
        )

    def unset_alias(self, model_key: str, alias_key: str) -> None:
        self.catalog.execute(
            "DELETE FROM {schema}.aliases WHERE model_key = ? AND alias_key = ?", [model_key, alias_key]
        )

    # ------------------------------------------------------------------ tags
    def tags(self, model_key: str) -> dict[str, str]:
        return dict(
            self.catalog.query("SELECT name, value FROM {schema}.tags WHERE model_key = ? ORDER BY name", [model_key])
        )

    def tag(self, model_key: str, tag_key: str) -> str | None:
        rows = self.catalog.query(
            "SELECT value FROM {schema}.tags WHERE model_key = ? AND tag_key = ?", [model_key, tag_key]
        )
        return rows[0][0] if rows else None

    def set_tag(self, model_key: str, tag_key: str, name: str, value: str) -> None:
        self.catalog.execute(
            "INSERT OR REPLACE INTO {schema}.tags VALUES (?, ?, ?, ?)", [model_key, tag_key, name, value]
        )

    def unset_tag(self, model_key: str, tag_key: str) -> None:
        self.catalog.execute("DELETE FROM {schema}.tags WHERE model_key = ? AND tag_key = ?", [model_key, tag_key])

    # --------------------------------------------------------------- metrics
    def metrics(self, model_key: str, version_key: str) -> dict[str, Any]:
        rows = self.catalog.query(
            "SELECT name, value FROM {schema}.metrics WHERE model_key = ? AND version_key = ? ORDER BY name",
            [model_key, version_key],
        )
        return {name: json.loads(value) for name, value in rows}

    def metrics_by_version(self, model_key: str) -> dict[str, dict[str, Any]]:
        """version key -> its metrics, in one query."""
        rows = self.catalog.query(
            "SELECT version_key, name, value FROM {schema}.metrics WHERE model_key = ? ORDER BY name", [model_key]
        )
        found: dict[str, dict[str, Any]] = {}
        for version_key, name, value in rows:
            found.setdefault(version_key, {})[name] = json.loads(value)
        return found

    def set_metric(self, model_key: str, version_key: str, name: str, value: Any) -> None:
        self.catalog.execute(
            "INSERT OR REPLACE INTO {schema}.metrics VALUES (?, ?, ?, ?)",
            [model_key, version_key, name, json.dumps(value)],
        )

    def delete_metric(self, model_key: str, version_key: str, name: str) -> None:
        self.catalog.execute(
            "DELETE FROM {schema}.metrics WHERE model_key = ? AND version_key = ? AND name = ?",
            [model_key, version_key, name],
        )
