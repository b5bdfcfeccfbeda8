"""Where duckreg follows the Snowflake library's own behaviour beyond the seeds."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
from custom_models import Sampler

from duckreg.batch import InputSpec, JobSpec, OutputSpec
from duckreg.model_signature import DataType, FeatureSpec, ModelSignature, ParamSpec


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
