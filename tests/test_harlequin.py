"""The Harlequin adapter: ``-a duckreg`` through Harlequin's headless runner (``hsql``) and its adapter API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import transformers

pytest.importorskip("harlequin", reason="needs duckreg[harlequin]")

from duckreg.harlequin_adapter import MODELS_LABEL, DuckregAdapter

BIN = Path(sys.executable).parent


@pytest.fixture
def shop(registry, db_path: Path, model_dirs) -> tuple[Path, list]:
    """A registry file with two models, a table, and the rows ``mv.run`` gives for it; closed again."""
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    mv = registry.log_model(pipe, model_name="sentiment", version_name="v1")
    registry.log_model(pipe, model_name="critic", version_name="v1")
    texts = ["I like you.", "The food was bad."]
    registry.connection.execute("CREATE TABLE reviews AS SELECT * FROM (VALUES (1, ?), (2, ?)) t(id, text)", texts)
    import pandas as pd

    expected = mv.run(pd.DataFrame({"text": texts})).to_dict("records")
    registry.connection.close()
    return db_path, expected


def test_hsql_runs_a_model_through_the_adapter(shop) -> None:
    db, expected = shop
    done = subprocess.run(
        [str(BIN / "hsql"), "-a", "duckreg", str(db), "--json", "-c",
         "SELECT id, sentiment(text) AS s FROM reviews ORDER BY id"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["s"]["label"] for r in rows] == [e["label"] for e in expected]
    assert [r["s"]["score"] for r in rows] == pytest.approx([e["score"] for e in expected], rel=1e-12)
    assert "leaked" not in done.stderr


def test_hsql_accepts_snowflake_syntax_and_reports_errors(shop) -> None:
    db, expected = shop
    hsql = [str(BIN / "hsql"), "-a", "duckreg", str(db), "--json", "-c"]
    done = subprocess.run(
        [*hsql, "SELECT MODEL(sentiment, v1)!__call__(text):label AS label FROM reviews ORDER BY id"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [r["label"] for r in json.loads(done.stdout)] == [e["label"] for e in expected]
    bad = subprocess.run([*hsql, "SELECT MODEL(nosuch, v1)!__call__(text) FROM reviews"], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 1
    assert "nosuch" in bad.stderr


def test_adapter_is_an_installed_harlequin_adapter() -> None:
    done = subprocess.run([str(BIN / "harlequin"), "--version"], capture_output=True, text=True, timeout=120)
    assert "- duckreg, version" in done.stdout


def test_adapter_registers_lazily_and_lists_models_in_the_catalog(shop) -> None:
    db, expected = shop
    connection = DuckregAdapter(conn_str=(str(db),), no_init=True).connect()
    try:

        def names() -> set[str]:
            return {r[0] for r in connection.conn.execute("SELECT function_name FROM duckdb_functions()").fetchall()}

        assert "sentiment" not in names()
        cursor = connection.execute("SELECT id, sentiment(text).label AS label FROM reviews ORDER BY id")
        assert cursor.fetchall().to_pydict()["label"] == [e["label"] for e in expected]
        assert "sentiment" in names()
        assert "critic" not in names()

        catalog = connection.get_catalog()
        models = next(item for item in catalog.items if item.label == MODELS_LABEL)
        assert [m.label for m in models.fetch_children()] == ["critic", "sentiment"]
        sentiment = models.fetch_children()[1]
        (version,) = sentiment.fetch_children()
        assert (version.label, version.type_label) == ("v1", "default")
        assert [f.label for f in version.fetch_children()] == ["sentiment__v1"]

        completions = {c.label: c.type_label for c in connection.get_completions()}
        assert completions["critic"] == "model"
        assert completions["sentiment__v1"] == "model"
    finally:
        connection.conn.close()
