"""What a benchmark ran on, and the roof its contenders are held against: the CPU, its measured GEMM peak,
and an encoder's FLOPs per row."""

from __future__ import annotations

import os
import platform
import subprocess
import time


def cpu_description() -> str:
    """The CPU's model name, core count and the vector extensions that decide which engine wins."""
    name = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in info.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                name = value.strip()
            elif key.strip() == "Flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    extensions = ", ".join(flag for flag in wanted if flag in flags) or "no AVX2"
    return f"{name}, {os.cpu_count()} cores ({extensions})"


def gemm_peak_gflops(dtype: str = "float32", size: int = 2048, rounds: int = 5) -> float:
    """The best GFLOP/s of a square matrix product on every core torch uses: the practical roof of a dense
    encoder's forward pass on this CPU (its MatMuls are GEMMs of smaller shapes, so they reach less)."""
    import torch

    kind = getattr(torch, dtype)
    a = torch.randn(size, size).to(kind)
    b = torch.randn(size, size).to(kind)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def encoder_flops(config: object, tokens_per_row: list[int]) -> float:
    """Mean FLOPs per row of a BERT-style encoder forward pass: the projections and feed-forward MatMuls
    (2 FLOPs per multiply-add) plus attention's two products, at each row's own token count (padding
    excluded, so a contender that pads more does extra work this does not count)."""
    hidden = config.hidden_size
    ffn = config.intermediate_size
    layers = config.num_hidden_layers
    total = 0.0
    for tokens in tokens_per_row:
        dense = 2 * tokens * (4 * hidden * hidden + 2 * hidden * ffn)
        attention = 2 * 2 * tokens * tokens * hidden
        total += layers * (dense + attention)
    return total / len(tokens_per_row)


def roofline(rates: dict[str, float], labels: dict[str, str], flops_per_row: float, peak: float) -> None:
    """Print each contender's achieved GFLOP/s and its share of the measured fp32 GEMM peak."""
    print(f"\nroofline: {flops_per_row / 1e9:.3f} GFLOP per row; fp32 GEMM peak here {peak:.0f} GFLOP/s")
    print("| | GFLOP/s | share of fp32 peak |\n|---|---|---|")
    for key, rate in rates.items():
        achieved = rate * flops_per_row / 1e9
        print(f"| {labels[key]} | {achieved:.0f} | {achieved / peak:.0%} |")


def peak_memory_mib() -> float:
    """This process's peak resident memory so far."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
