"""Semantic indexes: embeddings of a table column kept fresh, searched exactly, tied to a model version."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import transformers

import duckreg
from duckreg import faults

WORDS = "good bad food city love movie plot actor music scene river mountain price market team game".split()


def _documents(count: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    bodies = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(count)]
    langs = ["en", "fr"] * (count // 2) + ["en"] * (count % 2)
    return pd.DataFrame({"id": range(1, count + 1), "body": bodies, "lang": langs})


@pytest.fixture
def indexed(registry, model_dirs):
    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    registry.log_model(pipe, model_name="emb", version_name="v1", options={"pooling": "mean"})
    registry.connection.from_df(_documents(60)).create("docs")
    index = registry.create_index("docs_idx", table="docs", column="body", key="id", model="emb")
    return registry, index


def _brute_force(registry, query: str, condition=None, version: str = "v1") -> list[int]:
    """Every document id ranked by cosine to the query, from ``mv.run`` vectors and numpy alone."""
    docs = registry.connection.execute("SELECT id, body, lang FROM docs WHERE body IS NOT NULL ORDER BY id").df()
    if condition is not None:
        docs = docs[condition(docs)]
    mv = registry.get_model("emb").version(version)
    vectors = np.stack(mv.run(pd.DataFrame({"inputs": docs["body"].tolist()}))["embedding"]).astype(np.float64)
    target = np.asarray(mv.run(pd.DataFrame({"inputs": [query]}))["embedding"][0], np.float64)
    scores = vectors @ target / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(target))
    order = np.lexsort((docs["id"].to_numpy(), -np.round(scores, 6)))
    return docs["id"].to_numpy()[order].tolist()


def test_exact_search_ranks_as_a_brute_force_numpy_ranking(indexed) -> None:
    registry, index = indexed
    query = "good food in the city"
    expected = _brute_force(registry, query)
    assert index.search(query, k=None)["id"].tolist() == expected
    top = index.search(query, k=5)
    assert top["id"].tolist() == expected[:5]
    assert list(top.columns) == ["score", "id", "body", "lang"]
    assert top["score"].is_monotonic_decreasing
    con = registry.register_functions()
    rows = con.execute("SELECT id FROM docs_idx_search(?, k := 5)", [query]).fetchall()
    assert [r[0] for r in rows] == expected[:5]


def test_a_filtered_search_returns_k_rows_whenever_k_rows_match(indexed) -> None:
    registry, index = indexed
    query = "good food in the city"
    expected = _brute_force(registry, query, lambda docs: docs["lang"] == "fr")
    found = index.search(query, k=10, filter="lang = 'fr'")
    assert len(found) == 10 and set(found["lang"]) == {"fr"}
    assert found["id"].tolist() == expected[:10]
    con = registry.register_functions()
    rows = con.execute(
        "SELECT id FROM docs_idx_search(?, k := NULL) WHERE lang = 'fr' ORDER BY score DESC, id LIMIT 10", [query]
    ).fetchall()
    assert [r[0] for r in rows] == expected[:10]


def test_refresh_embeds_inserts_and_updates_and_drops_deletes(indexed) -> None:
    registry, index = indexed
    con = registry.connection
    con.execute("UPDATE docs SET body = 'love movie plot actor' WHERE id IN (3, 4)")
    con.execute("DELETE FROM docs WHERE id IN (5, 6, 7)")
    con.execute("INSERT INTO docs VALUES (100, 'river mountain river', 'en'), (101, NULL, 'en')")
    assert index.refresh() == {"embedded": 3, "removed": 5, "unchanged": 55, "failed": 0}
    assert index.refresh() == {"embedded": 0, "removed": 0, "unchanged": 58, "failed": 0}
    assert index.show()["rows"] == 58
    query = "love movie plot actor"
    assert index.search(query, k=None)["id"].tolist() == _brute_force(registry, query)
    rebuilt = registry.create_index("fresh_idx", table="docs", column="body", key="id", model="emb")
    assert rebuilt.search(query, k=None)["id"].tolist() == index.search(query, k=None)["id"].tolist()


def test_an_index_keeps_the_version_that_made_its_vectors_when_the_default_moves(indexed, model_dirs) -> None:
    registry, index = indexed
    other = transformers.pipeline("feature-extraction", model=str(model_dirs["fill-mask"]))
    registry.log_model(other, model_name="emb", version_name="v2", options={"pooling": "mean"})
    registry.get_model("emb").default = "v2"
    assert index.show()["version"] == "v1" and index.show()["model_ref"] == "default"
    registry.connection.execute("INSERT INTO docs VALUES (200, 'good good food', 'en')")
    assert index.refresh()["embedded"] == 1
    assert index.search("good food", k=None)["id"].tolist() == _brute_force(registry, "good food")
    pinned = registry.create_index("v2_idx", table="docs", column="body", key="id", model="emb", version="v2")
    assert pinned.show()["version"] == "v2"


def test_compare_reports_what_a_new_version_changes_and_switch_moves_the_index_in_one_step(indexed, model_dirs) -> None:
    from duckreg.inference_engines.agreement import neighbour_overlap

    registry, index = indexed
    other = transformers.pipeline("feature-extraction", model=str(model_dirs["fill-mask"]))
    registry.log_model(other, model_name="emb", version_name="v2", options={"pooling": "mean"})

    same = index.compare("v1", sample=None)
    assert same["neighbour_overlap"] == 1.0 and same["rows_with_changes"] == 0 and same["rows"] == 60
    report = index.compare("v2", sample=None)
    docs = registry.connection.execute("SELECT body FROM docs ORDER BY id").df()["body"].tolist()
    vectors = {v: np.stack(registry.get_model("emb").version(v).run(pd.DataFrame({"inputs": docs}))["embedding"])
               for v in ("v1", "v2")}  # fmt: skip
    assert report["from_version"] == "v1" and report["to_version"] == "v2" and report["k"] == 10
    assert report["neighbour_overlap"] == pytest.approx(neighbour_overlap(vectors["v1"], vectors["v2"]), abs=1e-6)
    assert sum(report["changed_neighbours"].values()) == 60 and report["rows_with_changes"] > 0
    assert index.compare("v2", sample=20)["rows"] == 20

    assert index.switch_version("v2") == {"embedded": 60, "removed": 0, "unchanged": 0, "failed": 0}
    assert index.show()["version"] == "v2"
    query = "good food in the city"
    expected = _brute_force(registry, query, version="v2")
    assert index.search(query, k=None)["id"].tolist() == expected
    con = registry.register_functions()
    assert [r[0] for r in con.execute("SELECT id FROM docs_idx_search(?, k := 5)", [query]).fetchall()] == expected[:5]
    with pytest.raises(ValueError, match="already holds version v2's vectors"):
        index.switch_version("v2")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"column": "missing"}, r"Table docs has no column 'missing' \(the index's column\)"),
        ({"key": "nope"}, r"Table docs has no column 'nope' \(the index's key\)"),
        ({"table": "nowhere"}, r"Cannot index table nowhere"),
        ({"index_name": "docs_idx"}, r"Index docs_idx already exists"),
        ({"model": "clf"}, r"has no function from one text to one vector"),
    ],
)
def test_a_bad_index_is_refused_before_anything_is_written(indexed, model_dirs, arguments, message) -> None:
    registry, _ = indexed
    clf = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(clf, model_name="clf", version_name="v1")
    wanted = {"index_name": "new_idx", "table": "docs", "column": "body", "key": "id", "model": "emb", **arguments}
    with pytest.raises(ValueError, match=message):
        registry.create_index(wanted.pop("index_name"), **wanted)
    assert registry.show_indexes()["name"].tolist() == ["docs_idx"]


def test_drop_index_removes_its_vectors_and_its_search_function(indexed) -> None:
    registry, _ = indexed
    con = registry.register_functions()
    assert con.execute("SELECT count(*) FROM docs_idx_search('good', k := 3)").fetchone()[0] == 3
    registry.drop_index("docs_idx")
    assert registry.show_indexes().empty
    with pytest.raises(Exception, match="docs_idx_search"):
        con.execute("SELECT count(*) FROM docs_idx_search('good', k := 3)")
    with pytest.raises(ValueError, match="Unable to find index docs_idx"):
        registry.get_index("docs_idx")


REFRESH_IN_CHILD = """
import sys, duckreg
registry = duckreg.Registry(sys.argv[1])
index = registry.get_index("docs_idx")
print(index.switch_version("v2") if sys.argv[2].startswith("index_switch") else index.refresh(), flush=True)
"""


@pytest.mark.process
@pytest.mark.parametrize("point", [p for p in faults.POINTS if p.startswith(("index_refresh:", "index_switch:"))])
def test_a_refresh_or_switch_killed_midway_leaves_the_index_as_it_was_and_the_database_intact(
    indexed, model_dirs, db_path: Path, point: str
) -> None:
    registry, index = indexed
    before = index.search("good food", k=None)
    other = transformers.pipeline("feature-extraction", model=str(model_dirs["fill-mask"]))
    registry.log_model(other, model_name="emb", version_name="v2", options={"pooling": "mean"})
    registry.connection.execute("DELETE FROM docs WHERE id <= 10")
    registry.connection.execute("INSERT INTO docs SELECT id + 1000, body || ' river', lang FROM docs WHERE id > 50")
    registry.connection.close()
    child = subprocess.run(
        [sys.executable, "-c", REFRESH_IN_CHILD, str(db_path), point],
        env={**os.environ, faults.ENV: point},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    reopened = duckreg.Registry(str(db_path))
    try:
        survivor = reopened.get_index("docs_idx")
        assert survivor.show()["rows"] == 60 and survivor.show()["version"] == "v1"
        tables = reopened.connection.execute(
            "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'index_docs_idx%'"
        ).fetchall()
        assert tables == [("index_docs_idx__v1",)]  # nothing half-built left beside it
        vectors = reopened.connection.execute("SELECT count(*) FROM duckreg.index_docs_idx__v1").fetchone()[0]
        assert vectors == 60
        assert reopened.connection.execute("SELECT count(*) FROM docs").fetchone()[0] == 60
        # The old vectors answer for the keys still there; the deleted rows no longer join.
        assert survivor.search("good food", k=None)["id"].tolist() == [i for i in before["id"] if i > 10]
        assert survivor.refresh() == {"embedded": 10, "removed": 10, "unchanged": 50, "failed": 0}
    finally:
        reopened.connection.close()


def test_indexes_are_created_refreshed_searched_and_dropped_from_sql_and_the_cli(indexed, db_path: Path) -> None:
    registry, _ = indexed
    con = registry.register_functions()
    created = con.execute("FROM create_index('sql_idx', 'docs', 'body', 'id', 'emb', version := 'v1')").fetchall()
    assert created == [("sql_idx", "v1", 60, 60, 0, 0, 0)]
    con.execute("INSERT INTO docs VALUES (300, 'market price', 'en')")
    assert con.execute("FROM refresh_index('sql_idx')").fetchall() == [("sql_idx", "v1", 61, 1, 0, 60, 0)]
    registry.register_functions(con)  # a Python connection takes the new search function from here
    top = con.execute("SELECT id FROM sql_idx_search('market price', k := 1)").fetchall()
    assert top == [(300,)]
    assert con.execute("FROM drop_index('sql_idx')").fetchall()[0][:3] == ("sql_idx", "v1", 0)
    registry.connection.close()

    def cli(*arguments: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "duckreg.cli", *arguments, "--db", str(db_path)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "Created cli_idx: 61 rows by emb version v1" in cli(
        "index", "create", "cli_idx", "--table", "docs", "--column", "body", "--key", "id", "--model", "emb"
    )
    assert "cli_idx" in cli("index", "list") and "docs_idx" in cli("index", "list")
    assert "market price" in cli("index", "search", "cli_idx", "market price", "-k", "1")
    # A shell statement binds an index's search function even when its model was bound before the index existed.
    script = (
        "SELECT count(emb(body)) AS embedded FROM docs;\n"
        "FROM create_index('late_idx', 'docs', 'body', 'id', 'emb');\n"
        "SELECT id FROM late_idx_search('market price', k := 1);\n"
    )
    (db_path.parent / "script.sql").write_text(script)
    output = cli("run", str(db_path.parent / "script.sql"))
    assert output.split("late_idx")[-1].split("\n")[-3].strip("│ ") == "300"
    assert "embedded 0" in cli("index", "refresh", "cli_idx")
    assert "Dropped cli_idx" in cli("index", "drop", "cli_idx")


def _missing(extension: str) -> str | None:
    import duckdb

    from duckreg.duckdb_ext import extensions

    try:
        extensions.load(duckdb.connect(), extension)
    except LookupError as exc:
        return str(exc)
    return None


VSS_MISSING = _missing("vss")
FTS_MISSING = _missing("fts")
needs_vss = pytest.mark.skipif(VSS_MISSING is not None, reason=f"needs vss (the DuckDB 1.5 leg): {VSS_MISSING}")
needs_fts = pytest.mark.skipif(FTS_MISSING is not None, reason=f"needs fts (the DuckDB 1.5 leg): {FTS_MISSING}")


@pytest.fixture
def many(registry, model_dirs):
    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    registry.log_model(pipe, model_name="emb", version_name="v1", options={"pooling": "mean"})
    registry.connection.from_df(_documents(3000, seed=11)).create("docs")
    return registry


@needs_vss
def test_hnsw_finds_the_exact_top_ten_on_a_seeded_set_and_the_plan_uses_it(many) -> None:
    index = many.create_index("docs_idx", table="docs", column="body", key="id", model="emb", ann="hnsw")
    assert index.show()["method"] == "hnsw"
    queries = [" ".join(WORDS[i : i + 3]) for i in range(0, 12)]
    recalls = []
    for query in queries:
        tenth = index.search(query, k=None)["score"].iloc[9]
        approximate = index.search(query, k=10)["score"]
        assert len(approximate) == 10
        # Texts of a few words from a small vocabulary tie often: a result as close as the exact tenth counts.
        recalls.append(float((approximate >= tenth - 1e-6).mean()))
    assert np.mean(recalls) >= 0.95, recalls
    con = many.register_functions()
    plan = con.execute("EXPLAIN SELECT * FROM docs_idx_search('good food', k := 10)").fetchall()[0][1]
    assert "HNSW_INDEX_SCAN" in plan
    top = [r[0] for r in con.execute("SELECT id FROM docs_idx_search('good food', k := 10)").fetchall()]
    assert top == index.search("good food", k=10)["id"].tolist()
    # The database file holds no HNSW index: it lives in an in-memory catalog of this process.
    assert (
        many.connection.execute(
            "SELECT count(*) FROM duckdb_indexes() WHERE database_name <> 'duckreg_ann'"
        ).fetchone()[0]
        == 0
    )


@pytest.mark.process
@pytest.mark.parametrize(
    ("point", "mode"),
    [
        pytest.param("index_ann:building", "vector", marks=needs_vss),
        pytest.param("index_keyword:building", "hybrid", marks=needs_fts),
    ],
)
def test_a_process_killed_while_building_an_in_memory_index_leaves_the_database_searchable(
    many, db_path: Path, point: str, mode: str
) -> None:
    ann = "hnsw" if mode == "vector" else "exact"
    many.create_index("docs_idx", table="docs", column="body", key="id", model="emb", ann=ann, refresh=True)
    many.connection.close()
    script = (
        "import sys, duckreg\n"
        f"print(duckreg.Registry(sys.argv[1]).get_index('docs_idx').search('good', k=3, mode={mode!r}))"
    )
    child = subprocess.run([sys.executable, "-c", script, str(db_path)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, faults.ENV: point})  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    reopened = duckreg.Registry(str(db_path))
    try:
        assert len(reopened.get_index("docs_idx").search("good", k=3, mode=mode)) == 3
        assert reopened.connection.execute("SELECT count(*) FROM docs").fetchone()[0] == 3000
    finally:
        reopened.connection.close()


@pytest.mark.skipif(VSS_MISSING is None, reason="vss loads here: this checks a DuckDB without it")
def test_without_vss_search_is_exact_and_says_why_and_hnsw_is_refused(many, monkeypatch) -> None:
    from duckreg.registry import indexes

    with pytest.raises(ValueError, match=r"ann='hnsw' needs DuckDB's vss extension: The DuckDB extension 'vss' is "):
        many.create_index("docs_idx", table="docs", column="body", key="id", model="emb", ann="hnsw")
    monkeypatch.setattr(indexes, "ANN_MIN_ROWS", 100)
    index = many.create_index("docs_idx", table="docs", column="body", key="id", model="emb")
    shown = index.show()
    assert shown["method"] == "exact" and shown["method_reason"].startswith("vss cannot be loaded: ")
    assert index.search("good food", k=5)["id"].tolist() == index.search("good food", k=None)["id"].tolist()[:5]


@needs_vss
def test_a_refresh_here_brings_the_hnsw_copy_and_the_bound_search_function_up_to_date(many) -> None:
    index = many.create_index("docs_idx", table="docs", column="body", key="id", model="emb", ann="hnsw")
    con = many.register_functions()
    assert con.execute("SELECT count(*) FROM docs_idx_search('x', k := NULL)").fetchone()[0] == 3000
    text = "mountain river price market team game good bad food city love movie"
    many.connection.execute("INSERT INTO docs VALUES (9001, ?, 'en')", [text])
    index.refresh()
    rows = con.execute("SELECT id, score FROM docs_idx_search(?, k := 5)", [text]).fetchall()
    assert (9001, pytest.approx(1.0, abs=1e-5)) in rows  # the new row is found, at its own text's score
    assert con.execute("SELECT count(*) FROM docs_idx_search('x', k := NULL)").fetchone()[0] == 3001
    # An update and a delete reach the HNSW index too (the copy takes the changed rows, not a rebuild).
    changed = "river river river mountain mountain price"
    many.connection.execute("UPDATE docs SET body = ? WHERE id = 7", [changed])
    many.connection.execute("DELETE FROM docs WHERE id = 9001")
    index.refresh()
    rows = con.execute("SELECT id, score FROM docs_idx_search(?, k := 5)", [changed]).fetchall()
    assert (7, pytest.approx(1.0, abs=1e-5)) in rows
    assert 9001 not in [r[0] for r in con.execute("SELECT id FROM docs_idx_search(?, k := 5)", [text]).fetchall()]
    copy = f"duckreg_ann.{index._record().vectors}"
    assert many.connection.execute(f"SELECT count(*), count(DISTINCT key) FROM {copy}").fetchone() == (3000, 3000)
    tenth = index.search(changed, k=None)["score"].iloc[9]
    assert (index.search(changed, k=10)["score"] >= tenth - 1e-6).sum() >= 9  # ties count, as in the recall test


def _bm25_by_fts(registry, query: str) -> dict[int, float]:
    """BM25 scores of the documents for ``query`` from an fts index built by hand over a copy of them, in a
    database of its own (fts's defaults: porter stemmer, English stopwords, lower case, accents stripped)."""
    import duckdb

    from duckreg.duckdb_ext import extensions

    docs = registry.connection.execute("SELECT id, body FROM docs WHERE body IS NOT NULL").df()
    con = duckdb.connect()
    extensions.load(con, "fts")
    con.register("documents", docs)
    con.execute("CREATE TABLE copy AS SELECT * FROM documents")
    con.execute("PRAGMA create_fts_index('copy', 'id', 'body')")
    rows = con.execute(
        "SELECT id, score FROM (SELECT id, fts_main_copy.match_bm25(id, ?) AS score FROM copy) WHERE score IS NOT NULL",
        [query],
    ).fetchall()
    return dict(rows)


@needs_fts
def test_keyword_search_ranks_by_the_bm25_of_fts_over_the_indexed_texts(indexed) -> None:
    registry, index = indexed
    query = "the food of the city"
    expected = _bm25_by_fts(registry, query)
    found = index.search(query, k=None, mode="keyword")
    assert len(found) == len(expected) > 5
    assert dict(zip(found["id"], found["score"], strict=True)) == pytest.approx(expected)
    assert found["score"].is_monotonic_decreasing
    assert index.show()["keyword"] == "bm25"
    con = registry.register_functions()
    rows = con.execute("SELECT id FROM docs_idx_search(?, k := 5, mode := 'keyword')", [query]).fetchall()
    assert [r[0] for r in rows] == found["id"].tolist()[:5]


@needs_fts
@pytest.mark.parametrize(("vector_weight", "keyword_weight"), [(1.0, 1.0), (0.3, 1.0)])
def test_hybrid_search_fuses_the_vector_and_bm25_ranks_by_reciprocal_rank_fusion(
    indexed, vector_weight: float, keyword_weight: float
) -> None:
    registry, index = indexed
    query = "good food in the city"
    vector_order = _brute_force(registry, query)
    bm25 = _bm25_by_fts(registry, query)
    keyword_order = sorted(bm25, key=lambda doc: (-round(bm25[doc], 9), doc))
    expected = {doc: vector_weight / (60 + rank) for rank, doc in enumerate(vector_order, 1)}
    for rank, doc in enumerate(keyword_order, 1):
        expected[doc] += keyword_weight / (60 + rank)
    found = index.search(query, k=None, mode="hybrid", vector_weight=vector_weight, keyword_weight=keyword_weight)
    assert dict(zip(found["id"], found["score"], strict=True)) == pytest.approx(expected, rel=1e-9)
    assert found["score"].is_monotonic_decreasing
    top = index.search(query, k=5, mode="hybrid", vector_weight=vector_weight, keyword_weight=keyword_weight)
    assert top["id"].tolist() == found["id"].tolist()[:5]
    con = registry.register_functions()
    rows = con.execute(
        "SELECT id, score FROM docs_idx_search(?, k := 5, mode := 'hybrid', vector_weight := ?, keyword_weight := ?)",
        [query, vector_weight, keyword_weight],
    ).fetchall()
    assert [r[0] for r in rows] == top["id"].tolist()
    assert [r[1] for r in rows] == pytest.approx(top["score"].tolist())


@needs_fts
def test_hybrid_with_a_filter_ranks_among_the_matching_rows_and_a_zero_keyword_weight_is_vector_search(
    indexed,
) -> None:
    registry, index = indexed
    query = "good food in the city"
    french = index.search(query, k=None, filter="lang = 'fr'", mode="hybrid")
    assert len(french) == 30 and set(french["lang"]) == {"fr"}
    vector_order = _brute_force(registry, query, lambda docs: docs["lang"] == "fr")
    # Ranks count French rows only: the best French row by vector has rank 1 in the fused sum.
    best = french.set_index("id")["score"]
    keyword_free = [doc for doc in vector_order if doc not in _bm25_by_fts(registry, query)]
    assert len(keyword_free) > 3  # French rows without a query term score 1 / (60 + their rank among French rows)
    for doc in keyword_free:
        assert best[doc] == pytest.approx(1 / (60 + vector_order.index(doc) + 1))
    vector_only = index.search(query, k=10, filter="lang = 'fr'", mode="hybrid", keyword_weight=0.0)
    assert vector_only["id"].tolist() == vector_order[:10]


@needs_fts
def test_a_refresh_brings_the_keyword_copy_and_the_bound_search_function_up_to_date(indexed) -> None:
    registry, index = indexed
    con = registry.register_functions()
    assert con.execute("SELECT count(*) FROM docs_idx_search('zebra', k := NULL, mode := 'keyword')").fetchone()[0] == 0
    registry.connection.execute("INSERT INTO docs VALUES (9001, 'a zebra by the river', 'en')")
    assert index.search("zebra", k=None, mode="keyword").empty  # the index holds what its last refresh saw
    index.refresh()
    assert index.search("zebra", k=None, mode="keyword")["id"].tolist() == [9001]
    rows = con.execute("SELECT id FROM docs_idx_search('zebra', k := 3, mode := 'hybrid')").fetchall()
    assert rows[0][0] == 9001


def test_a_bad_mode_is_refused_in_python_and_sql(indexed) -> None:
    registry, index = indexed
    with pytest.raises(ValueError, match=r"mode must be one of \('vector', 'keyword', 'hybrid'\), got 'bm25'"):
        index.search("food", mode="bm25")
    with pytest.raises(ValueError, match="keyword_weight must be a number >= 0, got -1"):
        index.search("food", mode="hybrid", keyword_weight=-1)
    con = registry.register_functions()
    with pytest.raises(duckdb_error(), match="mode must be vector, keyword or hybrid, got bm25"):
        con.execute("FROM docs_idx_search('food', mode := 'bm25')").fetchall()


@pytest.mark.skipif(FTS_MISSING is None, reason="fts loads here: this checks a DuckDB without it")
def test_without_fts_keyword_and_hybrid_search_say_why_and_vector_search_works(indexed) -> None:
    registry, index = indexed
    shown = index.show()
    assert shown["keyword"] == "unavailable" and shown["keyword_reason"].startswith("fts cannot be loaded: ")
    refusal = r"Index docs_idx: mode hybrid ranks by BM25, which needs DuckDB's fts extension, and fts cannot be "
    with pytest.raises(ValueError, match=refusal):
        index.search("food", mode="hybrid")
    con = registry.register_functions()
    with pytest.raises(duckdb_error(), match=refusal.replace("hybrid", "keyword")):
        con.execute("FROM docs_idx_search('food', mode := 'keyword')").fetchall()
    assert len(con.execute("FROM docs_idx_search('food', k := 3)").fetchall()) == 3


def duckdb_error() -> type[Exception]:
    import duckdb

    return duckdb.Error


@needs_fts
def test_the_cli_searches_by_keyword_and_hybrid_with_weights(indexed, db_path: Path) -> None:
    registry, index = indexed
    registry.connection.execute("INSERT INTO docs VALUES (9001, 'a zebra by the river', 'en')")
    index.refresh()
    expected = index.search("zebra river", k=3, mode="hybrid", vector_weight=0.5).astype("string")
    registry.connection.close()
    done = subprocess.run(
        [sys.executable, "-m", "duckreg.cli", "index", "search", "docs_idx", "zebra river", "-k", "3", "--mode",
         "hybrid", "--vector-weight", "0.5", "--format", "csv", "--db", str(db_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = pd.read_csv(io.StringIO(done.stdout), dtype="string")
    assert found["id"].tolist() == expected["id"].tolist() and "9001" in found["id"].tolist()
