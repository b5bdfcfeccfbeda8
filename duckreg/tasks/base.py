"""What every task module provides: signature inference and a batched runner.

A task module exposes one ``Task`` instance. The registry asks it for the signature of a freshly
logged pipeline, and the runtime hands it length-sorted, de-duplicated rows to predict.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duckreg.model_signature import ModelSignature


class InputError(ValueError):
    """A bad value in one input column; the runtime adds model, version and function, and the row when the
    task says which of the rows it was given (``row``, counted from 0)."""

    def __init__(self, column: str, message: str, row: int | None = None) -> None:
        super().__init__(message)
        self.column = column
        self.message = message
        self.row = row


@contextmanager
def for_row(row: int) -> Iterator[None]:
    """An ``InputError`` raised inside names ``row`` (counted from 0 in the rows the task was given), so the
    core reports that row at once instead of searching the batch for it."""
    try:
        yield
    except InputError as exc:
        raise InputError(exc.column, exc.message, row=row) from None


@dataclass(frozen=True)
class InferredFunction:
    """A signature plus how its outputs are encoded for SQL."""

    signature: ModelSignature
    json_outputs: frozenset[str] = frozenset()
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything a task runner needs for one call."""

    model: Any
    """The loaded model: a pipeline, a ``TaskModel`` or a custom model."""
    signature: ModelSignature
    params: dict[str, Any]
    options: dict[str, Any]
    batch_size: int
    model_id: str = ""
    method: str = "__call__"
    listeners: dict[int, Any] = field(default_factory=dict)
    """Who follows a row's answer as it is generated, by ``id(row)``: ``listener(choice, text_so_far)``."""

    def listener(self, row: dict[str, Any]) -> Any:
        """The callback following ``row``'s answer as it is made (``streaming``), or None."""
        return self.listeners.get(id(row))


@dataclass
class TaskModel:
    """A model and its tokenizer that duckreg runs itself, without a ``transformers`` pipeline.

    transformers 5 has no question-answering, summarization, translation, text2text or
    conversational pipeline; these tasks run on the Auto model classes on both transformers lines.
    ``settings`` holds the call settings the model was logged with (``top_k``, ``num_beams``, ...).
    """

    task: str
    model: Any
    tokenizer: Any
    settings: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def save_pretrained(self, folder: str) -> None:
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)


class Task:
    """Base class: subclasses set ``names`` and implement ``infer`` and ``predict``.

    ``names`` are the pipeline task names this module serves; the task table is built from them.
    """

    names: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    """Other names transformers accepts for the same task (``sentiment-analysis``, ``ner``)."""
    optional_inputs: frozenset[str] = frozenset()
    option_keys: tuple[str, ...] = ()
    """``log_model`` options this task reads besides the common ones (feature-extraction's ``pooling``)."""
    no_signature_hint: str = ""
    """What to tell a user whose pipeline's signature cannot be inferred as logged."""
    needs_pad_token: bool = False
    """Batches of this task pad; a tokenizer without a pad token pads with its end-of-sequence token."""
    engines: tuple[str, ...] = ("torch",)
    """Inference engines that can run this task's forward pass (encoder tasks add ``onnxruntime``)."""

    def infer(
        self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]
    ) -> InferredFunction | None:
        raise NotImplementedError

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def deterministic(self, params: dict[str, Any], settings: dict[str, Any]) -> bool:
        """Whether the same row, parameters and version always give the same result (so it may be cached).

        ``params`` are the call's resolved parameters, ``settings`` those the pipeline was logged with.
        """
        return True

    def cacheable(self, rows: Sequence[dict[str, Any]], params: dict[str, Any], settings: dict[str, Any]) -> list[bool]:
        """For each row, whether its result may come from (and go to) the result cache: by default every row
        of a deterministic call. A task whose rows carry their own controls decides row by row."""
        return [self.deterministic(params, settings)] * len(rows)

    def token_counter(self, model: Any) -> Any:
        """A callable giving the tokens ``model`` reads for a list of texts (usage reports, as OpenAI's
        ``usage.prompt_tokens``), or None where this task cannot say."""
        return None

    def sort_key(self, row: dict[str, Any]) -> int:
        """Rows are sorted by this before batching, so each batch pads little."""
        return sum(len(v) for v in row.values() if isinstance(v, str))

    def prepare(self, model: Any) -> None:
        """Adjust a freshly loaded model once, before its first batch (a pad token for batching)."""
        tokenizer = getattr(model, "tokenizer", None)
        if self.needs_pad_token and tokenizer is not None and tokenizer.pad_token_id is None:
            if tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token

    def serves(self, name: str) -> bool:
        """Whether this task runs pipelines logged under ``name`` (a family may accept a pattern)."""
        return name in self.names

    def resolve_task(self, task: str, config: Any) -> str:
        """The task a model runs under when logged as ``task`` (a family name may mean a specific one)."""
        return task

    def model_class(self, config: Any) -> str | None:
        """The ``transformers`` Auto class this task runs on itself, or None when a pipeline runs it."""
        return None

    @property
    def runs_itself(self) -> bool:
        """Whether duckreg runs this task on an Auto model class (the task overrides ``model_class``)."""
        return type(self).model_class is not Task.model_class

    def coerce_input(self, spec: Any, value: Any) -> Any:
        """Turn an accepted alternative form of an input into the signature's form (default: as is)."""
        return value


def declared(
    name: str, dtype: Any, library_default: Any, settings: dict[str, Any], shape: tuple[int, ...] | None = None
) -> Any:
    """A task's runtime parameter whose default is the value the pipeline was logged with, else the
    library's own default (what Snowflake declares): a declared default never overrides a logged setting."""
    from duckreg.model_signature import ParamSpec

    return ParamSpec(name, dtype, settings.get(name, library_default), shape=shape)


def string_to_json(input_name: str = "inputs", output_name: str = "outputs") -> InferredFunction:
    """The seeds' shape for tasks that return nested results: one STRING in, one JSON STRING out."""
    from duckreg.model_signature import DataType, FeatureSpec

    signature = ModelSignature(
        inputs=[FeatureSpec(name=input_name, dtype=DataType.STRING)],
        outputs=[FeatureSpec(name=output_name, dtype=DataType.STRING)],
    )
    return InferredFunction(signature, json_outputs=frozenset({output_name}))


def as_result_list(result: Any) -> list[Any]:
    """One result per input, for tasks whose per-input result is a dict (one dict alone is wrapped)."""
    return [result] if isinstance(result, dict) else list(result)


def as_nested_result_list(result: Any, count: int) -> list[Any]:
    """One result per input, for tasks whose per-input result is a list of dicts.

    Pipelines drop the outer list for a single input; put it back.
    """
    if count == 1 and isinstance(result, list) and (not result or isinstance(result[0], dict)):
        return [result]
    return list(result)


def no_grad() -> AbstractContextManager[Any]:
    """Torch's inference mode when torch is in the process; nothing otherwise (an engine that computes in
    numpy never imports torch, and a torch model cannot exist without it)."""
    torch = sys.modules.get("torch")
    return torch.inference_mode() if torch is not None else nullcontext()


def tensor_kind(model: Any) -> str:
    """What the model's tokenizer should return and its forward pass takes: ``"np"`` for a model that
    computes in numpy (an ONNX export loaded without torch), else torch's ``"pt"``."""
    return getattr(model, "tensors", "pt")


def to_numpy(value: Any) -> Any:
    """A float32 numpy array of a model output (a torch tensor on any device, or numpy already)."""
    if isinstance(value, np.ndarray):
        return value.astype(np.float32, copy=False)
    return value.float().cpu().numpy()
