"""A registry travels with its database: copied, moved or opened read-only elsewhere, every model runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import transformers
from custom_models import Greeter

import duckreg
from duckreg.custom import ModelContext
from duckreg.model_signature import DataType, FeatureSpec, ModelSignature

TEXTS = ["I like you.", "My name is Izumi and I live in Tokyo, Japan."]
QUERY = (
    "SELECT (sentiment(t)).label, round((sentiment(t)).score, 5), round(list_sum(minilm(t)), 4), "
    "round(list_sum(minilm__fast(t)), 4) FROM (SELECT unnest(?) AS t) ORDER BY t"
)


def _build(folder: Path, model_dirs) -> tuple[Path, list[tuple], pd.DataFrame]:
    """A registry under ``folder`` with a pipeline, an embedding on two engines and a custom model with a file."""
    folder.mkdir()
    registry = duckreg.Registry(str(folder / "shop.duckdb"))
    classifier = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(classifier, model_name="sentiment", version_name="v1")
    embedder = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    registry.log_model(embedder, model_name="minilm", version_name="v1", options={"pooling": "mean"})
    fast = registry.log_model(embedder, model_name="minilm", version_name="fast", options={"pooling": "mean"})
    pytest.importorskip("onnxruntime")
    fast.set_engine("onnxruntime")  # a folder published under a new name, beside the model's files
    greeting = folder / "greeting.txt"
    greeting.write_text("Hello")
    signature = ModelSignature(
        inputs=[FeatureSpec("name", DataType.STRING)], outputs=[FeatureSpec("greeting", DataType.STRING)]
    )
    registry.log_model(
        Greeter(ModelContext(artifacts={"greeting": greeting})), model_name="greeter", version_name="v1",
        signatures={"greet": signature, "shout": signature},
    )  # fmt: skip
    greeting.unlink()  # the logged copy is what runs
    con = registry.register_functions()
    rows = con.execute(QUERY, [TEXTS]).fetchall()
    greeted = registry.get_model("greeter").default.run(pd.DataFrame({"name": ["Ann"]}), function_name="greet")
    registry.connection.close()
    return folder / "shop.duckdb", rows, greeted


def _check_runs_everything(db: Path, rows: list[tuple], greeted: pd.DataFrame, read_only: bool = False) -> None:
    con = duckreg.connect(str(db), read_only=read_only)
    try:
        assert con.execute(QUERY, [TEXTS]).fetchall() == rows
        registry = duckreg.Registry(con)
        again = registry.get_model("greeter").default.run(pd.DataFrame({"name": ["Ann"]}), function_name="greet")
        pd.testing.assert_frame_equal(again, greeted)
        for model in registry.models():
            for version in model.versions():
                assert version._handle().artifact_dir.is_relative_to(db.parent), (model.name, version.version_name)
    finally:
        con.close()


def test_a_registry_copied_elsewhere_runs_every_model_after_the_original_is_gone(tmp_path, model_dirs) -> None:
    db, rows, greeted = _build(tmp_path / "here", model_dirs)
    with duckdb.connect(str(db), read_only=True) as raw:
        stored = [r[0] for r in raw.execute("SELECT artifact_path FROM duckreg.versions").fetchall()]
        setting = raw.execute("SELECT value FROM duckreg.settings WHERE key = 'artifact_location'").fetchone()[0]
    assert setting == "shop.duckdb.artifacts" and not any(Path(path).is_absolute() for path in stored)

    shutil.copytree(tmp_path / "here", tmp_path / "there")
    shutil.rmtree(tmp_path / "here")
    _check_runs_everything(tmp_path / "there" / "shop.duckdb", rows, greeted, read_only=True)
    _check_runs_everything(tmp_path / "there" / "shop.duckdb", rows, greeted)


def test_a_catalog_with_absolute_paths_still_opens_in_place_and_after_a_move(tmp_path, model_dirs) -> None:
    db, rows, greeted = _build(tmp_path / "here", model_dirs)
    root = (tmp_path / "here" / "shop.duckdb.artifacts").resolve()
    with duckdb.connect(str(db)) as raw:  # as registries written before relative paths kept them
        raw.execute("UPDATE duckreg.versions SET artifact_path = ? || '/' || artifact_path", [str(root)])
        raw.execute("UPDATE duckreg.settings SET value = ? WHERE key = 'artifact_location'", [str(root)])
    _check_runs_everything(db, rows, greeted)
    shutil.copytree(tmp_path / "here", tmp_path / "there")
    shutil.rmtree(tmp_path / "here")
    _check_runs_everything(tmp_path / "there" / "shop.duckdb", rows, greeted)


def test_a_snapshot_in_another_folder_shares_the_registry_artifacts(tmp_path, model_dirs) -> None:
    db, rows, _ = _build(tmp_path / "here", model_dirs)
    registry = duckreg.Registry(str(db))
    (tmp_path / "readers").mkdir()
    snapshot = registry.snapshot(tmp_path / "readers" / "shop.duckdb")
    registry.connection.close()
    con = duckreg.connect(str(snapshot), read_only=True)
    try:
        assert con.execute(QUERY, [TEXTS]).fetchall() == rows
    finally:
        con.close()
    assert not (tmp_path / "readers" / "shop.duckdb.artifacts").exists()  # shared, not copied
