"""Process-wide runtime: one cache of loaded model versions and one compute lock per device.

DuckDB calls a UDF from several threads at once and torch releases the GIL, so without care every
thread would load its own copy of a model and oversubscribe the cores. Here a version loads once per
process (whatever the number of connections, cursors or queries), and inference on a device runs
one batch at a time with torch using every core.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_DEFAULT_BUDGET = 8 * 1024**3


@dataclass
class LoadedModel:
    """A model version ready to run: the object, its device and its memory footprint."""

    model: Any
    nbytes: int
    device: str
    closed: bool = False
    """Set when the cache evicted it and released what it holds (a vLLM engine): load it again to use it."""
    solo: str | None = None
    """The kind of model a process holds one of at a time (``ModelCache.get(solo=...)``)."""

    def release(self) -> None:
        """Free what the model holds beyond Python references (a vLLM engine's KV cache), once."""
        self.closed = True
        close = getattr(self.model, "close", None)
        if callable(close):
            close()


class ModelCache:
    """LRU cache of loaded versions, bounded by an approximate byte budget."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._sizes: dict[str, int] = {}
        self.loads = 0

    def get(self, key: str, loader: Callable[[], LoadedModel], *, solo: str | None = None) -> LoadedModel:
        """The loaded model of ``key``, loading it with ``loader`` once (whatever the number of threads asking).

        ``solo`` names a kind of model of which a process holds one at a time (vLLM keeps its parallel state
        in the process): loading one first releases the other, and loads of that kind run one at a time.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry
            key_lock = self._loading.setdefault(f"solo:{solo}" if solo else key, threading.Lock())
        with key_lock:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None:
                    return entry
                # Room first: a model that holds memory outside Python (vLLM) must be gone before the next loads.
                evicted = self._evict_over_budget(keep=None, incoming=self._estimate(key))
                if solo:
                    evicted += [self._entries.pop(k) for k, e in list(self._entries.items()) if e.solo == solo]
            _release(evicted)
            entry = loader()
            entry.solo = solo
            with self._lock:
                self.loads += 1
                self._entries[key] = entry
                if not solo:
                    self._loading.pop(key, None)
                self._sizes[key.partition("#")[0]] = entry.nbytes
                evicted = self._evict_over_budget(keep=key)
            _release(evicted)
            return entry

    def _estimate(self, key: str) -> int:
        """What loading ``key`` will take, as last measured for its folder (0 when never loaded here)."""
        return self._sizes.get(key.partition("#")[0], 0)

    def _evict_over_budget(self, keep: str | None, incoming: int = 0) -> list[LoadedModel]:
        """Drop least recently used entries until the cache (plus ``incoming`` bytes) fits; returns them."""
        evicted = []
        while self._entries and sum(e.nbytes for e in self._entries.values()) + incoming > self.budget_bytes:
            candidates = [k for k in self._entries if k != keep]
            if not candidates:
                break
            evicted.append(self._entries.pop(candidates[0]))
        return evicted

    def discard(self, key_prefix: str) -> None:
        """Forget every entry whose key starts with ``key_prefix`` (a deleted version)."""
        with self._lock:
            evicted = [self._entries.pop(k) for k in [k for k in self._entries if k.startswith(key_prefix)]]
        _release(evicted)

    def clear(self) -> None:
        with self._lock:
            evicted = list(self._entries.values())
            self._entries.clear()
        _release(evicted)

    def resident_bytes(self) -> int:
        """The bytes the loaded models take, as measured when each loaded."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def _release(evicted: list[LoadedModel]) -> None:
    """Release evicted models outside the cache's lock, each on its device's lock: one running a batch
    finishes it first."""
    for entry in evicted:
        with device_lock(entry.device):
            entry.release()


CACHE = ModelCache(int(os.environ.get("DUCKREG_CACHE_BYTES", _DEFAULT_BUDGET)))

_device_locks: dict[str, threading.Lock] = {}
_device_locks_guard = threading.Lock()
_threads_configured = False


def device_lock(device: str) -> threading.Lock:
    """One lock per device: batches on a device run one after another, each using all its cores."""
    with _device_locks_guard:
        return _device_locks.setdefault(device, threading.Lock())


def configure_torch_threads() -> None:
    """Give torch every core once (``DUCKREG_TORCH_THREADS``, else ``OMP_NUM_THREADS``, overrides); batches
    are serialised."""
    global _threads_configured
    if _threads_configured:
        return
    import torch

    torch.set_num_threads(compute_threads())
    _threads_configured = True


def compute_threads() -> int:
    """Threads one forward pass computes with: ``DUCKREG_TORCH_THREADS``, else ``OMP_NUM_THREADS`` (a Ray
    actor's share of the CPUs arrives there), else every core."""
    return int(os.environ.get("DUCKREG_TORCH_THREADS") or os.environ.get("OMP_NUM_THREADS") or 0) or (
        os.cpu_count() or 1
    )


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` torch threads (a batch job's ``cpu_requests``), restoring the number after."""
    if count is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_nbytes(model: Any) -> int:
    """Parameter and buffer bytes of a torch module, an engine module's own figure, 0 for anything else."""
    inner = getattr(model, "model", model)
    if isinstance(getattr(inner, "nbytes", None), int):
        return inner.nbytes  # a module another engine runs reports its own size
    try:
        tensors = list(inner.parameters()) + list(inner.buffers())
    except AttributeError:
        return 0
    return sum(t.numel() * t.element_size() for t in tensors)
