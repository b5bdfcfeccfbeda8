"""Registry, Model and ModelVersion: the user-facing API, shaped like Snowflake's Model Registry."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from duckreg import binding, connections, custom, faults, huggingface
from duckreg.artifacts import MANIFEST, ArtifactStore, file_hashes
from duckreg.batch.stages import StageCatalog
from duckreg.catalog import Catalog
from duckreg.inference import FunctionRunner, FunctionSpec, VersionHandle
from duckreg.model_signature import DataType, FeatureGroupSpec, ModelSignature
from duckreg.tasks import get_task, signature_runner

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_NAME_LENGTH = 128
SYSTEM_ALIASES = ("DEFAULT", "FIRST", "LAST")
# SQL names duckreg itself defines in every database it registers functions in.
RESERVED_SQL_NAMES = frozenset(
    {"stage_files", "run_batch", "read_stage_file", "duckreg_list_stage_files", "duckreg_run_batch"}
)
_OPTION_KEYS = {"target_methods", "cuda_version", "device", "max_batch_size", "enable_explainability"}
_RUN_CHUNK_ROWS = 4096
_ADJECTIVES = (
    "able brave calm clever cosmic crisp eager fancy gentle happy jolly keen lively lucky merry "
    "mighty noble proud quick quiet rapid shiny silent smart sunny swift tidy vivid witty zesty"
).split()
_ANIMALS = (
    "badger bat bear beaver bison camel cat cobra crane deer dingo dolphin eagle falcon ferret fox "
    "gecko heron ibis koala lemur lynx marten moose otter owl panda puffin quail raven seal tiger"
).split()


def _key(name: str) -> str:
    return name.lower()


def _check_identifier(name: Any, what: str) -> str:
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(
            f"Invalid {what} {name!r}: use letters, digits and underscores, starting with a letter or underscore."
        )
    if "__" in name:
        raise ValueError(f"Invalid {what} {name!r}: '__' is reserved (it separates model and version in SQL names).")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"Invalid {what} {name[:20]!r}...: at most {MAX_NAME_LENGTH} characters, got {len(name)}.")
    return name


def _sql_names(
    model_key: str, version_key: str | None, functions: list[FunctionSpec]
) -> list[tuple[str, FunctionSpec]]:
    """Each function of a version with its SQL name: ``<model>[__<version>]``, plus ``_<method>``
    unless the method is ``__call__`` or the version's only one."""
    base = model_key if version_key is None else f"{model_key}__{version_key}"
    sole = len(functions) == 1
    return [
        (base if f.target_method == "__call__" or sole else f"{base}_{f.target_method.lower()}", f) for f in functions
    ]


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
            "SELECT path FROM duckdb_databases() WHERE database_name = ?", [database_name]
        ).fetchall()
        row = rows[0] if rows else None
        if row is None:
            raise ValueError(f"Database {database_name} does not exist.")
        self.database_name = database_name
        self.schema_name = schema_name or "duckreg"
        self._catalog = Catalog(connection, self.database_name, self.schema_name)
        self._catalog.initialise()
        self._db_path = Path(row[0]).resolve() if row[0] else None
        owner = {"database": str(self._db_path) if self._db_path else None, "schema": self.schema_name}
        self._store = ArtifactStore(self._artifact_root(artifact_location), owner)
        self._instance: connections.Instance | None = None

    def _artifact_root(self, artifact_location: str | Path | None) -> Path:
        if artifact_location is not None:
            return Path(artifact_location)
        stored = self._catalog.get_setting("artifact_location")
        if stored:
            return Path(stored)
        if self._db_path is not None:
            return self._db_path.with_name(self._db_path.name + ".artifacts")
        return Path(tempfile.mkdtemp(prefix="duckreg-artifacts-"))

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        return self._con

    @property
    def location(self) -> str:
        return f"{self.database_name}.{self.schema_name}"

    @property
    def artifact_location(self) -> Path:
        return self._store.root

    def __repr__(self) -> str:
        return f"Registry(location={self.location!r}, artifact_location='{self._store.root}')"

    # ---------------------------------------------------------------- models
    def _model_row(self, name: str) -> tuple | None:
        rows = self._catalog.query(
            "SELECT model_key, name, comment, default_version_key, created_on FROM {schema}.models WHERE model_key = ?",
            [_key(name)],
        )
        return rows[0] if rows else None

    def get_model(self, model_name: str) -> Model:
        if not isinstance(model_name, str) or self._model_row(model_name) is None:
            raise ValueError(f"Unable to find model {model_name}")
        return Model(self, _key(model_name))

    def models(self) -> list[Model]:
        rows = self._catalog.query("SELECT model_key FROM {schema}.models ORDER BY created_on, model_key")
        return [Model(self, key) for (key,) in rows]

    def show_models(self) -> pd.DataFrame:
        rows = self._catalog.query(
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
            [self.database_name, self.schema_name],
        )
        columns = [
            "created_on", "name", "model_type", "database_name", "schema_name", "comment",
            "default_version_name", "versions", "aliases",
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def delete_model(self, model_name: str) -> None:
        """Delete a model and all its versions: catalog rows first (the point of truth), then folders."""
        with self._store.writing():
            self._reclaim()
            model = self.get_model(model_name)
            versions = model.versions()
            names = [n for v in versions for n in v._sql_names()] + model._default_sql_names()
            handles = [v._handle() for v in versions]
            with self._catalog.transaction() as cat:
                for table in ("functions", "metrics", "aliases", "tags", "versions", "models"):
                    cat.execute(f"DELETE FROM {{schema}}.{table} WHERE model_key = ?", [model._key])
                faults.point("delete:in_transaction")
            self._remove_versions(handles)
        self._retire_sql(model._key, names, f"model {model_name} was deleted")

    def _remove_versions(self, handles: list[VersionHandle]) -> None:
        """After a delete's commit: unload the versions from this process and remove their folders.

        What a failure leaves on disk is reclaimed by the next write.
        """
        faults.point("delete:after_commit")
        for handle in handles:
            handle.forget()
            try:
                self._store.remove(handle.artifact_dir)
            except OSError as exc:
                warnings.warn(
                    f"Could not remove {handle.artifact_dir} ({exc}); the next write reclaims it.", stacklevel=3
                )

    def _reclaim(self) -> None:
        """Delete what a killed write left in the artifact root (never blocks the write at hand)."""
        try:
            self._store.reclaim(self._referenced_folders())
        except OSError as exc:
            warnings.warn(f"Could not reclaim leftovers in {self._store.root}: {exc}", stacklevel=3)

    def _referenced_folders(self) -> set[Path]:
        rows = self._catalog.query("SELECT artifact_path FROM {schema}.versions")
        return {Path(path).resolve() for (path,) in rows}

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
        """Store a model version, infer or take its signatures, and make it callable from SQL."""
        _check_identifier(model_name, "model_name")
        existing = self._model_row(model_name)
        if existing is None:
            self._check_sql_name_free(model_name)
        model_key = _key(model_name)
        if version_name is None:
            version_name = self._generate_version_name(model_key)
        _check_identifier(version_name, "version_name")
        version_key = _key(version_name)
        if version_name.upper() in SYSTEM_ALIASES:
            raise ValueError(f"Invalid version_name {version_name!r}: {version_name.upper()} is a system alias.")
        if existing is not None and self._catalog.query(
            "SELECT 1 FROM {schema}.aliases WHERE model_key = ? AND alias_key = ?", [model_key, version_key]
        ):
            raise ValueError(f"Invalid version_name {version_name!r}: it is an alias of model {model_name} already.")
        if self._version_row(model_key, version_key) is not None:
            raise ValueError(
                f"Model {model_name} version {version_name} already existed. "
                "To auto-generate `version_name`, skip that argument."
            )
        if metrics is not None:
            json.dumps(metrics)  # must be JSON-serialisable; raises TypeError otherwise
        options = _check_options(options)
        trust_remote_code = False
        if isinstance(model, huggingface.TransformersPipeline):
            if signatures is not None:
                warnings.warn(
                    "It is impossible to validate your model signatures when using a TransformersPipeline object. "
                    "Please make sure you are providing correct model signatures.",
                    UserWarning,
                    stacklevel=2,
                )
            trust_remote_code = model.trust_remote_code
            model = model.build()
        if isinstance(model, custom.CustomModel):
            functions = _custom_functions(model, signatures, options)
            task, settings, model_type = None, {}, "custom"
        elif huggingface.is_pipeline(model):
            model = huggingface.as_task_model(model)
            if sample_input_data is not None and signatures is None:
                warnings.warn(
                    "Inferring model signature from sample input for huggingface pipeline is not supported. Model "
                    "signature will automatically be inferred from pipeline task. Or, you could specify model "
                    "signature manually.",
                    UserWarning,
                    stacklevel=2,
                )
            functions, task, settings = _pipeline_functions(model, signatures, options)
            model_type = "huggingface_pipeline"
        else:
            raise TypeError(
                f"Cannot log a {type(model).__name__}: log_model takes a transformers.Pipeline, a "
                "duckreg.huggingface.TransformersPipeline or a duckreg.custom.CustomModel."
            )
        # Methods beyond the first get SQL names of their own (``m_predict``): no other model may hold them.
        method_names = [name for name, _ in _sql_names(model_key, None, functions) if name != model_key]
        if method_names:
            taken = {n: m.name for m in self.models() if m._key != model_key for n in m._all_sql_names()}
            _check_untaken(model_name, [*method_names, *(binding.table_macro_name(n) for n in method_names)], taken)
        manifest = {
            "format_version": 1,
            "model_type": model_type,
            "task": task,
            "pipeline_settings": huggingface.encode_settings(settings),
            "options": options,
            "trust_remote_code": trust_remote_code,
            "library_versions": huggingface.library_versions(),
            "pip_requirements": list(pip_requirements or []),
            "conda_dependencies": list(conda_dependencies or []),
            "target_platforms": list(target_platforms or []),
            "python_version": python_version,
            "functions": [f.to_record() for f in functions],
        }
        manifest["registry"] = self._store.owner
        with self._store.writing():
            self._reclaim()
            self._write_version(model, manifest, model_name, version_name, comment, metrics, functions, existing)
        version = ModelVersion(self, model_key, version_key)
        self._refresh_sql(model_key)
        return version

    def _write_version(
        self,
        model: Any,
        manifest: dict[str, Any],
        model_name: str,
        version_name: str,
        comment: str | None,
        metrics: dict[str, Any] | None,
        functions: list[FunctionSpec],
        existing: tuple | None,
    ) -> None:
        """Stage the files, publish them by one rename, then commit the catalog rows in one transaction.

        A process killed anywhere here leaves either no version (its folder is an orphan the next
        write reclaims) or a complete one.
        """
        model_key, version_key = _key(model_name), _key(version_name)
        faults.point("log_model:before_staging")
        with self._store.staging() as staged:
            if manifest["model_type"] == "custom":
                manifest["custom"] = custom.save(model, staged / "model")
            else:
                huggingface.save_pipeline(model, staged / "model")
            manifest["files"] = file_hashes(staged / "model")
            (staged / MANIFEST).write_text(json.dumps(manifest, indent=2))
            faults.point("log_model:after_staging")
            relative = self._store.publish(staged, model_key, version_key, self._referenced_folders().__contains__)
        faults.point("log_model:after_publish")
        artifact_path = str(self._store.path(relative))
        try:
            with self._catalog.transaction() as cat:
                if existing is None:
                    cat.execute(
                        "INSERT INTO {schema}.models (model_key, name, default_version_key) VALUES (?, ?, ?)",
                        [model_key, model_name, version_key],
                    )
                cat.execute(
                    "INSERT INTO {schema}.versions (model_key, version_key, name, seq, comment, task, model_type, "
                    "artifact_path, manifest) VALUES (?, ?, ?, nextval('{schema}.version_seq'), ?, ?, ?, ?, ?)",
                    [model_key, version_key, version_name, comment, manifest["task"], manifest["model_type"],
                     artifact_path, json.dumps(manifest)],
                )  # fmt: skip
                faults.point("log_model:in_transaction")
                for function in functions:
                    cat.execute(
                        "INSERT INTO {schema}.functions VALUES (?, ?, ?, ?, ?)",
                        [model_key, version_key, function.name, function.target_method,
                         json.dumps(function.to_record())],
                    )  # fmt: skip
                for name, value in (metrics or {}).items():
                    cat.execute(
                        "INSERT INTO {schema}.metrics VALUES (?, ?, ?, ?)",
                        [model_key, version_key, name, json.dumps(value)],
                    )
                if existing is None and self._catalog.get_setting("artifact_location") is None:
                    cat.set_setting("artifact_location", str(self._store.root))
        except BaseException:
            self._store.remove(self._store.path(relative))
            raise
        faults.point("log_model:after_commit")

    def _check_sql_name_free(self, model_name: str, *, renaming: str | None = None) -> None:
        """Refuse a model name whose SQL names would shadow a function or collide with another model's.

        A model ``m`` owns ``m``, ``m_table``, ``m_files``, ``m__<version>...`` and ``m_<method>``; no two
        models may share one, and none may be a keyword, a DuckDB function or one of duckreg's own.
        """
        key = _key(model_name)
        if key in RESERVED_SQL_NAMES or key.startswith(("duckreg_", "_duckreg")):
            raise ValueError(f"Invalid model_name {model_name!r}: duckreg uses that name for its own SQL functions.")
        keywords = {r[0].lower() for r in self._con.execute("SELECT keyword_name FROM duckdb_keywords()").fetchall()}
        if key in keywords:
            raise ValueError(f"Invalid model_name {model_name!r}: it is an SQL keyword. Choose another name.")
        others = [m for m in self.models() if m._key not in (key, renaming)]
        taken = {name: other.name for other in others for name in other._all_sql_names()}
        wanted = [key, binding.table_macro_name(key), binding.files_macro_name(key)]
        _check_untaken(model_name, wanted, taken)
        ours = set(taken) | self._sql_instance().known_names()
        if renaming:
            ours |= set(Model(self, renaming)._all_sql_names())
        for candidate in wanted:
            clash = self._con.execute(
                "SELECT count(*) FROM duckdb_functions() WHERE lower(function_name) = ?", [candidate]
            ).fetchall()[0][0]
            if clash and candidate not in ours:
                raise ValueError(
                    f"Invalid model_name {model_name!r}: it would shadow the existing SQL function {candidate!r}."
                )

    def _generate_version_name(self, model_key: str) -> str:
        rng = random.Random()
        for _ in range(1000):
            name = f"{rng.choice(_ADJECTIVES)}_{rng.choice(_ANIMALS)}_{rng.randint(1, 4)}"
            if self._version_row(model_key, name) is None:
                return name
        raise RuntimeError("Could not generate a unique version name; pass version_name explicitly.")

    def _version_row(self, model_key: str, version_key: str) -> tuple | None:
        rows = self._catalog.query(
            "SELECT name, comment, task, artifact_path, manifest, created_on, seq FROM {schema}.versions "
            "WHERE model_key = ? AND version_key = ?",
            [model_key, _key(version_key)],
        )
        return rows[0] if rows else None

    # ---------------------------------------------------------------- stages
    @property
    def stages(self) -> StageCatalog:
        return StageCatalog(self._catalog)

    def create_stage(self, name: str, url: str, *, comment: str | None = None, replace: bool = False) -> str:
        """Name a local folder or an fsspec URL (``memory://``, ``s3://bucket/prefix``) as ``@name``."""
        self.stages.create(name, str(url), comment, replace=replace)
        return f"@{name}"

    def show_stages(self) -> pd.DataFrame:
        return pd.DataFrame(self.stages.rows(), columns=["name", "url", "comment", "created_on"])

    def drop_stage(self, name: str) -> None:
        """Forget a stage; its files stay where they are."""
        self.stages.drop(name)

    def snapshot(self, target: str | Path) -> Path:
        """Copy this registry's database to ``target``, for other processes to read while this one writes.

        DuckDB lets one process write a database file and no other process open it meanwhile. A
        snapshot is a consistent copy (every table, the catalog included) that any number of
        processes can open with ``duckreg.connect(target, read_only=True)``; its versions use the same
        artifact folders. The copy is written beside ``target`` and renamed into place, so a reader
        never sees half of one. Taking a new snapshot replaces the old one.
        """
        target = Path(target).expanduser().resolve()
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        alias = f"duckreg_snapshot_{uuid.uuid4().hex[:12]}"

        def copy(cursor: duckdb.DuckDBPyConnection) -> None:
            cursor.execute(f"ATTACH {binding.quote_literal(str(partial))} AS {alias}")
            try:
                cursor.execute(f"COPY FROM DATABASE {binding.quote(self.database_name)} TO {alias}")
            finally:
                cursor.execute(f"DETACH {alias}")

        try:
            self._catalog.run(copy)
            os.replace(partial, target)
        finally:
            for leftover in (partial, partial.with_name(partial.name + ".wal")):
                leftover.unlink(missing_ok=True)
        return target

    # -------------------------------------------------------------- SQL side
    def register_functions(
        self,
        con: duckdb.DuckDBPyConnection | None = None,
        *,
        models: Iterable[str] | None = None,
    ) -> duckdb.DuckDBPyConnection:
        """Make model versions callable from SQL on ``con`` (default: the registry's connection).

        The functions themselves belong to the database instance (every connection and cursor of it
        can call them, positionally, for as long as any is open); ``con`` also gets the macros that
        take optional inputs, parameters by name and tables (``fn_table``). ``models`` limits the
        work to those models (the shell binds only what a statement uses).
        """
        con = con or self._con
        instance = connections.instance_of(con)
        if instance is not self._sql_instance():
            raise ValueError(
                "register_functions(con): con is a connection to another database instance than this registry's."
            )
        wanted = None if models is None else {_key(m) for m in models}
        chosen = [m for m in self.models() if wanted is None or m._key in wanted]
        bindings = [b for model in chosen for b in model._bindings()]
        with instance.lock:
            instance.add_registry(self)
            if self._owns_connection and self._db_path is None and instance.root is None:
                instance.root = self
            instance.ensure_stage_functions(self._catalog)
            instance.set_targets(self._catalog, bindings)
            instance.bind_connection(con, wanted)
            for statement in binding.stage_macro_statements() + [s for b in bindings for s in b.macro_statements()]:
                con.execute(statement)
        return con

    def _sql_instance(self) -> connections.Instance:
        """The database instance this registry's connection belongs to (where its functions live)."""
        if self._instance is None:
            self._instance = self._catalog.run(connections.instance_of)
        return self._instance

    def model_keys(self) -> list[str]:
        return [row[0] for row in self._catalog.query("SELECT model_key FROM {schema}.models ORDER BY model_key")]

    def models_named_in(self, sql_text: str) -> set[str]:
        """Models whose SQL names (``m``, ``m__v1``, ``m_table``, ...) appear in ``sql_text``."""
        tokens = set(re.findall(r"[a-z_][a-z0-9_]*", sql_text.lower()))
        found = set()
        for key in self.model_keys():
            if any(t == key or t.startswith((key + "__", key + "_")) for t in tokens):
                found.add(key)
        return found

    def resolve_model_call(self, model: str, version: str | None, method: str) -> Any:
        """Map ``MODEL(model, version)!method`` to its SQL function (used by the Snowflake syntax)."""
        from duckreg.sqlrewrite import ResolvedFunction

        handle = self.get_model(model)
        mv = handle.default if version is None else handle.version(version)
        function = mv.get_function(method)
        version_key = None if version is None else mv._version_key
        name = next(n for n, f in _sql_names(handle._key, version_key, mv._functions()) if f.name == function.name)
        # ``*`` passes the required inputs by name; optional ones (text_pair) are left to their default.
        required = FunctionRunner(mv._handle(), function).required_inputs()
        return ResolvedFunction(name, tuple(required), handle._key)

    def _start_job_from_sql(
        self,
        model: str,
        query: str,
        output_location: str,
        mode: str | None,
        job_name: str | None,
        max_batch_rows: int | None,
    ) -> str:
        """``run_batch('model[/version]', 'SELECT ...', '@stage/out/')`` in SQL: start a job, return its id.

        The job reads its input on its own connection after this call returns (a UDF cannot run SQL on
        the connection that is calling it), so its id is all the call gives back.
        """
        from duckreg import jobs
        from duckreg.batch import JobSpec, OutputSpec, SaveMode

        if not model or not query or not output_location:
            raise ValueError("run_batch(model, query, output_location) needs all three.")
        model_name, _, version_name = model.partition("/")
        mv = self.get_model(model_name).version(version_name) if version_name else self.get_model(model_name).default
        name = job_name or f"BATCH_INFERENCE_{uuid.uuid4().hex.upper()}"
        output_spec = OutputSpec(output_location, mode=SaveMode((mode or "error").lower()))
        job_spec = JobSpec(job_name=name, max_batch_rows=int(max_batch_rows or 1024), block=True)

        def start() -> None:
            try:
                mv.run_batch(query, output_spec=output_spec, job_spec=job_spec)
            except Exception as exc:  # noqa: BLE001 - recorded in the job, which the caller polls
                jobs.record_failure(self, name, mv, output_location, exc)

        threading.Thread(target=start, name=f"duckreg-sql-job-{name}", daemon=True).start()
        return f"{self.database_name}.{self.schema_name}.{name}"

    def _refresh_sql(self, model_key: str) -> None:
        """After a committed change to a model: its SQL names follow it on every bound connection.

        The change has happened, so nothing here raises: a connection that cannot follow (closed, busy
        elsewhere) is skipped, and a failure is a warning.
        """
        try:
            instance = self._sql_instance()
            bindings = Model(self, model_key)._bindings()
            with instance.lock:
                instance.set_targets(self._catalog, bindings)
                instance.update_macros(model_key, [s for b in bindings for s in b.macro_statements()])
        except Exception as exc:  # noqa: BLE001 - the catalog change is committed; report, do not undo
            warnings.warn(f"Model {model_key}: SQL functions not refreshed: {exc}", RuntimeWarning, stacklevel=3)

    def _retire_sql(self, model_key: str, names: list[str], reason: str) -> None:
        """After a committed delete or rename: ``names`` stop computing anywhere, with ``reason``."""
        try:
            instance = self._sql_instance()
            with instance.lock:
                instance.retire_targets(names, reason)
                instance.update_macros(model_key, binding.drop_macro_statements(names))
        except Exception as exc:  # noqa: BLE001 - the catalog change is committed; report, do not undo
            warnings.warn(f"Model {model_key}: SQL functions not retired: {exc}", RuntimeWarning, stacklevel=3)


def _check_untaken(model_name: str, names: Iterable[str], taken: dict[str, str]) -> None:
    for name in names:
        if name in taken:
            raise ValueError(
                f"Invalid model_name {model_name!r}: the SQL name {name!r} would clash with model {taken[name]}'s."
            )


def _check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    from duckreg.tasks import feature_extraction

    allowed = _OPTION_KEYS | set(feature_extraction.FeatureExtraction.option_keys)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"model save: unrecognized option keys for this model type: {unknown}. Check spelling and supported "
            f"keys: {sorted(allowed)}."
        )
    if options.pop("enable_explainability", False):
        raise NotImplementedError("Explainability is not supported for huggingface model.")
    if "target_methods" in options:
        methods = options["target_methods"]
        if isinstance(methods, str) or not all(isinstance(m, str) for m in methods):
            raise ValueError("options['target_methods'] must be a list of method names")
        options["target_methods"] = list(methods)
    if "max_batch_size" in options and (
        not isinstance(options["max_batch_size"], int) or options["max_batch_size"] < 1
    ):
        raise ValueError("options['max_batch_size'] must be a positive integer")
    return options


def _custom_functions(model: custom.CustomModel, signatures: Any, options: dict[str, Any]) -> list[FunctionSpec]:
    methods = custom.inference_methods(model)
    if not methods:
        raise ValueError(f"{type(model).__name__} has no method marked with @inference_api.")
    if signatures is None:
        raise ValueError(f"Custom models need signatures={{method: ModelSignature(...)}} for their methods {methods}.")
    if isinstance(signatures, ModelSignature):
        if len(methods) != 1:
            raise ValueError(f"Give a signature per method: {methods}.")
        signatures = {methods[0]: signatures}
    if not isinstance(signatures, dict):
        raise ValueError("signatures must be a dict mapping a target method to its ModelSignature")
    wanted = options.get("target_methods") or list(signatures)
    functions = []
    for method in wanted:
        if method not in methods:
            raise ValueError(f"Target method {method} is not callable or does not exist in the model.")
        signature = signatures.get(method)
        if not isinstance(signature, ModelSignature):
            raise ValueError(f"signatures[{method!r}] must be a ModelSignature")
        functions.append(FunctionSpec(method.upper(), method, signature, runner="custom"))
    return functions


def _pipeline_functions(
    pipe: Any, signatures: dict[str, ModelSignature] | None, options: dict[str, Any]
) -> tuple[list[FunctionSpec], str, dict[str, Any]]:
    task = pipe.task
    settings = huggingface.pipeline_settings(pipe)
    if settings.get("return_tensors") or getattr(settings.get("return_type"), "name", None) == "TENSORS":
        raise NotImplementedError(
            f"Auto deployment for HuggingFace pipeline {task} when `return_tensors` set to `True` has not been "
            "supported yet."
        )
    task_impl = get_task(task)
    inferred = task_impl.infer(task, pipe, settings, options) if task_impl else None
    if signatures is None:
        if inferred is None:
            hint = (
                " Log it with options={'pooling': 'mean'} to get one vector per row."
                if task == "feature-extraction"
                else ""
            )
            raise NotImplementedError(
                f"Cannot auto infer the signature of pipeline for task {task}. "
                f"Pass signatures={{'__call__': ...}}.{hint}"
            )
        methods = options.get("target_methods", ["__call__"])
        if methods != ["__call__"]:
            raise ValueError(f"Hugging Face pipelines have one target method, '__call__'; got {methods}")
        spec = FunctionSpec("__CALL__", "__call__", inferred.signature, inferred.json_outputs, inferred.sql_shapes)
        return [spec], task, settings
    if isinstance(signatures, ModelSignature):
        signatures = {"__call__": signatures}
    if not isinstance(signatures, dict):
        raise ValueError(
            "signatures must be a dict mapping a target method to its ModelSignature, e.g. {'__call__': signature}"
        )
    functions = []
    for method, signature in signatures.items():
        if not isinstance(signature, ModelSignature):
            raise ValueError(f"signatures[{method!r}] must be a ModelSignature, got {type(signature).__name__}")
        if method != "__call__":
            raise ValueError(f"Target method {method} is not callable or does not exist in the model.")
        special = signature_runner(task, signature)
        use_task = (
            special is None
            and inferred is not None
            and [s.name for s in signature.inputs] == [s.name for s in inferred.signature.inputs]
        )
        json_outputs = frozenset(
            o.name
            for o in signature.outputs
            if use_task
            and o.name in inferred.json_outputs
            and not isinstance(o, FeatureGroupSpec)
            and o.dtype is DataType.STRING
            and o.shape is None
        )
        shapes = {k: v for k, v in (inferred.sql_shapes if use_task else {}).items()
                  if any(o.name == k and o.shape is not None for o in signature.outputs)}  # fmt: skip
        runner = special or ("task" if use_task else "generic")
        functions.append(FunctionSpec(method.upper(), method, signature, json_outputs, shapes, runner))
    return functions, task, settings


class Model:
    """A named model: a set of versions, one of them the default."""

    def __init__(self, registry: Registry, model_key: str) -> None:
        self._registry = registry
        self._key = model_key

    def _row(self) -> tuple:
        row = self._registry._model_row(self._key)
        if row is None:
            raise ValueError(f"Unable to find model {self._key}")
        return row

    @property
    def name(self) -> str:
        return self._row()[1]

    @property
    def fully_qualified_name(self) -> str:
        return f"{self._registry.location}.{self.name}"

    def __repr__(self) -> str:
        return f"Model(\n  name={self.name!r},\n)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and (other._registry, other._key) == (self._registry, self._key)

    def __hash__(self) -> int:
        return hash((id(self._registry), self._key))

    @property
    def comment(self) -> str | None:
        return self._row()[2]

    @comment.setter
    def comment(self, value: str | None) -> None:
        self._row()
        self._registry._catalog.execute(
            "UPDATE {schema}.models SET comment = ? WHERE model_key = ?", [value, self._key]
        )

    description = comment

    def versions(self) -> list[ModelVersion]:
        rows = self._registry._catalog.query(
            "SELECT version_key FROM {schema}.versions WHERE model_key = ? ORDER BY seq", [self._key]
        )
        return [ModelVersion(self._registry, self._key, key) for (key,) in rows]

    def show_versions(self) -> pd.DataFrame:
        rows = []
        default_key = self._row()[3]
        versions = self.versions()
        for position, version in enumerate(versions):
            row = version._row()
            aliases = list(version._user_aliases())
            if version._version_key == default_key:
                aliases.append("DEFAULT")
            if position == 0:
                aliases.append("FIRST")
            if position == len(versions) - 1:
                aliases.append("LAST")
            rows.append({
                "created_on": row[5],
                "name": row[0],
                "aliases": aliases,
                "database_name": self._registry.database_name,
                "schema_name": self._registry.schema_name,
                "model_name": self.name,
                "is_default_version": version._version_key == default_key,
                "functions": [f.name for f in version._functions()],
                "metadata": json.dumps({"metrics": version.show_metrics()}),
                "user_data": json.dumps({}),
                "comment": row[1],
                "task": row[2],
            })  # fmt: skip
        columns = [
            "created_on", "name", "aliases", "database_name", "schema_name", "model_name", "is_default_version",
            "functions", "metadata", "user_data", "comment", "task",
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def version(self, version_or_alias: str | ModelVersion) -> ModelVersion:
        """A version by name, user alias or system alias (DEFAULT, FIRST, LAST); case-insensitive."""
        if isinstance(version_or_alias, ModelVersion):
            version_or_alias = version_or_alias.version_name
        wanted = _key(str(version_or_alias))
        cat = self._registry._catalog
        if wanted == "default":
            return ModelVersion(self._registry, self._key, self._row()[3])
        if wanted in ("first", "last"):
            order = "ASC" if wanted == "first" else "DESC"
            rows = cat.query(
                f"SELECT version_key FROM {{schema}}.versions WHERE model_key = ? ORDER BY seq {order} LIMIT 1",
                [self._key],
            )
        else:
            rows = cat.query(
                "SELECT version_key FROM {schema}.aliases WHERE model_key = ? AND alias_key = ?", [self._key, wanted]
            )
            if not rows:
                rows = cat.query(
                    "SELECT version_key FROM {schema}.versions WHERE model_key = ? AND version_key = ?",
                    [self._key, wanted],
                )
        if not rows:
            raise ValueError(
                f"Unable to find version or alias with name {version_or_alias} in model {self.fully_qualified_name}"
            )
        return ModelVersion(self._registry, self._key, rows[0][0])

    def first(self) -> ModelVersion:
        return self.version("FIRST")

    def last(self) -> ModelVersion:
        return self.version("LAST")

    @property
    def default(self) -> ModelVersion:
        return self.version("DEFAULT")

    @default.setter
    def default(self, version: str | ModelVersion) -> None:
        target = self.version(version)
        self._registry._catalog.execute(
            "UPDATE {schema}.models SET default_version_key = ? WHERE model_key = ?", [target._version_key, self._key]
        )
        self._registry._refresh_sql(self._key)

    def delete_version(self, version_name: str) -> None:
        version = self.version(version_name)
        if version._version_key == self._row()[3]:
            raise ValueError(
                f"Version {version.version_name} is the default version of model {self.name} and cannot be deleted. "
                "Set another default first, or delete the model."
            )
        names = version._sql_names()
        handle = version._handle()
        reason = f"model {self.name} version {version.version_name} was deleted"
        registry = self._registry
        with registry._store.writing():
            registry._reclaim()
            with registry._catalog.transaction() as cat:
                for table in ("functions", "metrics", "aliases", "versions"):
                    cat.execute(
                        f"DELETE FROM {{schema}}.{table} WHERE model_key = ? AND version_key = ?",
                        [self._key, version._version_key],
                    )
                faults.point("delete:in_transaction")
            registry._remove_versions([handle])
        registry._retire_sql(self._key, names, reason)

    def show_tags(self) -> dict[str, str]:
        rows = self._registry._catalog.query(
            "SELECT name, value FROM {schema}.tags WHERE model_key = ? ORDER BY name", [self._key]
        )
        return dict(rows)

    def get_tag(self, tag_name: str) -> str | None:
        rows = self._registry._catalog.query(
            "SELECT value FROM {schema}.tags WHERE model_key = ? AND tag_key = ?", [self._key, _key(tag_name)]
        )
        return rows[0][0] if rows else None

    def set_tag(self, tag_name: str, tag_value: str) -> None:
        _check_identifier(tag_name, "tag name")
        if not isinstance(tag_value, str) or len(tag_value) > 256:
            raise ValueError("A tag value must be a string of at most 256 characters.")
        self._row()
        self._registry._catalog.execute(
            "INSERT OR REPLACE INTO {schema}.tags VALUES (?, ?, ?, ?)", [self._key, _key(tag_name), tag_name, tag_value]
        )

    def unset_tag(self, tag_name: str) -> None:
        self._registry._catalog.execute(
            "DELETE FROM {schema}.tags WHERE model_key = ? AND tag_key = ?", [self._key, _key(tag_name)]
        )

    def rename(self, new_name: str) -> None:
        _check_identifier(new_name, "model name")
        new_key = _key(new_name)
        if new_key != self._key:
            if self._registry._model_row(new_key) is not None:
                raise ValueError(f"Model {new_name} already exists.")
            self._registry._check_sql_name_free(new_name, renaming=self._key)
        old_names = [n for v in self.versions() for n in v._sql_names()] + self._default_sql_names()
        with self._registry._catalog.transaction() as cat:
            cat.execute(
                "UPDATE {schema}.models SET model_key = ?, name = ? WHERE model_key = ?", [new_key, new_name, self._key]
            )
            for table in ("versions", "functions", "aliases", "tags", "metrics"):
                cat.execute(f"UPDATE {{schema}}.{table} SET model_key = ? WHERE model_key = ?", [new_key, self._key])
        self._registry._retire_sql(self._key, old_names, f"model {self._key} was renamed to {new_name}")
        self._key = new_key
        self._registry._refresh_sql(new_key)

    # SQL names ---------------------------------------------------------
    def _default_sql_names(self) -> list[str]:
        default_key = self._row()[3]
        functions = ModelVersion(self._registry, self._key, default_key)._functions()
        return [name for name, _ in _sql_names(self._key, None, functions)]

    def _all_sql_names(self) -> list[str]:
        """Every SQL name this model owns: its functions, their table and files macros."""
        names = [n for v in self.versions() for n in v._sql_names()] + self._default_sql_names()
        return names + [binding.table_macro_name(n) for n in names] + [binding.files_macro_name(n) for n in names]

    def _bindings(self) -> list[binding.Binding]:
        default_key = self._row()[3]
        bindings = []
        for version in self.versions():
            handle = version._handle()
            functions = version._functions()
            runners = {f.name: FunctionRunner(handle, f) for f in functions}
            # Every version under its pinned names; the default version under the bare names too.
            for version_key in [version._version_key, *([None] if version._version_key == default_key else [])]:
                for name, function in _sql_names(self._key, version_key, functions):
                    bindings.append(binding.Binding(name, self._key, runners[function.name]))
        return bindings


class ModelVersion:
    """One immutable version of a model: its artifacts, functions, metrics and aliases."""

    def __init__(self, registry: Registry, model_key: str, version_key: str) -> None:
        self._registry = registry
        self._model_key = model_key
        self._version_key = version_key
        # The names as the user wrote them, read once: they stay readable after a delete (as in Snowflake).
        rows = registry._catalog.query(
            "SELECT m.name, v.name FROM {schema}.versions v JOIN {schema}.models m USING (model_key) "
            "WHERE v.model_key = ? AND v.version_key = ?",
            [model_key, version_key],
        )
        self._names: tuple[str, str] | None = rows[0] if rows else None

    def _row(self) -> tuple:
        row = self._registry._version_row(self._model_key, self._version_key)
        if row is None:
            raise ValueError(f"Unable to find version {self._version_key} in model {self._model_key}")
        return row

    @property
    def model_name(self) -> str:
        if self._names is None:
            return Model(self._registry, self._model_key).name
        return self._names[0]

    @property
    def version_name(self) -> str:
        if self._names is None:
            return self._row()[0]
        return self._names[1]

    @property
    def fully_qualified_model_name(self) -> str:
        return f"{self._registry.location}.{self.model_name}"

    def __repr__(self) -> str:
        return f"ModelVersion(\n  name={self.model_name!r},\n  version={self.version_name!r},\n)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelVersion) and (other._registry, other._model_key, other._version_key) == (
            self._registry,
            self._model_key,
            self._version_key,
        )

    def __hash__(self) -> int:
        return hash((id(self._registry), self._model_key, self._version_key))

    @property
    def comment(self) -> str | None:
        return self._row()[1]

    @comment.setter
    def comment(self, value: str | None) -> None:
        self._row()
        self._registry._catalog.execute(
            "UPDATE {schema}.versions SET comment = ? WHERE model_key = ? AND version_key = ?",
            [value, self._model_key, self._version_key],
        )

    description = comment

    @property
    def task(self) -> str:
        return self._row()[2]

    def _manifest(self) -> dict[str, Any]:
        return json.loads(self._row()[4])

    def _artifact_path(self) -> Path:
        return Path(self._row()[3])

    def _handle(self) -> VersionHandle:
        row = self._row()
        return VersionHandle(self.model_name, row[0], Path(row[3]), json.loads(row[4]))

    def _functions(self) -> list[FunctionSpec]:
        rows = self._registry._catalog.query(
            "SELECT spec FROM {schema}.functions WHERE model_key = ? AND version_key = ? ORDER BY name",
            [self._model_key, self._version_key],
        )
        return [FunctionSpec.from_record(json.loads(spec)) for (spec,) in rows]

    def _sql_names(self) -> list[str]:
        return [name for name, _ in _sql_names(self._model_key, self._version_key, self._functions())]

    def _user_aliases(self) -> list[str]:
        rows = self._registry._catalog.query(
            "SELECT alias FROM {schema}.aliases WHERE model_key = ? AND version_key = ? ORDER BY alias",
            [self._model_key, self._version_key],
        )
        return [r[0] for r in rows]

    def show_functions(self) -> list[dict[str, Any]]:
        return [{"name": f.name, "target_method": f.target_method, "signature": f.signature} for f in self._functions()]

    def get_function(self, function_name: str | None = None) -> FunctionSpec:
        """The function ``function_name`` names (case-insensitive); None or "" mean the only one."""
        functions = self._functions()
        if not function_name:
            if len(functions) > 1:
                raise ValueError(
                    f"There are more than 1 target methods available in the model {self.fully_qualified_model_name} "
                    f"version {self.version_name}. Please specify a `function_name` when calling the `run` method."
                )
            return functions[0]
        for function in functions:
            if function_name.lower() in (function.name.lower(), function.target_method.lower()):
                return function
        raise ValueError(
            f"There is no method with name {function_name} available in the model "
            f"{self.fully_qualified_model_name} version {self.version_name}"
        )

    def run(self, X: Any, *, function_name: str | None = None, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Run a function over a pandas DataFrame; returns the output columns, in input order."""
        from duckreg import frames

        runner = FunctionRunner(self._handle(), self.get_function(function_name))
        frame = frames.to_pandas(X)
        columns = frames.input_columns(frame, runner)
        results: list[dict[str, Any] | None] = []
        for start in range(0, len(frame), _RUN_CHUNK_ROWS):
            results.extend(runner.run([c[start : start + _RUN_CHUNK_ROWS] for c in columns], params))
        if not len(frame):
            runner.resolve_params(params)
        return frames.output_frame(results, runner.signature, frame.index)

    # metrics ----------------------------------------------------------
    def run_batch(
        self,
        X: Any,
        *,
        output_spec: Any,
        input_spec: Any = None,
        job_spec: Any = None,
        compute_pool: str | None = None,
        inference_engine_options: dict[str, Any] | None = None,
    ) -> Any:
        """Run a function over a relation, query, DataFrame or stage parquet files into a stage.

        Writes parquet parts (every input column plus the outputs) and ``_SUCCESS`` last; returns a
        ``duckreg.jobs.Job``. See ``duckreg.batch`` for the specs.
        """
        from duckreg.batch.run import run_batch

        return run_batch(
            self,
            X,
            output_spec=output_spec,
            input_spec=input_spec,
            job_spec=job_spec,
            compute_pool=compute_pool,
            inference_engine_options=inference_engine_options,
        )

    def show_metrics(self) -> dict[str, Any]:
        rows = self._registry._catalog.query(
            "SELECT name, value FROM {schema}.metrics WHERE model_key = ? AND version_key = ? ORDER BY name",
            [self._model_key, self._version_key],
        )
        return {name: json.loads(value) for name, value in rows}

    def get_metric(self, metric_name: str) -> Any:
        metrics = self.show_metrics()
        if metric_name not in metrics:
            raise KeyError(f"Cannot find metric with name {metric_name}.")
        return metrics[metric_name]

    def set_metric(self, metric_name: str, value: Any) -> None:
        self._row()
        self._registry._catalog.execute(
            "INSERT OR REPLACE INTO {schema}.metrics VALUES (?, ?, ?, ?)",
            [self._model_key, self._version_key, metric_name, json.dumps(value)],
        )

    def delete_metric(self, metric_name: str) -> None:
        if metric_name not in self.show_metrics():
            raise KeyError(f"Cannot find metric with name {metric_name}.")
        self._registry._catalog.execute(
            "DELETE FROM {schema}.metrics WHERE model_key = ? AND version_key = ? AND name = ?",
            [self._model_key, self._version_key, metric_name],
        )

    # aliases ----------------------------------------------------------
    def set_alias(self, alias_name: str) -> None:
        _check_identifier(alias_name, "alias")
        if alias_name.upper() in SYSTEM_ALIASES:
            raise ValueError(f"{alias_name} is a system alias and cannot be set.")
        cat = self._registry._catalog
        if cat.query(
            "SELECT 1 FROM {schema}.versions WHERE model_key = ? AND version_key = ?",
            [self._model_key, _key(alias_name)],
        ):
            raise ValueError(f"Alias {alias_name} clashes with a version name of model {self.model_name}.")
        rows = cat.query(
            "SELECT version_key FROM {schema}.aliases WHERE model_key = ? AND alias_key = ?",
            [self._model_key, _key(alias_name)],
        )
        if rows and rows[0][0] != self._version_key:
            raise ValueError(f"Alias {alias_name} is already set on version {rows[0][0]} of model {self.model_name}.")
        cat.execute(
            "INSERT OR REPLACE INTO {schema}.aliases VALUES (?, ?, ?, ?)",
            [self._model_key, _key(alias_name), alias_name, self._version_key],
        )

    def unset_alias(self, version_or_alias: str) -> None:
        cat = self._registry._catalog
        if not cat.query(
            "SELECT 1 FROM {schema}.aliases WHERE model_key = ? AND alias_key = ?",
            [self._model_key, _key(version_or_alias)],
        ):
            raise ValueError(f"Unable to find alias {version_or_alias} in model {self.model_name}")
        cat.execute(
            "DELETE FROM {schema}.aliases WHERE model_key = ? AND alias_key = ?",
            [self._model_key, _key(version_or_alias)],
        )

    # artifacts ---------------------------------------------------------
    def load(self, *, force: bool = False, options: dict[str, Any] | None = None) -> Any:
        """A fresh ``transformers`` pipeline of this version (yours to change; not the shared one)."""
        handle = self._handle()
        options = options or {}
        device = options.get("device") or handle.manifest.get("options", {}).get("device") or "cpu"
        return handle.build_pipeline(device, warn_on_skew=not force)

    def export(self, target_path: str | Path) -> None:
        """Copy this version's files (model folder and manifest) into an empty or new folder."""
        target = Path(target_path)
        if target.is_file() or (target.is_dir() and any(target.iterdir())):
            raise ValueError(f"Target path {target} is a file or an non-empty folder.")
        shutil.copytree(self._artifact_path(), target, dirs_exist_ok=True)
