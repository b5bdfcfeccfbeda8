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


def race(contenders: dict[str, tuple[str, Callable[[], object]]], rows: int, rounds: int = 1) -> dict[str, float]:
    """Run every contender once per round, in turn, and return each one's best rows/s by key.

    Taking turns spreads a busy moment of a small machine over all of them instead of one; the best
    of several rounds is what each can do.
    """
    best: dict[str, float] = {}
    for _ in range(rounds):
        for key, (_, fn) in contenders.items():
            start = time.perf_counter()
            fn()
            best[key] = min(best.get(key, float("inf")), time.perf_counter() - start)
    for key, (label, _) in contenders.items():
        print(f"{label:<44} {best[key]:7.1f} s {rows / best[key]:8.2f} rows/s", flush=True)
    return {key: rows / elapsed for key, elapsed in best.items()}
