"""The task table: pipeline task name -> the module that infers its signature and runs it.

Adding a task is one module in this package plus one row here.
"""

from __future__ import annotations

from duckreg.tasks import (
    feature_extraction,
    fill_mask,
    generic,
    table_question_answering,
    text_classification,
    text_generation,
    token_classification,
    zero_shot_classification,
)
from duckreg.tasks.base import InferredFunction, InputError, RunContext, Task

TASKS: dict[str, Task] = {
    "fill-mask": fill_mask.TASK,
    "token-classification": token_classification.TASK,
    "ner": token_classification.TASK,
    "text-classification": text_classification.TASK,
    "sentiment-analysis": text_classification.TASK,
    "zero-shot-classification": zero_shot_classification.TASK,
    "text-generation": text_generation.TASK,
    "table-question-answering": table_question_answering.TASK,
    "feature-extraction": feature_extraction.TASK,
}


GENERIC: Task = generic.TASK


def get_task(name: str) -> Task | None:
    """The task module for an exact (case-sensitive) pipeline task name, or None."""
    return TASKS.get(name)


__all__ = ["GENERIC", "TASKS", "InferredFunction", "InputError", "RunContext", "Task", "get_task"]
