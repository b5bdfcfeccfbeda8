"""The one inference core behind ``mv.run``, the SQL functions and ``run_batch``.

Every front door turns its input into columns of Python values and calls ``FunctionRunner.run``:
validate and coerce against the signature, drop rows with a NULL required input, compute each
distinct row once in length-sorted batches on the cached model, and format the outputs as the
signature says.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from duckreg import interrupts, model_cache, result_cache
from duckreg.artifacts import Manifest, forget_verified, verify_files
from duckreg.function_spec import FunctionSpec, Implementation
from duckreg.inference_engines import Engine, engine_for
from duckreg.model_handlers import ModelHandler, handler_for
from duckreg.model_handlers.base import library_versions, warn_on_version_skew
from duckreg.model_signature import INVALID, NOT_UNICODE, FeatureGroupSpec, FeatureSpec, check_feature
from duckreg.tasks import InputError, RunContext
from duckreg.tasks.base import no_grad
from duckreg.tasks.messages import with_stage_media
from duckreg.values import drop_unset_params, freeze, to_python

LOG = logging.getLogger("duckreg.inference")
DEFAULT_BATCH_SIZE = 32
# The listeners of the run in progress on this thread, by the identity of the distinct rows it computes: the
# rows keep their identity through the cache, de-duplication, sorting and batching down to the task.
_LISTENERS: contextvars.ContextVar[dict[int, Callable[[int, str], None]] | None] = contextvars.ContextVar(
    "duckreg_listeners", default=None
)


@dataclass(frozen=True)
class VersionHandle:
    """Where a logged version lives and how to load it; cheap to create, loads through the cache."""

    model_name: str
    version_name: str
    artifact_dir: Path
    manifest: Manifest
    results: result_cache.ResultCache | None = None
    """Where results of this version's deterministic functions are kept (None: not kept)."""
    read_media: Callable[[str], bytes] | None = None
    """Reads a stage path (``@stage/cat.png``) named in a chat message's media part (None: no stages here)."""
    media_hosts: tuple[str, ...] = ()
    """Web hosts whose media a chat message may name (``allowed_media_domains``); none by default."""

    def with_engine(self, engine: str | None, engine_args: dict[str, Any] | None = None) -> VersionHandle:
        """This version computed by another engine (a batch job's ``inference_engine_options``), checked as
        ``log_model`` checks it; results and loaded models are kept apart from the logged engine's."""
        if engine is None or (engine == self.manifest.options.get("engine", "torch") and not engine_args):
            return self
        options = {**self.manifest.options, "engine": engine}
        if engine_args:
            options["engine_args"] = {**(options.get("engine_args") or {}), **engine_args}
        chosen = engine_for(options)
        where = f"Model {self.model_name} version {self.version_name}"
        chosen.check_functions(self.manifest_functions(), where)
        try:
            from duckreg.model_handlers.huggingface import check_engine_serves

            check_engine_serves(chosen, self.manifest.task or "")
            chosen.check_options(options)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        return replace(self, manifest=replace(self.manifest, options=options))

    def manifest_functions(self) -> list[FunctionSpec]:
        """The functions the manifest records (what an engine is checked against)."""
        return [FunctionSpec.from_record(f) for f in self.manifest.functions or []]

    @functools.cached_property
    def content_digest(self) -> str:
        """What the version computes with (files, task, settings, options), not where it is registered."""
        return result_cache.digest({k: v for k, v in asdict(self.manifest).items() if k != "registry"})

    @functools.cached_property
    def engine(self) -> Engine:
        """The engine that computes this version's answers (read once: every batch asks)."""
        return engine_for(self.manifest.options)

    @property
    def cache_key(self) -> str:
        """The loaded model's key in the process: its folder, its files and the engine that computes with it."""
        options = self.manifest.options
        engine = {"engine": options.get("engine"), "engine_args": options.get("engine_args")}
        content = json.dumps([self.manifest.files or {}, engine], sort_keys=True, default=str)
        return f"{self.artifact_dir.resolve()}#{hashlib.sha256(content.encode()).hexdigest()[:16]}"

    @property
    def handler(self) -> ModelHandler:
        return handler_for(self.manifest.model_type)

    def shared_model(self) -> model_cache.LoadedModel:
        """The process's one loaded copy of this version (loaded on first use)."""
        engine = self.engine
        return model_cache.CACHE.get(self.cache_key, self._load, solo=engine.name if engine.one_per_process else None)

    def forget(self) -> None:
        """Drop this version from the process (loaded model, verified hashes): the next use loads it afresh."""
        model_cache.CACHE.discard(self.cache_key)
        forget_verified(self.artifact_dir / "model")

    def build_model(self, device: str, *, warn_on_skew: bool = True) -> Any:
        """A new model from this version's files, checked against their logged hashes first."""
        manifest = self.manifest
        if not self.artifact_dir.is_dir():
            raise FileNotFoundError(self._missing_folder_message())
        if manifest.files is not None:
            verify_files(
                self.artifact_dir / "model", manifest.files, f"Model {self.model_name} version {self.version_name}"
            )
        if warn_on_skew:
            warn_on_version_skew(manifest.library_versions, self.model_name, self.version_name)
        return self.handler.load(self.artifact_dir / "model", manifest, device)

    def _missing_folder_message(self) -> str:
        """Why the version's folder is not there, naming the likelier cause first."""
        where = f"Model {self.model_name} version {self.version_name}"
        root = self.artifact_dir.parent.parent
        if not root.is_dir():
            return (
                f"{where}: the registry's artifact folder {root} does not exist. A database copied, moved or "
                "renamed keeps its models in the folder beside it named '<database file>.artifacts': copy that "
                "folder along, or open the registry with artifact_location= naming where it is now."
            )
        return (
            f"{where}: its folder {self.artifact_dir} is not in the artifact folder {root}; another process "
            "deleted the version or changed its engine after this one read the registry. Open the registry "
            "again (or call register_functions() again) to use what the catalog holds now."
        )

    def _load(self) -> model_cache.LoadedModel:
        if not self.engine.own_threads:
            model_cache.configure_torch_threads()
        device = self.manifest.options.get("device") or self.engine.default_device()
        model = self.build_model(device)
        self.handler.prepare_loaded(model, self.manifest)
        return model_cache.LoadedModel(model=model, nbytes=model_cache.model_nbytes(model), device=device)


def _by_row_identity(
    listeners: Mapping[int, Callable[[int, str], None]], unique_rows: list[dict[str, Any]], row_slot: list[int | None]
) -> dict[int, Callable[[int, str], None]]:
    """Listeners by row index, as the task meets them: by the identity of the distinct row each row became
    (rows asked twice share one computation, so both hear it)."""
    gathered: dict[int, list[Callable[[int, str], None]]] = {}
    for row, listener in listeners.items():
        slot = row_slot[row] if 0 <= row < len(row_slot) else None
        if slot is not None:
            gathered.setdefault(id(unique_rows[slot]), []).append(listener)
    return {key: _fan_out(found) for key, found in gathered.items()}


def _fan_out(listeners: list[Callable[[int, str], None]]) -> Callable[[int, str], None]:
    """One callback telling every listener; a listener that fails is dropped, never the batch it rides in
    (every row of the forward batch would fail with it)."""
    following = list(listeners)

    def tell_all(choice: int, text: str) -> None:
        for listener in list(following):
            try:
                listener(choice, text)
            except Exception:  # a closed stream, say: the answer still goes to the caller
                LOG.warning("a listener of a streamed answer failed and is dropped", exc_info=True)
                following.remove(listener)

    return tell_all


@functools.cache
def _engine_versions() -> dict[str, str]:
    """Library versions a result depends on besides the version's own files (part of every cache key)."""
    return library_versions(("duckreg", "transformers", "torch", "tokenizers", "onnxruntime"))


def _no_stages(path: str) -> bytes:
    raise ValueError("stage paths are read through a registry; give the picture as a data: URL here")


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(spec: FeatureSpec | FeatureGroupSpec) -> str:
    base = "STRUCT" if isinstance(spec, FeatureGroupSpec) else spec.dtype.name
    return base + "[]" * len(spec.shape or ())


def _is_number_spec(spec: FeatureSpec | FeatureGroupSpec) -> bool:
    return not isinstance(spec, FeatureGroupSpec) and (spec.dtype.is_float or spec.dtype.is_integer)


def _format_output(value: Any, spec: FeatureSpec | FeatureGroupSpec, shape: tuple[int, ...] | None) -> Any:
    """One output value in the form the signature gives it (SQL type, pandas object)."""
    if value is None:
        if not getattr(spec, "nullable", True):
            raise ValueError(f"the model gave NULL for {spec.name!r}, which the signature declares not nullable")
        return None
    if isinstance(value, str) and (shape or isinstance(spec, FeatureGroupSpec)):
        # A task's JSON text where the signature asks for structure (a list of structs, a struct).
        value = json.loads(value)
    if shape and isinstance(value, np.ndarray) and value.ndim == len(shape) and _is_number_spec(spec):
        # A whole numeric array (an embedding) converts in one call, not one Python call per element.
        if value.dtype.kind in "fiub":
            return value.astype(np.float64 if spec.dtype.is_float else np.int64, copy=False).tolist()
    if shape:
        if not isinstance(value, (list, tuple, np.ndarray)):
            raise ValueError(f"expected a list for {spec.name!r}, got {type(value).__name__}")
        return [_format_output(v, spec, shape[1:] or None) for v in value]
    if isinstance(spec, FeatureGroupSpec):
        return _format_struct(value, spec)
    value = to_python(value)
    if spec.dtype.is_float:
        return float(value)
    if spec.dtype.is_integer:
        return int(value)
    return value


def _format_struct(value: Any, spec: FeatureGroupSpec) -> dict[str, Any]:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]  # one result where the signature asks for one struct
    if not isinstance(value, dict):
        raise ValueError(f"expected a struct for {spec.name!r}, got {type(value).__name__}")
    return {child.name: _format_output(value.get(child.name), child, child.shape) for child in spec.specs}


def match_columns(available: Sequence[Any], runner: FunctionRunner) -> list[Any | None]:
    """The column that feeds each signature input: the same name, else the same name in another case.

    A missing optional input gets None (its values are NULL); a missing required one is an error.
    ``mv.run``, the table functions and ``run_batch`` all match columns here.
    """
    by_lower = {str(c).lower(): c for c in available}
    matched: list[Any | None] = []
    for spec in runner.signature.inputs:
        label = spec.name if spec.name in available else by_lower.get(spec.name.lower())
        if label is None and spec.name not in runner.optional_inputs:
            raise ValueError(
                f"{runner.context(spec.name)}: Data Validation Error: feature {spec.name} does not exist in data. "
                f"Available columns are {list(available)}."
            )
        matched.append(label)
    return matched


class RowFailure(ValueError):
    """A forward batch failed because of one of its rows (``position`` among the rows it was given)."""

    def __init__(self, message: str, position: int, refusal: Refusal | None = None) -> None:
        super().__init__(message)
        self.position = position
        self.refusal = refusal


REFUSED = "__duckreg_refused__"
"""The key of a result cache entry that holds a row's refusal instead of its answer."""


class Refusal(str):
    """A row's error that follows from its input and the version alone (the task refused the input: too
    long, malformed): the same row is refused again, so the refusal is cached like an answer and a
    repeated query does not load the model to hear it again. Failures of the run (a crash, a fetch that
    timed out) are plain strings and never cached."""

    context: str
    reason: str

    def __new__(cls, context: str, reason: str, row: int) -> Refusal:
        made = super().__new__(cls, f"{context}, row {row}: {reason}")
        made.context, made.reason = context, reason
        return made

    def stored(self) -> dict[str, list[str]]:
        """What the result cache keeps: the message without its row number (another query's row differs)."""
        return {REFUSED: [self.context, self.reason]}

    @classmethod
    def restored(cls, stored: Any, row: int) -> Refusal | None:
        """The refusal a cache entry holds, named for ``row``; None for an entry that holds an answer."""
        if isinstance(stored, dict) and REFUSED in stored:
            context, reason = stored[REFUSED]
            return cls(context, reason, row)
        return None


ON_ERROR = ("raise", "null")
"""What a failing row does: fail the whole call (``raise``, the default) or become NULL (``null``)."""


def check_on_error(value: Any) -> str:
    """``on_error`` as given by a user (None: the default), checked."""
    policy = "raise" if value is None else str(value).strip().lower()
    if policy not in ON_ERROR:
        raise ValueError(f"on_error must be one of {list(ON_ERROR)}, got {value!r}")
    return policy


class FunctionRunner:
    """Runs one function of one model version over columns of Python values."""

    def __init__(self, version: VersionHandle, function: FunctionSpec) -> None:
        self.version = version
        self.function = function
        self.signature = function.signature
        self.task = version.handler.task_for(function, version.manifest)
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

    @functools.cached_property
    def count_tokens(self) -> Callable[[Sequence[str]], int] | None:
        """The tokens the model reads for a list of texts (loads the model), or None where its task cannot
        say: what the HTTP door reports as ``usage``."""
        loaded = self._loaded()
        with model_cache.device_lock(loaded.device):  # it reads the tokenizer a forward pass may be setting up
            return self.task.token_counter(loaded.model)

    def run(
        self,
        columns: Sequence[Sequence[Any]],
        params: dict[str, Any] | None = None,
        use_cache: bool | None = None,
        first_row: int = 0,
        errors: dict[int, str] | None = None,
        listeners: Mapping[int, Callable[[int, str], None]] | None = None,
    ) -> list[dict[str, Any] | None]:
        """Columns in signature input order -> one output dict per row (None for a NULL row).

        ``use_cache=False`` computes every row even where the result cache holds it (a session's switch).
        Errors count rows from 1, as people do, starting at ``first_row + 1`` (where these columns begin).
        With ``errors`` (a dict), a row that fails gets None and its message under its index in these
        columns, and the other rows keep their answers (``on_error='null'``); without, the call fails.
        ``listeners`` (by row index) follow a generated answer as it is made: ``listener(choice, text)`` with
        the text so far, called from this thread (a cached answer calls none: it is whole at once).
        """
        resolved = self.resolve_params(params)
        n_rows = len(columns[0]) if columns else 0
        failed: dict[int, str] = {}

        def fail(row: int, message: str) -> None:
            if errors is None:
                raise ValueError(message)
            failed.setdefault(row, message)

        columns = self._with_stage_media(columns, first_row, fail)
        checked = self._checked_inputs(columns, first_row, fail)
        unique_rows, row_slot, numbers = self._distinct_rows(checked, n_rows, failed, first_row)
        slot_errors: dict[int, str] | None = None if errors is None else {}
        following = _LISTENERS.set(_by_row_identity(listeners, unique_rows, row_slot) if listeners else None)
        try:
            results = (
                self._predict_through_cache(unique_rows, resolved, use_cache, numbers, slot_errors)
                if unique_rows
                else []
            )
        finally:
            _LISTENERS.reset(following)
        if errors is not None:
            errors.update(failed)
            for row, slot in enumerate(row_slot):
                if slot is not None and slot in (slot_errors or {}):
                    # A repeated row shares its first occurrence's error; each names its own row.
                    errors[row] = slot_errors[slot].replace(f"row {numbers[slot]}", f"row {first_row + row + 1}")
        return [None if slot is None else results[slot] for slot in row_slot]

    def _checked_inputs(
        self, columns: Sequence[Sequence[Any]], first_row: int, fail: Callable[[int, str], None]
    ) -> list[list[Any]]:
        """Every value coerced to its input's type; a value that cannot be is ``fail``ed and becomes None."""
        checked: list[list[Any]] = []
        for spec, values in zip(self.signature.inputs, columns, strict=True):
            where = self.context(spec.name)
            out = []
            for index, value in enumerate(values):
                row = first_row + index + 1
                coerced = check_feature(self.task.coerce_input(spec, value), spec, spec.shape)
                if coerced is NOT_UNICODE:
                    fail(index, f"{where}: row {row} is not valid Unicode text (it holds a lone surrogate, as bytes "
                                "decoded with errors='surrogateescape' do); decode it properly first")  # fmt: skip
                    coerced = None
                elif coerced is INVALID:
                    fail(index, f"{where}: expected {_type_name(spec)}, got {type(value).__name__} {_describe(value)} "
                                f"(row {row})")  # fmt: skip
                    coerced = None
                elif coerced is None and not getattr(spec, "nullable", True):
                    fail(index, f"{where}: row {row} is NULL; the signature declares it not nullable")
                out.append(coerced)
            checked.append(out)
        return checked

    def _distinct_rows(
        self, checked: list[list[Any]], n_rows: int, failed: dict[int, str], first_row: int
    ) -> tuple[list[dict[str, Any]], list[int | None], list[int]]:
        """The distinct rows to compute (failed rows and rows with a NULL required input left out), each row's
        slot among them (None: not computed), and each distinct row's first row number, for errors."""
        specs = self.signature.inputs
        required = [i for i, s in enumerate(specs) if s.name not in self.optional_inputs]
        unique: dict[Any, int] = {}
        unique_rows: list[dict[str, Any]] = []
        row_slot: list[int | None] = []
        for row in range(n_rows):
            if row in failed or any(checked[i][row] is None for i in required):
                row_slot.append(None)
                continue
            key = freeze([checked[i][row] for i in range(len(specs))])
            slot = unique.get(key)
            if slot is None:
                slot = unique[key] = len(unique_rows)
                unique_rows.append({spec.name: checked[i][row] for i, spec in enumerate(specs)})
            row_slot.append(slot)
        numbers = [0] * len(unique_rows)
        for row in reversed(range(n_rows)):
            if row_slot[row] is not None:
                numbers[row_slot[row]] = first_row + row + 1
        return unique_rows, row_slot, numbers

    def _with_stage_media(
        self, columns: Sequence[Sequence[Any]], first_row: int, fail: Callable[[int, str], None]
    ) -> Sequence[Sequence[Any]]:
        """Chat messages with the stage files their media parts name read in as ``data:`` URLs, the same for
        every door: the result cache and every engine see the bytes, not the path. A row whose media cannot
        be read goes to ``fail`` (and is NULL here)."""
        if self.function.implementation is not Implementation.OPENAI_CHAT:
            return columns
        version = self.version
        read = version.read_media or _no_stages
        out = []
        for spec, values in zip(self.signature.inputs, columns, strict=True):
            if spec.name != "messages":
                out.append(values)
                continue
            read_in: list[Any] = []
            for index, value in enumerate(values):
                try:
                    read_in.append(None if value is None else with_stage_media(value, read, version.media_hosts))
                except ValueError as exc:
                    fail(index, f"{self.context('messages')}, row {first_row + index + 1}: {exc}")
                    read_in.append(None)
            out.append(read_in)
        return out

    def _scope(self, params: dict[str, Any]) -> result_cache.Scope:
        version = self.version
        content = version.content_digest
        conditions = version.engine.run_conditions(version.manifest.options)
        libraries = {**_engine_versions(), **version.engine.library_versions(), **conditions}
        namespace = result_cache.digest(content, self.function.name, params, libraries)
        return result_cache.Scope(namespace, content, version.model_name, version.version_name)

    def _predict_through_cache(
        self,
        rows: list[dict[str, Any]],
        params: dict[str, Any],
        use_cache: bool | None,
        numbers: list[int],
        errors: dict[int, str] | None = None,
    ) -> list[dict[str, Any] | None]:
        """Results for ``rows``: those of a deterministic function come from the result cache when kept there.

        With ``errors``, rows that fail are isolated (``_isolate``): None here, their message in ``errors``.
        A row the task refused is cached as its ``Refusal``; a row that failed otherwise is never cached,
        so the next call tries it again.
        """

        def compute(indices: list[int]) -> list[dict[str, Any] | None]:
            chosen = [rows[i] for i in indices]
            if errors is None:
                try:
                    return list(self._predict(chosen, params, [numbers[i] for i in indices]))
                except RowFailure as exc:
                    raise ValueError(str(exc)) from None  # a plain ValueError for the caller: it names the row
                except (ValueError, RuntimeError) as exc:
                    self._locate(chosen, params, [numbers[i] for i in indices], exc)
            results, failed = self._isolate(chosen, params, [numbers[i] for i in indices])
            errors.update({indices[position]: message for position, message in failed.items()})
            return results

        cache = self.version.results
        everything = list(range(len(rows)))
        if cache is None or use_cache is False or not cache.enabled:
            return compute(everything)
        cacheable = self.task.cacheable(rows, params, self.version.manifest.pipeline_settings)
        if not any(cacheable):
            return compute(everything)
        scope = self._scope(params)
        names = [spec.name for spec in self.signature.inputs]
        try:
            keys = [
                scope.key([row[name] for name in names]) if kept else None
                for row, kept in zip(rows, cacheable, strict=True)
            ]
        except TypeError:  # an input value with no stable form: compute without the cache
            return compute(everything)
        found = cache.get_many([key for key in keys if key is not None], scope)
        self._replay_refusals(keys, found, numbers, errors)
        missing = [i for i, key in enumerate(keys) if key is None or key not in found]
        computed = compute(missing) if missing else []
        stored = [(keys[i], result) for i, result in zip(missing, computed, strict=True) if result is not None]
        refused = [(keys[i], errors[i].stored()) for i in missing if isinstance((errors or {}).get(i), Refusal)]
        cache.put_many(scope, [(key, value) for key, value in stored + refused if key is not None])
        fresh = dict(zip(missing, computed, strict=True))
        return [
            fresh[i] if i in fresh else None if errors and i in errors else found[key] for i, key in enumerate(keys)
        ]

    @staticmethod
    def _replay_refusals(
        keys: list[str | None], found: dict[str, Any], numbers: list[int], errors: dict[int, str] | None
    ) -> None:
        """Cached refusals become this call's errors (named for its rows), or under ``raise`` its error."""
        for i, key in enumerate(keys):
            refusal = Refusal.restored(found.get(key), numbers[i]) if key is not None else None
            if refusal is None:
                continue
            if errors is None:
                raise ValueError(str(refusal))
            errors[i] = refusal

    def _locate(
        self, rows: list[dict[str, Any]], params: dict[str, Any], numbers: list[int], error: Exception
    ) -> NoReturn:
        """Raise ``error`` for the row that caused it: halve the batch while one half fails alone with the same
        error (at most about the batch's work again), then name the row; a failure no half shows alone is
        raised as it is."""
        while len(rows) > 1:
            half = len(rows) // 2
            for part in (range(half), range(half, len(rows))):
                try:
                    self._predict([rows[i] for i in part], params, [numbers[i] for i in part])
                except RowFailure as exc:
                    raise ValueError(str(exc)) from None
                except (ValueError, RuntimeError) as exc:
                    if str(exc) == str(error):  # this half holds the row (another error is another story)
                        rows, numbers = [rows[i] for i in part], [numbers[i] for i in part]
                        break
            else:
                raise error
        message = str(error)
        if f"row {numbers[0]}" in message:
            raise error
        raise type(error)(f"{message} (row {numbers[0]})") from error

    def _isolate(
        self, rows: list[dict[str, Any]], params: dict[str, Any], numbers: list[int]
    ) -> tuple[list[dict[str, Any] | None], dict[int, str]]:
        """``_predict`` that keeps going when rows fail: a row the task names is set aside and the others
        retried; otherwise the batch is halved until the failing rows stand alone. Returns the results
        (None where a row failed) and each failed position's message.

        More rows than one forward batch are isolated batch by batch (the batches ``_predict`` would make),
        so a failure costs its own batch again, not the whole chunk computed before it."""
        size = self._batch_size(self._loaded())
        if len(rows) > size:
            order = sorted(range(len(rows)), key=lambda i: self.task.sort_key(rows[i]))
            return self._isolate_parts(rows, params, numbers, [order[s : s + size] for s in range(0, len(rows), size)])
        try:
            return list(self._predict(rows, params, numbers)), {}
        except interrupts.Interrupted:
            raise
        except RowFailure as exc:
            if len(rows) == 1:
                return [None], {0: exc.refusal or str(exc)}
            parts = [[exc.position], [i for i in range(len(rows)) if i != exc.position]]
        except (ValueError, RuntimeError) as exc:
            if len(rows) == 1:
                message = str(exc)
                return [None], {0: message if f"row {numbers[0]}" in message else f"{message} (row {numbers[0]})"}
            half = len(rows) // 2
            parts = [list(range(half)), list(range(half, len(rows)))]
        return self._isolate_parts(rows, params, numbers, parts)

    def _isolate_parts(
        self, rows: list[dict[str, Any]], params: dict[str, Any], numbers: list[int], parts: list[list[int]]
    ) -> tuple[list[dict[str, Any] | None], dict[int, str]]:
        """``_isolate`` each part (positions in ``rows``) on its own, and put their results back in place."""
        results: list[dict[str, Any] | None] = [None] * len(rows)
        failed: dict[int, str] = {}
        for part in parts:
            sub_results, sub_failed = self._isolate([rows[i] for i in part], params, [numbers[i] for i in part])
            for position, result in zip(part, sub_results, strict=True):
                results[position] = result
            failed.update({part[position]: message for position, message in sub_failed.items()})
        return results, failed

    def run_with_param_columns(
        self,
        columns: Sequence[Sequence[Any]],
        param_columns: dict[str, Sequence[Any]],
        use_cache: bool | None = None,
        errors: dict[int, str] | None = None,
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
            return self.run(columns, drop_unset_params(constant), use_cache, errors=errors)
        groups: dict[Any, list[int]] = {}
        for row in range(n_rows):
            key = freeze([values[row] for values in varying.values()])
            groups.setdefault(key, []).append(row)
        results: list[dict[str, Any] | None] = [None] * n_rows
        for rows in groups.values():
            params = {**constant, **{name: values[rows[0]] for name, values in varying.items()}}
            found: dict[int, str] | None = None if errors is None else {}
            part = self.run([[column[r] for r in rows] for column in columns], drop_unset_params(params), use_cache,
                            errors=found)  # fmt: skip
            for row, result in zip(rows, part, strict=True):
                results[row] = result
            if errors is not None and found:
                errors.update({rows[position]: message for position, message in found.items()})
        return results

    def _loaded(self) -> model_cache.LoadedModel:
        """The version's loaded model; a load that fails names the model and version."""
        try:
            return self.version.shared_model()
        except RuntimeError as exc:
            where = f"Model {self.version.model_name} version {self.version.version_name}"
            if str(exc).startswith(where):
                raise
            raise RuntimeError(f"{where}: {exc}") from exc

    def _batch_size(self, loaded: model_cache.LoadedModel) -> int:
        """Rows per forward batch: the version's ``max_batch_size``, else the engine's (vLLM takes a whole
        chunk, as it schedules its own batches), else ``DEFAULT_BATCH_SIZE``."""
        options = self.version.manifest.options
        return int(options.get("max_batch_size") or getattr(loaded.model, "batch_rows", DEFAULT_BATCH_SIZE))

    def _predict(
        self, rows: list[dict[str, Any]], params: dict[str, Any], numbers: list[int] | None = None
    ) -> list[dict[str, Any]]:
        """Results for distinct ``rows`` (the row number each was first met at: ``numbers``), in forward batches."""
        loaded = self._loaded()
        task = self.task
        order = sorted(range(len(rows)), key=lambda i: task.sort_key(rows[i]))
        options = self.version.manifest.options
        ctx = RunContext(
            model=loaded.model,
            signature=self.signature,
            params=params,
            options=options,
            batch_size=self._batch_size(loaded),
            model_id=f"{self.version.model_name}/{self.version.version_name}",
            method=self.function.target_method,
            listeners=_LISTENERS.get() or {},
        )
        ordered = [rows[i] for i in order]
        predicted: list[dict[str, Any]] = []
        start = 0
        try:
            # One forward batch at a time, so Ctrl-C or a cancelled job stops within one batch, not one chunk.
            for start in range(0, len(ordered), ctx.batch_size):
                interrupts.check(self.context())
                if loaded.closed:  # evicted (and released) since: load it again
                    loaded = self._loaded()
                    ctx = replace(ctx, model=loaded.model)
                with model_cache.device_lock(loaded.device), no_grad():
                    predicted.extend(task.predict(ctx, ordered[start : start + ctx.batch_size]))
        except interrupts.Interrupted:
            raise
        except InputError as exc:
            where = self.context(exc.column)
            if exc.row is None:
                raise ValueError(f"{where}: {exc.message}") from None
            position = order[start + exc.row]
            if numbers is None:
                raise RowFailure(f"{where}: {exc.message}", position) from None
            refusal = Refusal(where, exc.message, numbers[position])
            raise RowFailure(str(refusal), position, refusal) from None
        except Exception as exc:
            raise RuntimeError(f"{self.context()} failed: {type(exc).__name__}: {exc}") from exc
        if len(predicted) != len(rows):
            raise RuntimeError(f"{self.context()}: the model returned {len(predicted)} results for {len(rows)} rows")
        results: list[dict[str, Any]] = [{} for _ in rows]
        shapes = {o.name: self.function.output_shape(o.name) for o in self.signature.outputs}
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
