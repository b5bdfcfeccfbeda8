"""Screenshots of ``duckreg ui`` for the README (docs/ui-*.png), taken in headless Chromium.

    .venv/bin/python examples/quickstart/quickstart.py          # the quickstart database
    .venv/bin/python scripts/ui_screenshots.py examples/quickstart/quickstart.duckdb

The version page is shown after a "try it" run, so the picture has a real result in it. The compare and
jobs pages are shown on a second registry made here: a tiny sentiment model in three versions with
metrics, and a batch job that has run.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pandas as pd
from playwright.sync_api import sync_playwright

import duckreg
from duckreg import ui

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database")
    parser.add_argument("--out", default=str(Path(__file__).parent.parent / "docs"))
    args = parser.parse_args()
    registry = duckreg.Registry(args.database)
    server = ui.start(registry)
    base = server.url.rstrip("/")
    model = registry.models()[0]
    version = model.default.version_name
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
            page.goto(base + "/")
            page.screenshot(path=f"{args.out}/ui-models.png")
            page.goto(f"{base}/models/{model.name}/versions/{version}")
            page.locator("form.try textarea").first.fill("DuckDB runs analytical SQL inside your process.")
            page.locator("form.try button[type=submit]").first.click()
            page.wait_for_selector(".result-rows", timeout=120_000)
            page.screenshot(path=f"{args.out}/ui-version.png")
            browser.close()
    finally:
        server.stop()
        registry.connection.close()
    demo_pages(args.out)
    print(f"wrote {args.out}/ui-models.png, ui-version.png, ui-compare.png and ui-jobs.png")


def demo_pages(out: str) -> None:
    """The compare and jobs pages, on a throwaway registry with metrics and a finished job."""
    import sys
    import tempfile

    import transformers

    from duckreg.batch import JobSpec, OutputSpec

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import tiny_models

    transformers.utils.logging.set_verbosity_error()
    root = Path(tempfile.mkdtemp())
    pipe = transformers.pipeline("text-classification", model=str(tiny_models.bert_text_classification(root / "m")))
    registry = duckreg.Registry(str(root / "shop.duckdb"))
    for i, (accuracy, f1) in enumerate([(0.81, 0.77), (0.86, 0.83), (0.9, 0.88)]):
        mv = registry.log_model(pipe, model_name="sentiment", version_name=f"v{i + 1}")
        mv.set_metric("accuracy", accuracy)
        mv.set_metric("f1", f1)
    registry.create_stage("out", str(root / "out"))
    frame = pd.DataFrame({"text": ["I like you.", "The food was bad."] * 500})
    mv.run_batch(frame, output_spec=OutputSpec("@out/scored/"), job_spec=JobSpec(max_batch_rows=100, block=True))
    server = ui.start(registry)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 780})
            page.goto(server.url.rstrip("/") + "/models/sentiment/compare")
            page.wait_for_selector("#metrics-chart[data-drawn=true]")
            page.screenshot(path=f"{out}/ui-compare.png")
            page.goto(server.url.rstrip("/") + "/jobs")
            page.screenshot(path=f"{out}/ui-jobs.png", clip={"x": 0, "y": 0, "width": 1280, "height": 240})
            browser.close()
    finally:
        server.stop()
        registry.connection.close()
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
