"""Tokens/s of run_batch on the vllm engine against the local (transformers) engine, in one run.

Model: the tiny Qwen2 chat model of the tests, or a larger one (``--hidden``, ``--layers``) of the
same shape, random weights, float32. Input: ``--rows`` chat conversations (system + user). Both
engines decode greedily (temperature 0) up to ``--new-tokens`` tokens per row, so they do the same
work and write the same text; completion tokens are counted from the jobs' ``usage`` column. The
vLLM load (import, engine start) is timed apart: a first vLLM job pays it, later ones in the process
do not. Needs vLLM (``.venv-vllm`` of ``scripts/test``):

    HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python bench/bench_vllm.py --rows 256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def build_model(folder: Path, hidden: int, layers: int) -> Path:
    import tiny_models

    tiny_models.qwen2_chat(folder)
    config = transformers.AutoConfig.from_pretrained(str(folder))
    if (hidden, layers) != (config.hidden_size, config.num_hidden_layers):
        config.hidden_size, config.num_hidden_layers = hidden, layers
        config.intermediate_size = hidden * 4
        config.num_attention_heads = hidden // 32
        config.num_key_value_heads = max(1, hidden // 64)
        config.layer_types = ["full_attention"] * layers
        transformers.Qwen2ForCausalLM(config).eval().save_pretrained(str(folder))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    import duckreg
    from duckreg.batch import InferenceEngine, InputSpec, JobSpec, OutputSpec

    transformers.utils.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = build_model(root / "model", args.hidden, args.layers)
        registry = duckreg.Registry(str(root / "bench.duckdb"))
        mv = registry.log_model(transformers.pipeline("text-generation", model=str(folder)), model_name="chat")
        registry.create_stage("out", str(root / "out"))
        import pandas as pd

        topics = ["cats", "kitchens", "bread", "rain", "trains", "gardens", "music", "the sea"]
        frame = pd.DataFrame({"messages": [json.dumps([
            {"role": "system", "content": "You are an expert on cats and kitchens."},
            {"role": "user", "content": f"Tell me about {topics[i % len(topics)]}, question {i}."},
        ]) for i in range(args.rows)]})  # fmt: skip
        spec = InputSpec(params={"temperature": 0.0, "max_completion_tokens": args.new_tokens})
        vllm_options = {"engine": InferenceEngine.VLLM, "engine_args_override": {"max_model_len": 512}}

        def job(name: str, **options: object) -> tuple[float, int, list[str]]:
            start = time.perf_counter()
            done = mv.run_batch(frame, output_spec=OutputSpec(f"@out/{name}/"), input_spec=spec,
                                job_spec=JobSpec(block=True), **options)  # fmt: skip
            elapsed = time.perf_counter() - start
            assert done.status == "DONE", done.message
            out = pq.read_table(root / "out" / name).to_pandas()
            texts = [c[0]["message"]["content"] for c in out["choices"]]
            return elapsed, int(sum(u["completion_tokens"] for u in out["usage"])), texts

        start = time.perf_counter()
        job("vllm_first", inference_engine_options=vllm_options)
        print(f"first vLLM job, including import and engine start: {time.perf_counter() - start:.1f} s")
        print(f"{args.rows} conversations, up to {args.new_tokens} new tokens, hidden {args.hidden} x {args.layers} "
              "layers, float32, greedy")  # fmt: skip
        local_s, local_tokens, local_texts = job("local")
        vllm_s, vllm_tokens, vllm_texts = job("vllm", inference_engine_options=vllm_options)
        print(f"{'local engine (transformers)':<34} {local_s:7.2f} s {local_tokens / local_s:9.1f} tokens/s")
        print(f"{'vllm engine':<34} {vllm_s:7.2f} s {vllm_tokens / vllm_s:9.1f} tokens/s")
        same = sum(a == b for a, b in zip(local_texts, vllm_texts, strict=True))
        print(f"vllm / local: {(vllm_tokens / vllm_s) / (local_tokens / local_s):.2f}x; "
              f"same text on {same}/{args.rows} rows; completion tokens {local_tokens} vs {vllm_tokens}")  # fmt: skip


if __name__ == "__main__":
    main()
