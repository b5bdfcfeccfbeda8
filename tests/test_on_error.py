"""One bad row does not sink a query or a job: ``on_error`` in mv.run, SQL and run_batch, on real models.

Bad rows of three kinds: an input of the wrong type (refused before the model runs), a row the task refuses
(an empty question), and a row that makes the whole forward batch fail (``Fragile``), which the core isolates
by retrying smaller batches. Under ``null`` / ``continue`` the good rows equal a run without the bad ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import kill_when_parts_written
from custom_models import Fragile, SlowFragile

import duckreg
from duckreg.batch import JobSpec, OutputSpec
from duckreg.huggingface import TransformersPipeline
from duckreg.jobs import job_records
from duckreg.model_signature import DataType, FeatureSpec, ModelSignature

CONTEXT = "Bob ate an apple in the kitchen."


@pytest.fixture
def qa(registry, model_dirs):
    return registry.log_model(
        TransformersPipeline(model=str(model_dirs["question-answering"]), task="question-answering"),
        model_name="qa", version_name="v1",
    )  # fmt: skip


@pytest.fixture
def fragile(registry):
    signature = ModelSignature(inputs=[FeatureSpec("text", DataType.STRING)],
                               outputs=[FeatureSpec("length", DataType.INT64)])  # fmt: skip
    return registry.log_model(Fragile(), model_name="fragile", version_name="v1", signatures={"predict": signature},
                              options={"max_batch_size": 8})  # fmt: skip


def _questions() -> pd.DataFrame:
    return pd.DataFrame({"question": ["Who ate?", "", "What was eaten?", "Where?", ""], "context": [CONTEXT] * 5})


def test_mv_run_null_keeps_the_good_rows_and_says_why_the_bad_ones_failed(qa) -> None:
    frame = _questions()
    out = qa.run(frame, on_error="null")
    good = [0, 2, 3]
    alone = qa.run(frame.iloc[good].reset_index(drop=True))
    assert out.loc[good, "answer"].tolist() == alone["answer"].tolist()
    assert out.loc[good, "score"].tolist() == alone["score"].tolist()
    assert out["answer"].isna().tolist() == [False, True, False, False, True]
    assert out["_error"].isna().tolist() == [True, False, True, True, False]
    assert (
        out["_error"][1]
        == "Model qa version v1, function __CALL__, column 'question', row 2: `question` cannot be empty"
    )
    assert "column 'question', row 5: " in out["_error"][4]
    with pytest.raises(ValueError, match=r"Model qa version v1, function __CALL__, column 'question', row 2: "):
        qa.run(frame)
    with pytest.raises(ValueError, match=r"on_error must be one of \['raise', 'null'\], got 'skip'"):
        qa.run(frame, on_error="skip")


def test_a_row_that_fails_its_whole_batch_is_isolated_and_never_cached(fragile, registry) -> None:
    texts = [f"text {i}" for i in range(20)]
    texts[13] = "boom"
    out = fragile.run(pd.DataFrame({"text": texts}), on_error="null")
    assert out["length"].isna().tolist() == [i == 13 for i in range(20)]
    assert out.loc[out.index != 13, "length"].tolist() == [len(t) for i, t in enumerate(texts) if i != 13]
    assert (
        "Model fragile version v1, function PREDICT failed: RuntimeError: the model could not read a row"
        in (out["_error"][13])
    )
    assert "(row 14)" in out["_error"][13]
    entries = registry.result_cache.stats()["entries"]
    again = fragile.run(pd.DataFrame({"text": ["boom"]}), on_error="null")
    assert again["_error"][0] is not None and registry.result_cache.stats()["entries"] == entries
    with pytest.raises(RuntimeError, match=r"could not read a row \(row 14\)"):
        fragile.run(pd.DataFrame({"text": texts}))


def test_a_refused_row_is_cached_as_its_refusal_and_said_again_without_loading_the_model(qa) -> None:
    from duckreg import model_cache

    frame = _questions()
    first = qa.run(frame, on_error="null")
    model_cache.CACHE.clear()
    loads = model_cache.CACHE.loads
    pd.testing.assert_frame_equal(qa.run(frame, on_error="null"), first)
    moved = qa.run(frame.iloc[[1, 0]].reset_index(drop=True), on_error="null")
    assert moved["_error"][0] == first["_error"][1].replace("row 2", "row 1")
    with pytest.raises(ValueError, match=r"Model qa version v1, function __CALL__, column 'question', row 2: "):
        qa.run(frame)
    assert model_cache.CACHE.loads == loads  # answers and refusals alike came from the result cache


def test_sql_on_error_null_per_call_and_per_session_and_duckreg_errors_joins_back(qa, registry) -> None:
    con = registry.register_functions()
    frame = _questions()
    con.execute("CREATE TABLE asks AS SELECT row_number() OVER () AS id, question, context FROM frame")
    with pytest.raises(
        duckdb.Error, match=r"ValueError: Model qa version v1, function __CALL__, column 'question', row 2"
    ):
        con.execute("SELECT qa(question, context) FROM asks").fetchall()
    rows = con.execute("SELECT id, qa(question, context, on_error := 'null').answer FROM asks ORDER BY id").fetchall()
    alone = qa.run(frame.iloc[[0, 2, 3]].reset_index(drop=True))["answer"].tolist()
    assert [r[1] for r in rows] == [alone[0], None, alone[1], alone[2], None]
    con.execute("SET VARIABLE duckreg_on_error = 'null'")
    table = con.execute("SELECT id, answer FROM qa_table('asks') ORDER BY id").fetchall()
    assert [r[1] for r in table] == [r[1] for r in rows]
    failed = con.execute(
        "SELECT DISTINCT a.id FROM asks a JOIN duckreg_errors() e ON e.inputs->>'question' = a.question "
        "AND e.inputs->>'context' = a.context AND e.model = 'qa' ORDER BY a.id"
    ).fetchall()
    assert failed == [(2,), (5,)]
    errors = con.execute(
        'SELECT DISTINCT "version", "function", error FROM duckreg_errors() WHERE model = \'qa\''
    ).fetchall()
    assert errors and all(v == "v1" and f == "__CALL__" and "column 'question'" in e for v, f, e in errors)
    with pytest.raises(duckdb.Error, match=r"on_error must be one of \['raise', 'null'\], got 'skip'"):
        con.execute("SELECT qa(question, context, on_error := 'skip') FROM asks").fetchall()


def test_run_batch_continue_writes_every_row_and_counts_the_failed_ones(fragile, registry, tmp_path: Path) -> None:
    registry.create_stage("out", str(tmp_path / "out"))
    texts = [f"text {i}" for i in range(30)]
    for bad in (4, 17, 18):
        texts[bad] = f"boom {bad}"
    frame = pd.DataFrame({"id": range(30), "text": texts})
    with pytest.raises(RuntimeError, match=r"could not read a row \(row 5\)"):
        fragile.run_batch(frame, output_spec=OutputSpec("@out/raise/"), job_spec=JobSpec(block=True))
    assert not (tmp_path / "out" / "raise" / "_SUCCESS").exists()
    spec = JobSpec(block=True, on_error="continue", max_batch_rows=8, job_name="kept")
    job = fragile.run_batch(frame, output_spec=OutputSpec("@out/kept/"), job_spec=spec)
    assert job.status == "DONE" and job.message == "30 rows written, 3 failed (see the _error column)."
    out = pq.read_table(tmp_path / "out" / "kept").to_pandas().sort_values("id").reset_index(drop=True)
    assert (tmp_path / "out" / "kept" / "_SUCCESS").exists() and len(out) == 30
    assert out["_error"].notna().tolist() == [i in (4, 17, 18) for i in range(30)]
    assert out.loc[out["_error"].isna(), "length"].tolist() == [len(t) for t in texts if not t.startswith("boom")]
    assert "row 18" in out["_error"][17] and "row 19" in out["_error"][18]
    record = job_records(registry, name="kept")[0]
    assert (record["rows_done"], record["rows_failed"]) == (30, 3)
    assert "part 1/4: 8 rows, 1 failed" in job.get_logs()
    # Cancelled after its first part and run again: the same output, the failed count read back from the parts.
    spec = JobSpec(on_error="continue", max_batch_rows=8, job_name="resumed")
    first = fragile.run_batch(frame, output_spec=OutputSpec("@out/resumed/"), job_spec=spec)
    first.cancel()
    again = fragile.run_batch(frame, output_spec=OutputSpec("@out/resumed/"),
                              job_spec=JobSpec(**{**vars(spec), "block": True}))  # fmt: skip
    assert again.status == "DONE" and job_records(registry, name="resumed")[0]["rows_failed"] == 3
    resumed = pq.read_table(tmp_path / "out" / "resumed").to_pandas().sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(resumed, out)
    assert json.loads(json.dumps(vars(JobSpec(on_error="continue"))))["on_error"] == "continue"
    with pytest.raises(ValueError, match=r"on_error must be 'raise' or 'continue', got 'null'"):
        JobSpec(on_error="null")


_CONTINUE_WORKER = """
import sys
sys.path.insert(0, {tests!r})
import duckreg
from duckreg.batch import JobSpec, OutputSpec
registry = duckreg.Registry({db!r})
mv = registry.get_model("slow_fragile").default
job = mv.run_batch("SELECT * FROM texts", output_spec=OutputSpec("@out/killed/"),
                   job_spec=JobSpec(job_name="killed", on_error="continue", max_batch_rows=20, block=True))
print(job.status)
"""


@pytest.mark.process
def test_a_continue_job_killed_with_sigkill_resumes_to_the_output_of_a_clean_run(
    registry, db_path: Path, tmp_path: Path
) -> None:
    signature = ModelSignature(inputs=[FeatureSpec("text", DataType.STRING)],
                               outputs=[FeatureSpec("length", DataType.INT64)])  # fmt: skip
    registry.log_model(SlowFragile(), model_name="slow_fragile", version_name="v1", signatures={"predict": signature},
                       options={"max_batch_size": 8})  # fmt: skip
    registry.create_stage("out", str(tmp_path / "out"))
    registry.connection.execute(
        "CREATE TABLE texts AS SELECT i AS id, CASE WHEN i % 37 = 5 THEN 'boom ' || i ELSE 'text ' || i END AS text "
        "FROM range(300) t(i)"
    )
    registry.connection.close()
    tests = str(Path(__file__).parent)
    worker = subprocess.Popen([sys.executable, "-c", _CONTINUE_WORKER.format(tests=tests, db=str(db_path))])
    out = tmp_path / "out" / "killed"
    assert 4 <= kill_when_parts_written(worker, out, 4) < 15

    reopened = duckreg.Registry(str(db_path))
    try:
        mv = reopened.get_model("slow_fragile").default
        spec = {"on_error": "continue", "max_batch_rows": 20, "block": True}
        resumed = mv.run_batch("SELECT * FROM texts", output_spec=OutputSpec("@out/killed/"),
                               job_spec=JobSpec(job_name="killed", **spec))  # fmt: skip
        clean = mv.run_batch("SELECT * FROM texts", output_spec=OutputSpec("@out/clean/"),
                             job_spec=JobSpec(job_name="clean", **spec))  # fmt: skip
        assert resumed.status == clean.status == "DONE" and "resuming" in resumed.get_logs()
        counts = {name: (record["rows_done"], record["rows_failed"])
                  for name in ("killed", "clean") for record in job_records(reopened, name=name)}  # fmt: skip
    finally:
        reopened.connection.close()
    failing = [i for i in range(300) if i % 37 == 5]
    assert counts["killed"] == counts["clean"] == (300, len(failing))
    got = pq.read_table(out).to_pandas().sort_values("id").reset_index(drop=True)
    expected = pq.read_table(tmp_path / "out" / "clean").to_pandas().sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    assert got.index[got["_error"].notna()].tolist() == failing
    assert got.loc[got["_error"].isna(), "length"].tolist() == [len(f"text {i}") for i in range(300) if i % 37 != 5]
    assert (out / "_SUCCESS").exists()


def _picture(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.random.RandomState(seed).rand(24, 24, 3) * 255).astype("uint8")).save(buffer, "PNG")
    return buffer.getvalue()


def _chat(content: str, role: str = "user") -> list[dict]:
    return [{"role": role, "content": content}]


TABLE = json.dumps({"name": ["tokyo", "paris"], "people": ["9", "2"]})
# kind -> (model folder, task, signatures, input columns, good rows, bad rows (column, row values), the SQL call's
# part to compare, columns a run writes that differ between runs); rows are (values...) in input-column order.
KINDS = {
    "long review": ("text-classification", "text-classification", None, ["text"],
                    [("good food",), ("bad food",), ("fine",)], ("text", [("good " * 1000,)]), "{call}", []),
    "megabyte question": ("question-answering", "question-answering", None, ["question", "context"],
                          [("Who ate?", CONTEXT), ("What was eaten?", CONTEXT), ("Where?", CONTEXT)],
                          ("question", [("word " * 220_000, CONTEXT)]), "{call}", []),
    "broken JSON table": ("table-question-answering", "table-question-answering", None, ["query", "table"],
                          [("how many people?", TABLE), ("which name?", TABLE), ("people in paris?", TABLE)],
                          ("table", [("how many?", '{"name": ["tokyo"'), ("how many?", "[1, 2]")]), "{call}", []),
    "unreadable image": ("image-classification", "image-classification", None, ["images"],
                         [(_picture(0),), (_picture(1),), (_picture(2),)],
                         ("images", [(b"not a picture",), (_picture(3)[:40],)]), "{call}", []),
    "invalid chat message": ("text-generation", "text-generation", "openai",
                             ["messages", "temperature", "max_completion_tokens"],
                             [(_chat("hello"), 0.0, 2), (_chat("good food"), 0.0, 2), (_chat("fine"), 0.0, 2)],
                             ("messages", [(_chat("hi", role=""), 0.0, 2), ([], 0.0, 2)]), "{call}.choices",
                             ["id", "created"]),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_of_bad_row_through_every_door(kind: str, registry, model_dirs, tmp_path: Path) -> None:
    """Good rows interleaved with bad ones: under null / continue the good rows equal a run without the bad ones,
    row for row; under raise the error names model, version, function, column and row."""
    from duckreg.openai_signatures import OPENAI_CHAT_SIGNATURE

    folder, task, signatures, columns, good, (column, bad), sql_part, varying = KINDS[kind]
    mv = registry.log_model(
        TransformersPipeline(model=str(model_dirs[folder]), task=task), model_name="m", version_name="v1",
        signatures=OPENAI_CHAT_SIGNATURE if signatures == "openai" else None,
    )  # fmt: skip
    rows = [good[0], bad[0], good[1], bad[-1], good[2]]
    bad_ids = [2, 4]  # 1-based row numbers of the bad rows
    frame = pd.DataFrame(rows, columns=columns)
    alone = pd.DataFrame(good, columns=columns)
    outputs = [c for c in mv.run(alone).columns if c not in columns and c not in varying]
    context = rf"Model m version v1, function __CALL__, column '{column}'.*row [24]\b"

    # mv.run
    with pytest.raises(ValueError, match=context):
        mv.run(frame)
    kept = mv.run(frame, on_error="null")
    assert kept["_error"].notna().tolist() == [i + 1 in bad_ids for i in range(5)]
    assert f"column '{column}'" in kept["_error"][1] and "row 4" in kept["_error"][3]
    expected = mv.run(alone)[outputs]
    # Nullable dtypes where a column holds NULLs (Int64 for int64); the values are the same.
    pd.testing.assert_frame_equal(kept.loc[[0, 2, 4], outputs].reset_index(drop=True), expected, check_dtype=False)
    assert kept.loc[[1, 3], outputs].isna().all().all()

    # SQL
    con = registry.register_functions()
    table = frame.assign(row=range(1, 6))  # not "id": a chat completion's own id column would replace it
    con.register("frame_view", table)
    con.execute("CREATE TABLE t AS SELECT * FROM frame_view")
    call = sql_part.format(call="m({}{{}})".format(", ".join(f'"{c}"' for c in columns)))
    with pytest.raises(duckdb.Error, match=context):
        con.execute(f"SELECT {call.format('')} FROM t").fetchall()
    null_call = call.format(", on_error := 'null'")
    got = con.execute(f"SELECT row, {null_call} FROM t ORDER BY row").fetchall()
    good_only = con.execute(f"SELECT row, {call.format('')} FROM t WHERE row NOT IN (2, 4) ORDER BY row").fetchall()
    assert [r for r in got if r[0] not in bad_ids] == good_only
    assert [r[1] for r in got if r[0] in bad_ids] == [None, None]

    # run_batch
    registry.create_stage("out", str(tmp_path / "out"))
    spec = JobSpec(on_error="continue", block=True, job_name="kept")
    job = mv.run_batch(table, output_spec=OutputSpec("@out/kept/"), job_spec=spec)
    assert job.status == "DONE" and job.message == "5 rows written, 2 failed (see the _error column)."
    assert (tmp_path / "out" / "kept" / "_SUCCESS").exists()
    assert job_records(registry, name="kept")[0]["rows_failed"] == 2
    written = pq.read_table(tmp_path / "out" / "kept").to_pandas().sort_values("row").reset_index(drop=True)
    clean = mv.run_batch(table[~table["row"].isin(bad_ids)], output_spec=OutputSpec("@out/clean/"),
                         job_spec=JobSpec(block=True))  # fmt: skip
    assert clean.status == "DONE"
    reference = pq.read_table(tmp_path / "out" / "clean").to_pandas().sort_values("row").reset_index(drop=True)
    assert written["_error"].notna().tolist() == [i + 1 in bad_ids for i in range(5)]
    kept_types = pq.read_schema(next((tmp_path / "out" / "kept").glob("*.parquet"))).types
    clean_types = pq.read_schema(next((tmp_path / "out" / "clean").glob("*.parquet"))).types
    assert kept_types == [*clean_types, pa.string()]  # the same types, NULLs where a row failed, and _error
    pd.testing.assert_frame_equal(
        written.loc[written["_error"].isna(), outputs].reset_index(drop=True), reference[outputs], check_dtype=False
    )
