"""Inference engines: an ONNX Runtime export gives torch's outputs for every encoder task, and is gated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import transformers
from conftest import run_in_new_process

import duckreg
from duckreg.artifacts import TamperedArtifact
from duckreg.huggingface import TransformersPipeline

pytest.importorskip("onnxruntime")

TEXTS = ["I like you. I love you, too.", "My name is Izumi and I live in Tokyo, Japan.", "hello", "ok ok ok"]

# task -> (tiny model, log options, input frame)
ENCODER_CASES = {
    "feature-extraction": ("feature-extraction", {"pooling": "mean"}, pd.DataFrame({"inputs": TEXTS})),
    "text-classification": ("text-classification", {}, pd.DataFrame({"text": TEXTS})),
    "token-classification": ("token-classification", {}, pd.DataFrame({"inputs": TEXTS})),
    "fill-mask": (
        "fill-mask",
        {},
        pd.DataFrame({"inputs": ["I [MASK] you.", "The capital of [MASK] is Paris.", "[MASK] world"]}),
    ),
    "zero-shot-classification": (
        "zero-shot-classification",
        {},
        pd.DataFrame({"sequences": TEXTS, "candidate_labels": [["food", "city", "love"]] * len(TEXTS)}),
    ),
    "question-answering": (
        "question-answering",
        {},
        pd.DataFrame({"question": ["Where do I live?", "Who am I?", "What?", "Which?"], "context": TEXTS}),
    ),
}


def _pipeline(task: str, folder: Path):
    if task == "question-answering":
        return TransformersPipeline(task=task, model=str(folder))  # transformers 5 has no QA pipeline
    return transformers.pipeline(task, model=str(folder))


def _assert_same_outputs(task: str, torch_frame: pd.DataFrame, onnx_frame: pd.DataFrame) -> None:
    assert list(torch_frame.columns) == list(onnx_frame.columns)
    if task == "feature-extraction":
        for a, b in zip(torch_frame["embedding"], onnx_frame["embedding"], strict=True):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.9999
        return
    for column in torch_frame.columns:
        for a, b in zip(torch_frame[column], onnx_frame[column], strict=True):
            _assert_close(json.loads(a) if isinstance(a, str) and a[:1] in "[{" else a,
                          json.loads(b) if isinstance(b, str) and b[:1] in "[{" else b)  # fmt: skip


def _assert_close(a, b) -> None:
    """Equal labels, words and positions; scores equal to float tolerance."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_close(a[key], b[key])
    elif isinstance(a, (list, np.ndarray)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_close(x, y)
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    else:
        assert a == b


@pytest.mark.parametrize("task", sorted(ENCODER_CASES))
def test_onnxruntime_gives_torch_outputs_for_every_encoder_task(registry, model_dirs, task: str) -> None:
    tiny, options, frame = ENCODER_CASES[task]
    pipe = _pipeline(task, model_dirs[tiny])
    name = task.replace("-", "_")
    on_torch = registry.log_model(pipe, model_name=name, version_name="torch", options=options)
    on_onnx = registry.log_model(
        pipe, model_name=name, version_name="onnx", options={**options, "engine": "onnxruntime"}
    )

    _assert_same_outputs(task, on_torch.run(frame), on_onnx.run(frame))
    agreement = on_onnx.get_metric("engine_agreement")
    assert agreement["engine"] == "onnxruntime" and agreement["quantize"] is None
    assert agreement["min_cosine"] >= 0.9999
    assert "engine_agreement" not in on_torch.show_metrics()
    onnx_file = on_onnx._handle().artifact_dir / "model" / "onnx" / "model.onnx"
    assert onnx_file.stat().st_size > 0


def test_sql_and_a_new_process_run_the_onnx_export(registry, model_dirs, db_path: Path) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    registry.log_model(pipe, model_name="clf", version_name="torch")
    registry.log_model(pipe, model_name="clf", version_name="onnx", options={"engine": "onnxruntime"})
    con = registry.register_functions()
    con.execute("CREATE TABLE t AS SELECT unnest(?) AS text", [TEXTS])
    query = (
        "SELECT (clf__torch(text)).label, round((clf__torch(text)).score, 5), "
        "(clf__onnx(text)).label, round((clf__onnx(text)).score, 5) FROM t ORDER BY text"
    )
    rows = con.execute(query).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(r[2], r[3]) for r in rows]
    registry.connection.close()
    elsewhere = run_in_new_process(db_path, query)
    assert [tuple(r) for r in elsewhere] == [tuple(r) for r in rows]


def test_quantization_gate_refuses_an_export_below_its_floor(registry, model_dirs) -> None:
    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    options = {"pooling": "mean", "engine": "onnxruntime", "quantize": "int8"}
    refusal = r"int8 ONNX export disagrees with torch .*mean_cosine 0\.\d+ < 1\.0, even with every feed-forward"
    with pytest.raises(ValueError, match=refusal):
        registry.log_model(
            pipe, model_name="emb", version_name="v1", options={**options, "quality_floor": {"mean_cosine": 1.0}}
        )
    assert registry.models() == []
    assert [p.name for p in registry.artifact_location.iterdir()] == []  # nothing half-written left behind

    lowered = {"mean_cosine": 0.5, "neighbour_overlap": 0.0, "label_agreement": 0.0}
    mv = registry.log_model(pipe, model_name="emb", version_name="v1", options={**options, "quality_floor": lowered})
    agreement = mv.get_metric("engine_agreement")
    assert agreement["quantize"] == "int8"
    assert set(agreement) >= {"min_cosine", "mean_cosine", "neighbour_overlap"}
    assert 0.5 <= agreement["mean_cosine"] < 1.0
    vectors = mv.run(pd.DataFrame({"inputs": TEXTS}))["embedding"]
    assert all(abs(np.linalg.norm(v) - 1) < 1e-3 for v in vectors)


def test_int8_keeps_more_of_the_feed_forward_blocks_fp32_until_the_floors_hold(registry, model_dirs) -> None:
    import onnx
    import torch

    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    with torch.no_grad():  # outliers into the first layer's feed-forward block, as trained models have
        pipe.model.encoder.layer[0].attention.output.LayerNorm.weight[:1] *= 1000
        pipe.model.encoder.layer[0].output.dense.weight.mul_(20)
    options = {"pooling": "mean", "engine": "onnxruntime", "quantize": "int8"}
    fastest = registry.log_model(
        pipe, model_name="emb", version_name="fastest", options={**options, "quality_floor": {"neighbour_overlap": 0}}
    )
    assert fastest.get_metric("engine_agreement")["fp32_kept"] == "feed_forward_down"
    assert fastest.get_metric("engine_agreement")["neighbour_overlap"] < 0.99

    floor = {"neighbour_overlap": 0.99}
    faithful = registry.log_model(
        pipe, model_name="emb", version_name="faithful", options={**options, "quality_floor": floor}
    )
    agreement = faithful.get_metric("engine_agreement")
    assert agreement["fp32_kept"] == "feed_forward_down_and_half_up" and agreement["neighbour_overlap"] >= 0.99
    graph = onnx.load(str(faithful._handle().artifact_dir / "model/onnx/model.onnx")).graph
    fp32 = {node.name for node in graph.node if node.op_type == "MatMul"}
    assert "/inner/encoder/layer.0/intermediate/dense/MatMul" in fp32
    assert "/inner/encoder/layer.1/intermediate/dense/MatMul" not in fp32  # still int8: the floors held without it


def test_int8_quantizes_weight_matmuls_and_keeps_feed_forward_outputs_fp32(registry, model_dirs) -> None:
    import onnx

    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    floor = {"mean_cosine": 0.0, "label_agreement": 0.0}
    int8 = registry.log_model(
        pipe, model_name="clf", version_name="int8", sample_input_data=pd.DataFrame({"text": TEXTS}),
        options={"engine": "onnxruntime", "quantize": "int8", "quality_floor": floor},
    )  # fmt: skip
    graph = onnx.load(str(int8._handle().artifact_dir / "model/onnx/model.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("MatMulInteger") >= 4 and "DynamicQuantizeLinear" in ops
    fp32_matmuls = [node.name for node in graph.node if node.op_type == "MatMul"]
    assert any("output/dense" in name and "attention" not in name for name in fp32_matmuls)
    assert 0.0 <= int8.get_metric("engine_agreement")["label_agreement"] <= 1.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"engine": "tensorrt"},
            r"options\['engine'\] must be one of \['onnxruntime', 'torch', 'vllm'\], got 'tensorrt'",
        ),
        ({"quantize": "int8"}, r"need options\['engine'\] = 'onnxruntime'"),
        ({"engine": "onnxruntime", "quantize": "int4"}, r"options\['quantize'\] must be one of \('int8',\)"),
        ({"engine": "onnxruntime", "quality_floor": {"mean_cosine": 0.9}}, "applies to a quantized export"),
        ({"engine": "onnxruntime", "quantize": "int8", "quality_floor": {"cosine": 0.9}}, "keys among"),
        ({"engine": "onnxruntime", "quantize": "int8", "quality_floor": {"mean_cosine": 2}}, "from 0 to 1"),
    ],
)
def test_engine_options_are_checked_before_anything_is_saved(registry, model_dirs, options, message) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    with pytest.raises(ValueError, match=message):
        registry.log_model(pipe, model_name="clf", version_name="v1", options=options)
    assert registry.models() == []


def test_a_generation_task_is_refused_the_onnx_engine(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]))
    with pytest.raises(
        ValueError, match=r"runs the encoder tasks \[.*'text-classification'.*\], not 'text-generation'"
    ):
        registry.log_model(pipe, model_name="gen", version_name="v1", options={"engine": "onnxruntime"})


def test_a_changed_onnx_file_is_refused(registry, model_dirs, db_path: Path) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    mv = registry.log_model(pipe, model_name="clf", version_name="v1", options={"engine": "onnxruntime"})
    onnx_file = mv._handle().artifact_dir / "model" / "onnx" / "model.onnx"
    registry.connection.close()
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    fresh = duckreg.Registry(str(db_path))
    try:
        with pytest.raises(TamperedArtifact, match=r"model\.onnx does not match the sha256 logged for it"):
            fresh.get_model("clf").version("v1").run(pd.DataFrame({"text": ["hi"]}))
    finally:
        fresh.connection.close()


def test_a_logged_version_moves_to_onnx_runtime_and_back(registry, model_dirs, db_path: Path) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    mv = registry.log_model(pipe, model_name="clf", version_name="v1")
    con = registry.register_functions()
    con.execute("CREATE TABLE t AS SELECT unnest(?) AS text", [TEXTS])
    query = "SELECT text, (clf(text)).label, (clf(text)).score FROM t ORDER BY text"
    on_torch = con.execute(query).fetchall()
    torch_folder = mv._handle().artifact_dir
    assert registry.result_cache.stats()["entries"] == len(TEXTS)

    stale = mv._runner()  # what a caller holding the version from before the change would run
    agreement = mv.set_engine("onnxruntime", sample_input_data=pd.DataFrame({"text": TEXTS}))
    with pytest.raises(
        FileNotFoundError,
        match=r"Model clf version v1: its folder .* is not in the artifact folder .* Open the registry",
    ):
        stale.run([["a text"], [None]])
    assert agreement["engine"] == "onnxruntime" and agreement["min_cosine"] >= 0.9999
    assert mv.get_metric("engine_agreement") == agreement
    handle = mv._handle()
    assert handle.manifest.options == {"engine": "onnxruntime"}
    assert (handle.artifact_dir / "model/onnx/model.onnx").is_file() and not torch_folder.exists()
    assert registry.result_cache.stats()["entries"] == 0  # the torch engine's results went with its files
    on_onnx = con.execute(query).fetchall()  # the same connection's functions follow the version
    assert type(handle.shared_model().model.model).__name__ == "OnnxModule"
    assert [r[:2] for r in on_onnx] == [r[:2] for r in on_torch]
    assert [r[2] for r in on_onnx] == pytest.approx([r[2] for r in on_torch], rel=1e-4)
    registry.connection.close()
    assert run_in_new_process(db_path, query) == [list(r) for r in on_onnx]

    fresh = duckreg.Registry(str(db_path))
    try:
        back = fresh.get_model("clf").version("v1")
        assert back.set_engine("torch") == {}
        assert back._handle().manifest.options == {} and "engine_agreement" not in back.show_metrics()
        assert not (back._handle().artifact_dir / "model/onnx").exists()
        assert back.run(pd.DataFrame({"text": TEXTS}))["label"].tolist() == [
            r[1] for r in sorted(on_torch, key=lambda r: TEXTS.index(r[0]))
        ]
    finally:
        fresh.connection.close()


def test_a_refused_engine_change_leaves_the_version_as_it_was(registry, model_dirs) -> None:
    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    mv = registry.log_model(pipe, model_name="emb", version_name="v1", options={"pooling": "mean"})
    before = mv._handle()
    with pytest.raises(ValueError, match=r"Model emb version v1: the int8 ONNX export disagrees with torch"):
        mv.set_engine("onnxruntime", quantize="int8", quality_floor={"mean_cosine": 1.0})
    with pytest.raises(ValueError, match=r"Model emb version v1: options\['engine'\] must be one of"):
        mv.set_engine("tensorrt")
    after = mv._handle()
    assert (after.artifact_dir, after.manifest) == (before.artifact_dir, before.manifest)
    assert sorted(p.name for p in registry.artifact_location.iterdir()) == ["emb"]
    assert [p.name for p in (registry.artifact_location / "emb").iterdir()] == ["v1"]
    assert len(mv.run(pd.DataFrame({"inputs": TEXTS}))) == len(TEXTS)


def test_a_custom_model_takes_no_engine(registry) -> None:
    from custom_models import RowCounter

    from duckreg.model_signature import DataType, FeatureSpec, ModelSignature

    signature = ModelSignature(
        inputs=[FeatureSpec("text", DataType.STRING)], outputs=[FeatureSpec("length", DataType.INT64)]
    )
    mv = registry.log_model(RowCounter(), model_name="counter", version_name="v1", signatures={"predict": signature})
    with pytest.raises(ValueError, match=r"Model counter version v1: a custom model runs its own code"):
        mv.set_engine("onnxruntime")
