"""What a benchmark ran on, and the roof its contenders are held against: the CPU, its measured GEMM peak,
and an encoder's FLOPs per row."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable


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


def _best_rate(product: Callable[[], object], size: int, rounds: int) -> float:
    product()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def gemm_peaks(size: int = 2048, rounds: int = 5) -> dict[str, float]:
    """GFLOP/s of a square matrix product on every core, by library: ONNX Runtime's MLAS, numpy's BLAS and
    torch in fp32, torch in bf16. The best fp32 one is the practical roof of a dense encoder here (its
    MatMuls are GEMMs of smaller shapes, so a forward pass reaches less)."""
    import numpy as np
    import onnxruntime
    import torch
    from onnx import TensorProto, helper

    a, b = (np.random.default_rng(seed).random((size, size), dtype=np.float32) for seed in (0, 1))
    spec = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in "abc"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ha, hb = ta.bfloat16(), tb.bfloat16()
    return {
        "ONNX Runtime fp32": _best_rate(lambda: session.run(None, {"a": a, "b": b}), size, rounds),
        "numpy fp32": _best_rate(lambda: a @ b, size, rounds),
        "torch fp32": _best_rate(lambda: torch.mm(ta, tb), size, rounds),
        "torch bf16": _best_rate(lambda: torch.mm(ha, hb), size, rounds),
    }


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


def roofline(rates: dict[str, float], labels: dict[str, str], flops_per_row: float) -> None:
    """Print the measured GEMM peaks, then each contender's achieved GFLOP/s and its share of the best fp32 one."""
    peaks = gemm_peaks()
    peak = max(rate for name, rate in peaks.items() if name.endswith("fp32"))
    measured = ", ".join(f"{name} {rate:.0f}" for name, rate in peaks.items())
    print(f"\nroofline: {flops_per_row / 1e9:.3f} GFLOP per row; 2048x2048 GEMM here, GFLOP/s: {measured}")
    print("| | GFLOP/s | share of the fp32 GEMM peak |\n|---|---|---|")
    for key, rate in rates.items():
        achieved = rate * flops_per_row / 1e9
        print(f"| {labels[key]} | {achieved:.0f} | {achieved / peak:.0%} |")


def peak_memory_mib() -> float:
    """This process's peak resident memory so far."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
