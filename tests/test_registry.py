"""Registry, Model and ModelVersion management on a real DuckDB file."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import transformers

import duckreg
from duckreg import model_cache
from duckreg.huggingface import TransformersPipeline
from duckreg.model_handlers import huggingface as huggingface_handler
from duckreg.model_signature import DataType, FeatureSpec, ModelSignature


@pytest.fixture(scope="module")
def classifier(model_dirs):
    return transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))


def test_log_stores_safetensors_settings_and_manifest(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]), top_k=2)
    mv = registry.log_model(pipe, model_name="Finbert", version_name="V1", comment="first", metrics={"acc": 0.9})
    folder = registry.artifact_location / "finbert" / "v1"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (folder / "model" / "model.safetensors").is_file()
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.bin"))
    assert manifest["pipeline_settings"]["top_k"] == 2
    assert manifest["library_versions"]["transformers"] == transformers.__version__
    assert set(manifest["files"]) >= {"model.safetensors", "config.json"}
    assert (mv.model_name, mv.version_name, mv.comment) == ("Finbert", "V1", "first")
    assert registry.get_model("FINBERT").version("v1") == mv
    assert mv.show_metrics() == {"acc": 0.9}
    loaded = mv.load()
    assert isinstance(loaded, transformers.Pipeline)
    assert loaded("I like you.") == pipe("I like you.")


def test_duplicate_and_invalid_names_are_refused(registry, classifier) -> None:
    registry.log_model(classifier, model_name="sentiment", version_name="v1")
    with pytest.raises(ValueError, match="already existed"):
        registry.log_model(classifier, model_name="SENTIMENT", version_name="V1")
    for bad in ("1abc", "my-model", "a__b", ""):
        with pytest.raises(ValueError, match="Invalid model_name"):
            registry.log_model(classifier, model_name=bad, version_name="v1")
    with pytest.raises(ValueError, match="SQL keyword"):
        registry.log_model(classifier, model_name="select", version_name="v1")
    with pytest.raises(ValueError, match="shadow the existing SQL function 'lower'"):
        registry.log_model(classifier, model_name="lower", version_name="v1")
    assert [m.name for m in registry.models()] == ["sentiment"]


def test_generated_version_names_are_readable_and_unique(registry, classifier) -> None:
    names = {registry.log_model(classifier, model_name="auto").version_name for _ in range(3)}
    assert len(names) == 3
    assert all(len(n.split("_")) == 3 for n in names)


def test_versions_aliases_default_and_deletion(registry, classifier) -> None:
    v1 = registry.log_model(classifier, model_name="m", version_name="v1")
    v2 = registry.log_model(classifier, model_name="m", version_name="v2")
    model = registry.get_model("m")
    assert model.default == v1 and model.first() == v1 and model.last() == v2
    v2.set_alias("prod")
    assert model.version("PROD") == v2
    model.default = "prod"
    assert model.default == v2
    versions = model.show_versions()
    assert versions["name"].tolist() == ["v1", "v2"]
    assert versions["aliases"].tolist() == [["FIRST"], ["prod", "DEFAULT", "LAST"]]
    assert versions["is_default_version"].tolist() == [False, True]
    with pytest.raises(ValueError, match="cannot be deleted"):
        model.delete_version("v2")
    v2.unset_alias("prod")
    with pytest.raises(ValueError, match="Unable to find version or alias with name prod"):
        model.version("prod")
    model.delete_version("v1")
    assert [v.version_name for v in model.versions()] == ["v2"]
    assert not (registry.artifact_location / "m" / "v1").exists()
    registry.delete_model("m")
    assert registry.models() == []
    with pytest.raises(ValueError, match="Unable to find model m"):
        registry.get_model("m")


def test_metrics_comments_tags_and_rename(registry, classifier) -> None:
    mv = registry.log_model(classifier, model_name="tagged", version_name="v1")
    mv.set_metric("f1", {"macro": 0.5})
    assert mv.get_metric("f1") == {"macro": 0.5}
    mv.delete_metric("f1")
    with pytest.raises(KeyError, match="Cannot find metric with name f1"):
        mv.get_metric("f1")
    with pytest.raises(KeyError):
        mv.delete_metric("f1")
    mv.description = "updated"
    assert mv.comment == "updated"
    model = registry.get_model("tagged")
    model.comment = "a model"
    assert model.description == "a model"
    model.set_tag("owner", "data-team")
    assert model.get_tag("OWNER") == "data-team" and model.show_tags() == {"owner": "data-team"}
    model.unset_tag("owner")
    assert model.get_tag("owner") is None
    model.rename("renamed")
    assert registry.get_model("renamed").version("v1").run(pd.DataFrame({"text": ["I like you."]})).shape == (1, 2)


def test_export_copies_files_and_refuses_non_empty_targets(registry, classifier, tmp_path: Path) -> None:
    mv = registry.log_model(classifier, model_name="exported", version_name="v1")
    mv.export(tmp_path / "out")
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="is a file or an non-empty folder"):
        mv.export(tmp_path / "out")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file or an non-empty folder"):
        mv.export(tmp_path / "file.txt")


def test_failed_log_leaves_no_row_and_no_folder(registry, classifier, monkeypatch) -> None:
    def broken_save(pipe, folder: Path) -> None:
        folder.mkdir(parents=True)
        (folder / "partial.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(huggingface_handler, "save_pipeline", broken_save)
    with pytest.raises(OSError, match="disk full"):
        registry.log_model(classifier, model_name="broken", version_name="v1")
    assert registry.models() == []
    assert [p.name for p in registry.artifact_location.iterdir()] == []


def test_failed_catalog_write_removes_the_published_folder(registry, classifier) -> None:
    with pytest.raises(TypeError):
        registry.log_model(classifier, model_name="bad_metrics", version_name="v1", metrics={"x": object()})
    assert registry.models() == []
    assert not (registry.artifact_location / "bad_metrics").exists()


def test_signature_inference_errors_and_options(registry, model_dirs, classifier) -> None:
    tg = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]), return_tensors=True)
    with pytest.raises(NotImplementedError, match="return_tensors"):
        registry.log_model(tg, model_name="tensors", version_name="v1")
    fe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    with pytest.raises(NotImplementedError, match="task feature-extraction"):
        registry.log_model(fe, model_name="raw_features", version_name="v1")
    with pytest.raises(ValueError, match="unrecognized option keys"):
        registry.log_model(classifier, model_name="opts", version_name="v1", options={"colour": "red"})
    with pytest.raises(NotImplementedError, match="Explainability"):
        registry.log_model(classifier, model_name="opts", version_name="v1", options={"enable_explainability": True})
    mv = registry.log_model(
        classifier,
        model_name="opts",
        version_name="v1",
        options={"target_methods": ["__call__"], "cuda_version": "12.4"},
    )
    assert mv.show_functions()[0]["name"] == "__CALL__"
    with pytest.warns(UserWarning, match="sample input"):
        registry.log_model(
            classifier, model_name="opts", version_name="v2", sample_input_data=pd.DataFrame({"text": ["x"]})
        )


def test_user_signatures_override_inference(registry, classifier) -> None:
    signature = ModelSignature(
        inputs=[FeatureSpec("text", DataType.STRING)],
        outputs=[FeatureSpec("label", DataType.STRING), FeatureSpec("score", DataType.FLOAT)],
    )
    mv = registry.log_model(classifier, model_name="custom_sig", version_name="v1", signatures={"__call__": signature})
    assert mv.show_functions()[0]["signature"] == signature
    out = mv.run(pd.DataFrame({"text": ["I like you."]}))
    assert out["score"].dtype == "float32"
    with pytest.raises(ValueError, match="not callable"):
        registry.log_model(classifier, model_name="custom_sig", version_name="v2", signatures={"predict": signature})
    with pytest.raises(ValueError, match="must be a dict"):
        registry.log_model(classifier, model_name="custom_sig", version_name="v2", signatures=[signature])
    # A bare signature means the one target method, __call__.
    bare = registry.log_model(classifier, model_name="custom_sig", version_name="v3", signatures=signature)
    assert bare.show_functions()[0]["signature"] == signature


def test_transformers_pipeline_reference(registry, model_dirs) -> None:
    ref = TransformersPipeline(model=str(model_dirs["text-classification"]), task="text-classification", top_k=2)
    with pytest.warns(UserWarning, match="impossible to validate"):
        registry.log_model(
            ref,
            model_name="by_ref",
            version_name="v0",
            signatures={
                "__call__": ModelSignature(
                    [FeatureSpec("text", DataType.STRING)], [FeatureSpec("outputs", DataType.STRING)]
                )
            },
        )
    mv = registry.log_model(ref, model_name="by_ref", version_name="v1")
    assert mv.show_functions()[0]["signature"].outputs == [FeatureSpec("outputs", DataType.STRING)]
    missing = TransformersPipeline(model="no-such-org/no-such-model", task="text-classification")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        missing.local_path()


def test_run_validates_input_columns(registry, classifier) -> None:
    mv = registry.log_model(classifier, model_name="checks", version_name="v1")
    with pytest.raises(ValueError, match="feature text does not exist in data"):
        mv.run(pd.DataFrame({"body": ["x"]}))
    with pytest.raises(ValueError, match="Empty data"):
        mv.run(pd.DataFrame())
    with pytest.raises(ValueError, match=r"Model checks version v1, function __CALL__, column 'text': expected STRING"):
        mv.run(pd.DataFrame({"text": ["fine", 5]}))
    with pytest.warns(UserWarning, match="Null value detected in column text"):
        out = mv.run(pd.DataFrame({"text": ["I like you.", None]}))
    assert out["label"].isna().tolist() == [False, True]
    with pytest.raises(ValueError, match="no method with name predict"):
        mv.run(pd.DataFrame({"text": ["x"]}), function_name="predict")
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\): \['top_k'\]"):
        mv.run(pd.DataFrame({"text": ["x"]}), params={"top_k": 2})


def test_seed_finbert_example_with_unnamed_columns(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]), top_k=2)
    mv = registry.log_model(pipe, model_name="finbert", version_name="v1")
    out = mv.run(
        pd.DataFrame(
            [
                ["I have a problem with my Snowflake that needs to be resolved asap!!", ""],
                ["I would like to have udon for today's dinner.", ""],
            ]
        )
    )
    assert list(out.columns) == ["outputs"]
    first = json.loads(out["outputs"][0])
    assert [set(item) for item in first] == [{"label", "score"}, {"label", "score"}]


def test_registry_options(tmp_path: Path, classifier) -> None:
    with pytest.raises(ValueError, match="Database nowhere does not exist"):
        duckreg.Registry(str(tmp_path / "a.duckdb"), database_name="nowhere")
    reg = duckreg.Registry(str(tmp_path / "b.duckdb"), schema_name="ml", artifact_location=tmp_path / "store")
    reg.log_model(classifier, model_name="m", version_name="v1")
    assert (tmp_path / "store" / "m" / "v1" / "manifest.json").is_file()
    tables = reg.connection.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'ml'").fetchall()
    assert {"models", "versions", "functions"} <= {t[0] for t in tables}
    reg.connection.close()
    again = duckreg.Registry(str(tmp_path / "b.duckdb"), schema_name="ml")
    assert again.artifact_location == (tmp_path / "store").resolve()
    again.connection.close()


def test_loading_under_another_transformers_major_warns(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    mv = registry.log_model(pipe, model_name="skewed", version_name="v1")
    manifest = json.loads(
        registry.connection.execute("SELECT manifest FROM duckreg.versions WHERE name = 'v1'").fetchone()[0]
    )
    assert manifest["library_versions"]["transformers"] == transformers.__version__
    other = "4.57.6" if transformers.__version__.startswith("5") else "5.23.0"
    manifest["library_versions"]["transformers"] = other
    registry.connection.execute("UPDATE duckreg.versions SET manifest = ? WHERE name = 'v1'", [json.dumps(manifest)])
    with pytest.warns(RuntimeWarning, match=f"logged with transformers {other}"):
        mv.load()


def test_an_older_catalog_gains_the_new_tables(db_path, tmp_path) -> None:
    registry = duckreg.Registry(str(db_path))
    for table in ("job_logs", "jobs", "stages"):
        registry.connection.execute(f"DROP TABLE duckreg.{table}")
    registry.connection.close()
    # Read-only: the registry opens without the newer tables (and without trying to create them).
    with duckreg.connect(str(db_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM duckreg.models").fetchall() == [(0,)]
    reopened = duckreg.Registry(str(db_path))
    try:
        assert reopened.create_stage("files", str(tmp_path / "files")) == "@files"
        tables = {r[0] for r in reopened.connection.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'duckreg'").fetchall()}  # fmt: skip
        assert {"stages", "jobs", "job_logs"} <= tables
    finally:
        reopened.connection.close()


def test_a_database_without_a_registry_opened_read_only_says_so(tmp_path) -> None:
    path = tmp_path / "plain.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE t AS SELECT 1 AS a").close()
    with pytest.raises(duckdb.InvalidInputException, match=r"has no duckreg registry .* open it once writable"):
        duckreg.connect(str(path), read_only=True)
    with duckreg.connect(str(path)) as con:  # writable: the registry is created, the user's table kept
        assert con.execute("SELECT a FROM t").fetchall() == [(1,)]


def test_a_deleted_version_is_unloaded_from_the_process(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    model_v1 = registry.log_model(pipe, model_name="sentiment", version_name="v1")
    model_v2 = registry.log_model(pipe, model_name="sentiment", version_name="v2")
    keys = {}
    for mv in (model_v1, model_v2):
        # Distinct rows: the versions have the same content, so v2 would read v1's cached result.
        mv.run(pd.DataFrame({"text": [f"row for {mv.version_name}"]}))
        keys[mv.version_name] = mv._handle().cache_key
        assert keys[mv.version_name] in model_cache.CACHE
    registry.get_model("sentiment").default = "v2"
    registry.get_model("sentiment").delete_version("v1")
    assert keys["v1"] not in model_cache.CACHE and keys["v2"] in model_cache.CACHE
    registry.delete_model("sentiment")
    assert keys["v2"] not in model_cache.CACHE
