"""Page load times of `duckreg ui`: on the quickstart registry, and on one model with many versions.

Each page is loaded in headless Chromium (Debian's, through Playwright) until its load event; the
median of several loads is reported, with the server's own answer time (HTTP, no browser) beside it.

    .venv/bin/python examples/quickstart/quickstart.py
    .venv/bin/python bench/bench_ui.py --versions 50
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _machine import cpu_description

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart" / "quickstart.duckdb"


def measure(registry, pages: list[str], loads: int) -> None:
    from playwright.sync_api import sync_playwright

    from duckreg import ui

    server = ui.start(registry)
    base = server.url.rstrip("/")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            page = browser.new_page()
            for path in pages:
                page.goto(base + path)  # warm: templates compiled, catalog read once
                http, browser_ms = [], []
                for _ in range(loads):
                    start = time.perf_counter()
                    urllib.request.urlopen(base + path, timeout=60).read()
                    http.append((time.perf_counter() - start) * 1000)
                    start = time.perf_counter()
                    page.goto(base + path, wait_until="load")
                    browser_ms.append((time.perf_counter() - start) * 1000)
                print(f"  {path:<44} browser {statistics.median(browser_ms):7.1f} ms   "
                      f"server {statistics.median(http):7.1f} ms", flush=True)  # fmt: skip
            browser.close()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--loads", type=int, default=7)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    import tiny_models
    import transformers

    import duckreg

    transformers.utils.logging.set_verbosity_error()
    if QUICKSTART.exists():
        registry = duckreg.Registry(str(QUICKSTART))
        print(f"quickstart registry ({QUICKSTART.name}: 1 model, 1 version)")
        measure(registry, ["/", "/models/minilm", "/models/minilm/versions/v1", "/models/minilm/compare", "/jobs",
                           "/stages"], args.loads)  # fmt: skip
        registry.connection.close()
    else:
        print(f"(no {QUICKSTART}: run examples/quickstart/quickstart.py first to time it)")
    root = Path(tempfile.mkdtemp())
    pipe = transformers.pipeline("text-classification", model=str(tiny_models.bert_text_classification(root / "m")))
    registry = duckreg.Registry(str(root / "many.duckdb"))
    for v in range(args.versions):
        mv = registry.log_model(pipe, model_name="sentiment", version_name=f"v{v + 1}")
        mv.set_metric("accuracy", 0.5 + v / (2 * args.versions))
    print(f"one model, {args.versions} versions with metrics")
    last = f"v{args.versions}"
    measure(registry, ["/", "/models/sentiment", f"/models/sentiment/versions/{last}", "/models/sentiment/compare",
                       "/jobs"], args.loads)  # fmt: skip
    registry.connection.close()
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
