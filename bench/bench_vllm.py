"""Tokens/s of chat on the vllm engine against transformers, through SQL and run_batch, in one run.

Measured on the same rows: ``SELECT chat(messages) FROM convs`` on a version logged on transformers and
on one logged on vLLM (the result cache off), run_batch on the local and the vllm engine, structured
output (a JSON schema) against free text on both engines, and with ``--ray`` a job on 1 and 2 vLLM
replicas (Ray actors on this machine).

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
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import transformers
from _machine import cpu_description

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
    parser.add_argument("--structured-rows", type=int, default=64, help="rows of the structured-output runs")
    parser.add_argument("--ray", action="store_true", help="also run the job on 1 and 2 vLLM replicas on Ray")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    # Greedy answers are kept in the result cache; every run here must compute its rows.
    os.environ["DUCKREG_RESULT_CACHE_BYTES"] = "0"
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
        fast = registry.log_model(transformers.pipeline("text-generation", model=str(folder)), model_name="chat",
                                  version_name="on_vllm", options={"engine": "vllm",
                                                                   "engine_args": {"max_model_len": 512}})  # fmt: skip
        con = registry.register_functions()
        con.execute("SET VARIABLE duckreg_cache = false")
        con.execute(
            "CREATE TABLE convs AS SELECT i, [{'role': 'system', 'content': [{'type': 'text', 'text': 'You are an "
            "expert on cats and kitchens.'}]}, {'role': 'user', 'content': [{'type': 'text', 'text': 'Tell me about ' "
            "|| (?)[i % 8 + 1] || ', question ' || i || '.'}]}] AS messages FROM range(?) t(i)",
            [topics, args.rows],
        )

        def sql(version: str, rows: int | None = None, schema: str | None = None) -> tuple[float, int, list[str]]:
            """One query over the table, the result cache off; (seconds, completion tokens, texts)."""
            fmt = ", response_format := {'type': 'json_schema', 'json_schema': {'name': 'a', 'schema': ?}}"
            controls = f"temperature := 0.0, max_completion_tokens := {args.new_tokens}{fmt if schema else ''}"
            source = f"(FROM convs ORDER BY i LIMIT {rows or args.rows})"
            query = f"SELECT chat__{version}(messages, {controls}) AS r FROM {source}"
            start = time.perf_counter()
            out = con.execute(query, [schema] if schema else []).fetchall()
            elapsed = time.perf_counter() - start
            return (elapsed, sum(r[0]["usage"]["completion_tokens"] for r in out),
                    [r[0]["choices"][0]["message"]["content"] for r in out])  # fmt: skip

        sql("on_vllm", rows=4)  # the vLLM version's engine starts
        sql_local_s, sql_local_tokens, sql_local_texts = sql(mv.version_name)
        sql_vllm_s, sql_vllm_tokens, sql_vllm_texts = sql(fast.version_name)
        rate = {
            "run_batch, local engine (transformers)": local_tokens / local_s,
            "run_batch, vllm engine": vllm_tokens / vllm_s,
            "SQL chat(), version on transformers": sql_local_tokens / sql_local_s,
            "SQL chat(), version on vllm": sql_vllm_tokens / sql_vllm_s,
        }
        for name, value in rate.items():
            print(f"{name:<40} {value:9.1f} tokens/s")
        sql_ratio = rate["SQL chat(), version on vllm"]
        same = sum(a == b for a, b in zip(sql_local_texts, sql_vllm_texts, strict=True))
        print(f"SQL: vllm / transformers {sql_ratio / rate['SQL chat(), version on transformers']:.2f}x, "
              f"vllm SQL / vllm run_batch {sql_ratio / rate['run_batch, vllm engine']:.2f}x; "
              f"same text on {same}/{args.rows} rows")  # fmt: skip
        same = sum(a == b for a, b in zip(local_texts, vllm_texts, strict=True))
        batch_ratio = rate["run_batch, vllm engine"] / rate["run_batch, local engine (transformers)"]
        print(f"run_batch: vllm / local {batch_ratio:.2f}x; same text on {same}/{args.rows} rows")
        properties = {"topic": {"enum": topics}, "rating": {"enum": [1, 2, 3]}}
        schema = json.dumps({"type": "object", "properties": properties, "required": list(properties),
                             "additionalProperties": False})  # fmt: skip
        rows = args.structured_rows
        for version in (mv.version_name, fast.version_name):
            free_s, free_tokens, _ = sql(version, rows=rows)
            held_s, held_tokens, texts = sql(version, rows=rows, schema=schema)
            valid = sum(_valid(t, schema) for t in texts)
            print(f"structured output, {version}: {valid}/{rows} answers valid; "
                  f"{held_tokens / held_s:.1f} vs {free_tokens / free_s:.1f} tokens/s free "
                  f"({(held_s / held_tokens) / (free_s / free_tokens):.2f}x the time per token)")  # fmt: skip
        if args.ray:
            _ray_replicas(mv, frame, spec, vllm_options, root, args.rows)


def _ray_replicas(mv, frame, spec, vllm_options, root: Path, rows: int) -> None:
    """The same job on 1 and 2 vLLM replicas, Ray actors on this machine sharing its CPUs."""
    import ray

    from duckreg.batch import JobSpec, OutputSpec

    cpus = os.cpu_count() or 2
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    try:
        for replicas in (1, 2):
            # Each replica takes its share of the CPUs, less a quarter left for Ray Data's own tasks.
            job_spec = JobSpec(block=True, replicas=replicas, max_batch_rows=max(1, rows // 8),
                               cpu_requests=str(cpus / replicas - 0.25))  # fmt: skip
            start = time.perf_counter()
            options = {**vllm_options, "address": "auto"}
            done = mv.run_batch(frame, output_spec=OutputSpec(f"@out/ray{replicas}/"), input_spec=spec,
                                job_spec=job_spec, inference_engine_options=options)  # fmt: skip
            elapsed = time.perf_counter() - start
            assert done.status == "DONE", done.message
            out = pq.read_table(root / "out" / f"ray{replicas}").to_pandas()
            tokens = int(sum(u["completion_tokens"] for u in out["usage"]))
            print(f"Ray, {replicas} vLLM replica(s): {elapsed:.1f} s including engine starts, "
                  f"{rows / elapsed:.1f} rows/s, {tokens / elapsed:.1f} tokens/s")  # fmt: skip
    finally:
        ray.shutdown()


def _valid(text: str, schema: str) -> bool:
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        return False
    properties = json.loads(schema)["properties"]
    return set(answer) == set(properties) and all(answer[k] in v["enum"] for k, v in properties.items())


if __name__ == "__main__":
    main()
