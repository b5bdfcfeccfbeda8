"""The result cache: hits skip the model, misses fill it, a size bound evicts, deletes invalidate, read-only reads."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import transformers
from conftest import run_in_new_process
from custom_models import RowCounter

import duckreg
from duckreg import result_cache
from duckreg.model_signature import DataType, FeatureSpec, ModelSignature

TEXTS = ["I like you.", "I love you, too.", "My name is Izumi.", "hello world"]


@pytest.fixture
def clf(registry, model_dirs):
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    return registry.log_model(pipe, model_name="clf", version_name="v1")


def _forward_calls(registry, version: str = "v1") -> list[int]:
    """A counter of forward passes on the loaded model of ``clf`` ``version`` (rows per call)."""
    mv = registry.get_model("clf").version(version)
    mv.run(pd.DataFrame({"text": ["load it"]}))
    model = mv._handle().shared_model().model.model
    calls: list[int] = []
    original = model.forward

    def counting(*args, **kwargs):
        calls.append(len(kwargs["input_ids"]))
        return original(*args, **kwargs)

    model.forward = counting
    return calls


def test_a_repeated_query_is_served_from_the_cache(registry, clf) -> None:
    calls = _forward_calls(registry)
    con = registry.register_functions()
    con.execute("CREATE TABLE t AS SELECT unnest(?) AS text", [TEXTS])
    first = con.execute("SELECT text, clf(text) FROM t ORDER BY text").fetchall()
    assert sum(calls) == len(TEXTS)
    second = con.execute("SELECT text, clf(text) FROM t ORDER BY text").fetchall()
    assert second == first
    assert sum(calls) == len(TEXTS)  # no forward pass the second time
    stats = registry.result_cache.stats()
    assert stats["entries"] == len(TEXTS) + 1  # and the row that loaded the model
    assert stats["hits"] >= len(TEXTS)
    (version,) = stats["versions"]
    assert version == {"model": "clf", "version": "v1", "entries": 5, "bytes": stats["bytes"],
                       "hits": stats["hits"], "misses": stats["misses"]}  # fmt: skip
    assert version["hits"] >= len(TEXTS) and version["misses"] == len(TEXTS) + 1


def test_a_partly_cached_query_computes_only_the_new_rows(registry, clf) -> None:
    calls = _forward_calls(registry)
    con = registry.register_functions()
    con.execute("SELECT clf(text) FROM (SELECT unnest(?) AS text)", [TEXTS[:2]]).fetchall()
    calls.clear()
    rows = con.execute("SELECT clf(text) FROM (SELECT unnest(?) AS text)", [TEXTS]).fetchall()
    assert sum(calls) == 2 and len(rows) == 4


def test_cached_results_equal_computed_ones_for_every_output_type(registry, model_dirs) -> None:
    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    mv = registry.log_model(pipe, model_name="emb", version_name="v1", options={"pooling": "mean"})
    frame = pd.DataFrame({"inputs": TEXTS})
    cold = mv.run(frame)
    warm = mv.run(frame)
    assert registry.result_cache.stats()["hits"] == len(TEXTS)
    assert [list(v) for v in warm["embedding"]] == [list(v) for v in cold["embedding"]]
    con = registry.register_functions()
    sql = con.execute("SELECT emb(inputs) FROM (SELECT unnest(?) AS inputs)", [TEXTS]).fetchall()
    for row, vector in zip(sql, cold["embedding"], strict=True):
        assert np.array_equal(np.asarray(row[0], np.float32), np.asarray(vector, np.float32))


def test_the_session_switch_turns_the_cache_off_for_that_connection_only(registry, clf) -> None:
    calls = _forward_calls(registry)
    con = registry.register_functions()
    query = "SELECT clf(text) FROM (SELECT unnest(?) AS text)"
    con.execute(query, [TEXTS]).fetchall()
    calls.clear()
    con.execute("SET VARIABLE duckreg_cache = false")
    con.execute(query, [TEXTS]).fetchall()
    assert sum(calls) == len(TEXTS)
    other = con.cursor()
    registry.register_functions(other)
    calls.clear()
    other.execute(query, [TEXTS]).fetchall()
    assert sum(calls) == 0
    con.execute("RESET VARIABLE duckreg_cache")
    con.execute(query, [TEXTS]).fetchall()
    assert sum(calls) == 0


def test_params_are_part_of_the_key(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]), top_k=2)
    mv = registry.log_model(pipe, model_name="clf", version_name="v1")
    frame = pd.DataFrame({"text": TEXTS})
    two = mv.run(frame, params={"top_k": 2})["outputs"]
    one = mv.run(frame, params={"top_k": 1})["outputs"]
    assert [len(json.loads(v)) for v in two] == [2] * 4
    assert [len(json.loads(v)) for v in one] == [1] * 4


def test_no_stale_result_after_a_version_is_deleted_and_another_logged_under_its_name(registry, model_dirs) -> None:
    first = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(first, model_name="clf", version_name="v1")
    frame = pd.DataFrame({"text": TEXTS})
    before = registry.get_model("clf").version("v1").run(frame)
    registry.delete_model("clf")
    assert registry.result_cache.stats()["entries"] == 0  # a deleted version's results go with it
    assert registry.result_cache.stats()["versions"] == []  # and its hit and miss counts

    relabelled = Path(model_dirs.root) / "relabelled"
    import tiny_models

    tiny_models.bert_text_classification(relabelled, labels=("SAD", "HAPPY"), seed=11)
    second = transformers.pipeline("text-classification", model=str(relabelled))
    after = registry.log_model(second, model_name="clf", version_name="v1").run(frame)
    assert set(after["label"]) <= {"SAD", "HAPPY"}
    assert list(after["score"]) != list(before["score"])


def test_sampling_generation_and_custom_models_are_never_cached(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]))
    gen = registry.log_model(pipe, model_name="gen", version_name="v1")
    frame = pd.DataFrame({"inputs": ["hello"]})
    gen.run(frame, params={"do_sample": True, "max_new_tokens": 3})
    assert registry.result_cache.stats()["entries"] == 0
    gen.run(frame, params={"do_sample": False, "max_new_tokens": 3})
    assert registry.result_cache.stats()["entries"] == 1

    signature = ModelSignature(
        inputs=[FeatureSpec("text", DataType.STRING)], outputs=[FeatureSpec("length", DataType.INT64)]
    )
    counter = registry.log_model(
        RowCounter(), model_name="counter", version_name="v1", signatures={"predict": signature}
    )
    counter.run(pd.DataFrame({"text": ["a", "b"]}))
    assert registry.result_cache.stats()["entries"] == 1


def test_the_size_bound_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = result_cache.ResultCache(tmp_path / "results.sqlite", max_bytes=1000, read_only=False)
    scope = result_cache.Scope("ns", "content", "m", "v1")
    cache.put_many(scope, [(f"old{i}", {"text": "x" * 90}) for i in range(5)])
    cache.get_many(["old0"])  # recently used: survives
    cache.put_many(scope, [(f"new{i}", {"text": "y" * 90}) for i in range(6)])
    stats = cache.stats()
    assert stats["bytes"] <= 1000
    kept = set(cache.get_many([f"old{i}" for i in range(5)] + [f"new{i}" for i in range(6)]))
    assert "old0" in kept and "old1" not in kept and {"new4", "new5"} <= kept
    assert stats["bytes"] == sum(len(result_cache.encode_result({"text": "x" * 90})) for _ in kept)


def test_stored_results_come_back_exactly() -> None:
    from datetime import date, datetime, time
    from decimal import Decimal

    value = {
        "embedding": [0.1, 1 / 3, float("nan"), -0.0, 1e-310],
        "label": "POSITIVE",
        "score": 0.9999999999999999,
        "count": 2**63 - 1,
        "raw": b"\x00\xff",
        "nested": {"words": ["a", None], "flag": True},
        "when": datetime(2026, 11, 22, 1, 2, 3, 456789),
        "day": date(2026, 11, 22),
        "clock": time(1, 2, 3),
        "amount": Decimal("1.10"),
        "stamp": pd.Timestamp("2026-11-22 01:02:03.123456789"),
    }
    back = result_cache.decode_result(result_cache.encode_result(value))
    assert back.keys() == value.keys()
    for name in value:
        if name == "embedding":
            assert np.array_equal(np.array(back[name]), np.array(value[name]), equal_nan=True)
            assert [np.signbit(v) for v in back[name]] == [np.signbit(v) for v in value[name]]
        else:
            assert back[name] == value[name] and type(back[name]) is type(value[name]), name


def test_a_cache_file_of_another_format_is_emptied_by_a_writer_and_ignored_by_a_reader(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE results (key TEXT PRIMARY KEY, value TEXT)")
        old.execute("INSERT INTO results VALUES ('k1', '{\"label\": \"stale\"}')")
    reader = result_cache.ResultCache(path, max_bytes=10**6, read_only=True)
    assert reader.get_many(["k1"]) == {}
    writer = result_cache.ResultCache(path, max_bytes=10**6, read_only=False)
    assert writer.get_many(["k1"]) == {}
    writer.put_many(result_cache.Scope("ns", "c", "m", "v1"), [("k1", {"label": "fresh"})])
    assert writer.get_many(["k1"]) == {"k1": {"label": "fresh"}}
    assert reader.get_many(["k1"]) == {"k1": {"label": "fresh"}}  # once the file has the reader's format


def test_clear_drops_everything_or_one_model(tmp_path: Path) -> None:
    cache = result_cache.ResultCache(tmp_path / "results.sqlite", max_bytes=10**6, read_only=False)
    cache.put_many(result_cache.Scope("a", "ca", "first", "v1"), [("k1", 1), ("k2", 2)])
    cache.put_many(result_cache.Scope("b", "cb", "second", "v1"), [("k3", 3)])
    assert cache.clear("FIRST") == 2
    assert cache.stats()["entries"] == 1
    assert cache.clear() == 1
    assert cache.stats()["bytes"] == 0


def test_read_only_connections_read_the_cache_and_never_write_it(registry, clf, db_path: Path) -> None:
    con = registry.register_functions()
    query = "SELECT clf(text).label FROM (SELECT unnest(['I like you.', 'brand new row']) AS text)"
    con.execute("SELECT clf(text) FROM (SELECT 'I like you.' AS text)").fetchall()
    entries = registry.result_cache.stats()["entries"]
    registry.connection.close()
    rows = run_in_new_process(db_path, query)
    assert len(rows) == 2
    reader = duckreg.Registry(duckreg.connect(str(db_path), read_only=True))
    try:
        assert reader.result_cache.read_only
        assert reader.result_cache.stats()["entries"] == entries  # the new row was not written
        with pytest.raises(PermissionError, match="read-only"):
            reader.result_cache.clear()
    finally:
        reader.connection.close()


def test_an_unusable_cache_warns_once_and_queries_still_answer(registry, clf) -> None:
    cache_file = registry.result_cache.path
    registry.result_cache.close()
    if cache_file.exists():
        cache_file.unlink()
    cache_file.mkdir()  # a folder where the file should be: SQLite cannot open it
    mv = registry.get_model("clf").version("v1")
    with pytest.warns(RuntimeWarning, match="result cache .* is unusable"):
        assert len(mv.run(pd.DataFrame({"text": TEXTS}))) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once, not once per query
        assert len(mv.run(pd.DataFrame({"text": TEXTS}))) == 4


def test_cli_reports_and_clears_the_cache(registry, clf, db_path: Path) -> None:
    clf.run(pd.DataFrame({"text": TEXTS}))
    registry.connection.close()
    registry.result_cache.close()
    cli = [sys.executable, "-m", "duckreg.cli"]
    stats = subprocess.run([*cli, "cache", "stats", "--db", str(db_path)], capture_output=True, text=True, timeout=120)
    assert stats.returncode == 0, stats.stderr
    assert "entries 4," in stats.stdout and "clf" in stats.stdout
    cleared = subprocess.run(
        [*cli, "cache", "clear", "--db", str(db_path)], capture_output=True, text=True, timeout=120
    )
    assert cleared.returncode == 0, cleared.stderr
    assert "4 results removed" in cleared.stdout
