"""Memory of one process that answers chat on several vLLM versions in turn: it holds one engine at a time.

Three chat models (the tests' Qwen2 shape, ``--hidden`` x ``--layers``, each in its own folder) are logged on the
vllm engine and each answers ``--rows`` conversations from SQL, twice round. Printed after each query: the
process's resident memory now and at its peak, and what the model cache holds. Run it under
``/usr/bin/time -v`` for the kernel's own peak figure. Needs vLLM (``.venv-vllm`` of ``scripts/test``):

    HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 /usr/bin/time -v .venv-vllm/bin/python bench/bench_vllm_memory.py
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
from pathlib import Path

import transformers
from _machine import cpu_description

sys.path.insert(0, str(Path(__file__).resolve().parent))


def resident_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    from bench_vllm import build_model

    import duckreg
    from duckreg import model_cache

    transformers.utils.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        registry = duckreg.Registry(str(root / "bench.duckdb"))
        for i in range(3):
            folder = build_model(root / f"model{i}", args.hidden, args.layers)
            pipe = transformers.pipeline("text-generation", model=str(folder))
            options = {"engine": "vllm", "engine_args": {"max_model_len": 512}}
            registry.log_model(pipe, model_name=f"chat{i}", version_name="v1", options=options)
        con = registry.register_functions()
        con.execute("SET VARIABLE duckreg_cache = false")
        con.execute(
            "CREATE TABLE convs AS SELECT i, [{'role': 'user', 'content': [{'type': 'text', 'text': "
            "'Question ' || i}]}] AS messages FROM range(?) t(i)",
            [args.rows],
        )
        print(f"model cache budget {model_cache.CACHE.budget_bytes / 2**30:.1f} GiB; {args.rows} rows per query")
        for round_ in range(2):
            for i in range(3):
                con.execute(f"SELECT chat{i}(messages, temperature := 0.0, max_completion_tokens := 16) FROM convs")
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                held = model_cache.CACHE.resident_bytes() / 2**20
                print(f"round {round_ + 1}, chat{i}: RSS {resident_mib():7.0f} MiB, peak {peak:7.0f} MiB, "
                      f"model cache holds {len(model_cache.CACHE)} model(s), {held:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
