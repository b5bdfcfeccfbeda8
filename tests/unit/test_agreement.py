"""The figures the engine gate reads: cosines, tie-aware label agreement, neighbour overlap, floors."""

from __future__ import annotations

import numpy as np
import pytest

from duckreg.inference_engines.agreement import Agreement, neighbour_overlap, shortfalls
from duckreg.inference_engines.onnx_runtime import FP32_FLOORS, INT8_FLOORS, floors_for


def test_identical_outputs_agree_fully() -> None:
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(12, 7, 16)).astype(np.float32)
    mask = np.ones((12, 7), np.int64)
    mask[3, 4:] = 0
    agreement = Agreement()
    agreement.add("last_hidden_state", hidden, hidden.copy(), mask)
    assert agreement.summary() == {"min_cosine": 1.0, "mean_cosine": 1.0, "neighbour_overlap": 1.0}


def test_padded_positions_do_not_count() -> None:
    reference = np.ones((2, 4, 3))
    candidate = reference.copy()
    candidate[0, 3] = -100.0  # garbage where the row is padding
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    agreement = Agreement()
    agreement.add("logits", reference, candidate, mask)
    assert agreement.summary()["min_cosine"] == 1.0


def test_a_flipped_label_counts_but_a_near_tie_does_not() -> None:
    mask = np.ones((3, 1))
    reference = np.array([[2.0, 1.0], [0.5, 0.5 + 1e-7], [3.0, -3.0]])
    candidate = np.array([[1.0, 2.0], [0.5 + 1e-7, 0.5], [3.0, -3.0]])
    agreement = Agreement()
    agreement.add("logits", reference, candidate, mask)
    assert agreement.summary()["label_agreement"] == pytest.approx(2 / 3, abs=1e-6)


def test_question_answering_positions_compare_over_real_tokens_only() -> None:
    mask = np.array([[1, 1, 1, 0]])
    reference = np.array([[0.1, 0.9, 0.2, 5.0]])  # the padded position's score is ignored
    candidate = np.array([[0.1, 0.8, 0.3, -5.0]])
    agreement = Agreement()
    agreement.add("start_logits", reference, candidate, mask)
    assert agreement.summary()["label_agreement"] == 1.0


def test_neighbour_overlap_drops_when_neighbours_change() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(30, 8))
    assert neighbour_overlap(vectors, vectors) == 1.0
    assert neighbour_overlap(vectors, rng.normal(size=(30, 8))) < 0.6


def test_floors_fixed_for_fp32_and_lowerable_for_int8() -> None:
    assert floors_for({}) == FP32_FLOORS
    assert floors_for({"quantize": "int8"}) == INT8_FLOORS
    assert floors_for({"quantize": "int8", "quality_floor": {"mean_cosine": 0.95}})["mean_cosine"] == 0.95
    assert shortfalls({"mean_cosine": 0.98, "label_agreement": 1.0}, INT8_FLOORS) == ["mean_cosine 0.980000 < 0.99"]


def test_mismatched_shapes_are_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        Agreement().add("logits", np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 5)))
