"""The README's recipes for the Python tools DuckDB users already have: each runs here as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import transformers

import duckreg

REVIEWS = ["good pizza", "cold pizza", "great service"]


@pytest.fixture
def shop(tmp_path: Path, model_dirs) -> Path:
    """A database with a ``sentiment`` model and a ``reviews`` table, closed again."""
    db = tmp_path / "shop.duckdb"
    registry = duckreg.Registry(str(db))
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(pipe, model_name="sentiment", version_name="v1")
    registry.connection.execute("CREATE TABLE reviews AS SELECT unnest(?) AS review", [REVIEWS])
    registry.connection.close()
    return db


@pytest.fixture
def expected(shop: Path) -> list[tuple[str, str]]:
    with duckreg.connect(str(shop)) as con:
        return con.execute("SELECT review, (sentiment(review)).label FROM reviews ORDER BY review").fetchall()


def test_polars(shop: Path, expected) -> None:
    pl = pytest.importorskip("polars")
    con = duckreg.connect(str(shop))
    query = "SELECT review, (sentiment(review)).label AS label FROM reviews ORDER BY review"
    frame = pl.read_database(query, connection=con)
    assert frame.rows() == expected
    assert con.sql(query).pl().rows() == expected
    con.register("local_reviews", pl.DataFrame({"review": REVIEWS}))  # a Polars frame straight into the model
    scanned = con.sql("SELECT review, (sentiment(review)).label FROM local_reviews ORDER BY review").fetchall()
    assert scanned == expected
    con.close()


def test_sqlalchemy_duckdb_engine(shop: Path, expected) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    duckdb_engine = pytest.importorskip("duckdb_engine")
    registry = duckreg.Registry(str(shop))
    # Every pooled connection is a cursor of the registry's connection with the models' SQL registered.
    engine = sqlalchemy.create_engine(
        "duckdb://",
        creator=lambda: duckdb_engine.ConnectionWrapper(registry.register_functions(registry.connection.cursor())),
    )
    with engine.connect() as connection:
        query = sqlalchemy.text("SELECT review, (sentiment(review)).label FROM reviews ORDER BY review")
        assert [tuple(row) for row in connection.execute(query)] == expected
    assert [tuple(r) for r in pd.read_sql(query, engine).itertuples(index=False)] == expected
    engine.dispose()
    registry.connection.close()


def test_ibis_builtin_udf(shop: Path, expected) -> None:
    ibis = pytest.importorskip("ibis")
    con = duckreg.connect(str(shop))
    backend = ibis.duckdb.from_connection(con)

    # duckreg's SQL function, declared so Ibis expressions can call it.
    label_and_score = ibis.dtype("struct<label: string, score: float64>")
    sentiment = ibis.udf.scalar.builtin(name="sentiment", signature=(("string",), label_and_score))(lambda text: None)

    reviews = backend.table("reviews")
    expression = reviews.select("review", label=sentiment(reviews.review)["label"]).order_by("review")
    assert [tuple(row) for row in expression.execute().itertuples(index=False)] == expected
    con.close()


def test_jupysql_magic(shop: Path, expected) -> None:
    pytest.importorskip("sql")
    shell_module = pytest.importorskip("IPython.core.interactiveshell")
    shell = shell_module.InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "sql")
        shell.run_line_magic("config", "SqlMagic.displaycon = False")
        shell.user_ns["con"] = duckreg.connect(str(shop))
        shell.run_line_magic("sql", "con --alias shop")
        result = shell.run_line_magic(
            "sql", "SELECT review, (sentiment(review)).label AS label FROM reviews ORDER BY review"
        )
        assert [tuple(row) for row in result.DataFrame().itertuples(index=False)] == expected
    finally:
        shell.user_ns["con"].close()
        shell_module.InteractiveShell.clear_instance()


def test_marimo_notebook_example_runs_as_a_script(tmp_path: Path, model_dirs) -> None:
    pytest.importorskip("marimo")
    pytest.importorskip("matplotlib")
    db = tmp_path / "quickstart.duckdb"
    registry = duckreg.Registry(str(db))
    embedder = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    registry.log_model(embedder, model_name="minilm", version_name="v1", options={"pooling": "mean"})
    con = registry.register_functions()
    bodies = ["A monkey is playing drums.", "A man is eating food.", "A woman is playing violin."]
    con.execute("CREATE TABLE doc_vectors AS SELECT body, minilm(body) AS embedding FROM (SELECT unnest(?) AS body)",
                [bodies])  # fmt: skip
    con.close()
    plot = tmp_path / "similarity.png"
    env = {**os.environ, "DUCKREG_NOTEBOOK_DB": str(db), "DUCKREG_NOTEBOOK_PLOT": str(plot), "MPLBACKEND": "Agg"}
    notebook = Path(__file__).resolve().parents[1] / "examples" / "notebook" / "similarity.py"
    done = subprocess.run([sys.executable, str(notebook)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(body in done.stdout for body in bodies) and "similarity" in done.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
