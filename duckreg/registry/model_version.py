"""ModelVersion: one immutable version of a model, as ``snowflake.ml.model.ModelVersion``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from duckreg import pandas_io
from duckreg.artifacts import Manifest, file_sha256
from duckreg.catalog.models import VersionRow
from duckreg.duckdb_ext.names import sql_names
from duckreg.function_spec import FunctionSpec
from duckreg.identifiers import check_identifier, normalize
from duckreg.inference import FunctionRunner, VersionHandle, check_on_error

if TYPE_CHECKING:
    from duckreg.jobs import Job
    from duckreg.registry.context import RegistryContext

SYSTEM_ALIASES = ("DEFAULT", "FIRST", "LAST")
_RUN_CHUNK_ROWS = 4096


class ModelVersion:
    """One immutable version of a model: its artifacts, functions, metrics and aliases."""

    def __init__(self, context: RegistryContext, model_key: str, version_key: str) -> None:
        self._context = context
        self._model_key = model_key
        self._version_key = version_key
        # The names as the user wrote them, read once: they stay readable after a delete (as in Snowflake).
        self._names = context.models.version_names(model_key, version_key)

    def _row(self) -> VersionRow:
        row = self._context.models.version(self._model_key, self._version_key)
        if row is None:
            raise ValueError(f"Unable to find version {self._version_key} in model {self._model_key}")
        return row

    @property
    def model_name(self) -> str:
        """The model's name as it was written when logged."""
        if self._names is None:
            row = self._context.models.model(self._model_key)
            if row is None:
                raise ValueError(f"Unable to find model {self._model_key}")
            return row.name
        return self._names[0]

    @property
    def version_name(self) -> str:
        """The version's name as it was written when logged."""
        if self._names is None:
            return self._row().name
        return self._names[1]

    @property
    def fully_qualified_model_name(self) -> str:
        """``database.schema.model``."""
        return f"{self._context.location}.{self.model_name}"

    def __repr__(self) -> str:
        return f"ModelVersion(\n  name={self.model_name!r},\n  version={self.version_name!r},\n)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelVersion) and (other._context, other._model_key, other._version_key) == (
            self._context,
            self._model_key,
            self._version_key,
        )

    def __hash__(self) -> int:
        return hash((id(self._context), self._model_key, self._version_key))

    @property
    def comment(self) -> str | None:
        """A free-text comment (``description`` is the same); settable."""
        return self._row().comment

    @comment.setter
    def comment(self, value: str | None) -> None:
        self._row()
        self._context.models.set_version_comment(self._model_key, self._version_key, value)

    description = comment

    @property
    def task(self) -> str:
        """The pipeline task the version was logged with (None for custom models)."""
        return self._row().task

    @property
    def library_versions(self) -> dict[str, str]:
        """The library versions the model was logged with (transformers, torch, ...)."""
        return dict(Manifest.from_json(self._row().manifest).library_versions)

    def show_files(self, *, verify: bool = False) -> pd.DataFrame:
        """The version's artifact files: path, size in bytes and logged sha256, one row per file.

        ``verify=True`` adds ``status``: ``ok``, ``changed`` (its sha256 differs now), ``missing``, or
        ``not logged`` (a file dropped in beside the logged ones; loading refuses the version then).
        """
        handle = self._handle()
        folder = handle.artifact_dir / "model"
        logged = handle.manifest.files or {}
        present = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        rows = []
        for relative in sorted(set(logged) | (set(present) if verify else set())):
            path = present.get(relative)
            row: dict[str, Any] = {"path": relative, "size": path.stat().st_size if path else None,
                                   "sha256": logged.get(relative)}  # fmt: skip
            if verify:
                if relative not in logged:
                    row["status"] = "not logged"
                elif path is None:
                    row["status"] = "missing"
                else:
                    row["status"] = "ok" if file_sha256(path) == logged[relative] else "changed"
            rows.append(row)
        return pd.DataFrame(rows, columns=["path", "size", "sha256", *(["status"] if verify else [])])

    def _handle(self) -> VersionHandle:
        row = self._row()
        manifest = Manifest.from_json(row.manifest)
        folder = self._context.version_folder(row.artifact_path)
        context = self._context
        return VersionHandle(
            self.model_name, row.name, folder, manifest, context.result_cache, read_media=context.stages.read_bytes
        )

    def _functions(self) -> list[FunctionSpec]:
        return self._context.models.functions(self._model_key, self._version_key)

    def function_specs(self) -> list[FunctionSpec]:
        """Every function of this version with its typed signature (``show_functions`` gives the seeds' form)."""
        return self._functions()

    def optional_inputs(self, function_name: str | None = None) -> frozenset[str]:
        """The inputs of a function that may be left out: a missing column reads as NULL."""
        return frozenset(self._runner(function_name).optional_inputs)

    def sql_function_names(self, *, bare: bool = False) -> dict[str, str]:
        """Function name -> the SQL function that calls it: pinned to this version (``m__v1``), or with ``bare``
        the model's own name (``m``), which calls whichever version is the default."""
        pinned = None if bare else self._version_key
        return {function.name: name for name, function in sql_names(self._model_key, pinned, self._functions())}

    def sql_names(self) -> list[str]:
        """The SQL functions that call this version by name (``m__v1``, ``m__v1_predict``)."""
        return [name for name, _ in sql_names(self._model_key, self._version_key, self._functions())]

    def show_functions(self) -> list[dict[str, Any]]:
        """Each function's name, target method and signature (the seeds' form)."""
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

    def _runner(self, function_name: str | None = None) -> FunctionRunner:
        return FunctionRunner(self._handle(), self.get_function(function_name))

    def run(
        self,
        X: Any,
        *,
        function_name: str | None = None,
        params: dict[str, Any] | None = None,
        on_error: str = "raise",
    ) -> pd.DataFrame:
        """Run a function over a pandas DataFrame; returns the output columns, in input order.

        ``on_error="null"``: a row that fails (bad input, or a forward pass that fails on it alone) gets
        NULL outputs and its message in an ``_error`` column, and the other rows keep their answers;
        ``"raise"`` (the default, as Snowflake) fails the call naming the row.
        """
        policy = check_on_error(on_error)
        runner = self._runner(function_name)
        frame = pandas_io.to_pandas(X)
        columns = pandas_io.input_columns(frame, runner)
        results: list[dict[str, Any] | None] = []
        errors: dict[int, str] | None = {} if policy == "null" else None
        for start in range(0, len(frame), _RUN_CHUNK_ROWS):
            found: dict[int, str] | None = None if errors is None else {}
            chunk = [c[start : start + _RUN_CHUNK_ROWS] for c in columns]
            results.extend(runner.run(chunk, params, first_row=start, errors=found))
            if errors is not None and found:
                errors.update({start + row: message for row, message in found.items()})
        if not len(frame):
            runner.resolve_params(params)
        out = pandas_io.output_frame(results, runner.signature, frame.index)
        if errors is not None:
            out["_error"] = pd.Series([errors.get(row) for row in range(len(frame))], index=frame.index, dtype=object)
        return out

    def run_batch(
        self,
        X: Any,
        *,
        output_spec: Any,
        input_spec: Any = None,
        job_spec: Any = None,
        compute_pool: str | None = None,
        inference_engine_options: dict[str, Any] | None = None,
    ) -> Job:
        """Run a function over a relation, query, DataFrame or stage parquet files into a stage.

        Writes parquet parts (every input column plus the outputs) and ``_SUCCESS`` last; returns a
        ``duckreg.jobs.Job``. See ``duckreg.batch`` for the specs.
        """
        from duckreg.batch.submit import BatchTarget, run_batch

        target = BatchTarget(
            self._context, self._runner, self._model_key, self._version_key, self.model_name, self.version_name
        )
        return run_batch(
            target,
            X,
            output_spec=output_spec,
            input_spec=input_spec,
            job_spec=job_spec,
            compute_pool=compute_pool,
            inference_engine_options=inference_engine_options,
        )

    # metrics ----------------------------------------------------------
    def set_engine(
        self,
        engine: str = "torch",
        *,
        quantize: str | None = None,
        quality_floor: dict[str, float] | None = None,
        sample_input_data: Any = None,
        engine_args: dict[str, Any] | None = None,
        precision: str | None = None,
        graph: str | None = None,
    ) -> dict[str, Any]:
        """Run this version on another inference engine from now on, as if logged with
        ``options={"engine": engine, "quantize": ..., "quality_floor": ..., "engine_args": ..., "precision": ...,
        "graph": ...}`` (``engine_args``: ``vllm.LLM`` arguments for the vllm engine; ``precision="bf16"``: the
        torch engine in bfloat16; ``graph``: the onnxruntime engine's ``"auto"``, ``"fused"`` or ``"plain"``).

        The export is checked against the torch weights on ``sample_input_data`` (or built-in texts)
        and refused below the floors, exactly as at log time; the figures become the
        ``engine_agreement`` metric and are returned. ``"torch"`` goes back to the logged weights.
        Results cached for the old engine are dropped. Other processes see the change when they next
        open the registry.
        """
        options = {
            "engine": engine,
            "quantize": quantize,
            "quality_floor": quality_floor,
            "engine_args": engine_args,
            "precision": precision,
            "graph": graph,
        }
        return self._context.set_engine(self, options, sample_input_data)

    def show_metrics(self) -> dict[str, Any]:
        """Every metric of this version: name -> value (any JSON value)."""
        return self._context.models.metrics(self._model_key, self._version_key)

    def get_metric(self, metric_name: str) -> Any:
        """One metric's value; a ``KeyError`` when it is not set."""
        metrics = self.show_metrics()
        if metric_name not in metrics:
            raise KeyError(f"Cannot find metric with name {metric_name}.")
        return metrics[metric_name]

    def set_metric(self, metric_name: str, value: Any) -> None:
        """Set (or replace) a metric; the value must be JSON-serialisable."""
        self._row()
        self._context.models.set_metric(self._model_key, self._version_key, metric_name, value)

    def delete_metric(self, metric_name: str) -> None:
        """Remove a metric; a ``KeyError`` when it is not set."""
        if metric_name not in self.show_metrics():
            raise KeyError(f"Cannot find metric with name {metric_name}.")
        self._context.models.delete_metric(self._model_key, self._version_key, metric_name)

    # aliases ----------------------------------------------------------
    def set_alias(self, alias_name: str) -> None:
        """Give this version a user alias: ``model.version(alias)`` finds it, case-insensitively.

        An alias names one version of a model; it may not be a version name or a system alias
        (DEFAULT, FIRST, LAST).
        """
        check_identifier(alias_name, "alias")
        if alias_name.upper() in SYSTEM_ALIASES:
            raise ValueError(f"{alias_name} is a system alias and cannot be set.")
        models = self._context.models
        if models.version(self._model_key, normalize(alias_name)) is not None:
            raise ValueError(f"Alias {alias_name} clashes with a version name of model {self.model_name}.")
        current = models.alias_target(self._model_key, normalize(alias_name))
        if current is not None and current != self._version_key:
            raise ValueError(f"Alias {alias_name} is already set on version {current} of model {self.model_name}.")
        models.set_alias(self._model_key, normalize(alias_name), alias_name, self._version_key)

    def unset_alias(self, version_or_alias: str) -> None:
        """Remove a user alias of this model."""
        models = self._context.models
        if models.alias_target(self._model_key, normalize(version_or_alias)) is None:
            raise ValueError(f"Unable to find alias {version_or_alias} in model {self.model_name}")
        models.unset_alias(self._model_key, normalize(version_or_alias))

    # artifacts ---------------------------------------------------------
    def load(self, *, force: bool = False, options: dict[str, Any] | None = None) -> Any:
        """A fresh model of this version (a ``transformers`` pipeline: yours to change, not the shared one).

        ``force`` loads without the warning about a different transformers major version.
        """
        handle = self._handle()
        device = (options or {}).get("device") or handle.manifest.options.get("device") or "cpu"
        return handle.build_model(device, warn_on_skew=not force)

    def export(self, target_path: str | Path) -> None:
        """Copy this version's files (model folder and manifest) into an empty or new folder."""
        target = Path(target_path)
        if target.is_file() or (target.is_dir() and any(target.iterdir())):
            raise ValueError(f"Target path {target} is a file or an non-empty folder.")
        shutil.copytree(self._handle().artifact_dir, target, dirs_exist_ok=True)
