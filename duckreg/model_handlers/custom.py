"""Custom models as a model kind: the class's source file, its context's pipelines and artifact files.

Loading a custom model imports its stored source file, so it runs the code it holds: only load
custom models you trust.
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

from duckreg.artifacts import Manifest
from duckreg.custom import CustomModel, ModelContext, inference_methods
from duckreg.function_spec import FunctionSpec, Implementation
from duckreg.model_handlers import huggingface as hf
from duckreg.model_handlers.base import LoggedModel, ModelHandler
from duckreg.model_signature import ModelSignature
from duckreg.tasks.base import RunContext, Task
from duckreg.values import to_python


def save_custom(model: CustomModel, folder: Path) -> dict[str, Any]:
    """Write the context's pipelines, artifacts and the class's source; returns the manifest entry."""
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
        if not hf.is_pipeline(sub):
            raise TypeError(
                f"Context model {name!r} is a {type(sub).__name__}; custom models may hold transformers pipelines."
            )
        sub = hf.as_task_model(sub)
        hf.save_pipeline(sub, folder / "models" / name)
        models[name] = {
            "task": sub.task,
            "settings": hf.encode_settings(hf.pipeline_settings(sub)),
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


def load_custom(folder: Path, entry: dict[str, Any], device: str) -> CustomModel:
    """Import the stored code (this runs it), rebuild the context and instantiate the class."""
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
        name: hf.load_pipeline(folder / "models" / name, sub["task"], sub["settings"], device, False)
        for name, sub in entry["models"].items()
    }
    artifacts = {key: str(folder / rel) for key, rel in entry["artifacts"].items()}
    return cls(ModelContext(models=models, artifacts=artifacts))


class CustomModelTask(Task):
    """Calls the target method with one DataFrame of rows; outputs are taken by column name."""

    def deterministic(self, params: dict[str, Any], settings: dict[str, Any]) -> bool:
        return False  # user code may sample, count or call out: it runs every time

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        method = getattr(ctx.model, ctx.method)
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
        return [{o.name: to_python(record[o.name]) for o in ctx.signature.outputs} for record in records]

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


class CustomHandler(ModelHandler):
    """``duckreg.custom.CustomModel`` subclasses: stored code, context pipelines and artifact files."""

    model_type = "custom"

    def can_handle(self, model: Any) -> bool:
        return isinstance(model, CustomModel)

    def prepare(
        self, model: Any, signatures: dict[str, Any] | None, sample_input_data: Any, options: dict[str, Any]
    ) -> LoggedModel:
        return LoggedModel(model, custom_functions(model, signatures, options))

    def save(self, logged: LoggedModel, folder: Path) -> dict[str, Any]:
        return save_custom(logged.model, folder)

    def load(self, folder: Path, manifest: Manifest, device: str) -> Any:
        return load_custom(folder, manifest.handler_data or {}, device)

    def task_for(self, function: FunctionSpec, manifest: Manifest) -> Task:
        return TASK


def custom_functions(model: CustomModel, signatures: Any, options: dict[str, Any]) -> list[FunctionSpec]:
    """One function per ``@inference_api`` method named by ``signatures`` (or ``target_methods``)."""
    methods = inference_methods(model)
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
    functions = []
    for method in options.get("target_methods") or list(signatures):
        if method not in methods:
            raise ValueError(f"Target method {method} is not callable or does not exist in the model.")
        signature = signatures.get(method)
        if not isinstance(signature, ModelSignature):
            raise ValueError(f"signatures[{method!r}] must be a ModelSignature")
        functions.append(FunctionSpec(method.upper(), method, signature, implementation=Implementation.CUSTOM))
    return functions


TASK = CustomModelTask()
HANDLER = CustomHandler()
