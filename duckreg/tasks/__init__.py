"""The task table: pipeline task name -> the module that infers its signature and runs it.

Adding a task is one module in this package plus one row here.
"""

from __future__ import annotations

import re

from duckreg.model_signature import ModelSignature
from duckreg.tasks import (
    conversational,
    feature_extraction,
    fill_mask,
    generic,
    image_classification,
    openai_chat,
    question_answering,
    seq2seq,
    speech_recognition,
    table_question_answering,
    text_classification,
    text_generation,
    token_classification,
    zero_shot_classification,
)
from duckreg.tasks.base import InferredFunction, InputError, RunContext, Task, TaskModel

TASKS: dict[str, Task] = {
    "automatic-speech-recognition": speech_recognition.TASK,
    "conversational": conversational.TASK,
    "fill-mask": fill_mask.TASK,
    "image-classification": image_classification.TASK,
    "question-answering": question_answering.TASK,
    "summarization": seq2seq.SUMMARIZATION,
    "table-question-answering": table_question_answering.TASK,
    "text2text-generation": seq2seq.TEXT2TEXT,
    "text-classification": text_classification.TASK,
    "sentiment-analysis": text_classification.TASK,
    "text-generation": text_generation.TASK,
    "token-classification": token_classification.TASK,
    "ner": token_classification.TASK,
    "translation": seq2seq.TRANSLATION,
    "zero-shot-classification": zero_shot_classification.TASK,
    "feature-extraction": feature_extraction.TASK,
}
# translation_xx_to_yy for any two-letter language codes.
_TRANSLATION_PAIR = re.compile(r"translation_[a-z]{2}_to_[a-z]{2}")

# Runners chosen by a user signature rather than by the task: (name, matches(task, signature), runner).
SIGNATURE_RUNNERS: dict[str, tuple] = {
    "openai-chat": (openai_chat.matches, openai_chat.TASK),
}

GENERIC: Task = generic.TASK


def get_task(name: str) -> Task | None:
    """The task module for an exact (case-sensitive) pipeline task name, or None."""
    if _TRANSLATION_PAIR.fullmatch(name or ""):
        return seq2seq.TRANSLATION
    return TASKS.get(name)


def signature_runner(task: str, signature: ModelSignature) -> str | None:
    """The name of the runner a user signature selects on this task, if any."""
    return next((name for name, (matches, _) in SIGNATURE_RUNNERS.items() if matches(task, signature)), None)


def get_runner(name: str) -> Task:
    """The runner a stored function names: ``generic``, ``custom`` or a signature runner."""
    if name == "generic":
        return GENERIC
    if name == "custom":
        from duckreg.custom import RUNNER

        return RUNNER
    return SIGNATURE_RUNNERS[name][1]


__all__ = [
    "GENERIC",
    "TASKS",
    "InferredFunction",
    "InputError",
    "RunContext",
    "Task",
    "TaskModel",
    "get_runner",
    "get_task",
    "signature_runner",
]
