"""Registry: the model registry kept in a DuckDB database, as ``snowflake.ml.registry.Registry``."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from duckreg import faults, result_cache
from duckreg.artifacts import MANIFEST, ArtifactLocations, ArtifactStore, Manifest, file_hashes, link_tree
from duckreg.catalog import Catalog
from duckreg.catalog.models import ModelStore, NewVersion
from duckreg.duckdb_ext import connections, functions
from duckreg.duckdb_ext.names import (
    check_model_name_free,
    check_untaken,
    create_macro,
    sql_names,
    table_macro_name,
)
from duckreg.duckdb_ext.snowflake_syntax import ResolvedFunction
from duckreg.duckdb_ext.stage_functions import StageServer, stage_macro_statements
from duckreg.identifiers import check_identifier, normalize, quote, quote_literal
from duckreg.inference import FunctionRunner, VersionHandle
from duckreg.inference_engines import ENGINE_OPTION_KEYS, ENGINES, engine_for
from duckreg.model_handlers import find_handler
from duckreg.model_handlers.base import LoggedModel, check_options, library_versions
from duckreg.model_signature import ModelSignature
from duckreg.registry.context import RegistryContext
from duckreg.registry.indexes import SEARCH_SUFFIX, IndexStore, SemanticIndex, macro_statement
from duckreg.registry.model import Model
from duckreg.registry.model_version import SYSTEM_ALIASES, ModelVersion
from duckreg.registry.sql_batch import run_from_sql
from duckreg.registry.version_names import generate_version_name
from duckreg.stages import StageCatalog


class Registry:
    """A model registry kept in a DuckDB database; artifacts live in a folder beside it."""

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection | str | Path | None = None,
        *,
        database_name: str | None = None,
        schema_name: str | None = None,
        artifact_location: str | Path | None = None,
    ) -> None:
        self._owns_connection = connection is None or isinstance(connection, (str, Path))
        if self._owns_connection:
            connection = connections.open_database(connection)
        if not isinstance(connection, duckdb.DuckDBPyConnection):
            raise TypeError(f"connection must be a DuckDB connection, a database path or None, got {connection!r}")
        self._con = connection
        database_name = database_name or connection.execute("SELECT current_database()").fetchall()[0][0]
        rows = connection.execute(
            "SELECT path, readonly FROM duckdb_databases() WHERE database_name = ?", [database_name]
        ).fetchall()
        if not rows:
            raise ValueError(f"Database {database_name} does not exist.")
        self.database_name = database_name
        self.schema_name = schema_name or "duckreg"
        self._catalog = Catalog(connection, self.database_name, self.schema_name)
        self._catalog.initialise()
        self._models = ModelStore(self._catalog)
        self._db_path = Path(rows[0][0]).resolve() if rows[0][0] else None
        owner = {"database": str(self._db_path) if self._db_path else None, "schema": self.schema_name}
        self._locations = ArtifactLocations(self._db_path, lambda: self._catalog.get_setting("artifact_location"))
        home = self._locations.location_and_home()[1]
        self._artifacts = ArtifactStore(Path(artifact_location) if artifact_location is not None else home, owner)
        self._stages = StageCatalog(self._catalog)
        self._indexes = IndexStore(self)
        self._result_cache = result_cache.for_folder(self._artifacts.root, read_only=bool(rows[0][1]))
        self._instance: connections.Instance | None = None
        self._context = RegistryContext(
            connection=connection, catalog=self._catalog, models=self._models, artifacts=self._artifacts,
            stages=self._stages, result_cache=self._result_cache, version_folder=self._locations.version_folder,
            remove_versions=self._remove_versions, reclaim=self._reclaim, set_engine=self._set_engine,
            check_sql_name_free=self._check_sql_name_free, refresh_sql=self._refresh_sql, retire_sql=self._retire_sql,
        )  # fmt: skip

    @property
    def database_path(self) -> Path | None:
        """The database file the registry lives in (None for an in-memory database)."""
        return self._db_path

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection the registry was opened on (or opened itself)."""
        return self._con

    @property
    def catalog(self) -> Catalog:
        """The catalog tables behind this registry (what ``duckreg.jobs`` and batch jobs record into)."""
        return self._catalog

    @property
    def location(self) -> str:
        """``database.schema`` of the catalog."""
        return f"{self.database_name}.{self.schema_name}"

    @property
    def artifact_location(self) -> Path:
        """The folder holding every version's files."""
        return self._artifacts.root

    @property
    def result_cache(self) -> result_cache.ResultCache:
        """The cache of deterministic functions' results (``results.sqlite`` in the artifact folder)."""
        return self._result_cache

    def closed(self) -> bool:
        """Whether the connection this registry works through has been closed."""
        return self._catalog.closed()

    def __repr__(self) -> str:
        return f"Registry(location={self.location!r}, artifact_location='{self._artifacts.root}')"

    # ---------------------------------------------------------------- models
    def get_model(self, model_name: str) -> Model:
        """A model by name (case-insensitive); a ``ValueError`` when there is none."""
        if not isinstance(model_name, str) or self._models.model(normalize(model_name)) is None:
            raise ValueError(f"Unable to find model {model_name}")
        return Model(self._context, normalize(model_name))

    def models(self) -> list[Model]:
        """Every model, oldest first."""
        return [Model(self._context, key) for key in self._models.model_keys(by_creation=True)]

    def model_keys(self) -> list[str]:
        """Every model's key (its lower-cased name), sorted."""
        return self._models.model_keys()

    def function_names(self) -> list[str]:
        """Every SQL function and table macro name the models and indexes answer to (shells complete them)."""
        names = {n for m in self.models() for name in m._sql_names() for n in (name, table_macro_name(name))}
        return sorted(names | {f"{key}{SEARCH_SUFFIX}" for key in self._indexes.keys()})

    def indexes_named_in(self, sql_text: str) -> set[str]:
        """The indexes whose search functions ``sql_text`` names."""
        lowered = sql_text.lower()
        return {key for key in self._indexes.keys() if f"{key}{SEARCH_SUFFIX}" in lowered}

    def index_models_named_in(self, sql_text: str) -> set[str]:
        """The models of the indexes whose search functions ``sql_text`` names (their macros need them bound)."""
        return {self._indexes.record(key).model_key for key in self.indexes_named_in(sql_text)}

    def register_index_macros(
        self, con: duckdb.DuckDBPyConnection, index_keys: set[str], macro_catalog: str | None = None
    ) -> None:
        """``<index>_search`` on ``con`` for ``index_keys`` (their models' functions registered first)."""
        models = {self._indexes.record(key).model_key for key in index_keys}
        self.register_functions(con, models=models, macro_catalog=macro_catalog)

    def show_models(self) -> pd.DataFrame:
        """One row per model (Snowflake's columns), with its versions, default version and aliases."""
        columns = [
            "created_on", "name", "model_type", "database_name", "schema_name", "comment",
            "default_version_name", "versions", "aliases",
        ]  # fmt: skip
        return pd.DataFrame(self._models.show_models(self.database_name, self.schema_name), columns=columns)

    def delete_model(self, model_name: str) -> None:
        """Delete a model and all its versions: catalog rows first (the point of truth), then folders."""
        with self._artifacts.writing():
            self._reclaim()
            model = self.get_model(model_name)
            names = model._sql_names()
            handles = [v._handle() for v in model.versions()]
            self._models.delete_model(model._key)
            self._remove_versions(handles)
        self._retire_sql(model._key, names, f"model {model_name} was deleted")

    def _remove_versions(self, handles: list[VersionHandle]) -> None:
        """After a delete's commit: unload the versions from this process and remove their folders."""
        faults.point("delete:after_commit")
        self._discard_files(handles)
        for handle in handles:
            self._result_cache.forget_counters(handle.model_name, handle.version_name)

    def _discard_files(self, handles: list[VersionHandle]) -> None:
        """After a commit that stopped pointing at these folders: unload them, forget their cached results
        and remove them. What a failure leaves on disk is reclaimed by the next write."""
        for handle in handles:
            handle.forget()
            if not self._result_cache.read_only:
                self._result_cache.forget_version(handle.content_digest)
            try:
                self._artifacts.remove(handle.artifact_dir)
            except OSError as exc:
                warnings.warn(
                    f"Could not remove {handle.artifact_dir} ({exc}); the next write reclaims it.", stacklevel=3
                )

    def _reclaim(self) -> None:
        """Delete what a killed write left in the artifact root (never blocks the write at hand)."""
        try:
            self._artifacts.reclaim(self._referenced_folders())
        except OSError as exc:
            warnings.warn(f"Could not reclaim leftovers in {self._artifacts.root}: {exc}", stacklevel=3)

    def _referenced_folders(self) -> set[Path]:
        return {self._locations.version_folder(path).resolve() for path in self._models.artifact_paths()}

    # ------------------------------------------------------------ log_model
    def log_model(
        self,
        model: Any,
        *,
        model_name: str,
        version_name: str | None = None,
        comment: str | None = None,
        metrics: dict[str, Any] | None = None,
        signatures: dict[str, ModelSignature] | None = None,
        sample_input_data: Any = None,
        options: dict[str, Any] | None = None,
        pip_requirements: list[str] | None = None,
        conda_dependencies: list[str] | None = None,
        target_platforms: list[str] | None = None,
        python_version: str | None = None,
    ) -> ModelVersion:
        """Store a model version, infer or take its signatures, and make it callable from SQL.

        ``model`` is a ``transformers`` pipeline, a ``duckreg.huggingface.TransformersPipeline`` or a
        ``duckreg.custom.CustomModel``. The files are written and published first, then the catalog
        rows commit in one transaction: a failure anywhere leaves no version behind.
        """
        model_key, version_key, is_new_model = self._check_new_version(model_name, version_name)
        version_name = version_name or generate_version_name(lambda n: self._models.version(model_key, n) is not None)
        version_key = version_key or normalize(version_name)
        if metrics is not None:
            json.dumps(metrics)  # must be JSON-serialisable; raises TypeError otherwise
        handler = find_handler(model)
        options = check_options(options, handler.option_keys)
        logged = handler.prepare(model, signatures, sample_input_data, options)
        self._check_method_names(model_name, model_key, logged)
        manifest = Manifest(
            model_type=handler.model_type,
            task=logged.task,
            functions=[f.to_record() for f in logged.functions],
            pipeline_settings=logged.settings,
            options=options,
            trust_remote_code=logged.trust_remote_code,
            library_versions=library_versions(),
            pip_requirements=list(pip_requirements or []),
            conda_dependencies=list(conda_dependencies or []),
            target_platforms=list(target_platforms or []),
            python_version=python_version,
            registry=self._artifacts.owner,
        )
        with self._artifacts.writing():
            self._reclaim()
            new = NewVersion(model_key, model_name, version_key, version_name, comment, logged.task,
                             handler.model_type, "", "", logged.functions, metrics or {})  # fmt: skip
            self._write_version(handler, logged, manifest, new, is_new_model)
        self._refresh_sql(model_key)
        return ModelVersion(self._context, model_key, version_key)

    def _set_engine(self, version: ModelVersion, engine_options: dict[str, Any], sample_input_data: Any) -> dict:
        """Re-publish a version's files with another engine's beside the model's, then point the catalog at them.

        The model's own files are linked, not rewritten; the engine's are exported and checked against
        torch as at log time. Like ``log_model``, a failure or a kill anywhere leaves the version as it was.
        """
        handle = version._handle()
        manifest, handler = handle.manifest, handle.handler
        where = f"Model {version.model_name} version {version.version_name}"
        if not ENGINE_OPTION_KEYS <= handler.option_keys:
            raise ValueError(f"{where}: a {manifest.model_type} model runs its own code and takes no engine")
        kept = {k: v for k, v in manifest.options.items() if k not in ENGINE_OPTION_KEYS}
        chosen = {k: v for k, v in engine_options.items() if v is not None and not (k == "engine" and v == "torch")}
        try:
            options = check_options({**kept, **chosen}, handler.option_keys)
            engine_for(options).check_functions(version._functions(), "set_engine")
            model = replace(handle, manifest=replace(manifest, options=kept)).build_model("cpu")
            handler.prepare_loaded(model, manifest)
            engine_files = engine_for(options).files
            measured: dict[str, Any] = {}

            def write(staged: Path) -> Manifest:
                skip = {name for engine in ENGINES.values() for name in engine.files}
                linked = link_tree(handle.artifact_dir / "model", staged / "model", skip=skip)
                measured.update(
                    handler.prepare_engine(model, manifest.task, staged / "model", options, sample_input_data)
                )
                logged_files = manifest.files or {}
                files = {path: logged_files[path] for path in linked if path in logged_files}
                for name in engine_files:
                    files.update({f"{name}/{p}": h for p, h in file_hashes(staged / "model" / name).items()})
                return replace(manifest, options=options, files=dict(sorted(files.items())))

            def commit(artifact_path: str, published: Manifest) -> None:
                self._models.replace_version_files(
                    version._model_key, version._version_key, artifact_path, published.to_json(),
                    {"engine_agreement": measured.get("engine_agreement")},
                )  # fmt: skip

            with self._artifacts.writing():
                self._reclaim()
                folder_name = f"{version._version_key}.{uuid.uuid4().hex[:8]}"
                self._publish_version(version._model_key, folder_name, write, commit, "set_engine")
                self._discard_files([handle])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        self._refresh_sql(version._model_key)
        return measured.get("engine_agreement") or {}

    def _check_new_version(self, model_name: str, version_name: str | None) -> tuple[str, str | None, bool]:
        """(model key, version key or None, whether the model is new), or a ``ValueError`` saying what is wrong."""
        check_identifier(model_name, "model_name")
        model_key = normalize(model_name)
        is_new_model = self._models.model(model_key) is None
        if is_new_model:
            self._check_sql_name_free(model_name)
        if version_name is None:
            return model_key, None, is_new_model
        check_identifier(version_name, "version_name")
        version_key = normalize(version_name)
        if version_name.upper() in SYSTEM_ALIASES:
            raise ValueError(f"Invalid version_name {version_name!r}: {version_name.upper()} is a system alias.")
        if not is_new_model and self._models.alias_target(model_key, version_key) is not None:
            raise ValueError(f"Invalid version_name {version_name!r}: it is an alias of model {model_name} already.")
        if self._models.version(model_key, version_key) is not None:
            raise ValueError(
                f"Model {model_name} version {version_name} already existed. "
                "To auto-generate `version_name`, skip that argument."
            )
        return model_key, version_key, is_new_model

    def _check_method_names(self, model_name: str, model_key: str, logged: LoggedModel) -> None:
        """Methods beyond the first get SQL names of their own (``m_predict``): no other model may hold them."""
        method_names = [name for name, _ in sql_names(model_key, None, logged.functions) if name != model_key]
        if method_names:
            taken = {n: m.name for m in self.models() if m._key != model_key for n in m._all_sql_names()}
            check_untaken(model_name, [*method_names, *(table_macro_name(n) for n in method_names)], taken)

    def _write_version(
        self, handler: Any, logged: LoggedModel, manifest: Manifest, new: NewVersion, is_new_model: bool
    ) -> None:
        """Stage the files, publish them by one rename, then commit the catalog rows in one transaction.

        A process killed anywhere here leaves either no version (its folder is an orphan the next
        write reclaims) or a complete one.
        """
        faults.point("log_model:before_staging")

        def write(staged: Path) -> Manifest:
            handler_data = handler.save(logged, staged / "model")
            return replace(manifest, handler_data=handler_data, files=file_hashes(staged / "model"))

        def remember_artifact_location(cat: Catalog) -> None:
            if is_new_model and cat.get_setting("artifact_location") is None:
                cat.set_setting("artifact_location", self._locations.relative_to_database(self._artifacts.root))

        def commit(artifact_path: str, published: Manifest) -> None:
            row = replace(
                new,
                artifact_path=artifact_path,
                manifest=published.to_json(),
                metrics={**logged.metrics, **new.metrics},
            )  # the user's own figures win over measured ones
            self._models.insert_version(row, create_model=is_new_model, on_commit=remember_artifact_location)

        self._publish_version(new.model_key, new.version_key, write, commit, "log_model")

    def _publish_version(
        self,
        model_key: str,
        folder_name: str,
        write: Callable[[Path], Manifest],
        commit: Callable[[str, Manifest], None],
        operation: str,
    ) -> None:
        """The one way a version's files reach the registry: ``write`` fills a staging folder and returns its
        manifest, the folder is published by one rename, then ``commit`` points the catalog at it (given its
        path as stored, and the manifest). A failed commit removes the published folder; a process killed
        anywhere leaves the registry as it was, or the new state whole, and the next write reclaims the rest.
        """
        with self._artifacts.staging() as staged:
            manifest = write(staged)
            (staged / MANIFEST).write_text(manifest.to_json())
            faults.point(f"{operation}:after_staging")
            relative = self._artifacts.publish(staged, model_key, folder_name, self._referenced_folders().__contains__)
        faults.point(f"{operation}:after_publish")
        published = self._artifacts.path(relative)
        try:
            commit(self._locations.relative_to_database(published), manifest)
        except BaseException:
            self._artifacts.remove(published)
            raise
        faults.point(f"{operation}:after_commit")

    def _check_sql_name_free(self, model_name: str, *, renaming: str | None = None) -> None:
        """Refuse a model name whose SQL names would shadow a function or collide with another model's."""
        key = normalize(model_name)
        others = [m for m in self.models() if m._key not in (key, renaming)]
        taken = {name: other.name for other in others for name in other._all_sql_names()}
        ours = set(taken) | self._sql_instance().known_names()
        if renaming:
            ours |= set(Model(self._context, renaming)._all_sql_names())
        check_model_name_free(self._con, model_name, taken, ours)

    # ---------------------------------------------------------------- stages
    @property
    def stages(self) -> StageCatalog:
        """The named stages (``@name``) of this registry."""
        return self._stages

    def create_stage(self, name: str, url: str, *, comment: str | None = None, replace: bool = False) -> str:
        """Name a local folder or an fsspec URL (``memory://``, ``s3://bucket/prefix``) as ``@name``."""
        self._stages.create(name, str(url), comment, replace=replace)
        return f"@{name}"

    def show_stages(self) -> pd.DataFrame:
        """One row per stage: name, url, comment, created_on."""
        return pd.DataFrame(self._stages.rows(), columns=["name", "url", "comment", "created_on"])

    def drop_stage(self, name: str) -> None:
        """Forget a stage; its files stay where they are."""
        self._stages.drop(name)

    def snapshot(self, target: str | Path, *, storage_version: str | None = None) -> Path:
        """Copy this registry's database to ``target``, for other processes to read while this one writes.

        DuckDB lets one process write a database file and no other process open it meanwhile. A
        snapshot is a consistent copy (every table, the catalog included) that any number of
        processes can open with ``duckreg.connect(target, read_only=True)``; its versions use the same
        artifact folders. The copy is written beside ``target`` and renamed into place, so a reader
        never sees half of one. Taking a new snapshot replaces the old one.

        ``storage_version`` writes the copy in an older DuckDB file format (``"v1.5.0"``), so a process
        on that DuckDB (``duckreg serve`` for the DuckDB 1.5 CLI) can open it; its versions still use
        this registry's artifact folders.
        """
        target = Path(target).expanduser().resolve()
        partial_copy = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        alias = f"duckreg_snapshot_{uuid.uuid4().hex[:12]}"

        def copy(cursor: duckdb.DuckDBPyConnection) -> None:
            options = f" (STORAGE_VERSION {quote_literal(storage_version)})" if storage_version else ""
            cursor.execute(f"ATTACH {quote_literal(str(partial_copy))} AS {alias}{options}")
            try:
                cursor.execute(f"COPY FROM DATABASE {quote(self.database_name)} TO {alias}")
                # The copy shares this registry's artifact folders wherever it is written: name them absolutely.
                settings = f"{alias}.{quote(self.schema_name)}.settings"
                cursor.execute(
                    f"INSERT OR REPLACE INTO {settings} VALUES ('artifact_location', ?)",
                    [str(self._locations.location_and_home()[1].resolve())],
                )
                versions = f"{alias}.{quote(self.schema_name)}.versions"
                for (stored,) in cursor.execute(f"SELECT DISTINCT artifact_path FROM {versions}").fetchall():
                    cursor.execute(
                        f"UPDATE {versions} SET artifact_path = ? WHERE artifact_path = ?",
                        [str(self._locations.version_folder(stored).resolve()), stored],
                    )
            finally:
                cursor.execute(f"DETACH {alias}")

        try:
            self._catalog.run(copy)
            os.replace(partial_copy, target)
        finally:
            for leftover in (partial_copy, partial_copy.with_name(partial_copy.name + ".wal")):
                leftover.unlink(missing_ok=True)
        return target

    # -------------------------------------------------------------- SQL side
    def register_functions(
        self,
        con: duckdb.DuckDBPyConnection | None = None,
        *,
        models: Iterable[str] | None = None,
        macro_catalog: str | None = None,
        with_indexes: bool = True,
    ) -> duckdb.DuckDBPyConnection:
        """Make model versions callable from SQL on ``con`` (default: the registry's connection).

        The functions themselves belong to the database instance (every connection and cursor of it
        can call them, positionally, for as long as any is open); ``con`` also gets the macros that
        take optional inputs, parameters by name and tables (``fn_table``). ``models`` limits the
        work to those models (the shell binds only what a statement uses). The macros are TEMP
        (``con``'s own) unless ``macro_catalog`` names an attached catalog to create them in, where
        every connection of the instance finds them (as ``duckreg serve``'s remote sessions must).
        ``with_indexes`` also creates ``<index>_search`` for the indexes of those models.
        """
        con = con or self._con
        instance = connections.instance_of(con)
        if instance is not self._sql_instance():
            raise ValueError(
                "register_functions(con): con is a connection to another database instance than this registry's."
            )
        wanted = None if models is None else {normalize(m) for m in models}
        chosen = [m for m in self.models() if wanted is None or m._key in wanted]
        sql_functions = [f for model in chosen for f in model._sql_functions()]
        server = self._stage_server()
        with instance.lock:
            instance.add_server(server)
            if self._owns_connection and self._db_path is None and instance.root is None:
                instance.root = server
            instance.ensure_stage_functions(self._catalog)
            instance.set_targets(self._catalog, sql_functions)
            if macro_catalog is None:
                instance.bind_connection(con, wanted)
            macros = [s for f in sql_functions for s in f.macro_statements(macro_catalog)]
            searches = self._index_macros(wanted, macro_catalog) if with_indexes else []
            for statement in stage_macro_statements(macro_catalog) + macros + searches:
                con.execute(statement)
        return con

    def _index_macros(self, models: set[str] | None, macro_catalog: str | None) -> list[str]:
        """``<index>_search(query, k)`` for every index whose model is among ``models`` (None: every model)."""
        statements = []
        for key in self._indexes.keys():
            record = self._indexes.record(key)
            if models is None or record.model_key in models:
                vectors = f"{self._catalog.schema}.{quote(record.vectors)}"
                head = create_macro(f"{key}{SEARCH_SUFFIX}", macro_catalog)
                copies = self._indexes.copies
                statements.append(
                    macro_statement(
                        record,
                        vectors,
                        head,
                        copies.vector_table(record, vectors),
                        copies.keyword_table(record, vectors),
                        copies.keyword_method()[1],
                    )
                )
        return statements

    # ------------------------------------------------------------------ indexes
    def create_index(
        self,
        index_name: str,
        *,
        table: str,
        column: str,
        key: str,
        model: str,
        version: str | None = None,
        refresh: bool = True,
        if_exists: str = "error",
        ann: str = "auto",
    ) -> SemanticIndex:
        """A semantic index over ``table.column`` (rows identified by ``key``) with the embeddings of ``model``'s
        ``version`` (a name or alias; the default version when None), which the index records. With ``refresh``
        (the default) every row is embedded now; ``<index_name>_search(query, k := 10)`` searches it from SQL.
        ``if_exists="refresh"`` keeps an existing index of the same definition (and refreshes it) instead of
        refusing, so a script or a dbt hook can run again. ``ann`` chooses how a top-``k`` search runs: ``"auto"``
        through an in-memory HNSW index (DuckDB's vss) once the index holds 10,000 rows and vss loads here,
        ``"hnsw"`` always (refused where vss cannot load), ``"exact"`` never."""
        created = self._indexes.create(index_name, table, column, key, model, version, if_exists, ann)
        index = SemanticIndex(self, created)
        if refresh:
            index.refresh()
        self._refresh_sql(self._indexes.record(index._key).model_key)
        return index

    def get_index(self, index_name: str) -> SemanticIndex:
        """An index by name (case-insensitive); a ``ValueError`` when there is none."""
        key = normalize(index_name)
        self._indexes.record(key)
        return SemanticIndex(self, key)

    def show_indexes(self) -> pd.DataFrame:
        """Every index with its table, column, model version, row count and last refresh."""
        rows = [SemanticIndex(self, key).show() for key in self._indexes.keys()]
        columns = ["name", "table", "column", "key", "model", "model_ref", "version", "dimension", "rows",
                   "created_on", "refreshed_on", "search", "ann", "method"]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def drop_index(self, index_name: str) -> None:
        """Delete an index and its vectors (the source table is untouched)."""
        key = normalize(index_name)
        model_key = self._indexes.record(key).model_key
        self._indexes.drop(key)
        instance = self._sql_instance()
        with instance.lock:
            instance.update_macros(model_key, [f"DROP MACRO TABLE IF EXISTS {quote(key + SEARCH_SUFFIX)}"])

    def _stage_server(self) -> StageServer:
        return StageServer(
            self._con,
            self._stages,
            partial(run_from_sql, self, wait=True),
            partial(run_from_sql, self, wait=False),
            self.closed,
            self._index_from_sql,
        )

    def _index_from_sql(
        self, action: str, index_name: str, table: str | None, column: str | None, key: str | None,
        model: str | None, version: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        """SQL's ``create_index``/``refresh_index``/``drop_index``: the index's summary row afterwards."""
        counts: dict[str, int] = {"embedded": 0, "removed": 0, "unchanged": 0, "failed": 0}
        # Inside a query on a connection that connection cannot take new macros: the next statement of the
        # shell, dbt or serve binds <index>_search, and a Python connection with register_functions().
        if action in ("create", "create_or_refresh"):
            if not (table and column and key and model):
                raise ValueError("create_index(index_name, table_name, column_name, key_column, model[, version])")
            if_exists = "refresh" if action == "create_or_refresh" else "error"
            created = self._indexes.create(index_name, table, column, key, model, version, if_exists)
            index = SemanticIndex(self, created)
            counts = index.refresh()
        elif action == "refresh":
            index = self.get_index(index_name)
            counts = index.refresh()
        elif action == "drop":
            shown = self.get_index(index_name).show()
            self._indexes.drop(normalize(index_name))
            return {"index_name": shown["name"], "version": shown["version"], "rows": 0, **counts}
        else:
            raise ValueError("create_index(..., if_exists := ...) takes 'error' or 'refresh'")
        shown = index.show()
        return {"index_name": shown["name"], "version": shown["version"], "rows": shown["rows"], **counts}

    def _sql_instance(self) -> connections.Instance:
        """The database instance this registry's connection belongs to (where its functions live)."""
        if self._instance is None:
            self._instance = self._catalog.run(connections.instance_of)
        return self._instance

    def resolve_model_call(self, model: str, version: str | None, method: str) -> ResolvedFunction:
        """Map ``MODEL(model, version)!method`` to its SQL function (used by the Snowflake syntax)."""
        handle = self.get_model(model)
        mv = handle.default if version is None else handle.version(version)
        function = mv.get_function(method)
        version_key = None if version is None else mv._version_key
        name = next(n for n, f in sql_names(handle._key, version_key, mv._functions()) if f.name == function.name)
        # ``*`` passes the required inputs by name; optional ones (text_pair) are left to their default.
        required = FunctionRunner(mv._handle(), function).required_inputs()
        outputs = function.signature.outputs
        return ResolvedFunction(name, tuple(required), handle._key, outputs[0].name if len(outputs) == 1 else None)

    def _refresh_sql(self, model_key: str) -> None:
        """After a committed change to a model: its SQL names follow it on every bound connection.

        The change has happened, so nothing here raises: a connection that cannot follow (closed, busy
        elsewhere) is skipped, and a failure is a warning.
        """
        try:
            instance = self._sql_instance()
            sql_functions = Model(self._context, model_key)._sql_functions()
            with instance.lock:
                instance.set_targets(self._catalog, sql_functions)
                macros = [s for f in sql_functions for s in f.macro_statements()]
                instance.update_macros(model_key, macros + self._index_macros({model_key}, None))
        except Exception as exc:  # noqa: BLE001 - the catalog change is committed; report, do not undo
            warnings.warn(f"Model {model_key}: SQL functions not refreshed: {exc}", RuntimeWarning, stacklevel=3)

    def _retire_sql(self, model_key: str, names: list[str], reason: str) -> None:
        """After a committed delete or rename: ``names`` stop computing anywhere, with ``reason``."""
        try:
            instance = self._sql_instance()
            with instance.lock:
                instance.retire_targets(names, reason)
                instance.update_macros(model_key, functions.drop_macro_statements(names))
        except Exception as exc:  # noqa: BLE001 - the catalog change is committed; report, do not undo
            warnings.warn(f"Model {model_key}: SQL functions not retired: {exc}", RuntimeWarning, stacklevel=3)


def open_registry(
    database: str | Path | None, connect_kwargs: dict[str, Any], registry_kwargs: dict[str, Any]
) -> Registry:
    """A registry on a connection it opens itself (``duckreg.connect``): the registry owns that connection."""
    registry = Registry(connections.open_database(database, **connect_kwargs), **registry_kwargs)
    registry._owns_connection = True
    return registry
