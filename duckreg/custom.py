"""Custom models: your own Python class around pipelines and files, as in ``snowflake.ml.model.custom_model``.

Subclass ``CustomModel``, mark the methods callers may use with ``@inference_api`` (each takes a
pandas DataFrame with the signature's input columns and returns one with its output columns), and
log an instance with ``signatures={"predict": ModelSignature(...)}``. The models in the context
(``transformers`` pipelines) are saved as safetensors like any logged pipeline; artifact files are
copied; the source file of the class's module is stored with them.

Loading a custom model imports that stored source file, so it runs the code it holds: only load
custom models you trust. Hugging Face models never run stored code (``trust_remote_code`` stays
off unless they were logged with it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

_API_MARK = "_duckreg_inference_api"


def inference_api(method: Callable) -> Callable:
    """Mark a method as callable through the registry (``mv.run``, SQL, ``run_batch``)."""
    setattr(method, _API_MARK, True)
    return method


class ModelContext:
    """The pipelines and files a custom model uses, by name."""

    def __init__(self, *, models: dict[str, Any] | None = None, artifacts: dict[str, str | Path] | None = None) -> None:
        self.models = dict(models or {})
        self.artifacts = {k: str(v) for k, v in (artifacts or {}).items()}

    def model_ref(self, name: str) -> Any:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"No model named {name!r} in the context; it has {sorted(self.models)}.") from None

    def path(self, key: str) -> str:
        try:
            return self.artifacts[key]
        except KeyError:
            raise KeyError(f"No artifact named {key!r} in the context; it has {sorted(self.artifacts)}.") from None


class CustomModel:
    """Base class for custom models; the constructor receives the ``ModelContext``."""

    def __init__(self, context: ModelContext | None = None) -> None:
        self.context = context or ModelContext()


def inference_methods(model: CustomModel) -> list[str]:
    """The names of ``model``'s methods marked with ``@inference_api``."""
    return [
        name
        for name, member in inspect.getmembers(type(model), predicate=inspect.isfunction)
        if getattr(member, _API_MARK, False)
    ]
