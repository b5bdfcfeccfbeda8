"""Signature classes: values, equality, repr, JSON round trip and parameter validation."""

from __future__ import annotations

import pytest

from duckreg.model_signature import DataType, FeatureGroupSpec, FeatureSpec, ModelSignature, ParamSpec


def test_datatype_members() -> None:
    names = [d.name for d in DataType]
    assert names == [
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "FLOAT",
        "DOUBLE",
        "BOOL",
        "STRING",
        "BYTES",
        "TIMESTAMP_NTZ",
    ]
    assert repr(DataType.STRING) == "DataType.STRING"


def test_feature_spec_equality_and_repr() -> None:
    spec = FeatureSpec(name="labels", dtype=DataType.STRING, shape=(-1,))
    assert spec == FeatureSpec("labels", DataType.STRING, (-1,))
    assert spec != FeatureSpec("labels", DataType.STRING)
    assert repr(spec) == "FeatureSpec(dtype=DataType.STRING, name='labels', shape=(-1,))"
    with pytest.raises(TypeError, match="Shape should be a tuple"):
        FeatureSpec("x", DataType.INT64, shape=[3])


def test_signature_repr_matches_the_seed_layout() -> None:
    signature = ModelSignature(
        inputs=[FeatureSpec(dtype=DataType.STRING, name="inputs")],
        outputs=[FeatureSpec(dtype=DataType.STRING, name="outputs")],
    )
    assert repr(signature) == (
        "ModelSignature(\n"
        "    inputs=[\n"
        "        FeatureSpec(dtype=DataType.STRING, name='inputs')\n"
        "    ],\n"
        "    outputs=[\n"
        "        FeatureSpec(dtype=DataType.STRING, name='outputs')\n"
        "    ]\n"
        ")"
    )


def test_json_round_trip_with_groups_and_params() -> None:
    signature = ModelSignature(
        inputs=[
            FeatureGroupSpec(
                "messages", [FeatureSpec("role", DataType.STRING), FeatureSpec("content", DataType.STRING)], shape=(-1,)
            )
        ],
        outputs=[FeatureSpec("embedding", DataType.FLOAT, shape=(384,))],
        params=[ParamSpec("top_k", DataType.INT64, 3), ParamSpec("stop", DataType.STRING, ["\n"], shape=(-1,))],
    )
    again = ModelSignature.from_json(signature.to_json())
    assert again == signature
    assert again.inputs[0].specs[1].name == "content"
    assert again.params[0].default_value == 3


def test_param_defaults_are_validated() -> None:
    with pytest.raises(ValueError, match="not compatible with dtype"):
        ParamSpec("x", DataType.INT64, 1.5)
    assert ParamSpec("t", DataType.DOUBLE, 1).default_value == 1.0


def test_resolve_params_fills_defaults_and_names_bad_ones() -> None:
    signature = ModelSignature(
        inputs=[FeatureSpec("text", DataType.STRING)],
        outputs=[FeatureSpec("label", DataType.STRING)],
        params=[ParamSpec("top_k", DataType.INT64, 1), ParamSpec("temperature", DataType.DOUBLE, None)],
    )
    assert signature.resolve_params({"TOP_K": 4}) == {"top_k": 4, "temperature": None}
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\): \['topk'\]"):
        signature.resolve_params({"topk": 2})
    with pytest.raises(ValueError, match="different cases"):
        signature.resolve_params({"top_k": 2, "TOP_K": 3})
    with pytest.raises(ValueError, match=r"'top_k'.*not compatible"):
        signature.resolve_params({"top_k": "many"})
    with pytest.raises(ValueError, match=r"'top_k'.*not compatible"):
        signature.resolve_params({"top_k": True})
    plain = ModelSignature(inputs=signature.inputs, outputs=signature.outputs)
    with pytest.raises(ValueError, match="does not accept any parameters"):
        plain.resolve_params({"top_k": 1})


def test_names_must_be_distinct() -> None:
    with pytest.raises(ValueError, match="same name as input"):
        ModelSignature(
            inputs=[FeatureSpec("text", DataType.STRING)],
            outputs=[FeatureSpec("y", DataType.STRING)],
            params=[ParamSpec("TEXT", DataType.STRING, None)],
        )
    with pytest.raises(ValueError, match="No children"):
        FeatureGroupSpec("g", [])
