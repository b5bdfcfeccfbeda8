"""run_batch over stages: specs, SaveMode, parquet parts with _SUCCESS, jobs, resume after a kill,
stage files as model inputs, custom models, and the SQL entry points."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import soundfile
import transformers
from conftest import kill_when_parts_written
from custom_models import CustomTranscriber, Greeter, SlowDoubler
from PIL import Image

import duckreg
from duckreg.batch import FileEncoding, InputFormat, InputSpec, JobSpec, OutputSpec, SaveMode
from duckreg.custom import ModelContext
from duckreg.jobs import delete_job, get_job, list_jobs
from duckreg.model_signature import DataType, FeatureGroupSpec, FeatureSpec, ModelSignature

TESTS = Path(__file__).parent


def _read(folder: Path) -> pd.DataFrame:
    return duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*.parquet')").df()


@pytest.fixture
def sentiment(registry, model_dirs, tmp_path):
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    mv = registry.log_model(pipe, model_name="sentiment", version_name="v1")
    registry.create_stage("out", str(tmp_path / "out"))
    registry.connection.execute(
        "CREATE TABLE reviews AS SELECT i AS id, CASE WHEN i % 7 = 0 THEN NULL WHEN i % 3 = 0 THEN 'I like you.' "
        "ELSE 'I hate food number ' || i END AS text FROM range(2500) t(i)"
    )
    return mv


def test_stages_resolve_inside_their_root(registry, tmp_path) -> None:
    assert registry.create_stage("files", str(tmp_path / "files")) == "@files"
    (tmp_path / "files" / "sub").mkdir()
    (tmp_path / "files" / "a.png").write_bytes(b"a")
    (tmp_path / "files" / "sub" / "b.jpg").write_bytes(b"b")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (tmp_path / "files" / "link").symlink_to(outside)
    assert duckreg.list_stage_files(registry, "@files")["FILE_PATH"].tolist() == ["@files/a.png", "@files/sub/b.jpg"]
    listed = duckreg.list_stage_files(registry, "files/sub", pattern=r".*\.jpg", column_name="IMAGES")
    assert list(listed.columns) == ["IMAGES"] and listed["IMAGES"].tolist() == ["@files/sub/b.jpg"]
    for escape in ["@files/../secret.txt", "@files/sub/../../secret.txt", "@files/link"]:
        with pytest.raises(ValueError, match="leaves the stage"):
            registry.stages.read_bytes(escape)
    with pytest.raises(ValueError, match="Stage nope does not exist"):
        duckreg.list_stage_files(registry, "@nope/x")
    registry.create_stage("mem", "memory://duckreg-tests/stage")
    with registry.stages.open("@mem/x/y.bin", "wb") as handle:
        handle.write(b"bytes")
    assert duckreg.list_stage_files(registry.connection, "@mem")["FILE_PATH"].tolist() == ["@mem/x/y.bin"]
    assert registry.show_stages()["name"].tolist() == ["files", "mem"]
    registry.drop_stage("mem")
    assert registry.show_stages()["name"].tolist() == ["files"]
    con = registry.register_functions()
    assert con.execute("SELECT * FROM stage_files('@files', '.*png')").fetchall() == [("@files/a.png",)]
    assert con.execute("SELECT read_stage_file('@files/sub/b.jpg')").fetchall() == [(b"b",)]


def test_run_batch_writes_every_row_once_with_success_last(sentiment, registry, tmp_path) -> None:
    job = sentiment.run_batch(
        "SELECT * FROM reviews", output_spec=OutputSpec("@out/run/"), job_spec=JobSpec(max_batch_rows=400)
    )
    assert job.wait(timeout=120) == "DONE"
    out = tmp_path / "out" / "run"
    files = sorted(p.name for p in out.iterdir())
    assert files == ["_SUCCESS"] + [f"part-{i:06d}.parquet" for i in range(7)]
    result = _read(out).sort_values("id").reset_index(drop=True)
    assert list(result.columns) == ["id", "text", "label", "score"]
    assert result["id"].tolist() == list(range(2500))
    with pytest.warns(UserWarning, match="Null value detected in column text"):
        expected = sentiment.run(result[["text"]])
    # A NULL text gives NULL outputs, as in SQL.
    assert result["label"].isna().tolist() == result["text"].isna().tolist()
    assert result["label"].fillna("-").tolist() == expected["label"].fillna("-").tolist()
    assert job.status == "DONE" and job.progress == (2500, 2500)
    logs = job.get_logs()
    assert "starting in this process: 2500 rows" in logs and "done: 2500 rows" in logs
    assert list_jobs(registry)["name"].tolist() == [job.name]
    assert get_job(registry, job.id) == job


def test_inputs_relation_dataframe_and_stage_parquet(sentiment, registry, tmp_path) -> None:
    con = registry.connection
    relation = con.sql("SELECT * FROM reviews WHERE id < 300")
    frame = relation.df()
    sentiment.run_batch(relation, output_spec=OutputSpec("@out/rel/"), job_spec=JobSpec(block=True))
    sentiment.run_batch(frame, output_spec=OutputSpec("@out/df/"), job_spec=JobSpec(block=True))
    registry.create_stage("data", str(tmp_path / "data"))
    con.execute(
        f"COPY (SELECT * FROM reviews WHERE id < 300) TO '{tmp_path}/data/in' (FORMAT parquet, PER_THREAD_OUTPUT)"
    )
    sentiment.run_batch("@data/in/", output_spec=OutputSpec("@out/stage/"), job_spec=JobSpec(block=True))
    results = [
        _read(tmp_path / "out" / name).sort_values("id").reset_index(drop=True) for name in ("rel", "df", "stage")
    ]
    for result in results[1:]:
        pd.testing.assert_frame_equal(result, results[0])
    assert len(results[0]) == 300


def test_save_modes_and_spec_errors(sentiment, registry, tmp_path) -> None:
    query = "SELECT * FROM reviews WHERE id < 10"
    sentiment.run_batch(query, output_spec=OutputSpec("@out/x/"), job_spec=JobSpec(block=True))
    with pytest.raises(FileExistsError, match=r"Output stage location '@out/x/' is not empty. Found 2 existing files"):
        sentiment.run_batch(query + " AND id > 2", output_spec=OutputSpec("@out/x/"))
    with pytest.warns(UserWarning, match="OVERWRITE mode will remove all existing files"):
        job = sentiment.run_batch(
            query + " AND id > 2",
            output_spec=OutputSpec("@out/x/", mode=SaveMode.OVERWRITE),
            job_spec=JobSpec(block=True),
        )
    assert job.status == "DONE" and len(_read(tmp_path / "out" / "x")) == 7
    errors = [
        (dict(job_spec=JobSpec(replicas=2)), "replicas > 1 needs the ray engine"),
        (dict(job_spec=JobSpec(num_workers=3)), "num_workers > 1 needs the ray engine"),
        (dict(job_spec=JobSpec(cpu_requests="512")), "cpu_requests='512', but this machine has"),
        (dict(job_spec=JobSpec(memory_requests="100000GiB")), "memory_requests='100000GiB', but this machine has"),
        (dict(compute_pool="my_compute_pool"), "the local engine runs in this process"),
        (dict(inference_engine_options={"engine": "vllm"}), "the vllm engine answers OpenAI chat requests"),
        (dict(inference_engine_options={"engin": "ray"}), "Unknown inference_engine_options"),
        (dict(inference_engine_options={"engine": "ray"}, compute_pool="my pool"), "Ray address 'my pool'"),
        (dict(input_spec=InputSpec(params={"top_k": 2})), r"Unknown parameter\(s\): \['top_k'\]"),
        (dict(job_spec=JobSpec(function_name="predict")), "no method with name predict"),
        (dict(input_spec=_from_stage("nope", FileEncoding.RAW_BYTES)), "column_handling names column 'nope'"),
    ]
    for kwargs, message in errors:
        with pytest.raises(ValueError, match=message):
            sentiment.run_batch(query, output_spec=OutputSpec("@out/err/"), **kwargs)
    with pytest.raises(ValueError, match="must have a unit"):
        JobSpec(memory_requests="8")
    with pytest.raises(ValueError, match="Invalid gpu_requests"):
        JobSpec(gpu_requests="-1")
    with pytest.raises(ValueError, match="stage path"):
        OutputSpec("/tmp/out")
    with pytest.raises(ValueError, match="leaves the stage"):
        sentiment.run_batch(query, output_spec=OutputSpec("@out/../escape/"))
    with pytest.raises(RuntimeError, match="Failed to process input data"):
        sentiment.run_batch("SELECT * FROM no_such_table", output_spec=OutputSpec("@out/bad/"))
    assert not (tmp_path / "out" / "err").exists() or not any((tmp_path / "out" / "err").iterdir())
    # Refused before anything ran: only the two jobs that ran are recorded.
    assert len(list_jobs(registry, limit=0)) == 2


def test_background_job_can_be_cancelled_and_deleted(registry, tmp_path) -> None:
    signature = ModelSignature(
        inputs=[FeatureSpec("x", DataType.INT64)], outputs=[FeatureSpec("doubled", DataType.INT64)]
    )
    mv = registry.log_model(SlowDoubler(), model_name="doubler", version_name="v1", signatures={"predict": signature})
    registry.create_stage("out", str(tmp_path / "out"))
    frame = pd.DataFrame({"x": range(200)})
    job = mv.run_batch(frame, output_spec=OutputSpec("@out/c/"), job_spec=JobSpec(max_batch_rows=2))
    with pytest.raises(TimeoutError, match=f"Job {job.name} did not complete within 0.1 seconds"):
        job.wait(timeout=0.1)
    with pytest.raises(RuntimeError, match="cancel it before deleting"):
        delete_job(registry, job)
    job.cancel()
    assert job.status == "CANCELLED"
    assert not (tmp_path / "out" / "c" / "_SUCCESS").exists()
    assert "cancelled" in job.get_logs()
    delete_job(registry, job)
    with pytest.raises(ValueError, match="does not exist"):
        job.wait()


_WORKER = """
import sys
sys.path.insert(0, {tests!r})
import pandas as pd, duckreg
from duckreg.batch import JobSpec, OutputSpec
registry = duckreg.Registry({db!r})
mv = registry.get_model("doubler").default
job = mv.run_batch("SELECT * FROM numbers", output_spec=OutputSpec("@out/kill/"),
                   job_spec=JobSpec(job_name="kill_me", max_batch_rows=25, block=True))
print(job.status)
"""


def test_killed_job_reads_failed_and_resumes_to_the_same_rows(registry, db_path, tmp_path) -> None:
    signature = ModelSignature(
        inputs=[FeatureSpec("x", DataType.INT64)], outputs=[FeatureSpec("doubled", DataType.INT64)]
    )
    registry.log_model(SlowDoubler(), model_name="doubler", version_name="v1", signatures={"predict": signature})
    registry.create_stage("out", str(tmp_path / "out"))
    registry.connection.execute("CREATE TABLE numbers AS SELECT i AS id, i AS x FROM range(2000) t(i)")
    registry.connection.close()
    worker = subprocess.Popen([sys.executable, "-c", _WORKER.format(tests=str(TESTS), db=str(db_path))])
    out = tmp_path / "out" / "kill"
    assert 10 <= kill_when_parts_written(worker, out, 10) < 80

    reopened = duckreg.Registry(str(db_path))
    try:
        job = get_job(reopened, "kill_me")
        assert job.status == "FAILED" and "exited before it finished" in job.message
        mv = reopened.get_model("doubler").default
        resumed = mv.run_batch(
            "SELECT * FROM numbers",
            output_spec=OutputSpec("@out/kill/"),
            job_spec=JobSpec(job_name="kill_me", max_batch_rows=25, block=True),
        )
        assert resumed.status == "DONE" and "resuming" in resumed.get_logs()
        clean = mv.run_batch(
            "SELECT * FROM numbers",
            output_spec=OutputSpec("@out/clean/"),
            job_spec=JobSpec(max_batch_rows=25, block=True),
        )
        assert clean.status == "DONE"
    finally:
        reopened.connection.close()
    got = _read(out).sort_values("id").reset_index(drop=True)
    expected = _read(tmp_path / "out" / "clean").sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    assert got["doubled"].tolist() == [2 * i for i in range(2000)]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("part-")) == ["_SUCCESS"]


def _from_stage(column: str, encoding: FileEncoding) -> InputSpec:
    """Read ``column``'s stage paths for the model as ``encoding``."""
    return InputSpec(column_handling={column: {"input_format": InputFormat.FULL_STAGE_PATH, "convert_to": encoding}})


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((24, 36, 3)) * 255).astype("uint8")).save(buffer, "PNG")
    return buffer.getvalue()


def _wav(seed: int, fmt: str = "WAV", rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    wave = np.sin(np.linspace(0, 400 + 100 * seed, rate)).astype("float32")
    soundfile.write(buffer, wave, rate, format=fmt)
    return buffer.getvalue()


def test_stage_files_reach_models_as_raw_bytes_and_base64(registry, model_dirs, tmp_path) -> None:
    registry.create_stage("media", str(tmp_path / "media"))
    registry.create_stage("out", str(tmp_path / "out"))
    (tmp_path / "media" / "img").mkdir(parents=True)
    (tmp_path / "media" / "audio").mkdir()
    images = {f"@media/img/p{i}.png": _png(i) for i in range(3)}
    sounds = {"@media/audio/a.wav": _wav(0), "@media/audio/b.flac": _wav(1, "FLAC", 8000)}
    for path, data in {**images, **sounds}.items():
        (tmp_path / "media" / path.removeprefix("@media/")).write_bytes(data)

    classifier = registry.log_model(
        transformers.pipeline("image-classification", model=str(model_dirs["image-classification"])),
        model_name="image_classifier",
        version_name="v1",
    )
    job = classifier.run_batch(
        duckreg.list_stage_files(registry, "@media/img", pattern=r".*\.png", column_name="IMAGES"),
        output_spec=OutputSpec("@out/images/"),
        input_spec=_from_stage("IMAGES", FileEncoding.RAW_BYTES),
        job_spec=JobSpec(block=True),
    )
    assert job.status == "DONE", job.message
    got = _read(tmp_path / "out" / "images").sort_values("IMAGES")
    direct = classifier.run(pd.DataFrame({"images": list(images.values())}))
    assert got["IMAGES"].tolist() == list(images)
    for labels, expected in zip(got["labels"], direct["labels"], strict=True):
        assert [x["label"] for x in labels] == [x["label"] for x in expected]
        assert [x["score"] for x in labels] == pytest.approx([x["score"] for x in expected], rel=1e-5)
    con = registry.register_functions()
    inline = con.execute("SELECT file_path, labels FROM image_classifier_files('@media/img')").fetchall()
    assert [row[0] for row in inline] == list(images)

    asr = registry.log_model(
        transformers.pipeline("automatic-speech-recognition", model=str(model_dirs["speech-recognition"])),
        model_name="asr",
        version_name="v1",
    )
    job = asr.run_batch(
        pd.DataFrame({"audio": list(sounds)}),
        output_spec=OutputSpec("@out/audio/"),
        input_spec=_from_stage("audio", FileEncoding.RAW_BYTES),
        job_spec=JobSpec(block=True),
    )
    assert job.status == "DONE", job.message
    texts = _read(tmp_path / "out" / "audio").sort_values("audio")["outputs"].tolist()
    assert [t["text"] for t in texts] == [
        o["text"] for o in asr.run(pd.DataFrame({"audio": list(sounds.values())}))["outputs"]
    ]

    signature = ModelSignature(
        inputs=[FeatureSpec("audio", DataType.STRING)],
        outputs=[FeatureGroupSpec("outputs", [
            FeatureSpec("text", DataType.STRING),
            FeatureGroupSpec("chunks", [FeatureSpec("timestamp", DataType.DOUBLE, shape=(2,)),
                                        FeatureSpec("text", DataType.STRING)], shape=(-1,)),
        ])],
    )  # fmt: skip
    pipe = transformers.pipeline("automatic-speech-recognition", model=str(model_dirs["speech-recognition"]))
    transcriber = registry.log_model(
        CustomTranscriber(ModelContext(models={"my_model": pipe})),
        model_name="custom_transcriber",
        version_name="v1",
        signatures={"predict": signature},
    )
    job = transcriber.run_batch(
        pd.DataFrame({"audio": ["@media/audio/a.wav"]}),
        output_spec=OutputSpec("@out/b64/"),
        input_spec=_from_stage("audio", FileEncoding.BASE64),
        job_spec=JobSpec(block=True),
    )
    assert job.status == "DONE", job.message
    via_base64 = _read(tmp_path / "out" / "b64")["outputs"][0]["text"]
    assert (
        via_base64
        == transcriber.run(pd.DataFrame({"audio": [base64.b64encode(sounds["@media/audio/a.wav"]).decode()]}))[
            "outputs"
        ][0]["text"]
    )
    assert via_base64 == texts[0]["text"]
    with pytest.raises(ValueError, match="column 'images', row 1: not an image pillow can read"):
        classifier.run(pd.DataFrame({"images": [b"not a png"]}))


def test_custom_model_through_every_door(registry, tmp_path) -> None:
    greeting = tmp_path / "greeting.txt"
    greeting.write_text("Hello")
    signature = ModelSignature(
        inputs=[FeatureSpec("name", DataType.STRING)], outputs=[FeatureSpec("greeting", DataType.STRING)]
    )
    model = Greeter(ModelContext(artifacts={"greeting": greeting}))
    mv = registry.log_model(
        model, model_name="greeter", version_name="v1", signatures={"greet": signature, "shout": signature}
    )
    greeting.write_text("changed after logging")
    assert [f["name"] for f in mv.show_functions()] == ["GREET", "SHOUT"]
    with pytest.raises(ValueError, match="more than 1 target methods"):
        mv.run(pd.DataFrame({"name": ["Ann"]}))
    assert mv.run(pd.DataFrame({"name": ["Ann"]}), function_name="greet")["greeting"].tolist() == ["Hello, Ann!"]
    con = registry.register_functions()
    assert con.execute("SELECT greeter_greet('Bo'), greeter_shout('Bo')").fetchall() == [("Hello, Bo!", "BO")]
    registry.create_stage("out", str(tmp_path / "out"))
    job = mv.run_batch(
        pd.DataFrame({"name": ["Cy", "Di"]}),
        output_spec=OutputSpec("@out/greet/"),
        job_spec=JobSpec(function_name="greet", block=True),
    )
    assert sorted(_read(tmp_path / "out" / "greet")["greeting"]) == ["Hello, Cy!", "Hello, Di!"]
    assert job.status == "DONE"
    # load() imports the stored copy of the class's module and uses the stored artifact.
    loaded = mv.load()
    assert type(loaded).__name__ == "Greeter"
    assert loaded.greet(pd.DataFrame({"name": ["Ed"]}))["greeting"].tolist() == ["Hello, Ed!"]
    with pytest.raises(ValueError, match="Custom models need signatures"):
        registry.log_model(model, model_name="greeter", version_name="v2")


def test_ray_engine_writes_the_same_rows(sentiment, registry, tmp_path) -> None:
    pytest.importorskip("ray")
    query = "SELECT * FROM reviews WHERE id < 1200"
    job = sentiment.run_batch(
        query,
        output_spec=OutputSpec("@out/ray/"),
        job_spec=JobSpec(max_batch_rows=200, replicas=2, block=True),
        inference_engine_options={"engine": "ray"},
    )
    assert job.status == "DONE", job.message
    assert "on 2 actor(s) (0.5 CPU, 0 GPU each)" in job.get_logs()
    sentiment.run_batch(query, output_spec=OutputSpec("@out/local/"), job_spec=JobSpec(max_batch_rows=200, block=True))
    ray_rows = _read(tmp_path / "out" / "ray").sort_values("id").reset_index(drop=True)
    local_rows = _read(tmp_path / "out" / "local").sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(ray_rows, local_rows)
    assert (tmp_path / "out" / "ray" / "_SUCCESS").exists() and len(ray_rows) == 1200
