"""Bad input gets a clear error naming model, version, function and column, or NULL for that row where SQL
semantics call for it; never a crash, a raw internal error, a wrong answer or a half-written registry.

Each case goes through the three front doors: ``mv.run``, SQL, and ``run_batch``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import pickle
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import tiny_models
import transformers

import duckreg
from duckreg.artifacts import TamperedArtifact
from duckreg.batch import InputSpec, JobSpec, OutputSpec, SaveMode
from duckreg.huggingface import TransformersPipeline
from duckreg.openai_signatures import OPENAI_CHAT_SIGNATURE

CONTEXT = "Model tc version v1, function __CALL__"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory, model_dirs):
    root = tmp_path_factory.mktemp("bad-input")
    registry = duckreg.Registry(str(root / "shop.duckdb"))
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(pipe, model_name="tc", version_name="v1")
    zero_shot = transformers.pipeline("zero-shot-classification", model=str(model_dirs["zero-shot-classification"]))
    registry.log_model(zero_shot, model_name="zs", version_name="v1")
    table_qa = transformers.pipeline("table-question-answering", model=str(model_dirs["table-question-answering"]))
    registry.log_model(table_qa, model_name="tqa", version_name="v1")
    short_decoder = tiny_models.bart_seq2seq(root / "bart128", positions=128)
    registry.log_model(
        TransformersPipeline(model=str(short_decoder), task="summarization"), model_name="summ", version_name="v1"
    )
    registry.create_stage("lake", str(root / "lake"))
    registry.root = root
    yield registry
    registry.connection.close()


def _frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def _batch(registry, model: str, data, location: str, **specs):
    """run_batch into a fresh stage location (blocking); the rows it wrote."""
    mv = registry.get_model(model).default
    job = mv.run_batch(
        data,
        output_spec=OutputSpec(location, mode=SaveMode.OVERWRITE),
        job_spec=JobSpec(block=True),
        **specs,
    )
    assert job.status == "DONE", job.get_logs()
    folder = registry.stages.locate(location)[1]
    assert (Path(folder) / "_SUCCESS").exists()
    return (
        duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*.parquet')").df()
        if list(Path(folder).glob("*.parquet"))
        else pd.DataFrame()
    )


def _batch_error(registry, model: str, data, location: str, **specs) -> str:
    """The message a run_batch failure reports (raised, or recorded on the job)."""
    mv = registry.get_model(model).default
    try:
        job = mv.run_batch(data, output_spec=OutputSpec(location, mode=SaveMode.OVERWRITE),
                           job_spec=JobSpec(block=True), **specs)  # fmt: skip
    except (ValueError, RuntimeError, TypeError) as exc:
        return str(exc)
    assert job.status == "FAILED"
    return job.message


# ---------------------------------------------------------------- ordinary odd text


def test_null_empty_whitespace_emoji_and_rtl_text_answer_the_same_through_every_door(shop) -> None:
    texts = ["", "   ", "I like you 😀🎉", "مرحبا بالعالم", "שלום עולם", None]
    mv = shop.get_model("tc").default
    with pytest.warns(UserWarning, match="Null value detected in column text"):
        by_run = mv.run(_frame(text=texts))
    assert by_run["label"].isna().tolist() == [False] * 5 + [True]
    con = shop.register_functions()
    by_sql = [con.execute("SELECT tc(?)", [t]).fetchone()[0] for t in texts]
    assert by_sql[-1] is None
    assert [r["label"] for r in by_sql[:-1]] == by_run["label"].tolist()[:-1]
    assert [r["score"] for r in by_sql[:-1]] == pytest.approx(by_run["score"].tolist()[:-1])
    by_batch = _batch(shop, "tc", _frame(id=list(range(6)), text=texts), "@lake/odd/").sort_values("id")
    assert by_batch["label"].tolist()[:-1] == by_run["label"].tolist()[:-1] and pd.isna(by_batch["label"].iloc[-1])


def test_zero_rows_and_a_hundred_thousand_identical_rows(shop) -> None:
    mv = shop.get_model("tc").default
    empty = mv.run(pd.DataFrame({"text": pd.Series([], dtype=str)}))
    assert list(empty.columns) == ["label", "score"] and len(empty) == 0
    con = shop.register_functions()
    assert con.execute("SELECT tc(t) FROM (SELECT 'x' AS t WHERE false)").fetchall() == []
    assert con.execute(
        "SELECT count(*), count(DISTINCT tc(t)) FROM (SELECT 'the same text' AS t FROM range(100000))"
    ).fetchone() == (100000, 1)
    rows = _batch(shop, "tc", "SELECT 'x' AS text WHERE false", "@lake/none/")
    assert len(rows) == 0


# ---------------------------------------------------------------------- long text


def test_a_text_longer_than_the_model_reads_is_refused_by_name_where_the_pipeline_does_not_truncate(shop) -> None:
    mv = shop.get_model("tc").default
    megabyte = "good " * 200_000
    expected = (
        rf"{CONTEXT}, column 'text', row 2: an input of (at least )?\d+ tokens \('good good .*'\) "
        "is longer than the 512"
    )
    with pytest.raises(ValueError, match=expected):
        mv.run(_frame(text=["fine", megabyte]))
    con = shop.register_functions()
    with pytest.raises(duckdb.Error, match=expected):
        con.execute("SELECT tc(t) FROM (VALUES ('good'), (repeat('good ', 1000))) v(t)").fetchall()
    assert "is longer than the 512 this model reads" in _batch_error(shop, "tc", _frame(text=[megabyte]), "@lake/l/")


@pytest.mark.parametrize(
    "task, column, text, why",
    [
        ("fill-mask", "inputs", "good [MASK] " * 600, "cutting it could cut the mask"),
        ("token-classification", "inputs", "good " * 600, "log the pipeline with a stride"),
        ("text-generation", "inputs", "good " * 600, "a prompt must leave room for the answer"),
    ],
)
def test_other_tasks_that_do_not_truncate_refuse_a_long_input_by_name(
    registry, model_dirs, task, column, text, why
) -> None:
    pipe = transformers.pipeline(task, model=str(model_dirs[task]))
    mv = registry.log_model(pipe, model_name="long", version_name="v1")
    context = f"Model long version v1, function __CALL__, column '{column}'"
    expected = rf"{context}, row 2: an input of (at least )?\d+ tokens .*{re.escape(why)}"
    with pytest.raises(ValueError, match=expected):
        mv.run(_frame(**{column: ["good [MASK]" if task == "fill-mask" else "good", text]}))
    with pytest.raises(duckdb.Error, match=expected.replace("row 2", "row 1")):
        registry.register_functions().execute("SELECT long(?)", [text]).fetchall()


def test_zero_shot_and_summarization_truncate_as_their_pipelines_do(shop) -> None:
    hundred_k_tokens = "good " * 100_000
    zs = shop.get_model("zs").default.run(_frame(sequences=[hundred_k_tokens], candidate_labels=[["a", "b"]]))
    assert sorted(zs["labels"].iloc[0]) == ["a", "b"]
    summary = shop.get_model("summ").default.run(_frame(documents=["good " * 200_000]), params={"max_new_tokens": 4})
    assert isinstance(summary["summary_text"].iloc[0], str)


def test_max_new_tokens_beyond_the_decoder_positions_is_capped(shop) -> None:
    con = shop.register_functions()
    (text,) = con.execute("SELECT summ('good food', max_new_tokens := 1000, num_beams := 1)").fetchone()
    assert isinstance(text, str)
    out = shop.get_model("summ").default.run(_frame(documents=["good food"]), params={"max_new_tokens": 5000})
    assert isinstance(out["summary_text"].iloc[0], str)


def test_table_qa_huge_tables_fit_and_malformed_json_is_named(shop) -> None:
    con = shop.register_functions()
    megabyte_table = json.dumps({"name": ["good food"] * 60_000, "city": ["tokyo"] * 60_000})
    assert len(megabyte_table) > 1_000_000
    answer = con.execute("SELECT tqa('how many people?', ?).answer", [megabyte_table]).fetchone()[0]
    assert isinstance(answer, str)
    for bad, why in [("{not json", "is not valid JSON"), ("[1, 2]", "must be a JSON object"),
                     ('{"a": [1], "b": [1, 2]}', "columns have different lengths")]:  # fmt: skip
        message = r"Model tqa version v1, function __CALL__, column 'table', row 1: " + why
        with pytest.raises(ValueError, match=message):
            shop.get_model("tqa").default.run(_frame(query=["how many?"], table=[bad]))
        with pytest.raises(duckdb.Error, match=message):
            con.execute("SELECT tqa('how many?', ?)", [bad]).fetchall()


def test_table_qa_a_megabyte_question_is_refused_at_once_naming_its_row(shop) -> None:
    con = shop.register_functions()
    question = "how many people " * 70_000  # over a megabyte
    table = '{"a": ["1", "2"]}'
    # "at least": counted by its words, refused before anything encodes it with the table.
    message = r"Model tqa version v1, function __CALL__, column 'query', row 2: an input of at least \d+ tokens"
    with pytest.raises(duckdb.Error, match=message):
        con.execute("SELECT tqa(q, ?) FROM (VALUES ('how many?'), (?)) v(q)", [table, question]).fetchall()
    rows = con.execute("SELECT tqa(q, ?, on_error := 'null').answer FROM (VALUES ('how many?'), (?)) v(q)",
                       [table, question]).fetchall()  # fmt: skip
    assert rows[1] == (None,) and isinstance(rows[0][0], str)


# ------------------------------------------------------------ wrong types and bytes


def test_wrong_types_are_named_with_model_version_function_and_column(shop) -> None:
    mv = shop.get_model("tc").default
    for value, got in [(42, "int 42"), (["a"], "list \\['a'\\]"), (b"\xff\xfe", "bytes")]:
        with pytest.raises(ValueError, match=rf"{CONTEXT}, column 'text': expected STRING, got {got}"):
            mv.run(_frame(text=[value]))
    con = shop.register_functions()
    cursor = con.cursor()
    for sql, got in [("SELECT tc(42)", "int 42"), ("SELECT tc(['a'])", "list"), ("SELECT tc('\\xff'::BLOB)", "bytes")]:
        for connection in (con, cursor):
            with pytest.raises(duckdb.Error, match=rf"{CONTEXT}, column 'text': expected STRING, got {got}"):
                connection.execute(sql).fetchall()
    message = _batch_error(shop, "tc", _frame(text=[1, 2]), "@lake/types/")
    assert f"{CONTEXT}, column 'text': expected STRING, got int 1" in message


def test_text_that_is_not_valid_unicode_is_refused_by_column_and_row(shop) -> None:
    undecodable = b"caf\xe9".decode("utf-8", errors="surrogateescape")
    frame = pd.DataFrame({"text": pd.Series(["fine", undecodable], dtype=object)})  # pandas' own strings refuse it
    mv = shop.get_model("tc").default
    with pytest.raises(ValueError, match=rf"{CONTEXT}, column 'text': row 2 is not valid Unicode text"):
        mv.run(frame)
    message = _batch_error(shop, "tc", frame, "@lake/unicode/")
    assert message.startswith("Column 'text', row 2 of the input is not valid Unicode text")  # counted from 1
    con = shop.register_functions()
    with pytest.raises(duckdb.ConversionException, match="invalid UTF8"):  # DuckDB text is always valid UTF-8
        con.execute("SELECT tc(decode('\\xff'::BLOB))").fetchall()


def test_candidate_labels_empty_null_or_holding_null(shop) -> None:
    mv = shop.get_model("zs").default
    context = "Model zs version v1, function __CALL__, column 'candidate_labels'"
    with pytest.raises(ValueError, match=f"{context}, row 1: is empty"):
        mv.run(_frame(sequences=["good"], candidate_labels=[[]]))
    with pytest.raises(ValueError, match=rf"{context}, row 1: holds a NULL or blank label in \['a', None\]"):
        mv.run(_frame(sequences=["good"], candidate_labels=[["a", None]]))
    with pytest.warns(UserWarning, match="Null value detected in column candidate_labels"):
        assert mv.run(_frame(sequences=["good"], candidate_labels=[None]))["labels"].tolist() == [None]
    con = shop.register_functions()
    assert con.execute("SELECT zs('good', NULL)").fetchone() == (None,)
    for labels, why in [("[]", "is empty"), ("['a', NULL]", "holds a NULL or blank label")]:
        with pytest.raises(duckdb.Error, match=f"{context}, row 1: {why}"):
            con.execute(f"SELECT zs('good', {labels})").fetchall()


# -------------------------------------------------------------------------- params


def test_unknown_params_and_params_of_the_wrong_type(shop) -> None:
    mv = shop.get_model("summ").default
    context = "Model summ version v1, function __CALL__"
    with pytest.raises(ValueError, match=f"{context}: .*max_new_token"):
        mv.run(_frame(documents=["x"]), params={"max_new_token": 4})
    with pytest.raises(ValueError, match=f"{context}: .*num_beams"):
        mv.run(_frame(documents=["x"]), params={"num_beams": "four"})
    con = shop.register_functions()
    with pytest.raises(duckdb.BinderException, match="Macro summ\\(\\) does not support the supplied arguments"):
        con.execute("SELECT summ('x', max_new_token := 4)").fetchall()
    with pytest.raises(duckdb.Error, match="num_beams"):
        con.execute("SELECT summ('x', num_beams := 'four')").fetchall()
    with pytest.raises(ValueError, match="max_new_token"):
        mv.run_batch(_frame(documents=["x"]), output_spec=OutputSpec("@lake/params/"),
                     input_spec=InputSpec(params={"max_new_token": 4}))  # fmt: skip
    assert not (shop.root / "lake" / "params").exists()


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "model_name, version_name, why",
    [
        ("it's", "v1", "use letters, digits and underscores"),
        ("a;drop", "v1", "use letters, digits and underscores"),
        ("select", "v1", "SQL keyword"),
        ("naïve", "v1", "use letters, digits and underscores"),
        ("a__b", "v1", "'__' is reserved"),
        ("../x", "v1", "use letters, digits and underscores"),
        ("m" * 300, "v1", "at most 128 characters"),
        ("stage_files", "v1", "duckreg uses that name"),
        ("run_batch", "v1", "duckreg uses that name"),
        ("tc_table", "v1", "would clash with model tc's"),
        ("tc_files", "v1", "would clash with model tc's"),
        ("fresh", "v;1", "use letters, digits and underscores"),
        ("fresh", "../x", "use letters, digits and underscores"),
        ("fresh", "DEFAULT", "system alias"),
        ("fresh", "First", "system alias"),
        ("tc", "prod", "an alias of model tc"),
        ("fresh", "v" * 129, "at most 128 characters"),
    ],
)
def test_bad_names_are_refused_and_write_nothing(shop, model_dirs, model_name, version_name, why) -> None:
    shop.get_model("tc").default.set_alias("prod")
    artifacts = sorted(p.relative_to(shop.artifact_location) for p in shop.artifact_location.rglob("*"))
    models = shop.show_models()["name"].tolist()
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    with pytest.raises(ValueError, match=why):
        shop.log_model(pipe, model_name=model_name, version_name=version_name)
    assert sorted(p.relative_to(shop.artifact_location) for p in shop.artifact_location.rglob("*")) == artifacts
    assert shop.show_models()["name"].tolist() == models


def test_a_model_cannot_take_a_name_another_model_derives(shop, model_dirs) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    shop.log_model(pipe, model_name="gadget_table", version_name="v1")
    try:
        with pytest.raises(ValueError, match="'gadget_table' would clash with model gadget_table's"):
            shop.log_model(pipe, model_name="gadget", version_name="v1")
    finally:
        shop.delete_model("gadget_table")


# -------------------------------------------------------------------------- stages


def test_stage_paths_that_leave_the_stage_or_name_no_stage(shop, tmp_path) -> None:
    outside = tmp_path / "secret.parquet"
    pd.DataFrame({"text": ["secret"]}).to_parquet(outside)
    lake = shop.root / "lake"
    lake.mkdir(exist_ok=True)
    link = lake / "escape"
    if not link.exists():
        link.symlink_to(tmp_path)
    mv = shop.get_model("tc").default
    con = shop.register_functions()
    cases = [
        ("@lake/../secret.parquet", "leaves the stage"),
        ("@lake/escape/secret.parquet", "leaves the stage"),
        ("@nowhere/x", "Stage nowhere does not exist"),
    ]
    for path, why in cases:
        with pytest.raises(ValueError, match=why):
            mv.run_batch(path, output_spec=OutputSpec("@lake/escaped/"))
        with pytest.raises(ValueError, match=why):
            mv.run_batch(_frame(text=["x"]), output_spec=OutputSpec(path))
        with pytest.raises(duckdb.Error, match=why):
            con.execute("SELECT read_stage_file(?)", [path]).fetchall()
    # An absolute path is not a stage path; inside one, leading slashes stay inside the stage.
    with pytest.raises(ValueError, match="must be a stage path such as '@my_stage/out/', got '/etc/passwd'"):
        mv.run_batch(_frame(text=["x"]), output_spec=OutputSpec("/etc/passwd"))
    with pytest.raises(duckdb.Error, match="Invalid stage path '/etc/passwd'"):
        con.execute("SELECT read_stage_file('/etc/passwd')").fetchall()
    assert shop.stages.locate("@lake//etc/passwd")[1] == str(lake / "etc" / "passwd")
    assert not (lake / "escaped").exists()


def test_overwrite_refuses_an_output_that_holds_its_input(shop) -> None:
    data = shop.root / "lake" / "d"
    data.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"text": ["good", "bad"]}).to_parquet(data / "in.parquet")
    mv = shop.get_model("tc").default
    for output in ("@lake/d/", "@lake/", "@lake/d/scored/"):
        with pytest.raises(ValueError, match="overlaps the input '@lake/d/'"):
            mv.run_batch("@lake/d/", output_spec=OutputSpec(output, mode=SaveMode.OVERWRITE))
    assert (data / "in.parquet").exists() and sorted(p.name for p in data.iterdir()) == ["in.parquet"]


def test_an_unfinished_job_in_the_way_says_how_to_resume_or_replace_it(shop) -> None:
    mv = shop.get_model("tc").default
    with pytest.raises(ValueError, match="is longer than the 512"):
        mv.run_batch(_frame(text=["fine", "good " * 2000]), output_spec=OutputSpec("@lake/busy/"),
                     job_spec=JobSpec(block=True, job_name="LONG_ONE"))  # fmt: skip
    assert duckreg.jobs.get_job(shop, "LONG_ONE").status == "FAILED"
    with pytest.raises(FileExistsError, match=r"holds the unfinished job LONG_ONE.*resume.*SaveMode\.OVERWRITE"):
        mv.run_batch(_frame(text=["other"]), output_spec=OutputSpec("@lake/busy/"))


# ------------------------------------------------------------------------ artifacts


def _fresh_version(shop, model_dirs, name: str):
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    return shop.log_model(pipe, model_name=name, version_name="v1")


def test_tampered_weights_are_refused_before_loading(shop, model_dirs) -> None:
    mv = _fresh_version(shop, model_dirs, "tampered")
    weights = (shop.artifact_location / mv.model_name / mv.version_name) / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x00" * 8
    weights.write_bytes(bytes(data))
    with pytest.raises(TamperedArtifact, match=r"model.safetensors does not match the sha256 logged for it"):
        mv.run(_frame(text=["x"]))
    con = shop.register_functions()
    with pytest.raises(duckdb.Error, match=r"Model tampered version v1: .*model.safetensors does not match"):
        con.execute("SELECT tampered('x')").fetchall()
    with pytest.raises(TamperedArtifact):
        mv.load()
    assert "model.safetensors does not match" in _batch_error(shop, "tampered", _frame(text=["x"]), "@lake/t/")


def test_files_that_were_not_logged_are_refused_and_never_loaded(shop, model_dirs, tmp_path) -> None:
    mv = _fresh_version(shop, model_dirs, "stuffed")
    marker = tmp_path / "unpickled"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = (shop.artifact_location / mv.model_name / mv.version_name) / "model"
    (folder / "evil.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(TamperedArtifact, match=r"evil.pkl was not logged with this version"):
        mv.run(_frame(text=["x"]))
    (folder / "evil.pkl").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload()))
    con = shop.register_functions()
    with pytest.raises(duckdb.Error, match=r"pytorch_model.bin was not logged with this version"):
        con.execute("SELECT stuffed('x')").fetchall()
    assert not marker.exists()


# --------------------------------------------------------------------------- locks


@contextlib.contextmanager
def _held(db: Path, *, read_only: bool) -> Iterator[subprocess.Popen]:
    """Another process holding ``db`` open (for writing, or read-only) until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, duckdb
            con = duckdb.connect({str(db)!r}, read_only={read_only})
            print("ready", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.communicate("", timeout=30)


def test_a_database_locked_by_another_process_gets_a_duckreg_error(tmp_path) -> None:
    db = tmp_path / "locked.duckdb"
    with _held(db, read_only=False) as holder:
        for opener in (lambda: duckreg.connect(db), lambda: duckreg.Registry(str(db)),
                       lambda: duckreg.connect(db, read_only=True)):  # fmt: skip
            with pytest.raises(duckreg.DatabaseLocked, match=rf"open for writing in process {holder.pid} .*Close"):
                opener()
        cli = Path(sys.executable).with_name("duckreg")
        done = subprocess.run([str(cli), "sql", "SELECT 1", "--db", str(db)], capture_output=True, text=True)
        assert done.returncode == 1
        assert f"open for writing in process {holder.pid}" in done.stderr and "Traceback" not in done.stderr


def test_a_database_another_process_reads_is_refused_for_writing_naming_that_reader(tmp_path) -> None:
    db = tmp_path / "read.duckdb"
    duckdb.connect(str(db)).close()
    with _held(db, read_only=True) as reader:
        with pytest.raises(duckreg.DatabaseLocked, match=rf"is open read-only in process {reader.pid} .*Close"):
            duckreg.connect(db)
        duckdb.connect(str(db), read_only=True).close()  # readers share it


def test_a_megabyte_question_or_label_is_refused_at_once_naming_column_and_row(shop, model_dirs) -> None:
    qa = shop.log_model(
        TransformersPipeline(model=str(model_dirs["question-answering"]), task="question-answering"),
        model_name="qa", version_name="v1",
    )  # fmt: skip
    megabyte = "word " * 220_000
    frame = _frame(question=["Who ate?", megabyte], context=["Bob ate.", "Bob ate."])
    # "at least": counted by its words, refused before anything encodes it.
    with pytest.raises(
        ValueError, match=r"function __CALL__, column 'question', row 2: an input of at least \d+ tokens"
    ):
        qa.run(frame)
    kept = qa.run(frame, on_error="null")
    assert kept["_error"].isna().tolist() == [True, False] and isinstance(kept["answer"][0], str)
    zs = shop.get_model("zs").default
    labels = _frame(sequences=["good", "good"], candidate_labels=[["good", "bad"], ["good", megabyte]])
    with pytest.raises(ValueError, match=r"column 'candidate_labels', row 2: an input of at least \d+ tokens"):
        zs.run(labels)
    assert zs.run(labels, on_error="null")["_error"].isna().tolist() == [True, False]


def test_max_new_tokens_beyond_a_decoders_positions_is_capped_by_what_the_prompt_leaves(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]))
    mv = registry.log_model(pipe, model_name="gen", version_name="v1")
    prompt = "good food " * 20
    prompt_tokens = len(pipe.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert 100 < prompt_tokens < 256  # the decoder has positions for 256 tokens
    out = mv.run(_frame(inputs=[prompt]), params={"max_new_tokens": 10_000_000, "do_sample": False})
    (generated,) = json.loads(out["outputs"][0])
    new_ids = pipe.tokenizer(generated["generated_text"][len(prompt) :], add_special_tokens=False)["input_ids"]
    assert 0 < len(new_ids) <= 256 - prompt_tokens + 2  # decoding may split a byte-level token at the seam
    chat = registry.log_model(pipe, model_name="chat", version_name="v1", signatures=OPENAI_CHAT_SIGNATURE)
    answer = chat.run(_frame(messages=[[{"role": "user", "content": prompt}]], max_completion_tokens=[10_000_000]))
    usage = answer["usage"][0]
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] + usage["completion_tokens"] <= 256


def test_a_megabyte_chat_message_or_a_long_history_is_refused_before_it_is_rendered(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["chat-template"]))
    chat = registry.log_model(pipe, model_name="chat", version_name="v1", signatures=OPENAI_CHAT_SIGNATURE)
    megabyte = "word " * 220_000
    rows = _frame(
        messages=[[{"role": "user", "content": "hello"}], [{"role": "user", "content": megabyte}],
                  [{"role": "user", "content": "hello there"}] * 20_000],
        max_completion_tokens=[2, 2, 2],
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"column 'messages', row 2: the prompt has at least 220000 tokens; the model "
                                         r"reads at most 256"):  # fmt: skip
        chat.run(rows)
    kept = chat.run(rows, on_error="null")
    assert kept["_error"].isna().tolist() == [True, False, False]
    assert "row 3: the prompt has at least 40000 tokens" in kept["_error"][2]
    conversational = registry.log_model(
        TransformersPipeline(model=str(model_dirs["chat-template"]), task="conversational", max_new_tokens=2),
        model_name="conv", version_name="v1",
    )  # fmt: skip
    turns = _frame(user_inputs=[["hi"], ["hello there"] * 20_000], generated_responses=[[], ["ok"] * 19_999])
    with pytest.raises(ValueError, match=r"column 'user_inputs'.*: the prompt has at least 59999 tokens"):
        conversational.run(turns)
    assert conversational.run(turns, on_error="null")["_error"].isna().tolist() == [True, False]


def test_a_model_without_positions_reads_at_most_2048_tokens_when_its_tokenizer_names_no_limit(
    registry, model_dirs
) -> None:
    t5 = registry.log_model(
        TransformersPipeline(model=str(model_dirs["t5"]), task="translation_en_to_fr", max_new_tokens=3),
        model_name="t5", version_name="v1",
    )  # fmt: skip
    megabyte = "good food " * 100_000
    out = t5.run(_frame(inputs=[megabyte]))  # truncated, as the translation pipeline truncates
    assert isinstance(out["translation_text"][0], str)
    with pytest.raises(ValueError, match=r"column 'inputs', row 2: an input of at least \d+ tokens .* longer than "
                                         r"the 2048 "
                                         r"this model reads; pass truncation := true to cut it"):  # fmt: skip
        t5.run(_frame(inputs=["good food", megabyte]), params={"truncation": False})


def test_an_image_whose_header_claims_billions_of_pixels_is_refused_unread(registry, model_dirs) -> None:
    classifier = registry.log_model(
        transformers.pipeline("image-classification", model=str(model_dirs["image-classification"])),
        model_name="img", version_name="v1",
    )  # fmt: skip
    bomb = tiny_models.decompression_bomb_png(40_000, 40_000)
    good = tiny_models.decompression_bomb_png(32, 32)
    with pytest.raises(ValueError, match=r"column 'images'.*an image too large to decode: Image size \(1600000000 "
                                         r"pixels\) exceeds limit"):  # fmt: skip
        classifier.run(_frame(images=[good, bomb]))
    kept = classifier.run(_frame(images=[good, bomb]), on_error="null")
    assert kept["_error"].isna().tolist() == [True, False]
    assert kept["labels"][0] == classifier.run(_frame(images=[good]))["labels"][0]
    vision = registry.log_model(
        transformers.pipeline("image-text-to-text", model=str(model_dirs["llava-chat"])),
        model_name="vision", version_name="v1",
    )  # fmt: skip
    url = "data:image/png;base64," + base64.b64encode(bomb).decode()
    ask = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]
    with pytest.raises(ValueError, match=r"column 'messages', row 1: an image too large to decode"):
        vision.run(_frame(messages=[ask]), params={"max_completion_tokens": 2})


def test_audio_longer_than_one_pass_is_refused_unless_the_pipeline_reads_in_chunks(registry, model_dirs) -> None:
    folder = str(model_dirs["speech-recognition"])
    whole = registry.log_model(transformers.pipeline("automatic-speech-recognition", model=folder),
                               model_name="asr", version_name="v1")  # fmt: skip
    minute = tiny_models.silent_wav(25)
    # The tiny model has 2 heads and a frame every 20 samples: 20 s is what 2 GiB of attention covers.
    with pytest.raises(ValueError, match=r"column 'audio'.*row 2: 25 s of audio is longer than the 20 s this model "
                                         r"reads in one pass; log the pipeline with chunk_length_s=30"):  # fmt: skip
        whole.run(_frame(audio=[tiny_models.silent_wav(1), minute]))
    chunked = registry.log_model(
        TransformersPipeline(model=folder, task="automatic-speech-recognition", chunk_length_s=10),
        model_name="asr_chunked", version_name="v1",
    )  # fmt: skip
    assert isinstance(chunked.run(_frame(audio=[minute]))["outputs"][0]["text"], str)


def test_embeddings_logged_without_truncation_refuse_a_long_text_and_null_leaves_the_rest(registry, model_dirs) -> None:
    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    whole = registry.log_model(pipe, model_name="whole", version_name="v1",
                               options={"pooling": "mean", "truncation": False})  # fmt: skip
    texts = ["good food", "good " * 600, "bad food"]
    with pytest.raises(ValueError, match=r"function __CALL__, column 'inputs', row 2: an input of "
                                         r"(at least )?\d+ tokens "
                                         r".* longer than the 512 this model reads; split it"):  # fmt: skip
        whole.run(_frame(inputs=texts))
    kept = whole.run(_frame(inputs=texts), on_error="null")
    alone = whole.run(_frame(inputs=[texts[0], texts[2]]))
    assert kept["_error"].isna().tolist() == [True, False, True]
    assert [list(v) for v in kept["embedding"][[0, 2]]] == [list(v) for v in alone["embedding"]]
    con = registry.register_functions()
    query = "SELECT whole(t, on_error := 'null') IS NULL FROM (VALUES (1, 'good'), (2, repeat('good ', 600))) v(i, t)"
    nulls = con.execute(query + " ORDER BY i").fetchall()
    assert nulls == [(False,), (True,)]
    with pytest.raises(ValueError, match=r"options\['truncation'\] must be true or false, got 'no'"):
        registry.log_model(pipe, model_name="whole2", options={"pooling": "mean", "truncation": "no"})
