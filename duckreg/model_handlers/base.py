"""What a model handler does: recognise a kind of model, choose its functions, save it and load it again.

``Registry.log_model`` and the inference core know handlers only through this interface, so a new
kind of model (an ONNX export, a sentence-transformers model) is one new module in this package.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duckreg.artifacts import Manifest
from duckreg.function_spec import FunctionSpec
from duckreg.tasks import Task

COMMON_OPTIONS = frozenset({"target_methods", "cuda_version", "device", "max_batch_size", "enable_explainability"})
"""``log_model`` options every model kind takes (Snowflake's names)."""


@dataclass
class LoggedModel:
    """What a handler makes of a model being logged: the object to save and what the manifest records."""

    model: Any
    functions: list[FunctionSpec]
    task: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    """Call settings the model was logged with (``top_k``, generation kwargs), JSON-safe."""
    trust_remote_code: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    """``log_model``'s checked options."""
    sample_texts: list[str] = field(default_factory=list)
    """Texts from ``sample_input_data``, for checks that compare engines at log time."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Figures measured while saving (an engine's agreement with torch), stored as the version's metrics."""


class ModelHandler:
    """One kind of model. Subclasses set ``model_type`` and implement every method."""

    model_type: str = ""
    option_keys: frozenset[str] = frozenset()
    """Options this kind takes besides ``COMMON_OPTIONS``."""

    def can_handle(self, model: Any) -> bool:
        """Whether ``model`` (what the user passed to ``log_model``) is of this kind."""
        raise NotImplementedError

    def prepare(
        self, model: Any, signatures: dict[str, Any] | None, sample_input_data: Any, options: dict[str, Any]
    ) -> LoggedModel:
        """Build what is logged (a referenced model is loaded here) and choose its functions and signatures."""
        raise NotImplementedError

    def save(self, logged: LoggedModel, folder: Path) -> dict[str, Any] | None:
        """Write the model's files under ``folder``; returns what ``load`` needs besides the manifest."""
        raise NotImplementedError

    def load(self, folder: Path, manifest: Manifest, device: str) -> Any:
        """A fresh model from the files ``save`` wrote."""
        raise NotImplementedError

    def task_for(self, function: FunctionSpec, manifest: Manifest) -> Task:
        """The ``Task`` that computes ``function``'s rows on a loaded model."""
        raise NotImplementedError

    def prepare_loaded(self, model: Any, manifest: Manifest) -> None:
        """Adjust a model the process cache just loaded, once, before its first batch."""

    def prepare_engine(
        self, model: Any, task: str | None, folder: Path, options: dict[str, Any], sample_input_data: Any
    ) -> dict[str, Any]:
        """Write the files of the engine ``options`` name under the model folder ``folder`` and check them
        against ``model`` (loaded on torch); returns the metrics measured. Only kinds whose ``option_keys``
        include the engine options implement it."""
        raise NotImplementedError


def check_options(options: dict[str, Any] | None, extra_keys: frozenset[str]) -> dict[str, Any]:
    """``log_model``'s options, checked: unknown keys and bad values raise (Snowflake's messages)."""
    options = dict(options or {})
    allowed = COMMON_OPTIONS | extra_keys
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


LOGGED_LIBRARIES = ("transformers", "torch", "tokenizers", "duckdb", "pyarrow", "pandas", "numpy")


def library_versions(names: tuple[str, ...] = LOGGED_LIBRARIES) -> dict[str, str]:
    """Versions of the installed libraries among ``names`` (by default those recorded when a model is logged)."""
    import importlib.metadata as md

    versions = {}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


def warn_on_version_skew(logged: dict[str, str], model_name: str, version_name: str) -> None:
    """Loading under another transformers major version may fail or change outputs: say so (read from the
    installed package's metadata: a version that runs without transformers never imports it)."""
    then = logged.get("transformers")
    now = library_versions(("transformers",)).get("transformers")
    if then and now and then.split(".")[0] != now.split(".")[0]:
        warnings.warn(
            f"Model {model_name} version {version_name} was logged with transformers {then} and is loaded with "
            f"{now}; outputs may differ.",
            RuntimeWarning,
            stacklevel=3,
        )
