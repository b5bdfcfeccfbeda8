"""Saving and loading Hugging Face pipelines without pickle, and logging them by reference.

A pipeline is stored as ``save_pretrained`` output (safetensors, tokenizer files) plus its call
settings (``top_k``, ``return_full_text``, generation kwargs, ...) as JSON. Enum settings are
stored by class name and value and restored only from the ``transformers`` package.
"""

from __future__ import annotations

import enum
import importlib
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_SETTING_SOURCES = ("_preprocess_params", "_forward_params", "_postprocess_params", "_generate_kwargs")


class TransformersPipeline:
    """A pipeline named by a local folder or a hub id, built when it is logged.

    ``pipeline_kwargs`` (``top_k=3``, ``return_full_text=False``, ...) are applied to the pipeline
    and so shape its inferred signature, exactly as with a ``transformers.pipeline(...)`` object.
    """

    def __init__(
        self,
        model: str,
        task: str | None = None,
        *,
        revision: str | None = None,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        **pipeline_kwargs: Any,
    ) -> None:
        if model is None:
            raise RuntimeError(
                "Impossible to instantiate a pipeline without a model being specified. "
                "Please provide an identifier to a pretrained model."
            )
        if not isinstance(model, str):
            raise RuntimeError("Impossible to use non-string model as input for class TransformersPipeline.")
        self.model = model
        self.task = task
        self.revision = revision
        self.trust_remote_code = bool(trust_remote_code)
        self.model_kwargs = dict(model_kwargs or {})
        self.pipeline_kwargs = pipeline_kwargs

    def local_path(self) -> Path:
        """The model folder: the path itself, or a hub snapshot (which needs the network)."""
        path = Path(self.model).expanduser()
        if path.is_dir():
            return path
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(self.model, revision=self.revision))
        except Exception as exc:
            raise RuntimeError(
                f"Could not fetch {self.model!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
                "With no network (or HF_HUB_OFFLINE=1 set) pass a local folder that holds the model, "
                "e.g. one written by save_pretrained()."
            ) from exc

    def build(self) -> Any:
        """Instantiate the ``transformers`` pipeline this reference describes."""
        import transformers

        if self.task is None:
            raise RuntimeError(
                f"Unable to determine the HuggingFace pipeline task for model '{self.model}'. Provide task explicitly."
            )
        return transformers.pipeline(
            self.task,
            model=str(self.local_path()),
            revision=self.revision,
            trust_remote_code=self.trust_remote_code,
            model_kwargs=self.model_kwargs or None,
            **self.pipeline_kwargs,
        )

    def __repr__(self) -> str:
        return f"TransformersPipeline(model={self.model!r}, task={self.task!r})"


def is_pipeline(obj: Any) -> bool:
    try:
        import transformers
    except ImportError:
        return False
    return isinstance(obj, transformers.Pipeline)


def _encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        cls = type(value)
        return {"__enum__": f"{cls.__module__}:{cls.__qualname__}", "value": value.value}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode(v) for k, v in value.items()}
    raise TypeError(type(value).__name__)


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__enum__" in value:
        module, _, qualname = value["__enum__"].partition(":")
        if not module.startswith("transformers."):
            raise ValueError(f"refusing to restore a setting of type {value['__enum__']}")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        return cls(value["value"])
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


def pipeline_settings(pipe: Any) -> dict[str, Any]:
    """The call settings a pipeline was built with, as plain values (for signature inference)."""
    settings: dict[str, Any] = {}
    for source in _SETTING_SOURCES:
        settings.update(getattr(pipe, source, None) or {})
    return {k: v for k, v in settings.items() if not k.startswith("_")}


def encode_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe form of pipeline settings; ones that cannot be stored are dropped with a warning."""
    stored = {}
    for key, value in settings.items():
        try:
            stored[key] = _encode(value)
        except TypeError as exc:
            warnings.warn(f"pipeline setting {key!r} of type {exc} cannot be stored and is not kept", stacklevel=3)
    return stored


@contextmanager
def _quiet_progress() -> Iterator[None]:
    """No download or shard progress bars while duckreg saves or loads (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was_disabled = not hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not was_disabled:
            hf_logging.enable_progress_bar()


def save_pipeline(pipe: Any, folder: Path) -> None:
    """Weights as safetensors, tokenizer and processor files beside them."""
    with _quiet_progress():
        pipe.save_pretrained(str(folder))


def load_pipeline(folder: Path, task: str, settings: dict[str, Any], device: str, trust_remote_code: bool) -> Any:
    import transformers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with _quiet_progress():
        return transformers.pipeline(
            task,
            model=str(folder),
            device=device,
            trust_remote_code=trust_remote_code,
            **{k: _decode(v) for k, v in settings.items()},
        )


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {}
    for name in ("transformers", "torch", "tokenizers", "duckdb", "pyarrow", "pandas", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


def warn_on_version_skew(logged: dict[str, str], model_name: str, version_name: str) -> None:
    """Loading under another transformers major version may fail or change outputs: say so."""
    import transformers

    then = logged.get("transformers")
    if then and then.split(".")[0] != transformers.__version__.split(".")[0]:
        warnings.warn(
            f"Model {model_name} version {version_name} was logged with transformers {then} and is loaded with "
            f"{transformers.__version__}; outputs may differ.",
            RuntimeWarning,
            stacklevel=3,
        )
