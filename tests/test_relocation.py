"""A registry travels with its database: copied, moved or opened read-only elsewhere, every model runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
    con.execute("SET VARIABLE duckreg_cache = false")  # every model runs from its files, no cached result
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
    root = Path(f"{db}.artifacts").resolve()
    with duckdb.connect(str(db)) as raw:  # as registries written before relative paths kept them
        raw.execute("UPDATE duckreg.versions SET artifact_path = ? || '/' || artifact_path[length(?) + 2:]",
                    [str(root), f"{db.name}.artifacts"])  # fmt: skip
        raw.execute("UPDATE duckreg.settings SET value = ? WHERE key = 'artifact_location'", [str(root)])
        assert all(Path(p).is_dir() for (p,) in raw.execute("SELECT artifact_path FROM duckreg.versions").fetchall())
    _check_runs_everything(db, rows, greeted)
    shutil.copytree(tmp_path / "here", tmp_path / "there")
    shutil.rmtree(tmp_path / "here")
    _check_runs_everything(tmp_path / "there" / "shop.duckdb", rows, greeted)
    (tmp_path / "there" / "shop.duckdb").rename(tmp_path / "there" / "store.duckdb")
    (tmp_path / "there" / "shop.duckdb.artifacts").rename(tmp_path / "there" / "store.duckdb.artifacts")
    _check_runs_everything(tmp_path / "there" / "store.duckdb", rows, greeted)


def _runs(db: Path, rows: list[tuple], read_only: bool = True) -> None:
    con = duckreg.connect(str(db), read_only=read_only)
    con.execute("SET VARIABLE duckreg_cache = false")  # every model runs from its files, no cached result
    try:
        assert con.execute(QUERY, [TEXTS]).fetchall() == rows
    finally:
        con.close()


def test_a_snapshot_under_another_name_in_another_folder_shares_the_registry_artifacts(tmp_path, model_dirs) -> None:
    db, rows, _ = _build(tmp_path / "here", model_dirs)
    registry = duckreg.Registry(str(db))
    (tmp_path / "readers").mkdir()
    snapshot = registry.snapshot(tmp_path / "readers" / "readers.duckdb")
    registry.connection.close()
    _runs(snapshot, rows)
    assert not (tmp_path / "readers" / "readers.duckdb.artifacts").exists()  # shared, not copied
    assert not (tmp_path / "readers" / "shop.duckdb.artifacts").exists()
    moved = tmp_path / "elsewhere" / "moved.duckdb"  # a snapshot moved on still names the registry's folder
    moved.parent.mkdir()
    snapshot.rename(moved)
    _runs(moved, rows)


def test_a_renamed_copy_runs_every_model_and_writes_only_beside_its_new_name(tmp_path, model_dirs) -> None:
    db, rows, greeted = _build(tmp_path / "here", model_dirs)
    (tmp_path / "there").mkdir()
    renamed = tmp_path / "there" / "store.duckdb"
    shutil.copy(db, renamed)
    shutil.copytree(tmp_path / "here" / "shop.duckdb.artifacts", tmp_path / "there" / "store.duckdb.artifacts")
    _check_runs_everything(renamed, rows, greeted)
    assert sorted(p.name for p in (tmp_path / "there").iterdir()) == ["store.duckdb", "store.duckdb.artifacts"]
    assert (tmp_path / "there" / "store.duckdb.artifacts" / "results.sqlite").is_file()
    # A version logged into the copy lands beside the copy; the original is left alone.
    before = sorted(p.name for p in (tmp_path / "here" / "shop.duckdb.artifacts").iterdir())
    registry = duckreg.Registry(str(renamed))
    embedder = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    mv = registry.log_model(embedder, model_name="minilm", version_name="v2", options={"pooling": "mean"})
    assert mv._handle().artifact_dir == (tmp_path / "there" / "store.duckdb.artifacts" / "minilm" / "v2").resolve()
    registry.connection.close()
    assert sorted(p.name for p in (tmp_path / "here" / "shop.duckdb.artifacts").iterdir()) == before
    shutil.rmtree(tmp_path / "here")
    _check_runs_everything(renamed, rows, greeted)


def test_a_registry_zipped_unpacked_renamed_and_mounted_read_only_runs_every_model(tmp_path, model_dirs) -> None:
    _, rows, _ = _build(tmp_path / "here", model_dirs)
    archive = shutil.make_archive(str(tmp_path / "registry"), "zip", tmp_path / "here")
    shutil.rmtree(tmp_path / "here")
    unpacked = tmp_path / "unpacked"
    shutil.unpack_archive(archive, unpacked)
    (unpacked / "shop.duckdb").rename(unpacked / "catalog.duckdb")
    (unpacked / "shop.duckdb.artifacts").rename(unpacked / "catalog.duckdb.artifacts")
    mount = tmp_path / "mount"
    mount.mkdir()
    check = (
        "import duckreg, sys\n"
        f"con = duckreg.connect({str(mount / 'catalog.duckdb')!r}, read_only=True)\n"
        "con.execute('SET VARIABLE duckreg_cache = false')\n"
        f"rows = con.execute({QUERY!r}, [{TEXTS!r}]).fetchall()\n"
        "print(repr(rows))\n"
    )
    # A bind mount made read-only, in a mount namespace of its own (no root needed, nothing left mounted).
    script = f'mount --bind {unpacked} {mount} && mount -o remount,bind,ro {mount} && {sys.executable} -c "$0"'
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script, check], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert eval(result.stdout.strip().splitlines()[-1]) == rows
    assert not list(mount.iterdir())  # the mount lived only in that namespace


def test_a_database_moved_without_its_folder_says_where_the_models_should_be(tmp_path, model_dirs) -> None:
    db, _, _ = _build(tmp_path / "here", model_dirs)
    (tmp_path / "alone").mkdir()
    shutil.copy(db, tmp_path / "alone" / "shop.duckdb")
    shutil.rmtree(tmp_path / "here")
    con = duckreg.connect(str(tmp_path / "alone" / "shop.duckdb"))
    with pytest.raises(duckdb.Error, match=r"Model minilm version v1: the registry's artifact folder .*alone/shop"
                       r"\.duckdb\.artifacts does not exist\. A database copied, moved or renamed keeps"):  # fmt: skip
        con.execute("SELECT minilm('hello')").fetchall()
    con.close()
    assert sorted(p.name for p in (tmp_path / "alone").iterdir()) == ["shop.duckdb"]  # nothing written beside it


def test_a_default_registry_copied_elsewhere_without_its_folder_names_the_folder_beside_the_copy(
    tmp_path, model_dirs
) -> None:
    db = tmp_path / "quickstart.duckdb"
    registry = duckreg.Registry(str(db))
    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    registry.log_model(pipe, model_name="minilm", version_name="v1", options={"pooling": "mean"})
    registry.connection.close()
    (tmp_path / "o3").mkdir()
    shutil.copy(db, tmp_path / "o3" / "copy.duckdb")
    con = duckreg.connect(str(tmp_path / "o3" / "copy.duckdb"))
    with pytest.raises(duckdb.Error, match=r"the registry's artifact folder .*o3/copy\.duckdb\.artifacts does not"):
        con.execute("SELECT minilm('hello')").fetchall()
    con.close()
    assert sorted(p.name for p in (tmp_path / "o3").iterdir()) == ["copy.duckdb"]
