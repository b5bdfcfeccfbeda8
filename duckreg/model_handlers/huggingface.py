"""Hugging Face pipelines as a model kind: settings, signatures from the task table, safetensors on disk.

A pipeline is stored as ``save_pretrained`` output (safetensors, tokenizer files) plus its call
settings (``top_k``, ``return_full_text``, generation kwargs, ...) as JSON; nothing is pickled. Enum
settings are stored by class name and value and restored only from the ``transformers`` package.
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

from duckreg.artifacts import Manifest
from duckreg.function_spec import FunctionSpec, Implementation
from duckreg.huggingface import TransformersPipeline
from duckreg.inference_engines import ENGINE_OPTION_KEYS, Engine, engine_for
from duckreg.inference_engines.samples import sample_texts
from duckreg.model_handlers.base import LoggedModel, ModelHandler
from duckreg.model_signature import DataType, FeatureGroupSpec, ModelSignature
from duckreg.openai_signatures import OPENAI_CHAT_WITH_PARAMS_SIGNATURE
from duckreg.tasks import (
    GENERIC,
    TASKS,
    InferredFunction,
    Task,
    TaskModel,
    get_task,
    implementation_for_signature,
    task_for,
)
from duckreg.tasks.limits import clamp_tokenizer

_SETTING_SOURCES = ("_preprocess_params", "_forward_params", "_postprocess_params", "_generate_kwargs")


def build_reference(reference: TransformersPipeline) -> Any:
    """The pipeline a ``TransformersPipeline`` describes (a ``TaskModel`` for tasks duckreg runs itself)."""
    import transformers

    if reference.task is None:
        raise RuntimeError(
            f"Unable to determine the HuggingFace pipeline task for model '{reference.model}'. Provide task explicitly."
        )
    folder = reference.local_path()
    if runs_itself(reference.task):
        settings = {k: v for k, v in reference.pipeline_kwargs.items() if k not in ("device", "batch_size")}
        return load_task_model(
            folder, reference.task, settings, "cpu", reference.trust_remote_code, model_kwargs=reference.model_kwargs
        )
    return transformers.pipeline(
        reference.task,
        model=str(folder),
        revision=reference.revision,
        trust_remote_code=reference.trust_remote_code,
        model_kwargs=reference.model_kwargs or None,
        **reference.pipeline_kwargs,
    )


def is_pipeline(obj: Any) -> bool:
    """A ``transformers`` pipeline, or a model duckreg runs itself."""
    if isinstance(obj, TaskModel):
        return True
    try:
        import transformers
    except ImportError:
        return False
    return isinstance(obj, transformers.Pipeline)


def runs_itself(task: str) -> bool:
    """Whether duckreg runs this task on an Auto model class rather than a pipeline."""
    impl = get_task(task)
    return impl is not None and impl.runs_itself


def as_task_model(pipe: Any) -> Any:
    """A transformers 4 pipeline of a task duckreg runs itself, as a ``TaskModel`` with its settings.

    Other pipelines are returned as they are.
    """
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
    """Weights as safetensors, tokenizer and processor files beside them.

    A multimodal processor (image-text-to-text) keeps settings of its own, such as the patch size
    that decides how many image tokens a prompt gets, which only its own save writes.
    """
    with _quiet_progress():
        pipe.save_pretrained(str(folder))
        processor = getattr(pipe, "processor", None)
        if processor is not None:
            processor.save_pretrained(str(folder))


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

    impl = get_task(task)
    with _quiet_progress():
        config = transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        task = impl.resolve_task(task, config)
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


class HuggingFaceHandler(ModelHandler):
    """``transformers`` pipelines, ``TransformersPipeline`` references, and the models duckreg runs itself."""

    model_type = "huggingface_pipeline"
    option_keys = frozenset(key for task in TASKS.values() for key in task.option_keys) | ENGINE_OPTION_KEYS

    def can_handle(self, model: Any) -> bool:
        return isinstance(model, TransformersPipeline) or is_pipeline(model)

    def prepare(
        self, model: Any, signatures: dict[str, Any] | None, sample_input_data: Any, options: dict[str, Any]
    ) -> LoggedModel:
        trust_remote_code = False
        if isinstance(model, TransformersPipeline):
            if signatures is not None:
                warnings.warn(
                    "It is impossible to validate your model signatures when using a TransformersPipeline object. "
                    "Please make sure you are providing correct model signatures.",
                    UserWarning,
                    stacklevel=4,
                )
            trust_remote_code = model.trust_remote_code
            model = build_reference(model)
        model = as_task_model(model)
        engine = engine_for(options)
        check_engine_serves(engine, model.task)
        engine.check_options(options)
        if sample_input_data is not None and signatures is None and not engine.reads_samples:
            warnings.warn(
                "Inferring model signature from sample input for huggingface pipeline is not supported. Model "
                "signature will automatically be inferred from pipeline task. Or, you could specify model "
                "signature manually.",
                UserWarning,
                stacklevel=4,
            )
        settings = pipeline_settings(model)
        functions = pipeline_functions(model, settings, signatures, options)
        engine.check_functions(functions, "log_model")
        return LoggedModel(
            model,
            functions,
            model.task,
            encode_settings(settings),
            trust_remote_code,
            options=options,
            sample_texts=texts_of(sample_input_data),
        )

    def save(self, logged: LoggedModel, folder: Path) -> None:
        save_pipeline(logged.model, folder)
        metrics = self.prepare_engine(logged.model, logged.task, folder, logged.options, logged.sample_texts)
        logged.metrics.update(metrics)

    def prepare_engine(
        self, model: Any, task: str | None, folder: Path, options: dict[str, Any], sample_input_data: Any
    ) -> dict[str, Any]:
        engine = engine_for(options)
        engine.check_options(options)
        check_engine_serves(engine, task or "")
        texts = texts_of(sample_input_data) or sample_texts()
        return engine.prepare(model, folder, options, texts).metrics

    def load(self, folder: Path, manifest: Manifest, device: str) -> Any:
        engine = engine_for(manifest.options)
        own = engine.load_model(folder, manifest.task or "", manifest.pipeline_settings, manifest.options, device)
        if own is not None:
            return own
        model = load_pipeline(
            folder, manifest.task, manifest.pipeline_settings, engine.torch_device(device), manifest.trust_remote_code
        )
        engine.attach(model, folder, manifest.options, device)
        return model

    def task_for(self, function: FunctionSpec, manifest: Manifest) -> Task:
        return task_for(function.implementation, manifest.task or "")

    def prepare_loaded(self, model: Any, manifest: Manifest) -> None:
        (get_task(manifest.task or "") or GENERIC).prepare(model)


def check_engine_serves(engine: Engine, task: str) -> None:
    """Refuse an engine for a task it cannot run (ONNX Runtime runs the encoder tasks, vLLM the chat ones)."""
    if engine.tasks is not None:
        serving = sorted(engine.tasks)
    else:
        serving = sorted(name for name, impl in TASKS.items() if engine.name in impl.engines)
    task_impl = get_task(task)
    runs = (
        task in serving if engine.tasks is not None else engine.name in (task_impl.engines if task_impl else ("torch",))
    )
    if not runs:
        kind = "chat" if engine.tasks is not None else "encoder"
        raise ValueError(
            f"options['engine'] = {engine.name!r} runs the {kind} tasks {serving}, not {task!r}; "
            "keep it on the torch engine"
        )


def texts_of(sample_input_data: Any) -> list[str]:
    """The non-empty strings in ``sample_input_data`` (a DataFrame, a list or one string), at most 64."""
    import pandas as pd

    if sample_input_data is None:
        return []
    if isinstance(sample_input_data, str):
        values: list[Any] = [sample_input_data]
    elif isinstance(sample_input_data, pd.DataFrame):
        values = [v for column in sample_input_data.columns for v in sample_input_data[column].tolist()]
    else:
        values = list(sample_input_data)
    return [v for v in values if isinstance(v, str) and v.strip()][:64]


def pipeline_functions(
    pipe: Any, settings: dict[str, Any], signatures: dict[str, ModelSignature] | None, options: dict[str, Any]
) -> list[FunctionSpec]:
    """A pipeline's one function: the task's inferred signature, or the user's (with the task's encoding
    when its inputs are the inferred ones)."""
    task = pipe.task
    if settings.get("return_tensors") or getattr(settings.get("return_type"), "name", None) == "TENSORS":
        raise NotImplementedError(
            f"Auto deployment for HuggingFace pipeline {task} when `return_tensors` set to `True` has not been "
            "supported yet."
        )
    task_impl = get_task(task)
    inferred = task_impl.infer(task, pipe, settings, options) if task_impl else None
    chat_model = task == "text-generation" and getattr(pipe.tokenizer, "chat_template", None)
    if signatures is None and (chat_model or task == "image-text-to-text"):
        # As Snowflake infers it: a chat model answers OpenAI chat requests (what the vllm engine runs).
        signatures = {"__call__": OPENAI_CHAT_WITH_PARAMS_SIGNATURE["__call__"]}
    if signatures is None:
        if inferred is None:
            hint = task_impl.no_signature_hint if task_impl else ""
            raise NotImplementedError(
                f"Cannot auto infer the signature of pipeline for task {task}. "
                f"Pass signatures={{'__call__': ...}}.{hint}"
            )
        methods = options.get("target_methods", ["__call__"])
        if methods != ["__call__"]:
            raise ValueError(f"Hugging Face pipelines have one target method, '__call__'; got {methods}")
        return [FunctionSpec("__CALL__", "__call__", inferred.signature, inferred.json_outputs, inferred.output_shapes)]
    if isinstance(signatures, ModelSignature):
        signatures = {"__call__": signatures}
    if not isinstance(signatures, dict):
        raise ValueError(
            "signatures must be a dict mapping a target method to its ModelSignature, e.g. {'__call__': signature}"
        )
    return [_user_function(task, method, signature, inferred) for method, signature in signatures.items()]


def _user_function(task: str, method: str, signature: Any, inferred: InferredFunction | None) -> FunctionSpec:
    if not isinstance(signature, ModelSignature):
        raise ValueError(f"signatures[{method!r}] must be a ModelSignature, got {type(signature).__name__}")
    if method != "__call__":
        raise ValueError(f"Target method {method} is not callable or does not exist in the model.")
    special = implementation_for_signature(task, signature)
    use_task = (
        special is None
        and inferred is not None
        and [s.name for s in signature.inputs] == [s.name for s in inferred.signature.inputs]
    )
    if not use_task:
        return FunctionSpec(method.upper(), method, signature, implementation=special or Implementation.GENERIC)
    json_outputs = frozenset(
        o.name
        for o in signature.outputs
        if o.name in inferred.json_outputs
        and not isinstance(o, FeatureGroupSpec)
        and o.dtype is DataType.STRING
        and o.shape is None
    )
    shaped = {o.name for o in signature.outputs if o.shape is not None}
    shapes = {k: v for k, v in inferred.output_shapes.items() if k in shaped}
    return FunctionSpec(method.upper(), method, signature, json_outputs, shapes, Implementation.TASK)


HANDLER = HuggingFaceHandler()
