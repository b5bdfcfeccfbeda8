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
        model_kwargs = dict(model_kwargs or {})
        if "device_map" in pipeline_kwargs and "device_map" in model_kwargs:
            raise ValueError(
                'You cannot use both `pipeline(... device_map=..., model_kwargs={"device_map":...})` as those '
                "arguments might conflict, use only one.)"
            )
        if "device" in pipeline_kwargs and "device_map" in {**pipeline_kwargs, **model_kwargs}:
            warnings.warn(
                "Both `device` and `device_map` are specified. `device` will override `device_map`. You will most "
                "likely encounter unexpected behavior. Please remove `device` and keep `device_map`.",
                UserWarning,
                stacklevel=2,
            )
        self.model = model
        self.task = task
        self.revision = revision
        self.trust_remote_code = bool(trust_remote_code)
        self.model_kwargs = model_kwargs
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
        """The pipeline this reference describes (a ``TaskModel`` for tasks duckreg runs itself)."""
        import transformers

        if self.task is None:
            raise RuntimeError(
                f"Unable to determine the HuggingFace pipeline task for model '{self.model}'. Provide task explicitly."
            )
        folder = self.local_path()
        if runs_itself(self.task):
            settings = {k: v for k, v in self.pipeline_kwargs.items() if k not in ("device", "batch_size")}
            return load_task_model(
                folder, self.task, settings, "cpu", self.trust_remote_code, model_kwargs=self.model_kwargs
            )
        return transformers.pipeline(
            self.task,
            model=str(folder),
            revision=self.revision,
            trust_remote_code=self.trust_remote_code,
            model_kwargs=self.model_kwargs or None,
            **self.pipeline_kwargs,
        )

    def __repr__(self) -> str:
        return f"TransformersPipeline(model={self.model!r}, task={self.task!r})"


def is_pipeline(obj: Any) -> bool:
    """A ``transformers`` pipeline, or a model duckreg runs itself."""
    from duckreg.tasks import TaskModel

    if isinstance(obj, TaskModel):
        return True
    try:
        import transformers
    except ImportError:
        return False
    return isinstance(obj, transformers.Pipeline)


def runs_itself(task: str) -> bool:
    """Whether duckreg runs this task on an Auto model class rather than a pipeline."""
    from duckreg.tasks import get_task

    impl = get_task(task)
    return impl is not None and impl.runs_itself


def as_task_model(pipe: Any) -> Any:
    """A transformers 4 pipeline of a task duckreg runs itself, as a ``TaskModel`` with its settings.

    Other pipelines are returned as they are.
    """
    from duckreg.tasks import TaskModel

    if isinstance(pipe, TaskModel) or not runs_itself(pipe.task):
        return pipe
    settings = pipeline_settings(pipe)
    settings.pop("batch_size", None)  # duckreg batches these tasks itself
    if getattr(pipe, "prefix", None):
        # The pipeline popped the prefix out of the model config's task_specific_params: keep it.
        settings["prefix"] = pipe.prefix
    return TaskModel(pipe.task, pipe.model, pipe.tokenizer, settings)


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
    from duckreg.tasks import TaskModel

    if isinstance(pipe, TaskModel):
        return dict(pipe.settings)
    settings: dict[str, Any] = {}
    for source in _SETTING_SOURCES:
        settings.update(getattr(pipe, source, None) or {})
    if getattr(pipe, "_batch_size", None) is not None:
        settings["batch_size"] = pipe._batch_size  # pipeline(..., batch_size=8) keeps it here
    generation_config = getattr(pipe, "generation_config", None)
    if generation_config is not None and getattr(pipe, "_pipeline_calls_generate", False):
        # Generation kwargs given to pipeline(...) live in its generation config, not its call params.
        # Keep every value that differs from the library default or from the pipeline's own default
        # (an explicit do_sample=False must survive a pipeline that defaults to sampling).
        from transformers import GenerationConfig

        library = GenerationConfig().to_dict()
        pipeline_default = getattr(type(pipe), "_default_generation_config", None)
        pipeline_values = pipeline_default.to_dict() if pipeline_default is not None else library
        for key, value in generation_config.to_dict().items():
            if value != library.get(key) or value != pipeline_values.get(key, library.get(key)):
                settings.setdefault(key, value)
    return {k: v for k, v in settings.items() if not k.startswith("_") and k != "transformers_version"}


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


def load_task_model(
    folder: Path,
    task: str,
    settings: dict[str, Any],
    device: str,
    trust_remote_code: bool,
    model_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Tokenizer and Auto model for a task duckreg runs itself (same code on transformers 4 and 5)."""
    import transformers

    from duckreg.tasks import TaskModel, get_task
    from duckreg.tasks.limits import clamp_tokenizer

    impl = get_task(task)
    with _quiet_progress():
        config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        if task == "translation":
            # As transformers 4 did: plain "translation" on a model that knows its language pair
            # (T5's task_specific_params) means that pair.
            for key in getattr(config, "task_specific_params", None) or {}:
                if key.startswith("translation"):
                    warnings.warn(
                        f'"translation" task was used, instead of "translation_XX_to_YY", defaulting to "{key}"',
                        UserWarning,
                        stacklevel=3,
                    )
                    task = key
                    break
        model_class = getattr(transformers, impl.model_class(config))
        model = model_class.from_pretrained(
            str(folder), config=config, trust_remote_code=trust_remote_code, **(model_kwargs or {})
        )
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    model.to(device).eval()
    clamp_tokenizer(tokenizer, model)
    return TaskModel(task, model, tokenizer, {k: _decode(v) for k, v in settings.items()})


def load_pipeline(folder: Path, task: str, settings: dict[str, Any], device: str, trust_remote_code: bool) -> Any:
    import transformers

    from duckreg.tasks.limits import clamp_tokenizer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if runs_itself(task):
        return load_task_model(folder, task, settings, device, trust_remote_code)
    with _quiet_progress():
        pipe = transformers.pipeline(
            task,
            model=str(folder),
            device=device,
            trust_remote_code=trust_remote_code,
            **{k: _decode(v) for k, v in settings.items()},
        )
    clamp_tokenizer(getattr(pipe, "tokenizer", None), pipe.model)
    return pipe


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
