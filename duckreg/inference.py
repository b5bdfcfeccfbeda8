"""The one inference core behind ``mv.run``, the SQL functions and ``run_batch``.

Every front door turns its input into columns of Python values and calls ``FunctionRunner.run``:
validate and coerce against the signature, drop rows with a NULL required input, compute each
distinct row once in length-sorted batches on the cached model, and format the outputs as the
signature says.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from duckreg import runtime
from duckreg.model_signature import DataType, FeatureGroupSpec, FeatureSpec, ModelSignature
from duckreg.tasks import GENERIC, InputError, RunContext, get_runner, get_task
from duckreg.tasks.base import freeze, given_params

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class FunctionSpec:
    """One callable function of a model version, as the catalog stores it."""

    name: str
    target_method: str
    signature: ModelSignature
    json_outputs: frozenset[str] = frozenset()
    sql_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    runner: str = "task"

    def to_record(self) -> dict[str, Any]:
        return {
            "runner": self.runner,
            "name": self.name,
            "target_method": self.target_method,
            "signature": self.signature.to_dict(),
            "json_outputs": sorted(self.json_outputs),
            "sql_shapes": {k: list(v) for k, v in self.sql_shapes.items()},
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FunctionSpec:
        return cls(
            name=record["name"],
            target_method=record["target_method"],
            signature=ModelSignature.from_dict(record["signature"]),
            json_outputs=frozenset(record.get("json_outputs", ())),
            sql_shapes={k: tuple(v) for k, v in record.get("sql_shapes", {}).items()},
            runner=record.get("runner", "task"),
        )


@dataclass(frozen=True)
class VersionHandle:
    """Where a logged version lives and how to load it; cheap to create, loads through the cache."""

    model_name: str
    version_name: str
    artifact_dir: Path
    manifest: dict[str, Any]

    @property
    def cache_key(self) -> str:
        digest = hashlib.sha256(json.dumps(self.manifest.get("files", {}), sort_keys=True).encode()).hexdigest()[:16]
        return f"{self.artifact_dir.resolve()}#{digest}"

    @property
    def task_name(self) -> str:
        return self.manifest.get("task") or ""

    def load(self) -> runtime.LoadedModel:
        return runtime.CACHE.get(self.cache_key, self._load)

    def forget(self) -> None:
        """Drop this version from the process (loaded model, verified hashes): the next use loads it afresh."""
        from duckreg.artifacts import forget_verified

        runtime.CACHE.discard(self.cache_key)
        forget_verified(self.artifact_dir / "model")

    def build_pipeline(self, device: str, *, warn_on_skew: bool = True) -> Any:
        """A new pipeline from this version's files (the cache and ``ModelVersion.load`` both use it)."""
        from duckreg import huggingface
        from duckreg.artifacts import verify_files

        manifest = self.manifest
        if "files" in manifest:
            verify_files(
                self.artifact_dir / "model", manifest["files"], f"Model {self.model_name} version {self.version_name}"
            )
        if warn_on_skew:
            huggingface.warn_on_version_skew(manifest.get("library_versions", {}), self.model_name, self.version_name)
        if manifest.get("model_type") == "custom":
            from duckreg import custom

            return custom.load(self.artifact_dir / "model", manifest["custom"], device)
        return huggingface.load_pipeline(
            self.artifact_dir / "model",
            manifest["task"],
            manifest.get("pipeline_settings", {}),
            device,
            manifest.get("trust_remote_code", False),
        )

    def _load(self) -> runtime.LoadedModel:
        runtime.configure_torch_threads()
        manifest = self.manifest
        device = manifest.get("options", {}).get("device") or runtime.default_device()
        pipe = self.build_pipeline(device)
        if manifest.get("model_type") != "custom":
            (get_task(manifest["task"]) or GENERIC).prepare(pipe)
        return runtime.LoadedModel(model=pipe, nbytes=runtime.model_nbytes(pipe), device=device)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_element(value: Any, dtype: DataType) -> Any:
    """Coerce one non-null scalar to ``dtype`` or return the sentinel ``_BAD``."""
    if dtype is DataType.STRING:
        if not isinstance(value, str):
            return _BAD
        return value if value.isascii() or valid_unicode(value) else _NOT_UNICODE
    if dtype is DataType.BYTES:
        return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else _BAD
    if dtype is DataType.BOOL:
        return bool(value) if isinstance(value, (bool, np.bool_)) else _BAD
    if isinstance(value, (bool, np.bool_)):
        return _BAD
    if dtype.is_integer:
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return int(value)
        return _BAD
    if dtype.is_float:
        # SQL literals such as 0.7 arrive as decimals.
        return float(value) if isinstance(value, (int, float, np.integer, np.floating, Decimal)) else _BAD
    return value


_BAD = object()
_NOT_UNICODE = object()


def valid_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode (a lone surrogate, from undecodable bytes, is not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_value(value: Any, spec: FeatureSpec | FeatureGroupSpec, shape: tuple[int, ...] | None) -> Any:
    if value is None:
        return None
    if shape:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            return _BAD
        if shape[0] != -1 and len(value) != shape[0]:
            return _BAD
        items = [_check_value(v, spec, shape[1:] or None) for v in value]
        return next((v for v in items if v is _BAD or v is _NOT_UNICODE), items)
    if isinstance(spec, FeatureGroupSpec):
        if not isinstance(value, dict):
            return _BAD
        fields = {child.name: _check_value(value.get(child.name), child, child.shape) for child in spec.specs}
        return next((v for v in fields.values() if v is _BAD or v is _NOT_UNICODE), fields)
    return _check_element(value, spec.dtype)


def _type_name(spec: FeatureSpec | FeatureGroupSpec) -> str:
    base = "STRUCT" if isinstance(spec, FeatureGroupSpec) else spec.dtype.name
    return base + "[]" * len(spec.shape or ())


def _format_output(value: Any, spec: FeatureSpec | FeatureGroupSpec, shape: tuple[int, ...] | None) -> Any:
    """One output value in the form the signature gives it (SQL type, pandas object)."""
    if value is None:
        if not getattr(spec, "nullable", True):
            raise ValueError(f"the model gave NULL for {spec.name!r}, which the signature declares not nullable")
        return None
    if isinstance(value, str) and (shape or isinstance(spec, FeatureGroupSpec)):
        # A task's JSON text where the signature asks for structure (a list of structs, a struct).
        value = json.loads(value)
    if shape:
        if not isinstance(value, (list, tuple, np.ndarray)):
            raise ValueError(f"expected a list for {spec.name!r}, got {type(value).__name__}")
        return [_format_output(v, spec, shape[1:] or None) for v in value]
    if isinstance(spec, FeatureGroupSpec):
        if isinstance(value, list) and len(value) == 1:
            value = value[0]  # one result where the signature asks for one struct
        if not isinstance(value, dict):
            raise ValueError(f"expected a struct for {spec.name!r}, got {type(value).__name__}")
        return {child.name: _format_output(value.get(child.name), child, child.shape) for child in spec.specs}
    if isinstance(value, np.generic):
        value = value.item()
    if spec.dtype.is_float:
        return float(value)
    if spec.dtype.is_integer:
        return int(value)
    return value


class FunctionRunner:
    """Runs one function of one model version over columns of Python values."""

    def __init__(self, version: VersionHandle, function: FunctionSpec) -> None:
        self.version = version
        self.function = function
        self.signature = function.signature
        if function.runner == "task":
            self.task = get_task(version.task_name) or GENERIC
        else:
            self.task = get_runner(function.runner)
        self.optional_inputs = self.task.optional_inputs

    def context(self, column: str | None = None) -> str:
        where = f"Model {self.version.model_name} version {self.version.version_name}, function {self.function.name}"
        return f"{where}, column {column!r}" if column else where

    def resolve_params(self, params: dict[str, Any] | None) -> dict[str, Any]:
        try:
            return self.signature.resolve_params(params)
        except ValueError as exc:
            raise ValueError(f"{self.context()}: {exc}") from None

    def required_inputs(self) -> list[str]:
        return [s.name for s in self.signature.inputs if s.name not in self.optional_inputs]

    def run(
        self, columns: Sequence[Sequence[Any]], params: dict[str, Any] | None = None
    ) -> list[dict[str, Any] | None]:
        """Columns in signature input order -> one output dict per row (None for a NULL row)."""
        resolved = self.resolve_params(params)
        specs = self.signature.inputs
        n_rows = len(columns[0]) if columns else 0
        checked: list[list[Any]] = []
        for spec, values in zip(specs, columns, strict=True):
            out = []
            for row, value in enumerate(values):
                coerced = _check_value(self.task.coerce_input(spec, value), spec, spec.shape)
                if coerced is _NOT_UNICODE:
                    raise ValueError(
                        f"{self.context(spec.name)}: row {row} is not valid Unicode text (it holds a lone surrogate, "
                        "as bytes decoded with errors='surrogateescape' do); decode it properly first"
                    )
                if coerced is _BAD:
                    raise ValueError(
                        f"{self.context(spec.name)}: expected {_type_name(spec)}, got "
                        f"{type(value).__name__} {_describe(value)} (row {row})"
                    )
                if coerced is None and not getattr(spec, "nullable", True):
                    raise ValueError(
                        f"{self.context(spec.name)}: row {row} is NULL; the signature declares it not nullable"
                    )
                out.append(coerced)
            checked.append(out)
        required = [i for i, s in enumerate(specs) if s.name not in self.optional_inputs]
        unique: dict[Any, int] = {}
        unique_rows: list[dict[str, Any]] = []
        row_slot: list[int | None] = []
        for row in range(n_rows):
            if any(checked[i][row] is None for i in required):
                row_slot.append(None)
                continue
            record = {spec.name: checked[i][row] for i, spec in enumerate(specs)}
            key = freeze([checked[i][row] for i in range(len(specs))])
            slot = unique.get(key)
            if slot is None:
                slot = unique[key] = len(unique_rows)
                unique_rows.append(record)
            row_slot.append(slot)
        results = self._predict(unique_rows, resolved) if unique_rows else []
        return [None if slot is None else results[slot] for slot in row_slot]

    def run_with_param_columns(
        self, columns: Sequence[Sequence[Any]], param_columns: dict[str, Sequence[Any]]
    ) -> list[dict[str, Any] | None]:
        """Like ``run``, with a value per row for each named parameter (NULL: the default).

        Rows that share parameter values run together, so a constant parameter costs one pass.
        """
        n_rows = len(columns[0]) if columns else 0
        constant: dict[str, Any] = {}
        varying: dict[str, Sequence[Any]] = {}
        for name, values in param_columns.items():
            first = values[0] if len(values) else None
            if list(values).count(first) == len(values):
                constant[name] = first
            else:
                varying[name] = values
        if not varying:
            return self.run(columns, given_params(constant))
        groups: dict[Any, list[int]] = {}
        for row in range(n_rows):
            key = freeze([values[row] for values in varying.values()])
            groups.setdefault(key, []).append(row)
        results: list[dict[str, Any] | None] = [None] * n_rows
        for rows in groups.values():
            params = {**constant, **{name: values[rows[0]] for name, values in varying.items()}}
            part = self.run([[column[r] for r in rows] for column in columns], given_params(params))
            for row, result in zip(rows, part, strict=True):
                results[row] = result
        return results

    def _predict(self, rows: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
        loaded = self.version.load()
        task = self.task
        order = sorted(range(len(rows)), key=lambda i: task.sort_key(rows[i]))
        options = self.version.manifest.get("options", {})
        ctx = RunContext(
            pipeline=loaded.model,
            signature=self.signature,
            params=params,
            options=options,
            batch_size=int(options.get("max_batch_size") or DEFAULT_BATCH_SIZE),
            model_id=f"{self.version.model_name}/{self.version.version_name}",
            method=self.function.target_method,
        )
        try:
            import torch

            with runtime.device_lock(loaded.device), torch.inference_mode():
                predicted = task.predict(ctx, [rows[i] for i in order])
        except InputError as exc:
            raise ValueError(f"{self.context(exc.column)}: {exc.message}") from None
        except Exception as exc:
            raise RuntimeError(f"{self.context()} failed: {type(exc).__name__}: {exc}") from exc
        if len(predicted) != len(rows):
            raise RuntimeError(f"{self.context()}: the model returned {len(predicted)} results for {len(rows)} rows")
        results: list[dict[str, Any]] = [{} for _ in rows]
        shapes = {o.name: self.function.sql_shapes.get(o.name, o.shape) for o in self.signature.outputs}
        for position, index in enumerate(order):
            raw = predicted[position]
            try:
                results[index] = {
                    o.name: _format_output(raw[o.name], o, shapes[o.name]) for o in self.signature.outputs
                }
            except KeyError as exc:
                raise RuntimeError(f"{self.context()}: the model gave no output named {exc.args[0]!r}") from None
            except (ValueError, TypeError) as exc:
                raise RuntimeError(f"{self.context()}: the model's output does not fit the signature: {exc}") from None
        return results
