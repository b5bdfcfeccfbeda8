"""Model handlers: one module per kind of model ``log_model`` accepts (dispatch by the model, then by name).

``find_handler(model)`` picks the handler for an object being logged; ``handler_for(model_type)``
the one that loads a stored version. A new kind is a module here with a ``HANDLER`` and one entry
in ``HANDLERS``.
"""

from __future__ import annotations

from typing import Any

from duckreg.model_handlers import custom, huggingface
from duckreg.model_handlers.base import ModelHandler

HANDLERS: tuple[ModelHandler, ...] = (custom.HANDLER, huggingface.HANDLER)


def find_handler(model: Any) -> ModelHandler:
    """The handler for ``model`` as given to ``log_model``; a ``TypeError`` naming what is accepted otherwise."""
    for handler in HANDLERS:
        if handler.can_handle(model):
            return handler
    raise TypeError(
        f"Cannot log a {type(model).__name__}: log_model takes a transformers.Pipeline, a "
        "duckreg.huggingface.TransformersPipeline or a duckreg.custom.CustomModel."
    )


def handler_for(model_type: str) -> ModelHandler:
    """The handler that saved versions of ``model_type`` (from their manifest)."""
    for handler in HANDLERS:
        if handler.model_type == model_type:
            return handler
    raise ValueError(
        f"No model handler for model type {model_type!r}; this duckreg knows {[h.model_type for h in HANDLERS]}."
    )
