"""The registry as its models and versions see it: one explicit internal context instead of reaches into
``Registry``'s private members.

``Registry`` builds one ``RegistryContext`` when it opens and hands it to every ``Model`` and ``ModelVersion``
it returns. Reads go through the stores it holds; writes that touch more than one row or the artifact folder
(deleting versions, changing an engine, keeping SQL names in step) call back into the registry through the
operations it names, so every such write keeps one implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from duckreg.artifacts import ArtifactStore
    from duckreg.catalog import Catalog
    from duckreg.catalog.models import ModelStore
    from duckreg.inference import VersionHandle
    from duckreg.result_cache import ResultCache
    from duckreg.stages import StageCatalog


@dataclass(frozen=True, eq=False)
class RegistryContext:
    """What a ``Model`` and a ``ModelVersion`` work through (internal; not public API).

    It satisfies ``duckreg.store.RegistryStore`` (connection, catalog, stages), so a version hands it to a
    batch job as it is.
    """

    connection: duckdb.DuckDBPyConnection
    catalog: Catalog
    models: ModelStore
    artifacts: ArtifactStore
    stages: StageCatalog
    result_cache: ResultCache
    version_folder: Callable[[str], Path]
    """A version's folder from its artifact path as the catalog stores it."""
    remove_versions: Callable[[list[VersionHandle]], None]
    """After a delete's commit: unload the versions and remove their folders."""
    reclaim: Callable[[], None]
    """Delete what a killed write left in the artifact folder."""
    set_engine: Callable[[Any, dict[str, Any], Any], dict[str, Any]]
    """``set_engine(model_version, engine_options, sample_input_data)``: re-publish a version on an engine."""
    check_sql_name_free: Callable[..., None]
    """``check_sql_name_free(model_name, renaming=old_key)``: refuse a name whose SQL names are taken."""
    refresh_sql: Callable[[str], None]
    """Re-register a model's SQL functions after a change."""
    retire_sql: Callable[[str, list[str], str], None]
    """Drop SQL names a model no longer owns, saying why."""

    @property
    def database_name(self) -> str:
        return self.catalog.database_name

    @property
    def schema_name(self) -> str:
        return self.catalog.schema_name

    @property
    def location(self) -> str:
        """``database.schema`` of the catalog."""
        return f"{self.database_name}.{self.schema_name}"
