"""Batching across requests: rows of concurrent requests to one function go through one forward batch.

A server hands each request's rows to ``RequestBatcher.submit`` and waits on the future it returns. Rows for
the same function of the same version with the same parameters queue together; one worker thread takes the
oldest queue once its first request has waited ``window`` seconds (or at once when ``max_rows`` rows wait),
runs them through the inference core in one call (so de-duplication and the result cache apply as in SQL),
and answers each request with its own rows. 32 clients sending one row each cost about one batched call.

A request whose rows fail is answered alone: its rows run again by themselves, so its error names its own
row numbers, and the other requests of the batch keep their answers.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from duckreg.inference import FunctionRunner
from duckreg.values import freeze

Listeners = Mapping[int, Callable[[int, str], None]]


@dataclass
class _Pending:
    columns: Sequence[Sequence[Any]]
    rows: int
    future: Future
    arrived: float
    listeners: Listeners | None = None


@dataclass
class _Queue:
    key: Any
    runner: FunctionRunner
    params: dict[str, Any] | None
    waiting: deque[_Pending] = field(default_factory=deque)


class RequestBatcher:
    """Gathers the rows of concurrent requests into forward batches (see the module docstring)."""

    def __init__(self, window: float = 0.005, max_rows: int = 256, on_batch: Any = None) -> None:
        """``window``: seconds a request may wait for others to join it (0: each request runs alone, at once,
        on the caller's thread). ``max_rows``: the most rows one batch takes. ``on_batch(rows, requests)`` is
        called after each batch (for metrics)."""
        if window < 0 or max_rows < 1:
            raise ValueError(f"batch window must be >= 0 and max rows >= 1, got {window} and {max_rows}")
        self.window = window
        self.max_rows = max_rows
        self._on_batch = on_batch
        self._queues: dict[Any, _Queue] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._worker: threading.Thread | None = None

    def submit(
        self,
        runner: FunctionRunner,
        columns: Sequence[Sequence[Any]],
        params: dict[str, Any] | None = None,
        listeners: Listeners | None = None,
    ) -> Future:
        """A future of ``columns``' output rows (one dict per row, None for a NULL row), or of the
        ``ValueError`` that names the failing row (numbered within this request). ``listeners`` (by row of
        this request) follow generated answers as they are made, from the worker thread."""
        future: Future = Future()
        rows = len(columns[0]) if columns else 0
        if self.window == 0:
            self._run_alone(runner, columns, params, future, listeners)
            return future
        key = (id(runner), freeze(params or {}))
        with self._lock:
            if self._closed:
                raise RuntimeError("The server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(key, runner, params)
            queue.waiting.append(_Pending(columns, rows, future, time.monotonic(), listeners))
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="duckreg-batcher", daemon=True)
                self._worker.start()
            self._lock.notify_all()
        return future

    def close(self) -> None:
        """Answer what is queued, then stop the worker."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._worker is not None:
            self._worker.join()

    # ----------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._lock:
                chosen = self._next_batch()
                if chosen is None:
                    return
            queue, batch = chosen
            self._run(queue, batch)

    def _next_batch(self) -> tuple[_Queue, list[_Pending]] | None:
        """Under the lock: wait for the oldest queue's window to pass (or its rows to fill a batch) and take up
        to ``max_rows`` rows from it; None once closed with nothing left."""
        while True:
            queues = list(self._queues.values())  # each holds a request: an emptied queue is dropped
            if not queues:
                if self._closed:
                    return None
                self._lock.wait()
                continue
            oldest = min(queues, key=lambda q: q.waiting[0].arrived)
            due = oldest.waiting[0].arrived + self.window
            waiting_rows = sum(p.rows for p in oldest.waiting)
            now = time.monotonic()
            if now < due and waiting_rows < self.max_rows and not self._closed:
                self._lock.wait(due - now)
                continue
            batch, rows = [], 0
            while oldest.waiting and (not batch or rows + oldest.waiting[0].rows <= self.max_rows):
                pending = oldest.waiting.popleft()
                batch.append(pending)
                rows += pending.rows
            if not oldest.waiting:  # one queue per function and parameters: many parameters must not pile up
                del self._queues[oldest.key]
            return oldest, batch

    def _run(self, queue: _Queue, batch: list[_Pending]) -> None:
        width = len(batch[0].columns)
        columns = [[value for pending in batch for value in pending.columns[i]] for i in range(width)]
        listeners, start = {}, 0
        for pending in batch:
            listeners.update({start + row: listener for row, listener in (pending.listeners or {}).items()})
            start += pending.rows
        errors: dict[int, str] = {}
        try:
            results = queue.runner.run(columns, queue.params, errors=errors, listeners=listeners or None)
        except Exception as exc:  # noqa: BLE001 - each waiting request hears it; the worker must live on
            for pending in batch:
                pending.future.set_exception(exc)
            return
        start, failing = 0, []
        for pending in batch:
            if any(row in errors for row in range(start, start + pending.rows)):
                failing.append(pending)
            else:
                pending.future.set_result(results[start : start + pending.rows])
            start += pending.rows
        for pending in failing:  # after the others have their answers
            self._run_alone(queue.runner, pending.columns, queue.params, pending.future, pending.listeners)
        if self._on_batch is not None:
            self._on_batch(start, len(batch))

    def _run_alone(
        self,
        runner: FunctionRunner,
        columns: Sequence[Sequence[Any]],
        params: dict[str, Any] | None,
        future: Future,
        listeners: Listeners | None = None,
    ) -> None:
        try:
            future.set_result(runner.run(columns, params, listeners=listeners))
        except Exception as exc:  # noqa: BLE001 - the request hears it; the worker must live on
            future.set_exception(exc)
        if self._on_batch is not None:
            self._on_batch(len(columns[0]) if columns else 0, 1)
