"""Where duckreg follows the Snowflake library's own behaviour beyond the seeds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
import transformers
from custom_models import Sampler

from duckreg import model_cache
from duckreg.batch import InputSpec, JobSpec, OutputSpec
from duckreg.huggingface import TransformersPipeline
from duckreg.model_signature import (
    DataType,
    FeatureGroupSpec,
    FeatureSpec,
    ModelSignature,
    ParamGroupSpec,
    ParamSpec,
)
from duckreg.openai_signatures import OPENAI_CHAT_SIGNATURE, OPENAI_CHAT_WITH_PARAMS_SIGNATURE
from duckreg.tasks._generation import GENERATION_PARAMS


def test_custom_model_params_reach_the_method_as_keyword_arguments(registry, tmp_path: Path) -> None:
    signature = ModelSignature(
        inputs=[FeatureSpec("text", DataType.STRING)],
        outputs=[FeatureSpec("setting", DataType.STRING)],
        params=[ParamSpec("temperature", DataType.DOUBLE, 1.0), ParamSpec("top_k", DataType.INT64, 50)],
    )
    mv = registry.log_model(Sampler(), model_name="sampler", version_name="v1", signatures={"predict": signature})
    frame = pd.DataFrame({"text": ["a"]})
    assert mv.run(frame, function_name="predict", params={"temperature": 2.0})["setting"].tolist() == ["a:2.0:50"]
    assert mv.run(frame)["setting"].tolist() == ["a:1.0:50"]
    con = registry.register_functions()
    assert con.execute("SELECT sampler('a', temperature := 2.5, top_k := 3)").fetchone() == ("a:2.5:3",)
    assert con.execute("SELECT sampler('a')").fetchone() == ("a:1.0:50",)
    registry.create_stage("out", str(tmp_path / "out"))
    mv.run_batch(
        frame,
        output_spec=OutputSpec("@out/sampled/"),
        input_spec=InputSpec(params={"top_k": 7}),
        job_spec=JobSpec(block=True),
    )
    written = duckdb.sql(f"SELECT setting FROM read_parquet('{tmp_path / 'out' / 'sampled'}/*.parquet')").fetchall()
    assert written == [("a:1.0:7",)]


def test_a_structured_output_in_a_user_signature_comes_back_structured(registry, model_dirs) -> None:
    pipe = transformers.pipeline(
        "text-generation", model=str(model_dirs["text-generation"]), max_new_tokens=3, do_sample=False
    )
    generated = FeatureGroupSpec("outputs", [FeatureSpec("generated_text", DataType.STRING)], shape=(-1,))
    signature = ModelSignature(inputs=[FeatureSpec("inputs", DataType.STRING)], outputs=[generated])
    mv = registry.log_model(pipe, model_name="writer", version_name="v1", signatures={"__call__": signature})
    (value,) = mv.run(pd.DataFrame({"inputs": ["hello"]}))["outputs"].tolist()
    assert isinstance(value, list) and list(value[0]) == ["generated_text"] and value[0]["generated_text"]
    con = registry.register_functions()
    assert con.execute("SELECT typeof(writer('hello'))").fetchone() == ("STRUCT(generated_text VARCHAR)[]",)
    assert con.execute("SELECT writer('hello')[1].generated_text").fetchone()[0] == value[0]["generated_text"]
    single = FeatureGroupSpec("outputs", [FeatureSpec("generated_text", DataType.STRING)])
    signature = ModelSignature(inputs=[FeatureSpec("inputs", DataType.STRING)], outputs=[single])
    mv = registry.log_model(pipe, model_name="writer", version_name="v2", signatures={"__call__": signature})
    assert mv.run(pd.DataFrame({"inputs": ["hello"]}))["outputs"].tolist() == value


def test_run_batch_takes_list_and_struct_columns_from_a_dataframe_as_from_arrow(registry, model_dirs, tmp_path) -> None:
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]))
    chat = registry.log_model(pipe, model_name="chat", version_name="v1", signatures=OPENAI_CHAT_SIGNATURE)
    messages = [[{"role": "user", "content": "Hello world"}], [{"role": "user", "content": "I like udon"}]]
    frame = pd.DataFrame(
        {"request": [1, 2], "messages": messages, "temperature": [0.0, 0.0], "max_completion_tokens": [3, 3]}
    )
    registry.create_stage("out", str(tmp_path / "out"))
    answers = {}
    for name, data in (("frame", frame), ("arrow", pa.Table.from_pandas(frame, preserve_index=False))):
        job = chat.run_batch(data, output_spec=OutputSpec(f"@out/{name}/"), job_spec=JobSpec(block=True))
        assert job.status == "DONE"
        written = tmp_path / "out" / name
        answers[name] = duckdb.sql(
            f"SELECT request, choices[1].message.content FROM read_parquet('{written}/*.parquet') ORDER BY 1"
        ).fetchall()
    assert answers["frame"] == answers["arrow"] and len(answers["frame"]) == 2


def test_openai_signatures_are_dicts_and_a_bare_signature_is_still_taken(registry, model_dirs) -> None:
    for constant in (OPENAI_CHAT_SIGNATURE, OPENAI_CHAT_WITH_PARAMS_SIGNATURE):
        assert list(constant) == ["__call__"] and isinstance(constant["__call__"], ModelSignature)
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]))
    bare = registry.log_model(pipe, model_name="chat", version_name="v1", signatures=OPENAI_CHAT_SIGNATURE["__call__"])
    assert bare.show_functions()[0]["signature"] == OPENAI_CHAT_SIGNATURE["__call__"]


def test_names_stay_readable_after_the_model_is_deleted(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    mv = registry.log_model(pipe, model_name="Sentiment", version_name="V1")
    listed = registry.get_model("sentiment").versions()[0]
    registry.delete_model("Sentiment")
    assert (mv.model_name, mv.version_name) == ("Sentiment", "V1") == (listed.model_name, listed.version_name)
    with pytest.raises(ValueError, match="Unable to find version v1 in model sentiment"):
        mv.run(pd.DataFrame({"text": ["x"]}))
    with pytest.raises(ValueError, match="Unable to find version v1 in model sentiment"):
        mv.set_metric("accuracy", 0.9)


def test_an_empty_function_name_means_the_default_function(registry, model_dirs, tmp_path) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    mv = registry.log_model(pipe, model_name="sentiment", version_name="v1")
    frame = pd.DataFrame({"text": ["good"]})
    assert mv.run(frame, function_name="").equals(mv.run(frame))
    registry.create_stage("out", str(tmp_path / "out"))
    job = mv.run_batch(frame, output_spec=OutputSpec("@out/empty/"), job_spec=JobSpec(function_name="", block=True))
    assert job.status == "DONE"


def test_load_brings_back_every_logged_pipeline_setting(registry, model_dirs) -> None:
    pipe = transformers.pipeline(
        "text-classification", model=str(model_dirs["text-classification"]), batch_size=8, top_k=2
    )
    loaded = registry.log_model(pipe, model_name="sentiment", version_name="v1").load()
    assert loaded._batch_size == 8 and loaded._postprocess_params["top_k"] == 2


def test_spec_classes_refuse_missing_unknown_and_invalid_arguments_with_value_errors() -> None:
    cases = [
        (lambda: OutputSpec(), "OutputSpec needs exactly one of stage_location"),
        (lambda: OutputSpec("out/"), "must be a stage path such as '@my_stage/out/', got 'out/'"),
        (lambda: OutputSpec("@out/", mode="append"), r"mode must be one of \['overwrite', 'error'\], got 'append'"),
        (lambda: OutputSpec("@out/", overwrite=True), r"OutputSpec has no field\(s\) \['overwrite'\]"),
        (lambda: JobSpec(warehouse_size="L"), r"JobSpec has no field\(s\) \['warehouse_size'\]"),
        (lambda: JobSpec(max_batch_rows=0), "max_batch_rows must be a positive integer"),
        (lambda: JobSpec(memory_requests="8"), "memory_requests must have a unit"),
        (lambda: InputSpec(params=[1]), "InputSpec.params must be a dict, got list"),
        (lambda: InputSpec(parms={}), r"InputSpec has no field\(s\) \['parms'\]"),
        (lambda: InputSpec(column_handling={"a": {"input_format": "x", "convert_to": "raw_bytes"}}), "'x'"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()


def test_transformers_pipeline_checks_device_and_device_map_when_created(model_dirs) -> None:
    folder = str(model_dirs["text-classification"])
    with pytest.raises(ValueError, match=r"You cannot use both `pipeline\(\.\.\. device_map=\.\.\., model_kwargs"):
        TransformersPipeline(folder, "text-classification", device_map="auto", model_kwargs={"device_map": "cpu"})
    with pytest.warns(UserWarning, match="Both `device` and `device_map` are specified"):
        TransformersPipeline(folder, "text-classification", device="cpu", device_map="auto")
    with pytest.warns(UserWarning, match="Both `device` and `device_map` are specified"):
        TransformersPipeline(folder, "text-classification", device="cpu", model_kwargs={"device_map": "auto"})


def test_param_errors_say_what_shape_was_expected_and_echo_names_as_written() -> None:
    vector = ParamSpec("weights", DataType.DOUBLE, None, shape=(3,))
    scalar = ParamSpec("temperature", DataType.DOUBLE, 1.0)
    for spec, value, message in [
        (scalar, [1.0], "Parameter 'temperature': Expected scalar value, got list"),
        (vector, 1.0, "Parameter 'weights': Expected 1-dimensional value, got float"),
        (vector, [1.0, 2.0], "Parameter 'weights': Dimension 0: expected 3, got 2"),
        (ParamSpec("grid", DataType.INT64, None, shape=(-1, 2)), [[1, 2], [3]], "Dimension 1: expected 2, got 1"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            spec.validate(value)
    text = [FeatureSpec("Text", DataType.STRING)]
    out = [FeatureSpec("y", DataType.STRING)]
    with pytest.raises(ValueError, match=re.escape("resolved as Top_K. Parameters must have distinct names")):
        ModelSignature(text, out, params=[ParamSpec("Top_K", DataType.INT64, 1), ParamSpec("top_k", DataType.INT64, 1)])
    with pytest.raises(ValueError, match=re.escape("same name as input feature(s): TeXt. Parameters and inputs")):
        ModelSignature(text, out, params=[ParamSpec("TeXt", DataType.STRING, None)])


def test_batch_job_name_prefix_base_stage_location_and_force_rebuild(registry, model_dirs, tmp_path) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    mv = registry.log_model(pipe, model_name="sentiment", version_name="v1")
    registry.create_stage("out", str(tmp_path / "out"))
    frame = pd.DataFrame({"text": ["good", "bad"]})
    job = mv.run_batch(
        frame,
        output_spec=OutputSpec(base_stage_location="@out/jobs/"),
        job_spec=JobSpec(job_name_prefix="NIGHTLY", block=True),
    )
    assert re.fullmatch(r"NIGHTLY_[0-9A-F]{32}", job.name) and job.status == "DONE"
    assert job.output_location == f"@out/jobs/{job.name}/"
    assert (tmp_path / "out" / "jobs" / job.name / "_SUCCESS").exists()
    with pytest.raises(ValueError, match="job_name or job_name_prefix, not both"):
        JobSpec(job_name="A", job_name_prefix="B")
    with pytest.raises(ValueError, match="exactly one of stage_location"):
        OutputSpec(stage_location="@out/a/", base_stage_location="@out/")
    mv.run(frame)  # loaded in this process
    loads = model_cache.CACHE.loads
    mv.run_batch(frame, output_spec=OutputSpec("@out/again/"), job_spec=JobSpec(block=True))
    assert model_cache.CACHE.loads == loads
    mv.run_batch(frame, output_spec=OutputSpec("@out/rebuilt/"), job_spec=JobSpec(block=True, force_rebuild=True))
    assert model_cache.CACHE.loads == loads + 1


def test_task_params_reach_the_pipeline_and_default_to_the_logged_setting(registry, model_dirs) -> None:
    zs_pipe = transformers.pipeline(
        "zero-shot-classification", model=str(model_dirs["zero-shot-classification"]), hypothesis_template="Topic: {}"
    )
    zs = registry.log_model(zs_pipe, model_name="zs", version_name="v1")
    params = {p.name: p.default_value for p in zs.show_functions()[0]["signature"].params}
    assert params == {"hypothesis_template": "Topic: {}", "multi_label": False}
    con = registry.register_functions()
    single = con.execute("SELECT list_sum(zs('good food', ['food', 'music', 'games']).scores)").fetchone()[0]
    multi = con.execute(
        "SELECT list_sum(zs('good food', ['food', 'music', 'games'], multi_label := true).scores)"
    ).fetchone()[0]
    assert single == pytest.approx(1.0) and multi != pytest.approx(1.0)
    expected = zs_pipe("good food", candidate_labels=["food", "music"], hypothesis_template="About {}.")["scores"]
    got = zs.run(
        pd.DataFrame({"sequences": ["good food"], "candidate_labels": [["food", "music"]]}),
        params={"hypothesis_template": "About {}."},
    )["scores"].iloc[0]
    assert got == pytest.approx(expected)
    fm = registry.log_model(transformers.pipeline("fill-mask", model=str(model_dirs["fill-mask"])), model_name="fm")
    two = fm.run(pd.DataFrame({"inputs": ["I [MASK] you."]}), params={"top_k": 2})["outputs"].iloc[0]
    assert len(json.loads(two)) == 2
    tc_pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]), top_k=2)
    registry.log_model(tc_pipe, model_name="tc", version_name="v1")
    con = registry.register_functions()
    assert len(json.loads(con.execute("SELECT tc('good', top_k := 1)").fetchone()[0])) == 1
    sigmoid = json.loads(con.execute("SELECT tc('good', function_to_apply := 'sigmoid')").fetchone()[0])
    assert sum(r["score"] for r in sigmoid) != pytest.approx(1.0)


def test_nullable_features_round_trip_and_a_non_nullable_input_refuses_null(registry, tmp_path) -> None:
    strict = FeatureSpec("text", DataType.STRING, nullable=False)
    assert strict == FeatureSpec("text", DataType.STRING) and FeatureSpec("t", DataType.STRING).nullable
    assert FeatureSpec.from_dict(strict.to_dict()).nullable is False
    assert FeatureSpec.from_dict({"type": "STRING", "name": "old"}).nullable is True
    assert repr(strict) == "FeatureSpec(dtype=DataType.STRING, name='text', nullable=False)"
    signature = ModelSignature(inputs=[strict], outputs=[FeatureSpec("setting", DataType.STRING)])
    mv = registry.log_model(Sampler(), model_name="careful", version_name="v1", signatures={"predict": signature})
    assert mv.show_functions()[0]["signature"].inputs[0].nullable is False
    message = "Model careful version v1, function PREDICT, column 'text': row 2 is NULL; the signature declares"
    with pytest.raises(ValueError, match=re.escape(message)), pytest.warns(UserWarning):
        mv.run(pd.DataFrame({"text": ["a", None]}))
    con = registry.register_functions()
    with pytest.raises(duckdb.Error, match="row 1 is NULL; the signature declares it not nullable"):
        con.execute("SELECT careful(NULL::VARCHAR)").fetchall()
    assert con.execute("SELECT careful('a')").fetchone() == ("a:1.0:50",)


def test_watermarking_config_is_a_parameter_group_reaching_generate(registry, model_dirs) -> None:
    group = next(p for p in GENERATION_PARAMS if p.name == "watermarking_config")
    assert isinstance(group, ParamGroupSpec) and [s.name for s in group.specs] == [
        "greenlist_ratio", "bias", "hashing_key", "seeding_scheme", "context_width"
    ]  # fmt: skip
    assert ParamGroupSpec.from_dict(group.to_dict()) == group
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]), max_new_tokens=6)
    mv = registry.log_model(pipe, model_name="writer", version_name="v1")
    frame = pd.DataFrame({"inputs": ["hello world"]})
    plain = mv.run(frame, params={"do_sample": False})["outputs"].iloc[0]
    marked = mv.run(frame, params={"do_sample": False, "watermarking_config": {"bias": 50.0}})["outputs"].iloc[0]
    assert marked != plain  # a large watermark bias changes the greedy answer
    con = registry.register_functions()
    in_sql = con.execute(
        "SELECT writer('hello world', do_sample := false, watermarking_config := {'bias': 50.0})"
    ).fetchone()[0]
    assert in_sql == marked
    with pytest.raises(ValueError, match=r"Parameter 'watermarking_config': unknown field\(s\) \['strength'\]"):
        mv.run(frame, params={"watermarking_config": {"strength": 1.0}})


def test_openai_response_format_is_declared_as_in_snowflake_and_honoured(registry, model_dirs) -> None:
    inputs = [s.name for s in OPENAI_CHAT_SIGNATURE["__call__"].inputs]
    assert inputs[-1] == "response_format"
    group = next(p for p in OPENAI_CHAT_WITH_PARAMS_SIGNATURE["__call__"].params if p.name == "response_format")
    assert isinstance(group, ParamGroupSpec)
    assert group.validate({}) == {"type": "json_schema", "json_schema": None}
    expected = {"name": "", "description": None, "schema": None, "strict": None}
    assert group.validate({"json_schema": {}})["json_schema"] == expected
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]))
    chat = registry.log_model(pipe, model_name="chat", version_name="v1", signatures=OPENAI_CHAT_WITH_PARAMS_SIGNATURE)
    frame = pd.DataFrame({"messages": [[{"role": "user", "content": "Hello"}]]})
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": '{"enum": ["yes", "no"]}'}}
    out = chat.run(frame, params={"temperature": 0.0, "max_completion_tokens": 8, "response_format": schema})
    assert out["object"].tolist() == ["chat.completion"]
    assert json.loads(out["choices"][0][0]["message"]["content"]) in ("yes", "no")
