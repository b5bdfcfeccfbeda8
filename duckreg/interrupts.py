"""Stopping model work between forward batches: Ctrl-C on a statement, a job's cancel, a process exit.

DuckDB's own interrupt takes effect only when a UDF returns, and a UDF gets up to 2,048 rows, which a
cold model or a generator may take minutes over. The inference core therefore asks ``check()``
before each forward batch. What it asks depends on the thread: a batch job's thread answers to that
job's cancel event (``for_job``), every other thread to the statement interrupt that the shell and
the CLI raise on Ctrl-C (``statement_interrupt``). A background job is never stopped by Ctrl-C on
another statement.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_STATEMENT = threading.Event()
_JOB = threading.local()


class Interrupted(Exception):
    """Raised between forward batches once the work was asked to stop."""


def request() -> None:
    """Ask every running statement of this process to stop at its next forward batch (Ctrl-C)."""
    _STATEMENT.set()


def requested() -> bool:
    """Whether the statement interrupt is raised."""
    return _STATEMENT.is_set()


@contextmanager
def statement_interrupt() -> Iterator[None]:
    """The span of one statement: an interrupt raised in it ends with it."""
    _STATEMENT.clear()
    try:
        yield
    finally:
        _STATEMENT.clear()


@contextmanager
def for_job(cancel: threading.Event) -> Iterator[None]:
    """Model work in this thread stops when ``cancel`` is set, and not on a statement interrupt."""
    previous = getattr(_JOB, "cancel", None)
    _JOB.cancel = cancel
    try:
        yield
    finally:
        _JOB.cancel = previous


def check(where: str) -> None:
    """Raise ``Interrupted`` if the work in this thread was asked to stop."""
    cancel = getattr(_JOB, "cancel", None)
    if cancel.is_set() if cancel is not None else _STATEMENT.is_set():
        raise Interrupted(f"{where}: interrupted")


def describe(exc: BaseException) -> str:
    """An error as the shell shows it: a statement stopped by Ctrl-C reads as DuckDB's own interrupt."""
    text = str(exc)
    if type(exc).__name__ == "InterruptException" or "Interrupted: " in text or text.endswith(": interrupted"):
        return "INTERRUPT Error: Interrupted!"
    return text
