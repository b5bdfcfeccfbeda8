"""Model: a named set of versions, one of them the default, as ``snowflake.ml.model.Model``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pandas as pd

from duckreg.catalog.models import ModelRow
from duckreg.duckdb_ext.functions import SqlFunction
from duckreg.duckdb_ext.names import sql_names, with_macros
from duckreg.identifiers import check_identifier, normalize
from duckreg.inference import FunctionRunner
from duckreg.registry.model_version import ModelVersion

if TYPE_CHECKING:
    from duckreg.registry.context import RegistryContext

_SHOW_VERSIONS_COLUMNS = [
    "created_on", "name", "aliases", "database_name", "schema_name", "model_name", "is_default_version",
    "functions", "metadata", "user_data", "comment", "task",
]  # fmt: skip


class Model:
    """A named model: a set of versions, one of them the default."""

    def __init__(self, context: RegistryContext, model_key: str) -> None:
        self._context = context
        self._key = model_key

    def _row(self) -> ModelRow:
        row = self._context.models.model(self._key)
        if row is None:
            raise ValueError(f"Unable to find model {self._key}")
        return row

    @property
    def name(self) -> str:
        """The model's name as it was written when first logged (or renamed)."""
        return self._row().name

    @property
    def fully_qualified_name(self) -> str:
        """``database.schema.model``."""
        return f"{self._context.location}.{self.name}"

    def __repr__(self) -> str:
        return f"Model(\n  name={self.name!r},\n)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and (other._context, other._key) == (self._context, self._key)

    def __hash__(self) -> int:
        return hash((id(self._context), self._key))

    @property
    def comment(self) -> str | None:
        """A free-text comment (``description`` is the same); settable."""
        return self._row().comment

    @comment.setter
    def comment(self, value: str | None) -> None:
        self._row()
        self._context.models.set_model_comment(self._key, value)

    description = comment

    def versions(self) -> list[ModelVersion]:
        """Every version, oldest first."""
        return [ModelVersion(self._context, self._key, row.key) for row in self._context.models.versions(self._key)]

    def show_versions(self) -> pd.DataFrame:
        """One row per version (Snowflake's columns), with its aliases, functions and metrics."""
        models = self._context.models
        default_key = self._row().default_version_key
        rows = models.versions(self._key)
        aliases = models.aliases_by_version(self._key)
        functions = models.functions_by_version(self._key)
        metrics = models.metrics_by_version(self._key)
        shown = []
        for position, row in enumerate(rows):
            names = list(aliases.get(row.key, []))
            names += ["DEFAULT"] * (row.key == default_key) + ["FIRST"] * (position == 0)
            names += ["LAST"] * (position == len(rows) - 1)
            shown.append({
                "created_on": row.created_on,
                "name": row.name,
                "aliases": names,
                "database_name": self._context.database_name,
                "schema_name": self._context.schema_name,
                "model_name": self.name,
                "is_default_version": row.key == default_key,
                "functions": [f.name for f in functions.get(row.key, [])],
                "metadata": json.dumps({"metrics": metrics.get(row.key, {})}),
                "user_data": json.dumps({}),
                "comment": row.comment,
                "task": row.task,
            })  # fmt: skip
        return pd.DataFrame(shown, columns=_SHOW_VERSIONS_COLUMNS)

    def version(self, version_or_alias: str | ModelVersion) -> ModelVersion:
        """A version by name, user alias or system alias (DEFAULT, FIRST, LAST); case-insensitive."""
        if isinstance(version_or_alias, ModelVersion):
            version_or_alias = version_or_alias.version_name
        wanted = normalize(str(version_or_alias))
        models = self._context.models
        if wanted == "default":
            return ModelVersion(self._context, self._key, self._row().default_version_key)
        if wanted in ("first", "last"):
            found = models.end_version_key(self._key, last=wanted == "last")
        else:
            found = models.alias_target(self._key, wanted)
            if found is None and models.version(self._key, wanted) is not None:
                found = wanted
        if found is None:
            raise ValueError(
                f"Unable to find version or alias with name {version_or_alias} in model {self.fully_qualified_name}"
            )
        return ModelVersion(self._context, self._key, found)

    def first(self) -> ModelVersion:
        """The first version logged."""
        return self.version("FIRST")

    def last(self) -> ModelVersion:
        """The most recent version logged."""
        return self.version("LAST")

    @property
    def default(self) -> ModelVersion:
        """The version the bare SQL name ``<model>(...)`` calls; settable to a version or its name."""
        return self.version("DEFAULT")

    @default.setter
    def default(self, version: str | ModelVersion) -> None:
        target = self.version(version)
        self._context.models.set_default_version(self._key, target._version_key)
        self._context.refresh_sql(self._key)

    def delete_version(self, version_name: str) -> None:
        """Delete one version (not the default): its catalog rows, then its files and its SQL names."""
        version = self.version(version_name)
        if version._version_key == self._row().default_version_key:
            raise ValueError(
                f"Version {version.version_name} is the default version of model {self.name} and cannot be deleted. "
                "Set another default first, or delete the model."
            )
        context = self._context
        names = version.sql_names()
        handle = version._handle()
        with context.artifacts.writing():
            context.reclaim()
            context.models.delete_version(self._key, version._version_key)
            context.remove_versions([handle])
        context.retire_sql(self._key, names, f"model {self.name} version {version.version_name} was deleted")

    def show_tags(self) -> dict[str, str]:
        """Every tag: name -> value."""
        return self._context.models.tags(self._key)

    def get_tag(self, tag_name: str) -> str | None:
        """A tag's value (case-insensitive name), or None."""
        return self._context.models.tag(self._key, normalize(tag_name))

    def set_tag(self, tag_name: str, tag_value: str) -> None:
        """Set a tag: an identifier name and a string value of at most 256 characters."""
        check_identifier(tag_name, "tag name")
        if not isinstance(tag_value, str) or len(tag_value) > 256:
            raise ValueError("A tag value must be a string of at most 256 characters.")
        self._row()
        self._context.models.set_tag(self._key, normalize(tag_name), tag_name, tag_value)

    def unset_tag(self, tag_name: str) -> None:
        """Remove a tag (nothing happens when it is not set)."""
        self._context.models.unset_tag(self._key, normalize(tag_name))

    def rename(self, new_name: str) -> None:
        """Rename the model: its SQL names move to the new name (the old ones stop working)."""
        check_identifier(new_name, "model name")
        new_key = normalize(new_name)
        context = self._context
        if new_key != self._key:
            if context.models.model(new_key) is not None:
                raise ValueError(f"Model {new_name} already exists.")
            context.check_sql_name_free(new_name, renaming=self._key)
        old_names = self._sql_names()
        context.models.rename_model(self._key, new_key, new_name)
        context.retire_sql(self._key, old_names, f"model {self._key} was renamed to {new_name}")
        self._key = new_key
        context.refresh_sql(new_key)

    # SQL names ---------------------------------------------------------
    def _sql_names(self) -> list[str]:
        """Every function name this model owns: each version's pinned names and the default's bare ones."""
        models = self._context.models
        functions = models.functions_by_version(self._key)
        names = [n for row in models.versions(self._key) for n, _ in sql_names(self._key, row.key, functions[row.key])]
        default = functions[self._row().default_version_key]
        return names + [name for name, _ in sql_names(self._key, None, default)]

    def _all_sql_names(self) -> list[str]:
        """Every SQL name this model owns: its functions, their table and files macros."""
        return with_macros(self._sql_names())

    def _sql_functions(self) -> list[SqlFunction]:
        default_key = self._row().default_version_key
        found = []
        for version in self.versions():
            handle = version._handle()
            functions = version._functions()
            runners = {f.name: FunctionRunner(handle, f) for f in functions}
            # Every version under its pinned names; the default version under the bare names too.
            for version_key in [version._version_key, *([None] if version._version_key == default_key else [])]:
                for name, function in sql_names(self._key, version_key, functions):
                    found.append(SqlFunction(name, self._key, runners[function.name]))
        return found
