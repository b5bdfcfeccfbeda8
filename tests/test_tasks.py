"""Every inferred task through all three doors: show_functions, mv.run, SQL scalar, table macro,
and the same database file reopened in a new process. Outputs are compared with a direct
pipeline call on the same inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import transformers
from conftest import Case, run_in_new_process, seed_json

import duckreg
from duckreg.model_signature import DataType, FeatureSpec, ModelSignature, ParamSpec
from duckreg.tasks._generation import GENERATION_PARAMS

S = DataType.STRING
# Runtime parameters the tasks declare (the seeds are silent on them; later Snowflake releases add them).
FUNCTION_TO_APPLY = ParamSpec("function_to_apply", S, None)


def close(a: Any, b: Any, rel: float = 1e-4) -> bool:
    """Recursive equality with a float tolerance (batch padding moves the last bits)."""
    if isinstance(a, str) and isinstance(b, str):
        if a.startswith(("[", "{")) and b.startswith(("[", "{")):
            return close(json.loads(a), json.loads(b), rel)
        return a == b
    if isinstance(a, (float, np.floating)) or isinstance(b, (float, np.floating)):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple, np.ndarray)) and isinstance(b, (list, tuple, np.ndarray)):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b, strict=True))
    return a == b


def _tc_items(frame):
    return [{"text": t, "text_pair": p} if p else t for t, p in zip(frame["text"], frame["text_pair"], strict=True)]


TC_FRAME = pd.DataFrame(
    {
        "text": ["I like you.", "I would like to have udon for today's dinner.", "I like you."],
        "text_pair": ["I love you, too.", "", "I love you, too."],
    }
)
TEXTS = ["My name is Izumi and I live in Tokyo, Japan.", "What is the weather like today?"]
TABLE = json.dumps({"Channel": ["A.I.Channel", "Kaguya Luna"], "Subscribers": ["3,020,000", "872,000"]})

CASES = [
    Case(
        "sentiment",
        "text-classification",
        "text-classification",
        {},
        ModelSignature(
            inputs=[FeatureSpec("text", S), FeatureSpec("text_pair", S)],
            outputs=[FeatureSpec("label", S), FeatureSpec("score", DataType.DOUBLE)],
            params=[FUNCTION_TO_APPLY],
        ),
        TC_FRAME,
        lambda pipe, f: [{"label": r["label"], "score": r["score"]} for r in pipe(_tc_items(f))],
    ),
    Case(
        "sentiment_alias",
        "sentiment-analysis",
        "text-classification",
        {"top_k": 1},
        ModelSignature(
            inputs=[FeatureSpec("text", S), FeatureSpec("text_pair", S)],
            outputs=[FeatureSpec("outputs", S)],
            params=[ParamSpec("top_k", DataType.INT64, 1), FUNCTION_TO_APPLY],
        ),
        TC_FRAME,
        lambda pipe, f: [{"outputs": seed_json(r)} for r in pipe(_tc_items(f))],
    ),
    Case(
        "finbert",
        "text-classification",
        "text-classification",
        {"top_k": 2},
        ModelSignature(
            inputs=[FeatureSpec("text", S), FeatureSpec("text_pair", S)],
            outputs=[FeatureSpec("outputs", S)],
            params=[ParamSpec("top_k", DataType.INT64, 2), FUNCTION_TO_APPLY],
        ),
        TC_FRAME,
        lambda pipe, f: [{"outputs": seed_json(r)} for r in pipe(_tc_items(f))],
    ),
    Case(
        "tagger",
        "ner",
        "token-classification",
        {},
        ModelSignature(inputs=[FeatureSpec("inputs", S)], outputs=[FeatureSpec("outputs", S)]),
        pd.DataFrame({"inputs": TEXTS}),
        lambda pipe, f: [{"outputs": seed_json(pipe(t))} for t in f["inputs"]],
    ),
    Case(
        "tokens",
        "token-classification",
        "token-classification",
        {},
        ModelSignature(inputs=[FeatureSpec("inputs", S)], outputs=[FeatureSpec("outputs", S)]),
        pd.DataFrame({"inputs": TEXTS}),
        lambda pipe, f: [{"outputs": seed_json(pipe(t))} for t in f["inputs"]],
    ),
    Case(
        "filler",
        "fill-mask",
        "fill-mask",
        {"top_k": 3},
        ModelSignature(
            inputs=[FeatureSpec("inputs", S)],
            outputs=[FeatureSpec("outputs", S)],
            params=[ParamSpec("targets", S, None, shape=(-1,)), ParamSpec("top_k", DataType.INT64, 3)],
        ),
        pd.DataFrame({"inputs": ["LynYuu is the [MASK] of the Grand Duchy of Yu.", "I [MASK] you."]}),
        lambda pipe, f: [{"outputs": seed_json(pipe(t))} for t in f["inputs"]],
    ),
    Case(
        "zero_shot",
        "zero-shot-classification",
        "zero-shot-classification",
        {},
        ModelSignature(
            inputs=[FeatureSpec("sequences", S), FeatureSpec("candidate_labels", S, shape=(-1,))],
            outputs=[
                FeatureSpec("sequence", S),
                FeatureSpec("labels", S, shape=(-1,)),
                FeatureSpec("scores", DataType.DOUBLE, shape=(-1,)),
            ],
            params=[
                ParamSpec("hypothesis_template", S, "This example is {}."),
                ParamSpec("multi_label", DataType.BOOL, False),
            ],
        ),
        pd.DataFrame(
            {
                "sequences": ["I have a problem with Snowflake that needs to be resolved asap!!"] * 2,
                "candidate_labels": [["urgent", "not urgent"], ["English", "Japanese"]],
            }
        ),
        lambda pipe, f: [
            pipe(s, candidate_labels=list(c)) for s, c in zip(f["sequences"], f["candidate_labels"], strict=True)
        ],
    ),
    Case(
        "writer",
        "text-generation",
        "text-generation",
        {"do_sample": False, "max_new_tokens": 5},
        ModelSignature(
            inputs=[FeatureSpec("inputs", S)], outputs=[FeatureSpec("outputs", S)], params=GENERATION_PARAMS
        ),
        pd.DataFrame({"inputs": ["Hello world", "I like you very much and", "Hello world"]}),
        lambda pipe, f: [{"outputs": seed_json(pipe(t))} for t in f["inputs"]],
    ),
    Case(
        "table_qa",
        "table-question-answering",
        "table-question-answering",
        {},
        ModelSignature(
            inputs=[FeatureSpec("query", S), FeatureSpec("table", S)],
            outputs=[
                FeatureSpec("answer", S),
                FeatureSpec("coordinates", DataType.INT64, shape=(-1,)),
                FeatureSpec("cells", S, shape=(-1,)),
                FeatureSpec("aggregator", S),
            ],
            params=[
                ParamSpec("sequential", DataType.BOOL, False),
                ParamSpec("padding", S, None),
                ParamSpec("truncation", S, None),
            ],
        ),
        pd.DataFrame({"query": ["Which channel has the most subscribers?"], "table": [TABLE]}),
        lambda pipe, f: [
            {
                "answer": r["answer"],
                "coordinates": [list(c) for c in r["coordinates"]],
                "cells": r["cells"],
                "aggregator": r["aggregator"],
            }
            for r in [pipe({"query": q, "table": json.loads(t)}) for q, t in zip(f["query"], f["table"], strict=True)]
        ],
    ),
]


@pytest.fixture(scope="module")
def logged(model_dirs, tmp_path_factory) -> tuple[Path, dict[str, tuple[Case, Any]]]:
    """Every case logged into one registry file; returns the path and each case's pipeline."""
    db = tmp_path_factory.mktemp("tasks") / "tasks.duckdb"
    registry = duckreg.Registry(str(db))
    pipes = {}
    for case in CASES:
        pipe = transformers.pipeline(case.task, model=str(model_dirs[case.model_dir]), **case.kwargs)
        registry.log_model(pipe, model_name=case.model_name, version_name="v1", options=case.options)
        pipes[case.model_name] = (case, pipe)
    registry.connection.close()
    return db, pipes


@pytest.fixture
def registry_on(logged):
    db, _ = logged
    reg = duckreg.Registry(str(db))
    yield reg
    reg.connection.close()


def _sql_rows(con, case: Case) -> list[dict[str, Any]]:
    con.register("inputs_df", case.frame)
    args = ", ".join(f'"{spec.name}"' for spec in case.signature.inputs)
    rows = con.execute(f"SELECT {case.model_name}({args}) FROM inputs_df").fetchall()
    outputs = [o.name for o in case.signature.outputs]
    return [r[0] if len(outputs) > 1 else {outputs[0]: r[0]} for r in rows]


@pytest.mark.parametrize("case", CASES, ids=[c.model_name for c in CASES])
def test_show_functions_matches_seed(registry_on, case: Case) -> None:
    functions = registry_on.get_model(case.model_name).version("v1").show_functions()
    assert functions == [{"name": "__CALL__", "target_method": "__call__", "signature": case.signature}]


@pytest.mark.parametrize("case", CASES, ids=[c.model_name for c in CASES])
def test_run_matches_direct_pipeline_and_sql(registry_on, logged, case: Case) -> None:
    _, pipes = logged
    pipe = pipes[case.model_name][1]
    mv = registry_on.get_model(case.model_name).default
    result = mv.run(case.frame)
    assert list(result.columns) == [o.name for o in case.signature.outputs]
    assert list(result.index) == list(case.frame.index)
    expected = case.direct(pipe, case.frame)
    got = result.to_dict("records")
    for row_got, row_expected in zip(got, expected, strict=True):
        assert close({k: row_got[k] for k in row_expected}, row_expected), (row_got, row_expected)

    con = registry_on.register_functions()
    sql_rows = _sql_rows(con, case)
    for row_sql, row_run in zip(sql_rows, got, strict=True):
        assert close(dict(row_sql), {k: row_run[k] for k in row_sql})

    con.execute("CREATE OR REPLACE TABLE case_inputs AS SELECT * FROM inputs_df")
    table_rows = con.execute(f"SELECT * FROM {case.model_name}_table('case_inputs')").df()
    assert list(table_rows.columns) == list(case.frame.columns) + [o.name for o in case.signature.outputs]
    for output in case.signature.outputs:
        for value_sql, value_run in zip(table_rows[output.name], result[output.name], strict=True):
            assert close(value_sql, value_run)


def test_json_outputs_use_seed_formatting(registry_on) -> None:
    out = registry_on.get_model("tokens").default.run(pd.DataFrame({"inputs": TEXTS}))["outputs"][0]
    first = json.loads(out)[0]
    assert list(first) == ["entity", "score", "index", "word", "start", "end"]
    assert out.startswith('[{"entity": ')
    # float32 scores are widened: the printed value is the exact double of the float32.
    assert repr(first["score"]) == repr(float(np.float32(first["score"])))


def test_sql_types_follow_the_signature(registry_on) -> None:
    con = registry_on.register_functions()
    types = con.execute(
        "SELECT typeof(sentiment('a')), typeof(finbert('a')), typeof(zero_shot('a', ['x', 'y'])),"
        " typeof(table_qa('q', '{\"a\": [\"1\"]}'))"
    ).fetchone()
    assert types == (
        'STRUCT("label" VARCHAR, score DOUBLE)',
        "JSON",
        'STRUCT("sequence" VARCHAR, labels VARCHAR[], scores DOUBLE[])',
        "STRUCT(answer VARCHAR, coordinates BIGINT[][], cells VARCHAR[], aggregator VARCHAR)",
    )


def test_new_process_calls_every_logged_model(logged) -> None:
    db, pipes = logged
    selects = []
    for name, (case, _) in pipes.items():
        args = ", ".join(_literal(v) for v in case.frame.iloc[0])
        selects.append(f"{name}({args})::VARCHAR")
    rows = run_in_new_process(db, "SELECT " + ", ".join(selects))
    with _Opened(db) as reg:
        con = reg.register_functions()
        local = con.execute("SELECT " + ", ".join(selects)).fetchall()
    assert rows == [list(local[0])]
    assert len(rows[0]) == len(pipes) and None not in rows[0]


class _Opened:
    def __init__(self, db: Path) -> None:
        self.db = db

    def __enter__(self) -> duckreg.Registry:
        self.reg = duckreg.Registry(str(self.db))
        return self.reg

    def __exit__(self, *exc) -> None:
        self.reg.connection.close()


def _literal(value: Any) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"
