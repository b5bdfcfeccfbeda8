"""Tasks duckreg runs itself (question answering, summarization, text2text, translation,
conversational) through all three doors, on whichever transformers line is installed; on
transformers 4 their outputs are also compared with the library's own pipelines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import transformers
from conftest import Case, run_in_new_process

import duckreg
from duckreg.huggingface import TransformersPipeline
from duckreg.model_signature import DataType, FeatureSpec, ModelSignature, ParamSpec
from duckreg.tasks._generation import GENERATION_PARAMS

S = DataType.STRING
# The question-answering parameters with the defaults the pipeline (and Snowflake) declare; the window
# size and stride stay None because the pipeline derives them from the tokenizer.
QA_PARAMS = [
    ParamSpec("doc_stride", DataType.INT64, None),
    ParamSpec("max_answer_len", DataType.INT64, 15),
    ParamSpec("max_seq_len", DataType.INT64, None),
    ParamSpec("max_question_len", DataType.INT64, 64),
    ParamSpec("handle_impossible_answer", DataType.BOOL, False),
    ParamSpec("align_to_words", DataType.BOOL, True),
]
TRANSFORMERS_4 = int(transformers.__version__.split(".")[0]) < 5
SEQ2SEQ_PARAMS = [
    ParamSpec("clean_up_tokenization_spaces", DataType.BOOL, None),
    ParamSpec("truncation", DataType.BOOL, None),
    *GENERATION_PARAMS,
]
CONTEXT = "My name is Izumi and I live in Tokyo, Japan. The capital of France is Paris and Paris is a big city."
DOCS = [
    "The capital of France is Paris and Paris is a big city.",
    "I like you.",
    "What is the weather like today? It is sunny, not rainy.",
]


def _one(name_in: str, name_out: str, params=SEQ2SEQ_PARAMS) -> ModelSignature:
    return ModelSignature(inputs=[FeatureSpec(name_in, S)], outputs=[FeatureSpec(name_out, S)], params=params)


QA_FRAME = pd.DataFrame(
    {"question": ["Where do I live?", "What is the capital of France?", "Where do I live?"], "context": [CONTEXT] * 3}
)
CASES = [
    Case(
        "qa",
        "question-answering",
        "question-answering",
        {},
        ModelSignature(
            inputs=[FeatureSpec("question", S), FeatureSpec("context", S)],
            outputs=[
                FeatureSpec("score", DataType.DOUBLE),
                FeatureSpec("start", DataType.INT64),
                FeatureSpec("end", DataType.INT64),
                FeatureSpec("answer", S),
            ],
            params=QA_PARAMS,
        ),
        QA_FRAME,
    ),
    Case(
        "qa_top3",
        "question-answering",
        "question-answering",
        {"top_k": 3},
        ModelSignature(
            inputs=[FeatureSpec("question", S), FeatureSpec("context", S)],
            outputs=[FeatureSpec("outputs", S)],
            params=[ParamSpec("top_k", DataType.INT64, 3), *QA_PARAMS],
        ),
        QA_FRAME,
    ),
    Case(
        "summarizer",
        "summarization",
        "bart",
        {"max_new_tokens": 8},
        _one("documents", "summary_text"),
        pd.DataFrame({"documents": DOCS}),
    ),
    Case(
        "t5_summarizer",
        "summarization",
        "t5",
        {"max_new_tokens": 6},
        _one("documents", "summary_text"),
        pd.DataFrame({"documents": DOCS}),
    ),
    Case(
        "rewriter",
        "text2text-generation",
        "bart",
        {"max_new_tokens": 6},
        _one("inputs", "generated_text"),
        pd.DataFrame({"inputs": DOCS}),
    ),
    Case(
        "translator",
        "translation_en_to_fr",
        "t5",
        {"max_new_tokens": 6},
        _one(
            "inputs",
            "translation_text",
            [ParamSpec("src_lang", S, None), ParamSpec("tgt_lang", S, None), *SEQ2SEQ_PARAMS],
        ),
        pd.DataFrame({"inputs": DOCS}),
    ),
    Case(
        "chatter",
        "conversational",
        "text-generation",
        {"max_new_tokens": 4, "do_sample": False},
        ModelSignature(
            inputs=[FeatureSpec("user_inputs", S, shape=(-1,)), FeatureSpec("generated_responses", S, shape=(-1,))],
            outputs=[FeatureSpec("generated_responses", S, shape=(-1,))],
            params=GENERATION_PARAMS,
        ),
        pd.DataFrame(
            {
                "user_inputs": [["Do you speak French?", "How do you say Snowflake in French?"], ["Hello world"]],
                "generated_responses": [["Yes I do."], []],
            }
        ),
    ),
    Case(
        "seq2seq_chatter",
        "conversational",
        "bart",
        {"max_new_tokens": 4},
        ModelSignature(
            inputs=[FeatureSpec("user_inputs", S, shape=(-1,)), FeatureSpec("generated_responses", S, shape=(-1,))],
            outputs=[FeatureSpec("generated_responses", S, shape=(-1,))],
            params=GENERATION_PARAMS,
        ),
        pd.DataFrame({"user_inputs": [["Hello world", "how are you?"]], "generated_responses": [["fine"]]}),
    ),
]
IDS = [c.model_name for c in CASES]


@pytest.fixture(scope="module")
def logged(model_dirs, tmp_path_factory) -> Path:
    """Every case logged by reference (TransformersPipeline), on either transformers line."""
    db = tmp_path_factory.mktemp("own") / "own.duckdb"
    registry = duckreg.Registry(str(db))
    for case in CASES:
        ref = TransformersPipeline(model=str(model_dirs[case.model_dir]), task=case.task, **case.kwargs)
        registry.log_model(ref, model_name=case.model_name, version_name="v1")
    registry.connection.close()
    return db


@pytest.fixture
def registry_on(logged):
    reg = duckreg.Registry(str(logged))
    yield reg
    reg.connection.close()


def _values(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {k: (list(v) if isinstance(v, (list, np.ndarray)) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_show_functions_matches_seed(registry_on, case: Case) -> None:
    functions = registry_on.get_model(case.model_name).version("v1").show_functions()
    assert functions == [{"name": "__CALL__", "target_method": "__call__", "signature": case.signature}]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_run_sql_and_table_macro_agree(registry_on, case: Case) -> None:
    mv = registry_on.get_model(case.model_name).default
    result = mv.run(case.frame)
    outputs = [o.name for o in case.signature.outputs]
    assert list(result.columns) == outputs
    assert len(result) == len(case.frame)
    con = registry_on.register_functions()
    con.register("inputs_df", case.frame)
    args = ", ".join(f'"{s.name}"' for s in case.signature.inputs)
    sql_rows = con.execute(f"SELECT {case.model_name}({args}) FROM inputs_df").fetchall()
    got = [r[0] if len(outputs) > 1 else {outputs[0]: r[0]} for r in sql_rows]
    assert got == _values(result)
    con.execute("CREATE OR REPLACE TABLE case_inputs AS SELECT * FROM inputs_df")
    table = con.execute(f"SELECT * FROM {case.model_name}_table('case_inputs')").df()
    # An output named like an input column (the conversation's responses) replaces it.
    assert list(table.columns) == [c for c in case.frame.columns if c not in outputs] + outputs
    assert _values(table[outputs]) == _values(result)


def test_outputs_follow_the_seed_formats(registry_on) -> None:
    single = registry_on.get_model("qa").default.run(QA_FRAME)
    assert [str(t) for t in single.dtypes[:3]] == ["float64", "int64", "int64"]
    assert pd.api.types.is_string_dtype(single["answer"])
    row = single.iloc[0]
    assert CONTEXT[row["start"] : row["end"]] == row["answer"]
    multi = registry_on.get_model("qa_top3").default.run(QA_FRAME)["outputs"][0]
    answers = json.loads(multi)
    assert len(answers) == 3 and multi.startswith('[{"score": ')
    assert list(answers[0]) == ["score", "start", "end", "answer"]
    assert answers[0]["answer"] == row["answer"]
    assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
    con = registry_on.register_functions()
    types = con.execute("SELECT typeof(qa('q', 'c')), typeof(qa_top3('q', 'c')), typeof(summarizer('x'))").fetchone()
    assert types == (
        'STRUCT(score DOUBLE, "start" BIGINT, "end" BIGINT, answer VARCHAR)',
        "JSON",
        "VARCHAR",
    )


def test_long_contexts_are_read_in_overlapping_windows(registry_on) -> None:
    """A context far beyond max_seq_len is split, not cut: the answer can come from its tail."""
    mv = registry_on.get_model("qa").default
    tail = "Paris is a big city."
    long_context = "I like you. " * 200 + tail
    out = mv.run(pd.DataFrame({"question": ["What is Paris?"], "context": [long_context]}), params={"max_seq_len": 64})
    start, end = int(out["start"][0]), int(out["end"][0])
    assert long_context[start:end] == out["answer"][0]
    whole = mv.run(
        pd.DataFrame({"question": ["What is Paris?"], "context": [long_context]}),
        params={"max_seq_len": 64, "doc_stride": 16},
    )
    assert long_context[int(whole["start"][0]) : int(whole["end"][0])] == whole["answer"][0]


def test_generation_params_from_python_and_sql(registry_on) -> None:
    mv = registry_on.get_model("summarizer").default
    docs = pd.DataFrame({"documents": DOCS})
    short = mv.run(docs, params={"max_new_tokens": 2, "num_beams": 1})
    longer = mv.run(docs, params={"max_new_tokens": 8, "num_beams": 1})
    assert all(len(a) <= len(b) for a, b in zip(short["summary_text"], longer["summary_text"], strict=True))
    assert list(short["summary_text"]) != list(longer["summary_text"])
    con = registry_on.register_functions()
    con.register("docs", docs)
    sql = con.execute("SELECT summarizer(documents, max_new_tokens := 2, num_beams := 1) FROM docs").fetchall()
    assert [r[0] for r in sql] == list(short["summary_text"])
    # Parameters may differ per row (a column): each group of equal values runs together.
    mixed = con.execute(
        "SELECT summarizer(documents, max_new_tokens := CASE WHEN documents = 'I like you.' THEN 2 ELSE 8 END, "
        "num_beams := 1) FROM docs"
    ).fetchall()
    expected = [
        s if d == "I like you." else lng
        for d, s, lng in zip(DOCS, short["summary_text"], longer["summary_text"], strict=True)
    ]
    assert [r[0] for r in mixed] == expected
    # Snowflake named arguments (=>) reach the same parameters.
    snowflake = duckreg.sql(con, "SELECT summarizer!__call__(documents, max_new_tokens => 2, num_beams => 1) FROM docs")
    assert [r[0] for r in snowflake.fetchall()] == list(short["summary_text"])
    table = con.execute("SELECT summary_text FROM summarizer_table('docs', max_new_tokens := 2, num_beams := 1)")
    assert [r[0] for r in table.fetchall()] == list(short["summary_text"])
    # A SQL decimal literal is a float parameter.
    decimal = con.execute("SELECT summarizer('I like you.', temperature := 0.7, do_sample := false)").fetchone()[0]
    direct = mv.run(pd.DataFrame({"documents": ["I like you."]}), params={"temperature": 0.7, "do_sample": False})
    assert decimal == direct["summary_text"][0]


def test_params_are_validated_with_names(registry_on) -> None:
    mv = registry_on.get_model("summarizer").default
    docs = pd.DataFrame({"documents": DOCS[:1]})
    with pytest.raises(
        ValueError, match=r"Model summarizer version v1, function __CALL__: Unknown parameter\(s\): \['beams'\]"
    ):
        mv.run(docs, params={"beams": 2})
    with pytest.raises(ValueError, match="Duplicate parameter"):
        mv.run(docs, params={"num_beams": 2, "NUM_BEAMS": 2})
    with pytest.raises(ValueError, match="Parameter 'num_beams'"):
        mv.run(docs, params={"num_beams": "two"})
    with pytest.raises(ValueError, match="Parameter 'do_sample'"):
        mv.run(docs, params={"do_sample": 1})
    # A name differing only in case is the parameter itself.
    assert mv.run(docs, params={"MAX_NEW_TOKENS": 2, "num_beams": 1}).equals(
        mv.run(docs, params={"max_new_tokens": 2, "num_beams": 1})
    )
    con = registry_on.register_functions()
    with pytest.raises(Exception, match="Parameter 'num_beams'"):
        con.execute("SELECT summarizer('x', num_beams := 'two')").fetchall()


def test_num_return_sequences_gives_a_json_list(registry_on) -> None:
    out = registry_on.get_model("translator").default.run(
        pd.DataFrame({"inputs": DOCS[:2]}), params={"num_return_sequences": 2, "max_new_tokens": 3}
    )
    for value in out["translation_text"]:
        parsed = json.loads(value)
        assert len(parsed) == 2 and all(list(p) == ["translation_text"] for p in parsed)
        assert value.startswith('[{"translation_text": ')


def test_t5_prefix_comes_from_task_specific_params(registry_on, model_dirs) -> None:
    """translation_en_to_fr on T5 reads 'translate English to French: ' + text, like the pipeline."""
    import torch

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dirs["t5"]))
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(model_dirs["t5"])).eval()
    text = "I like you."
    inputs = tokenizer(["translate English to French: " + text], return_tensors="pt")
    inputs.pop("token_type_ids", None)
    with torch.inference_mode():
        ids = model.generate(**inputs, num_beams=3, max_new_tokens=6, max_length=24)
    expected = tokenizer.decode(ids[0], skip_special_tokens=True)
    got = registry_on.get_model("translator").default.run(pd.DataFrame({"inputs": [text]}))
    assert got["translation_text"][0] == expected


def test_three_turn_conversation_round_trips_in_sql(registry_on) -> None:
    con = registry_on.register_functions()
    con.execute("CREATE TABLE talk AS SELECT ['Hello world'] AS user_inputs, []::VARCHAR[] AS generated_responses")
    turns = ["Hello world", "How are you?", "What is the weather like today?"]
    for next_turn in [*turns[1:], None]:
        con.execute("UPDATE talk SET generated_responses = chatter(user_inputs, generated_responses)")
        if next_turn is not None:
            con.execute("UPDATE talk SET user_inputs = list_append(user_inputs, ?)", [next_turn])
    user_inputs, responses = con.execute("SELECT user_inputs, generated_responses FROM talk").fetchone()
    assert user_inputs == turns
    assert len(responses) == 3
    # The output is the earlier responses with the new one appended.
    appended = con.execute(
        "SELECT chatter(user_inputs, generated_responses[:2]) = "
        "list_append(generated_responses[:2], chatter(user_inputs, generated_responses[:2])[-1]) FROM talk"
    ).fetchone()[0]
    assert appended
    # Each turn only appended: replaying the conversation through mv.run gives the same responses.
    mv = registry_on.get_model("chatter").default
    for n in range(1, 4):
        replay = mv.run(pd.DataFrame({"user_inputs": [turns[:n]], "generated_responses": [responses[: n - 1]]}))
        assert list(replay["generated_responses"][0]) == responses[:n]
    with pytest.raises(Exception, match="generated_responses"):
        con.execute("SELECT chatter(['a', 'b', 'c'], ['x'])").fetchall()


def test_conversation_uses_the_chat_template(registry, model_dirs) -> None:
    import torch

    folder = model_dirs["chat-template"]
    mv = registry.log_model(
        TransformersPipeline(model=str(folder), task="conversational", max_new_tokens=5, do_sample=False),
        model_name="templated",
        version_name="v1",
    )
    out = mv.run(pd.DataFrame({"user_inputs": [["Hello", "How are you?"]], "generated_responses": [["Fine."]]}))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    prompt = "user: Hello\nassistant: Fine.\nuser: How are you?\nassistant: "
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        generated = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    reply = tokenizer.decode(generated[0][ids.shape[1] :], skip_special_tokens=True).strip()
    assert list(out["generated_responses"][0]) == ["Fine.", reply]


def test_new_process_calls_the_own_tasks(logged) -> None:
    query = "SELECT qa('Where do I live?', 'I live in Tokyo.')::VARCHAR, summarizer('I like you.')"
    with duckreg.connect(str(logged)) as con:
        local = con.execute(query).fetchall()
    assert run_in_new_process(logged, query) == [list(local[0])]


def test_return_tensors_and_unreachable_hub_are_clear_errors(registry, model_dirs, monkeypatch) -> None:
    ref = TransformersPipeline(model=str(model_dirs["bart"]), task="summarization", return_tensors=True)
    with pytest.raises(NotImplementedError, match="when `return_tensors` set to `True` has not been supported"):
        registry.log_model(ref, model_name="tensors", version_name="v1")
    assert registry.models() == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        registry.log_model(
            TransformersPipeline(model="facebook/bart-large-cnn", task="summarization"), model_name="hub"
        )


@pytest.mark.skipif(not TRANSFORMERS_4, reason="transformers 5 has no pipelines for these tasks")
@pytest.mark.parametrize(
    ("task", "model_dir", "kwargs"),
    [
        ("summarization", "bart", {"max_new_tokens": 12}),
        ("summarization", "t5", {}),
        ("text2text-generation", "bart", {"max_new_tokens": 10}),
        ("translation_en_to_fr", "t5", {}),
        ("summarization", "bart", {"max_new_tokens": 6, "num_return_sequences": 2}),
    ],
)
def test_seq2seq_equals_the_transformers4_pipeline(registry, model_dirs, task, model_dir, kwargs) -> None:
    pipe = transformers.pipeline(task, model=str(model_dirs[model_dir]), **kwargs)
    expected = pipe(DOCS)
    mv = registry.log_model(pipe, model_name="logged_pipeline", version_name="v1")
    column = mv.show_functions()[0]["signature"].inputs[0].name
    got = mv.run(pd.DataFrame({column: DOCS})).iloc[:, 0].tolist()
    if kwargs.get("num_return_sequences", 1) > 1:
        assert got == [json.dumps(e) for e in expected]
    else:
        assert got == [next(iter(e.values())) for e in expected]


@pytest.mark.skipif(not TRANSFORMERS_4, reason="transformers 5 has no question-answering pipeline")
@pytest.mark.parametrize(
    "kwargs", [{}, {"top_k": 3}, {"max_seq_len": 32, "doc_stride": 8}, {"handle_impossible_answer": True, "top_k": 2}]
)
def test_question_answering_picks_the_transformers4_spans(registry, model_dirs, kwargs) -> None:
    pipe = transformers.pipeline("question-answering", model=str(model_dirs["question-answering"]), **kwargs)
    contexts = [CONTEXT * 4, "I like you. I love you, too."]
    questions = ["Where do I live?", "Who do I like?"]
    expected = [pipe(question=q, context=c) for q, c in zip(questions, contexts, strict=True)]
    mv = registry.log_model(pipe, model_name="logged_qa", version_name="v1")
    got = mv.run(pd.DataFrame({"question": questions, "context": contexts}))
    if "outputs" in got:
        answers = [json.loads(v) for v in got["outputs"]]
        expected = [e if isinstance(e, list) else [e] for e in expected]
    else:
        answers = [[r] for r in got.to_dict("records")]
        expected = [[e] for e in expected]
    for ours, theirs in zip(answers, expected, strict=True):
        assert [(a["start"], a["end"], a["answer"]) for a in ours] == [
            (a["start"], a["end"], a["answer"]) for a in theirs
        ]
        assert [a["score"] for a in ours] == pytest.approx([a["score"] for a in theirs], rel=1e-5)


def test_user_signature_params_fill_their_defaults(registry, model_dirs) -> None:
    """A ParamSpec default applies when the caller leaves the parameter out, in Python and SQL."""
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]), do_sample=False)
    signature = ModelSignature(
        inputs=[FeatureSpec("inputs", S)],
        outputs=[FeatureSpec("outputs", S)],
        params=[ParamSpec("max_new_tokens", DataType.INT64, 2)],
    )
    mv = registry.log_model(pipe, model_name="short_writer", version_name="v1", signatures={"__call__": signature})
    prompts = pd.DataFrame({"inputs": ["Hello world"]})
    default = json.loads(mv.run(prompts)["outputs"][0])[0]["generated_text"]
    explicit = json.loads(mv.run(prompts, params={"max_new_tokens": 2})["outputs"][0])[0]["generated_text"]
    longer = json.loads(mv.run(prompts, params={"max_new_tokens": 6})["outputs"][0])[0]["generated_text"]
    assert default == explicit != longer and longer.startswith(default)
    con = registry.register_functions()
    assert json.loads(con.execute("SELECT short_writer('Hello world')").fetchone()[0])[0]["generated_text"] == default
    sql_longer = con.execute("SELECT short_writer('Hello world', max_new_tokens := 6)").fetchone()[0]
    assert json.loads(sql_longer)[0]["generated_text"] == longer
