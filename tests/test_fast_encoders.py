"""Encoders at the CPU's limit: ONNX versions that answer without torch, fused graphs and bf16, each gated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import transformers

from duckreg.inference_engines import onnx_encoder, torch_engine
from duckreg.inference_engines.onnx_encoder import FastTokenizer, tokenizer_matches

pytest.importorskip("onnxruntime")

TEXTS = [
    "I like you. I love you, too.",
    "My name is Izumi and I live in Tokyo, Japan.",
    "hello",
    "Ünïcödé cafés, naïve résumés — and emoji 🦆!",
    "ok ok ok " * 40,
]
PAIRS = ["Who am I?", "Where?", "hello again", "a pair", "the end"]

BLOCK_TORCH = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"importing {name} is not allowed in this process")
        return None
sys.meta_path.insert(0, Blocked())
"""


def _without_torch(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + script], capture_output=True, text=True, timeout=300, check=False
    )


def _cosines(a, b) -> np.ndarray:
    a, b = np.stack(a).astype(np.float64), np.stack(b).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_an_onnx_version_answers_from_sql_and_python_where_torch_cannot_be_imported(
    registry, model_dirs, db_path: Path
) -> None:
    embed = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    classify = transformers.pipeline("text-classification", model=str(model_dirs["roberta-classification"]))
    onnx = {"engine": "onnxruntime"}
    registry.log_model(embed, model_name="emb", version_name="torch", options={"pooling": "mean"})
    registry.log_model(embed, model_name="emb", version_name="onnx", options={"pooling": "mean", **onnx})
    registry.log_model(classify, model_name="clf", version_name="torch")
    registry.log_model(classify, model_name="clf", version_name="onnx", options=onnx)
    con = registry.register_functions()
    con.execute("CREATE TABLE docs AS SELECT unnest(?) AS body, unnest(?) AS pair", [TEXTS[:4], PAIRS[:4]])
    expected_vectors = [list(r[0]) for r in con.sql("SELECT emb__torch(body) FROM docs ORDER BY body").fetchall()]
    expected_labels = con.sql(
        "SELECT (clf__torch(body, pair)).label, (clf__torch(body, pair)).score FROM docs ORDER BY body"
    ).fetchall()
    registry.connection.close()

    script = f"""
import json, sys
import pandas as pd
import duckreg
registry = duckreg.Registry({str(db_path)!r})
con = registry.register_functions()
vectors = [list(r[0]) for r in con.sql("SELECT emb__onnx(body) FROM docs ORDER BY body").fetchall()]
labels = con.sql(
    "SELECT (clf__onnx(body, pair)).label, (clf__onnx(body, pair)).score FROM docs ORDER BY body"
).fetchall()
frame = registry.get_model("emb").version("onnx").run(pd.DataFrame({{"inputs": ["hello"]}}))
print(json.dumps({{"vectors": vectors, "labels": labels, "run": list(map(float, frame["embedding"][0])),
                  "loaded": sorted(m for m in ("torch", "transformers") if m in sys.modules)}}))
"""
    done = _without_torch(script)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["loaded"] == []
    assert min(_cosines(answer["vectors"], expected_vectors)) >= 0.9999
    assert [label for label, _ in answer["labels"]] == [label for label, _ in expected_labels]
    assert [score for _, score in answer["labels"]] == pytest.approx([s for _, s in expected_labels], abs=1e-5)
    hello = expected_vectors[sorted(TEXTS[:4]).index("hello")]
    assert _cosines([answer["run"]], [hello])[0] >= 0.9999


def test_a_cold_cli_query_on_an_onnx_version_needs_neither_torch_nor_transformers(
    registry, model_dirs, db_path: Path
) -> None:
    embed = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    mv = registry.log_model(
        embed, model_name="emb", version_name="onnx", options={"pooling": "mean", "engine": "onnxruntime"}
    )
    expected = float(mv.run(pd.DataFrame({"inputs": ["hello"]}))["embedding"][0][0])
    registry.connection.close()
    query = "SET VARIABLE duckreg_cache = false; SELECT round(emb('hello')[1], 4) AS first"
    done = _without_torch(
        "import sys\nfrom duckreg.cli import main\n"
        f"sys.argv = ['duckreg', 'sql', '--db', {str(db_path)!r}, {query!r}]\nmain()"
    )
    assert done.returncode == 0, done.stderr
    assert f"{expected:.4f}" in done.stdout


@pytest.mark.parametrize("model", ["feature-extraction", "roberta-classification"])
def test_the_tokenizers_tokenizer_gives_the_ids_transformers_gives(model_dirs, model: str) -> None:
    folder = model_dirs[model]
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    ours = FastTokenizer(folder)
    for kwargs in ({"padding": True, "truncation": True}, {"padding": True, "truncation": True, "max_length": 12}):
        for pairs in (None, PAIRS):
            expected = theirs(TEXTS, pairs, return_tensors="np", **kwargs)
            got = ours(TEXTS, pairs, return_tensors="np", **kwargs)
            for name in expected:
                np.testing.assert_array_equal(got[name], expected[name])
    assert ours("hello", "again")["input_ids"] == theirs("hello", "again")["input_ids"]
    assert tokenizer_matches(folder, theirs, TEXTS)
    # Another model's tokenizer is not this folder's: the version would load through transformers.
    other = "roberta-classification" if model == "feature-extraction" else "feature-extraction"
    assert not tokenizer_matches(folder, transformers.AutoTokenizer.from_pretrained(str(model_dirs[other])), TEXTS)


def test_a_long_text_is_truncated_or_refused_without_torch_as_with_it(registry, model_dirs) -> None:
    folder = str(model_dirs["roberta-classification"])
    truncating = transformers.pipeline("text-classification", model=folder, truncation=True)
    strict = transformers.pipeline("text-classification", model=folder)
    onnx = {"engine": "onnxruntime"}
    long = pd.DataFrame({"text": ["ok " * 500, "hello"]})
    cut_torch = registry.log_model(truncating, model_name="cut", version_name="torch").run(long)
    cut_onnx = registry.log_model(truncating, model_name="cut", version_name="onnx", options=onnx)
    assert type(cut_onnx._handle().shared_model().model).__name__ == "OnnxEncoder"
    pd.testing.assert_frame_equal(cut_onnx.run(long), cut_torch, atol=1e-5)
    refusing = registry.log_model(strict, model_name="refusing", version_name="onnx", options=onnx)
    with pytest.raises(
        ValueError, match=r"Model refusing version onnx, .*column 'text'.* longer than the 64 this model"
    ):
        refusing.run(long)


def _fused_operators(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_a_fused_graph_is_gated_like_any_export_and_stored_as_the_engine_file(registry, model_dirs) -> None:
    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    frame = pd.DataFrame({"inputs": TEXTS})
    reference = registry.log_model(pipe, model_name="emb", version_name="torch", options={"pooling": "mean"})
    fused = registry.log_model(
        pipe, model_name="emb", version_name="fused", options={"pooling": "mean", "engine": "onnxruntime",
                                                               "graph": "fused"}
    )  # fmt: skip
    agreement = fused.get_metric("engine_agreement")
    assert agreement["graph"] == "fused" and agreement["min_cosine"] >= 0.9999
    assert {"Attention", "SkipLayerNormalization"} <= set(agreement["fusion"]["operators"])
    onnx_file = fused._handle().artifact_dir / "model" / "onnx" / "model.onnx"
    assert {"Attention", "SkipLayerNormalization"} <= _fused_operators(onnx_file)
    assert min(_cosines(fused.run(frame)["embedding"], reference.run(frame)["embedding"])) >= 0.9999

    chosen = registry.log_model(
        pipe, model_name="emb", version_name="auto", options={"pooling": "mean", "engine": "onnxruntime"}
    ).get_metric("engine_agreement")
    speeds = chosen["fusion"]["speed_vs_plain"]
    assert list(speeds) == ["16 tokens", "64 tokens", "256 tokens"] and min(speeds.values()) > 0
    assert chosen["fusion"]["chosen"] is (min(speeds.values()) > 1.02)
    assert chosen["graph"] == ("fused" if chosen["fusion"]["chosen"] else "plain")
    plain = registry.log_model(
        pipe, model_name="emb", version_name="plain", options={"pooling": "mean", "engine": "onnxruntime",
                                                               "graph": "plain"}
    )  # fmt: skip
    assert plain.get_metric("engine_agreement")["graph"] == "plain"
    assert "Attention" not in _fused_operators(plain._handle().artifact_dir / "model" / "onnx" / "model.onnx")


def test_a_fused_graph_whose_outputs_are_not_torchs_is_refused(model_dirs, tmp_path: Path) -> None:
    # The gate holds a fused graph to the torch outputs it was given: here another model's (other weights).
    from duckreg.inference_engines.onnx_runtime import export, fusion_candidate
    from duckreg.inference_engines.reference import torch_outputs
    from duckreg.inference_engines.samples import sample_texts

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dirs["feature-extraction"]))
    ours = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    config = transformers.AutoConfig.from_pretrained(str(model_dirs["feature-extraction"]))
    torch.manual_seed(123)
    other = transformers.BertModel(config).eval()
    reference = torch_outputs(other, tokenizer, sample_texts())
    export(ours.model, tokenizer, tmp_path / "model.onnx")
    with pytest.raises(ValueError, match=r"the fused ONNX graph disagrees with torch: min_cosine -?\d\.\d+ < 0\.9999"):
        fusion_candidate(ours, tmp_path / "model.onnx", reference, "fused", sample_texts())
    outcome = fusion_candidate(ours, tmp_path / "model.onnx", reference, "auto", sample_texts())
    assert outcome["chosen"] is False and outcome["refused"].startswith("min_cosine")
    assert outcome["operators"]["Attention"] == config.num_hidden_layers


def test_bf16_weights_are_gated_recorded_and_run_where_the_cpu_has_them(registry, model_dirs) -> None:
    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    frame = pd.DataFrame({"inputs": TEXTS})
    fp32 = registry.log_model(pipe, model_name="emb", version_name="fp32", options={"pooling": "mean"})
    bf16 = registry.log_model(
        pipe, model_name="emb", version_name="bf16", options={"pooling": "mean", "precision": "bf16"}
    )
    agreement = bf16.get_metric("engine_agreement")
    assert agreement["precision"] == "bf16" and agreement["cpu_bf16"] == torch_engine.cpu_has_bf16()
    assert agreement["mean_cosine"] >= 0.999 and agreement["neighbour_overlap"] >= 0.95
    assert list(agreement["speed_vs_fp32"]) == ["16 tokens", "64 tokens", "256 tokens"]
    loaded = bf16._handle().shared_model().model.model
    assert loaded.dtype == (torch.bfloat16 if torch_engine.cpu_has_bf16() else torch.float32)
    assert min(_cosines(bf16.run(frame)["embedding"], fp32.run(frame)["embedding"])) >= 0.999

    with pytest.raises(ValueError, match=r"bf16 weights disagree with fp32 on 32 sample texts: mean_cosine"):
        strict = {"pooling": "mean", "precision": "bf16", "quality_floor": {"mean_cosine": 1.0}}
        registry.log_model(pipe, model_name="demanding", version_name="v1", options=strict)
    assert [m.name.lower() for m in registry.models()] == ["emb"]


def test_a_bf16_version_runs_in_fp32_with_a_warning_where_the_cpu_lacks_bf16(registry, model_dirs, monkeypatch) -> None:
    pipe = transformers.pipeline("text-classification", model=str(model_dirs["text-classification"]))
    fp32 = registry.log_model(pipe, model_name="clf", version_name="fp32")
    monkeypatch.setattr(torch_engine, "cpu_has_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="This CPU has no bf16 instructions"):
        bf16 = registry.log_model(pipe, model_name="clf", version_name="bf16", options={"precision": "bf16"})
    assert bf16.get_metric("engine_agreement")["cpu_bf16"] is False
    frame = pd.DataFrame({"text": TEXTS})
    with pytest.warns(RuntimeWarning, match="a bf16 version on cpu runs in fp32 here"):
        answer = bf16.run(frame)
    assert bf16._handle().shared_model().model.model.dtype == torch.float32
    pd.testing.assert_frame_equal(answer, fp32.run(frame))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "fp16"}, r"options\['precision'\] must be one of \('fp32', 'bf16'\)"),
        ({"precision": "bf16", "engine": "onnxruntime"}, r"runs on the torch engine"),
        ({"graph": "fused"}, r"need options\['engine'\] = 'onnxruntime'"),
        ({"graph": "fast", "engine": "onnxruntime"}, r"options\['graph'\] must be one of"),
        ({"quality_floor": {"mean_cosine": 0.9}}, r"gates a reduced precision"),
    ],
)
def test_precision_and_graph_options_are_checked_before_anything_is_saved(
    registry, model_dirs, options, message
) -> None:
    pipe = transformers.pipeline("feature-extraction", model=str(model_dirs["feature-extraction"]))
    with pytest.raises(ValueError, match=message):
        registry.log_model(pipe, model_name="emb", version_name="v1", options={"pooling": "mean", **options})
    assert registry.models() == []


def test_bf16_is_refused_for_a_generative_task(registry, model_dirs) -> None:
    pipe = transformers.pipeline("text-generation", model=str(model_dirs["text-generation"]))
    with pytest.raises(ValueError, match=r"'text-generation' is a generative task"):
        registry.log_model(pipe, model_name="gen", version_name="v1", options={"precision": "bf16"})


def test_only_versions_whose_export_recorded_a_matching_tokenizer_load_without_torch(model_dirs) -> None:
    folder = model_dirs["feature-extraction"]
    assert not onnx_encoder.runs_light(folder, "feature-extraction", {})  # no onnx/runtime.json there
    assert onnx_encoder.light_settings("text-classification", {"return_all_scores": True}) is None
    assert onnx_encoder.light_settings("text-classification", {"truncation": True, "top_k": 2}) == (
        {"truncation": True},
        {"top_k": 2},
    )
