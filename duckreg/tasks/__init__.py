"""The task table: pipeline task name -> the module that infers its signature and runs it.

Each module in this package exports ``TASK`` (a ``Task``, or a tuple for a family such as
text2text-generation) whose ``names`` build the table below, so adding a task is adding one module
to this package. Aliases transformers accepts (``sentiment-analysis``) are kept apart, as
transformers keeps ``TASK_ALIASES``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from duckreg.function_spec import Implementation
from duckreg.model_signature import ModelSignature
from duckreg.tasks import generic, openai_chat
from duckreg.tasks.base import InferredFunction, InputError, RunContext, Task, TaskModel


def _task_modules() -> list[ModuleType]:
    """Every module of this package that exports a ``TASK`` (helpers start with ``_`` or export none)."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            if hasattr(module, "TASK"):
                found.append(module)
    return found


def _build_table() -> tuple[dict[str, Task], dict[str, str]]:
    tasks: dict[str, Task] = {}
    aliases: dict[str, str] = {}
    for module in _task_modules():
        served = module.TASK if isinstance(module.TASK, tuple) else (module.TASK,)
        for task in served:
            for name in task.names:
                if name in tasks:
                    raise RuntimeError(f"Task {name!r} is served by two modules: {module.__name__} and another.")
                tasks[name] = task
            for alias in task.aliases:
                aliases[alias] = task.names[0]
    return tasks, aliases


TASKS, TASK_ALIASES = _build_table()
"""Pipeline task name -> its ``Task``; alias -> the task name it stands for."""

GENERIC: Task = generic.TASK

# Implementations a user signature selects rather than the task: implementation -> (matches(task, signature), task).
SIGNATURE_IMPLEMENTATIONS = {Implementation.OPENAI_CHAT: (openai_chat.matches, openai_chat.TASK)}


def get_task(name: str) -> Task | None:
    """The task for an exact (case-sensitive) pipeline task name or alias, or None."""
    name = TASK_ALIASES.get(name, name) if name else ""
    found = TASKS.get(name)
    if found is not None:
        return found
    return next((task for task in TASKS.values() if task.serves(name)), None)


def implementation_for_signature(task: str, signature: ModelSignature) -> Implementation | None:
    """The implementation a user signature selects on this task, if any (OpenAI chat on text-generation)."""
    return next((kind for kind, (matches, _) in SIGNATURE_IMPLEMENTATIONS.items() if matches(task, signature)), None)


def task_for(implementation: Implementation, task_name: str) -> Task:
    """The ``Task`` that computes a stored function of a pipeline version."""
    if implementation is Implementation.TASK:
        return get_task(task_name) or GENERIC
    if implementation is Implementation.GENERIC:
        return GENERIC
    if implementation in SIGNATURE_IMPLEMENTATIONS:
        return SIGNATURE_IMPLEMENTATIONS[implementation][1]
    raise ValueError(f"A pipeline has no {implementation.value!r} functions.")


__all__ = [
    "GENERIC",
    "TASKS",
    "TASK_ALIASES",
    "InferredFunction",
    "InputError",
    "RunContext",
    "Task",
    "TaskModel",
    "get_task",
    "implementation_for_signature",
    "task_for",
]
