"""Screenshots of ``duckreg ui`` for the README (docs/ui-*.png), taken in headless Chromium.

    .venv/bin/python examples/quickstart/quickstart.py          # the quickstart database
    .venv/bin/python scripts/ui_screenshots.py examples/quickstart/quickstart.duckdb

The version page is shown after a "try it" run, so the picture has a real result in it.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

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
    print(f"wrote {args.out}/ui-models.png and {args.out}/ui-version.png")


if __name__ == "__main__":
    main()
