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

import hashlib
import importlib.util
import inspect
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from duckreg.tasks.base import RunContext, Task

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
    return [
        name
        for name, member in inspect.getmembers(type(model), predicate=inspect.isfunction)
        if getattr(member, _API_MARK, False)
    ]


def save(model: CustomModel, folder: Path) -> dict[str, Any]:
    """Write the context's pipelines, artifacts and the class's source; returns the manifest entry."""
    from duckreg import huggingface

    cls = type(model)
    source = inspect.getsourcefile(cls)
    if source is None or not Path(source).is_file():
        raise ValueError(
            f"Cannot store the code of {cls.__qualname__}: define the class in a module file, not interactively."
        )
    if "<locals>" in cls.__qualname__:
        raise ValueError(f"{cls.__qualname__} is defined inside a function; define it at module level.")
    folder.mkdir(parents=True, exist_ok=True)
    code = folder / "code"
    code.mkdir()
    shutil.copy2(source, code / "model_code.py")
    models: dict[str, Any] = {}
    for name, sub in model.context.models.items():
        if not huggingface.is_pipeline(sub):
            raise TypeError(
                f"Context model {name!r} is a {type(sub).__name__}; custom models may hold transformers pipelines."
            )
        sub = huggingface.as_task_model(sub)
        huggingface.save_pipeline(sub, folder / "models" / name)
        models[name] = {
            "task": sub.task,
            "settings": huggingface.encode_settings(huggingface.pipeline_settings(sub)),
        }
    artifacts: dict[str, str] = {}
    for key, path in model.context.artifacts.items():
        src = Path(path)
        if not src.exists():
            raise FileNotFoundError(f"Artifact {key!r}: {path} does not exist.")
        target = folder / "artifacts" / key / src.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target)
        else:
            shutil.copy2(src, target)
        artifacts[key] = f"artifacts/{key}/{src.name}"
    return {"class": cls.__qualname__, "module": cls.__module__, "models": models, "artifacts": artifacts}


def load(folder: Path, entry: dict[str, Any], device: str) -> CustomModel:
    """Import the stored code (this runs it), rebuild the context and instantiate the class."""
    from duckreg import huggingface

    code = folder / "code" / "model_code.py"
    module_name = "duckreg_custom_" + hashlib.sha256(str(code.resolve()).encode()).hexdigest()[:16]
    module = sys.modules.get(module_name)
    if module is None:
        # Compiled from the verified source itself: no bytecode cache is read or written beside it.
        spec = importlib.util.spec_from_loader(module_name, loader=None, origin=str(code))
        module = importlib.util.module_from_spec(spec)
        module.__file__ = str(code)
        sys.modules[module_name] = module
        try:
            exec(compile(code.read_text(), str(code), "exec"), module.__dict__)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
    cls: Any = module
    for part in entry["class"].split("."):
        cls = getattr(cls, part)
    models = {
        name: huggingface.load_pipeline(folder / "models" / name, sub["task"], sub["settings"], device, False)
        for name, sub in entry["models"].items()
    }
    artifacts = {key: str(folder / rel) for key, rel in entry["artifacts"].items()}
    return cls(ModelContext(models=models, artifacts=artifacts))


class CustomRunner(Task):
    """Calls the target method with one DataFrame of rows; outputs are taken by column name."""

    names = ()

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        method = getattr(ctx.pipeline, ctx.method)
        names = [s.name for s in ctx.signature.inputs]
        frame = pd.DataFrame({name: [row[name] for row in rows] for name in names})
        result = method(frame, **accepted_params(method, ctx.params))
        if not isinstance(result, pd.DataFrame):
            raise TypeError(f"{ctx.method} returned {type(result).__name__}, not a DataFrame")
        if len(result) != len(rows):
            raise ValueError(f"{ctx.method} returned {len(result)} rows for {len(rows)} inputs")
        missing = [o.name for o in ctx.signature.outputs if o.name not in result.columns]
        if missing:
            raise ValueError(f"the result has no column(s) {missing}; it has {list(result.columns)}")
        records = result.to_dict("records")
        return [{o.name: _plain(record[o.name]) for o in ctx.signature.outputs} for record in records]

    def sort_key(self, row: dict[str, Any]) -> int:
        return 0


def accepted_params(method: Callable, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters ``method`` takes as keyword arguments (all of them with ``**kwargs``), as Snowflake passes them.

    A parameter left unset (None) is not passed, so the method's own default applies.
    """
    taken = inspect.signature(method).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in taken):
        names = set(params)
    else:
        names = {p.name for p in taken if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {name: value for name, value in params.items() if name in names and value is not None}


def _plain(value: Any) -> Any:
    from duckreg.tasks.base import plain

    if value is pd.NA:
        return None
    return plain(value)


RUNNER = CustomRunner()
