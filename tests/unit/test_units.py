"""Pure-Python rules, checked without a model or a database file: names, syntax, types, values, specs."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from duckreg import model_cache
from duckreg.artifacts import Manifest
from duckreg.batch.inputs import rechunk
from duckreg.batch.specs import JobSpec, OutputSpec, parse_memory
from duckreg.duckdb_ext.names import models_named_in, sql_names, with_macros
from duckreg.duckdb_ext.snowflake_syntax import ResolvedFunction, rewrite
from duckreg.duckdb_ext.types import OutputTypes, feature_types
from duckreg.function_spec import FunctionSpec, Implementation
from duckreg.identifiers import check_identifier, normalize, quote, quote_literal
from duckreg.model_signature import (
    INVALID,
    NOT_UNICODE,
    DataType,
    FeatureGroupSpec,
    FeatureSpec,
    ModelSignature,
    ParamSpec,
    check_feature,
    check_value,
)
from duckreg.stages import Stage, parse_stage_path
from duckreg.tasks import GENERIC, TASK_ALIASES, TASKS, get_task, task_for
from duckreg.values import cell_to_python, drop_unset_params, freeze, to_json, to_python

TEXT_TO_LABEL = ModelSignature(
    inputs=[FeatureSpec("text", DataType.STRING)],
    outputs=[FeatureSpec("label", DataType.STRING), FeatureSpec("score", DataType.DOUBLE)],
)


def spec(method: str = "__call__", signature: ModelSignature = TEXT_TO_LABEL, **kwargs) -> FunctionSpec:
    return FunctionSpec(method.upper(), method, signature, **kwargs)


# ------------------------------------------------------------------ names
def test_sql_names_of_one_function_and_of_several() -> None:
    assert [n for n, _ in sql_names("m", None, [spec()])] == ["m"]
    assert [n for n, _ in sql_names("m", "v1", [spec("predict")])] == ["m__v1"]
    several = [spec("predict"), spec("Explain")]
    assert [n for n, _ in sql_names("m", "v1", several)] == ["m__v1_predict", "m__v1_explain"]
    assert with_macros(["m"]) == ["m", "m_table", "m_files"]


def test_models_named_in_finds_every_form_and_nothing_else() -> None:
    keys = ["sentiment", "summarizer"]
    assert models_named_in("SELECT sentiment__v2(text) FROM t", keys) == {"sentiment"}
    assert models_named_in("FROM summarizer_table('docs')", keys) == {"summarizer"}
    assert models_named_in("SELECT sentiments FROM t", keys) == set()


def test_identifiers() -> None:
    assert normalize("Sentiment") == "sentiment"
    assert quote('a"b') == '"a""b"' and quote_literal("it's") == "'it''s'"
    assert check_identifier("ok_1", "model_name") == "ok_1"
    for bad, why in (("1x", "letters"), ("a__b", "reserved"), ("x" * 129, "at most 128")):
        with pytest.raises(ValueError, match=why):
            check_identifier(bad, "model_name")


# --------------------------------------------------------- Snowflake syntax
def resolver(model: str, version: str | None, method: str) -> ResolvedFunction:
    name = model.lower() if version is None else f"{model.lower()}__{version.lower()}"
    return ResolvedFunction(name, ("text",), model.lower())


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT MODEL(clf, v1)!predict(text) FROM t", "SELECT clf__v1(text) FROM t"),
        ("SELECT clf!predict(text) FROM t", "SELECT clf(text) FROM t"),
        ("SELECT clf!predict(*) FROM t", 'SELECT clf("text") FROM t'),
        ("SELECT 1 != 2", "SELECT 1 != 2"),
    ],
)
def test_snowflake_calls_are_rewritten_in_place(sql: str, expected: str) -> None:
    text, used = rewrite(sql, resolver)
    assert text == expected
    assert used == ({"clf"} if "clf" in sql else set())


def test_a_field_of_a_one_output_function_is_its_value() -> None:
    def one_output(model: str, version: str | None, method: str) -> ResolvedFunction:
        return ResolvedFunction(model.lower(), ("body",), model.lower(), "embedding")

    assert rewrite("SELECT minilm!__call__(body):embedding FROM t", one_output)[0] == "SELECT minilm(body) FROM t"
    assert rewrite("SELECT minilm!__call__(body):EMBEDDING AS e", one_output)[0] == "SELECT minilm(body) AS e"
    # A struct output's fields are reached through it; another name is a field of the value.
    assert rewrite("SELECT m!f(body):embedding.x", one_output)[0] == "SELECT (m(body))['x']"
    assert rewrite("SELECT clf!predict(text):label", resolver)[0] == "SELECT (clf(text))['label']"


def test_a_model_cte_is_rewritten_and_an_unknown_form_is_refused() -> None:
    text, used = rewrite("WITH m AS MODEL clf VERSION v2 SELECT m!predict(text) FROM t", resolver)
    assert text.strip() == "SELECT clf__v2(text) FROM t" and used == {"clf"}
    for bad, why in (
        ("SELECT MODEL(clf, v1)!predict(text FROM t", "unbalanced"),
        ("SELECT db.clf!predict(x)", "qualified"),
    ):
        with pytest.raises(ValueError, match=why):
            rewrite(bad, resolver)


# ------------------------------------------------------------------ types
def test_feature_types_for_scalars_shapes_structs_and_json() -> None:
    assert feature_types(FeatureSpec("x", DataType.FLOAT)) == ("FLOAT", pa.float32())
    assert feature_types(FeatureSpec("x", DataType.FLOAT), shape=(384,))[0] == "FLOAT[384]"
    assert feature_types(FeatureSpec("x", DataType.INT64), shape=(-1, -1))[0] == "BIGINT[][]"
    assert feature_types(FeatureSpec("x", DataType.STRING), is_json=True)[0] == "JSON"
    group = FeatureGroupSpec("g", [FeatureSpec("label", DataType.STRING), FeatureSpec("score", DataType.DOUBLE)])
    assert feature_types(group)[0] == 'STRUCT("label" VARCHAR, "score" DOUBLE)'
    for dtype in DataType:
        sql, arrow = feature_types(FeatureSpec("x", dtype))
        assert sql and isinstance(arrow, pa.DataType)


def test_outputs_to_arrow_as_a_struct_with_null_rows_and_json_as_text() -> None:
    types = OutputTypes.of(spec(json_outputs=frozenset({"label"})))
    assert types.sql == 'STRUCT("label" JSON, "score" DOUBLE)'
    array = types.to_arrow([{"label": '["a"]', "score": 0.5}, None])
    assert array.to_pylist() == [{"label": '["a"]', "score": 0.5}, None]
    columns = types.to_arrow_columns([{"label": '["a"]', "score": 0.5}], json_as_text=True)
    assert columns[0].type == pa.string()


# ---------------------------------------------------------- function specs
def test_function_spec_record_round_trip_and_column_rules() -> None:
    signature = ModelSignature(
        inputs=[FeatureSpec("audio", DataType.BYTES), FeatureSpec("turns", DataType.STRING, shape=(-1,))],
        outputs=[FeatureSpec("turns", DataType.STRING, shape=(-1,))],
    )
    function = spec("predict", signature, output_shapes={"turns": (-1,)}, implementation=Implementation.CUSTOM)
    again = FunctionSpec.from_record(json.loads(json.dumps(function.to_record())))
    assert again.to_record() == function.to_record() and again.implementation is Implementation.CUSTOM
    assert function.replaced_columns() == {"turns"}
    assert function.single_file_input(frozenset({"turns"})) == "audio"
    assert function.single_file_input(frozenset()) is None


def test_manifest_round_trip_reads_older_custom_key() -> None:
    manifest = Manifest("custom", None, [], handler_data={"class": "C"}, files={"a": "0" * 64})
    assert Manifest.from_json(manifest.to_json()) == manifest
    older = json.loads(manifest.to_json())
    older["custom"] = older.pop("handler_data")
    assert Manifest.from_json(json.dumps(older)).handler_data == {"class": "C"}


# ----------------------------------------------------------------- values
def test_one_value_rule_for_inputs_and_parameters() -> None:
    assert check_value(3.0, DataType.INT64) == 3 and check_value(Decimal("3"), DataType.INT32) == 3
    assert check_value(Decimal("0.7"), DataType.DOUBLE) == 0.7
    assert check_value(2.5, DataType.INT64) is INVALID
    assert check_value(True, DataType.INT64) is INVALID and check_value(1, DataType.BOOL) is INVALID
    assert check_value("\udc80", DataType.STRING) is NOT_UNICODE
    assert check_value(np.array([1, 2]), DataType.FLOAT, (2,)) == [1.0, 2.0]
    assert check_value([1, 2, 3], DataType.FLOAT, (2,)) is INVALID
    group = FeatureGroupSpec("g", [FeatureSpec("n", DataType.INT64)])
    assert check_feature({"n": np.int64(4)}, group, None) == {"n": 4}
    # Parameters follow the same rule: a SQL DECIMAL literal is a float, an integral float an int.
    assert ParamSpec("temperature", DataType.DOUBLE, 1.0).validate(Decimal("0.7")) == 0.7
    assert ParamSpec("max_new_tokens", DataType.INT64, 20).validate(40.0) == 40
    with pytest.raises(ValueError, match="max_new_tokens"):
        ParamSpec("max_new_tokens", DataType.INT64, 20).validate(2.5)


def test_plain_python_values_json_and_row_keys() -> None:
    assert to_python({"a": (np.float32(0.5), np.int64(2)), "b": pd.NA}) == {"a": [0.5, 2], "b": None}
    assert cell_to_python(np.float64("nan")) is None and cell_to_python(pd.NaT) is None
    assert cell_to_python(np.array([1, 2])) == [1, 2] and cell_to_python("x") == "x"
    assert to_json({"score": np.float32(0.25)}) == json.dumps({"score": 0.25})
    assert freeze({"b": [1], "a": 2}) == (("a", 2), ("b", (1,)))
    assert drop_unset_params({"a": None, "b": 0}) == {"b": 0}


# ------------------------------------------------------------------ tasks
def test_the_task_table_comes_from_the_task_modules() -> None:
    for name, task in TASKS.items():
        assert name in task.names
    assert TASK_ALIASES == {"sentiment-analysis": "text-classification", "ner": "token-classification"}
    assert get_task("sentiment-analysis") is TASKS["text-classification"]
    assert get_task("translation_en_to_de") is TASKS["translation"]
    assert get_task("translation_english_to_german") is None and get_task("no-such-task") is None
    assert task_for(Implementation.TASK, "no-such-task") is GENERIC
    with pytest.raises(ValueError):
        task_for(Implementation.CUSTOM, "text-classification")


# ------------------------------------------------------------------ batch
def test_rechunk_gives_exact_sizes_whatever_comes_in() -> None:
    batches = [pa.record_batch({"x": list(range(n))}) for n in (3, 0, 5, 1)]
    assert [t.num_rows for t in rechunk(batches, 4)] == [4, 4, 1]
    assert [t.num_rows for t in rechunk(batches, 9)] == [9]


def test_memory_units_specs_and_stage_paths(tmp_path: Path) -> None:
    assert parse_memory("8GiB") == 8 * 2**30 and parse_memory("512Mi") == 512 * 2**20
    with pytest.raises(ValueError, match="unit"):
        parse_memory("512")
    with pytest.raises(ValueError):
        JobSpec(job_name="not a name")
    with pytest.raises(ValueError):
        OutputSpec()
    assert parse_stage_path("@docs/a/b.parquet") == ("docs", "a/b.parquet")
    stage = Stage("docs", str(tmp_path))
    assert stage.resolve("a/b.txt") == f"{tmp_path}/a/b.txt"
    for outside in ("../x", "/etc/passwd", "a/../../x"):
        with pytest.raises(ValueError, match="stage"):
            stage.resolve(outside)


def test_the_model_cache_evicts_least_recently_used_over_its_budget() -> None:
    cache = model_cache.ModelCache(budget_bytes=250)
    for key in ("a", "b", "c"):
        cache.get(key, lambda: model_cache.LoadedModel(model=object(), nbytes=100, device="cpu"))
    assert "a" not in cache and "b" in cache and "c" in cache
    cache.get("b", lambda: pytest.fail("b is cached"))
    cache.get("d", lambda: model_cache.LoadedModel(model=object(), nbytes=100, device="cpu"))
    assert "c" not in cache and "b" in cache and cache.loads == 4
