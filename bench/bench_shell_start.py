"""How long `duckreg shell` takes to be ready, and to answer a first model query, on a registry with
many logged versions (the shell registers only the models a statement names).

    .venv/bin/python bench/bench_shell_start.py --models 10 --versions 5
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_description

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--versions", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    import tiny_models
    import transformers

    import duckreg

    transformers.utils.logging.set_verbosity_error()
    root = Path(tempfile.mkdtemp())
    folder = tiny_models.bert_text_classification(root / "model")
    pipe = transformers.pipeline("text-classification", model=str(folder))
    registry = duckreg.Registry(str(root / "many.duckdb"))
    for m in range(args.models):
        for v in range(args.versions):
            registry.log_model(pipe, model_name=f"model_{m}", version_name=f"v{v}")
    registry.connection.close()
    shell = str(Path(sys.executable).with_name("duckreg"))
    db = str(root / "many.duckdb")
    timings = {}
    for label, script in [
        ("ready (.quit)", ".quit\n"),
        ("first model query", "SELECT model_3('I like you.').label;\n"),
    ]:
        start = time.perf_counter()
        done = subprocess.run([shell, "shell", db], input=script, capture_output=True, text=True, check=True)
        timings[label] = time.perf_counter() - start
        assert "Error" not in done.stderr, done.stderr
    total = args.models * args.versions
    for label, seconds in timings.items():
        print(f"{total} versions, shell {label}: {seconds:.2f} s (process start to exit)")


if __name__ == "__main__":
    main()
