"""Timing helper shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(label: str, rows: int, fn: Callable[[], object]) -> float:
    """Run ``fn`` once, print its time and rows/s, and return the rate."""
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    rate = rows / elapsed
    print(f"{label:<44} {elapsed:7.1f} s {rate:8.2f} rows/s", flush=True)
    return rate
