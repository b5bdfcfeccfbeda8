"""How closely an engine's outputs follow torch's on the same batches: the figures the log-time gate reads.

Every output is compared row by row (cosine over the row's unpadded positions). Outputs named
``*logits`` also count label agreement (the same argmax; a near-tie in the torch output counts as
agreeing), and ``last_hidden_state`` is mean-pooled to one unit vector per row, as an embedding
function would, to count how many of each row's ten nearest neighbours stay the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TIE_TOLERANCE = 1e-4
"""Two logits closer than this (relative to the row's largest) are a tie: either label agrees."""
NEIGHBOURS = 10


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / norm) if norm > 0 else float(np.array_equal(a, b))


@dataclass
class Agreement:
    """Running comparison of reference (torch) and candidate (engine) outputs over several batches."""

    cosines: list[float] = field(default_factory=list)
    labels_compared: int = 0
    labels_agreeing: int = 0
    reference_vectors: list[np.ndarray] = field(default_factory=list)
    candidate_vectors: list[np.ndarray] = field(default_factory=list)

    def add(self, name: str, reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray) -> None:
        """One output of one batch: ``[batch, ...]`` arrays and the batch's attention mask."""
        if reference.shape != candidate.shape:
            raise ValueError(f"output {name!r} has shape {candidate.shape}, torch gives {reference.shape}")
        reference = reference.astype(np.float64)
        candidate = candidate.astype(np.float64)
        has_positions = reference.ndim >= 2 and reference.shape[1] == mask.shape[1]
        for row in range(len(reference)):
            keep = mask[row].astype(bool) if has_positions else slice(None)
            self.cosines.append(_cosine(reference[row][keep].ravel(), candidate[row][keep].ravel()))
        if name.endswith("logits"):
            self._count_labels(reference, candidate, mask if has_positions else None)
        if name == "last_hidden_state":
            self.reference_vectors.extend(_mean_pool(reference, mask))
            self.candidate_vectors.extend(_mean_pool(candidate, mask))

    def _count_labels(self, reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray | None) -> None:
        if reference.ndim == 2 and mask is not None:
            # A score per position (question answering's start and end): the label is the position.
            reference = np.where(mask.astype(bool), reference, -np.inf)[:, None, :]
            candidate = np.where(mask.astype(bool), candidate, -np.inf)[:, None, :]
            mask = None
        ref = reference.reshape(-1, reference.shape[-1])
        cand = candidate.reshape(-1, candidate.shape[-1])
        if mask is not None:
            keep = mask.astype(bool).reshape(-1)
            ref, cand = ref[keep], cand[keep]
        ref_best = ref.argmax(-1)
        cand_best = cand.argmax(-1)
        top = ref[np.arange(len(ref)), ref_best]
        picked = ref[np.arange(len(ref)), cand_best]
        scale = np.maximum(np.abs(top), 1.0)
        agreeing = (ref_best == cand_best) | (top - picked <= TIE_TOLERANCE * scale)
        self.labels_compared += len(ref)
        self.labels_agreeing += int(agreeing.sum())

    def summary(self) -> dict[str, float]:
        """``min_cosine`` and ``mean_cosine`` always; ``label_agreement`` and ``neighbour_overlap`` when measured."""
        figures = {"min_cosine": min(self.cosines), "mean_cosine": float(np.mean(self.cosines))}
        if self.labels_compared:
            figures["label_agreement"] = self.labels_agreeing / self.labels_compared
        if len(self.reference_vectors) > 1:
            figures["neighbour_overlap"] = neighbour_overlap(
                np.stack(self.reference_vectors), np.stack(self.candidate_vectors)
            )
        return {name: round(value, 6) for name, value in figures.items()}


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    weights = mask.astype(np.float64)[..., None]
    pooled = (hidden * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return list(pooled / np.clip(norms, 1e-12, None))


def neighbour_overlap(reference: np.ndarray, candidate: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean share of each row's ``k`` nearest rows (by cosine) that both sets of vectors agree on."""
    k = min(k, len(reference) - 1)
    return float(1 - np.mean(neighbour_changes(reference, candidate, k)) / k)


def neighbour_changes(reference: np.ndarray, candidate: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray:
    """For each row, how many of its ``k`` nearest rows (by cosine, unit vectors) ``candidate`` does not keep."""
    k = min(k, len(reference) - 1)

    def nearest(vectors: np.ndarray) -> np.ndarray:
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1, kind="stable")[:, :k]

    ours, theirs = nearest(reference), nearest(candidate)
    return np.array([k - len(set(a) & set(b)) for a, b in zip(ours, theirs, strict=True)], dtype=np.int64)


def shortfalls(figures: dict[str, float], floors: dict[str, float]) -> list[str]:
    """Each measured figure below its floor, as ``name value < floor``."""
    return [
        f"{name} {figures[name]:.6f} < {floor}"
        for name, floor in floors.items()
        if name in figures and figures[name] < floor
    ]


def floors_over(defaults: dict[str, float], given: object) -> dict[str, float]:
    """``defaults`` with the user's ``options['quality_floor']`` over them, each a number from 0 to 1 naming
    one of the default floors (a ``ValueError`` otherwise)."""
    if not isinstance(given, dict) or not set(given) <= set(defaults):
        raise ValueError(f"options['quality_floor'] must be a dict with keys among {sorted(defaults)}, got {given!r}")
    for name, value in given.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ValueError(f"options['quality_floor'][{name!r}] must be a number from 0 to 1, got {value!r}")
    return {**defaults, **{name: float(value) for name, value in given.items()}}
