"""An ONNX-engine version loaded without torch or transformers: tokenizer, ONNX Runtime session, numpy.

Importing torch and transformers and building the torch model costs seconds and the model's weights
in memory, for a version whose forward pass ONNX Runtime computes anyway. Embeddings and text
classification need nothing else from transformers: the saved ``tokenizer.json`` runs on the
``tokenizers`` library (the Rust tokenizer transformers itself wraps), ``config.json`` gives labels and
positions, and the tasks pool or score numpy arrays. At log time the export checks that this
tokenizer gives the transformers tokenizer's ids on the sample texts and records the outcome in
``onnx/runtime.json``; a version whose tokenizer differs, or that was logged before, loads through
the transformers pipeline as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

RUNTIME_FILE = "onnx/runtime.json"
TOKENIZER_FILE = "tokenizer.json"
LIGHT_TASKS = frozenset({"feature-extraction", "text-classification", "sentiment-analysis"})
"""Tasks whose duckreg implementation reads only the tokenizer, the config and the forward pass's arrays."""
CALL_SETTINGS = frozenset({"function_to_apply", "top_k", "return_all_scores", "batch_size"})
TOKENIZER_SETTINGS = frozenset({"truncation", "max_length", "padding"})
_NO_LIMIT = 1_000_000
_CONFIG_DEFAULTS = {"pad_token_id": None, "problem_type": None, "model_type": "", "id2label": {}}


class FastTokenizer:
    """A saved fast tokenizer on the ``tokenizers`` library, called the way duckreg's tasks call transformers'.

    It reads ``tokenizer.json`` (vocabulary, normalizer, special-token template) and the limits and
    padding side from ``tokenizer_config.json``; padding and truncation are set per call, as
    transformers' fast tokenizers set them.
    """

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        config = _read_json(folder / "tokenizer_config.json")
        limit = config.get("model_max_length")
        self.model_max_length: int = limit if isinstance(limit, int) and limit < _NO_LIMIT else _NO_LIMIT
        self.padding_side = config.get("padding_side") or "right"
        self.truncation_side = config.get("truncation_side") or "right"
        self.pad_token = _token_text(config.get("pad_token"))
        self.pad_token_id = self.backend.token_to_id(self.pad_token) if self.pad_token else None
        self.pad_token_type_id = int(config.get("pad_token_type_id") or 0)
        names = config.get("model_input_names") or ("input_ids", "token_type_ids", "attention_mask")
        self.model_input_names = list(names)

    def __call__(
        self,
        text: str | list[str],
        text_pair: str | list[str | None] | None = None,
        *,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> dict[str, Any]:
        """Ids, type ids and attention mask of one text (lists) or a batch (numpy with ``return_tensors="np"``)."""
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        pairs = [text_pair] if single else (list(text_pair) if text_pair is not None else [None] * len(texts))
        if return_tensors not in (None, "np"):
            raise ValueError(f"this tokenizer returns numpy arrays (return_tensors='np'), not {return_tensors!r}")
        self._configure(padding, truncation, max_length)
        items = [t if p is None else (t, p) for t, p in zip(texts, pairs, strict=True)]
        encodings = self.backend.encode_batch(items, add_special_tokens=True)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        if single:
            return {name: rows[0] for name, rows in columns.items()}
        if return_tensors == "np":
            return {name: np.asarray(rows, dtype=np.int64) for name, rows in columns.items()}
        return columns

    def _configure(self, padding: bool | str, truncation: bool | str | None, max_length: int | None) -> None:
        if truncation and truncation != "do_not_truncate":
            strategy = truncation if isinstance(truncation, str) else "longest_first"
            limit = max_length if max_length is not None else self.model_max_length
            self.backend.enable_truncation(limit, stride=0, strategy=strategy, direction=self.truncation_side)
        else:
            self.backend.no_truncation()
        if padding and padding != "do_not_pad":
            if self.pad_token_id is None:
                raise ValueError("this tokenizer has no padding token, so it cannot pad a batch")
            length = max_length if padding == "max_length" else None
            self.backend.enable_padding(
                direction=self.padding_side,
                pad_id=self.pad_token_id,
                pad_type_id=self.pad_token_type_id,
                pad_token=self.pad_token,
                length=length,
            )
        else:
            self.backend.no_padding()


@dataclass
class OnnxEncoder:
    """A loaded ONNX-engine version of an embedding or classification task: what the task's ``predict``
    reads from a pipeline (``model``, ``tokenizer``, the logged call settings), with numpy tensors."""

    task: str
    model: Any
    tokenizer: FastTokenizer
    _preprocess_params: dict[str, Any] = field(default_factory=dict)
    _postprocess_params: dict[str, Any] = field(default_factory=dict)
    tensors: str = "np"


def read_config(folder: Path) -> SimpleNamespace:
    """``config.json`` as attributes (labels keyed by int, as transformers gives them)."""
    data = {**_CONFIG_DEFAULTS, **_read_json(folder / "config.json")}
    data["id2label"] = {int(k): v for k, v in (data.get("id2label") or {}).items()}
    data.setdefault("num_labels", len(data["id2label"]) or 2)
    return SimpleNamespace(**data)


def light_settings(task: str, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The logged settings split into tokenizer and scoring ones, or None when one needs the pipeline."""
    if task == "feature-extraction":
        return {}, {}  # duckreg's pooled embeddings read no pipeline setting
    unknown = set(settings) - CALL_SETTINGS - TOKENIZER_SETTINGS
    if unknown or "return_all_scores" in settings:
        return None
    preprocess = {k: v for k, v in settings.items() if k in TOKENIZER_SETTINGS}
    postprocess = {k: v for k, v in settings.items() if k in ("function_to_apply", "top_k")}
    if any(isinstance(v, dict) for v in postprocess.values()):
        return None  # an enum stored by class name: only transformers can restore it
    return preprocess, postprocess


def runs_light(folder: Path, task: str, settings: dict[str, Any]) -> bool:
    """Whether this version loads without torch: its task reads only arrays, and its export recorded a
    tokenizer that gives transformers' ids."""
    if task not in LIGHT_TASKS or light_settings(task, settings) is None:
        return False
    runtime = _read_json(folder / RUNTIME_FILE)
    return runtime.get("tokenizer") == "tokenizers" and (folder / TOKENIZER_FILE).is_file()


def tokenizer_matches(folder: Path, reference: Any, texts: list[str]) -> bool:
    """Whether the ``tokenizers`` tokenizer saved in ``folder`` gives ``reference``'s ids, type ids and masks
    on ``texts``: alone and as pairs, padded, and truncated at a short length."""
    if not (folder / TOKENIZER_FILE).is_file():
        return False
    try:
        ours = FastTokenizer(folder)
    except Exception:  # noqa: BLE001 - a tokenizer.json this tokenizers release cannot read: transformers loads it
        return False
    half = len(texts) // 2
    cases: list[tuple[list[str], list[str] | None, dict[str, Any]]] = [
        (texts, None, {"padding": True, "truncation": True}),
        (texts[:half], texts[half : 2 * half], {"padding": True, "truncation": True}),
        (texts, None, {"padding": True, "truncation": True, "max_length": 16}),
        (texts, None, {}),
    ]
    for singles, pairs, kwargs in cases:
        theirs = reference(singles, pairs, **kwargs)
        mine = ours(singles, pairs, **kwargs)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            if name in theirs and [list(row) for row in theirs[name]] != [list(row) for row in mine[name]]:
                return False
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _token_text(token: Any) -> str | None:
    """A special token as ``tokenizer_config.json`` stores it: a string or an AddedToken's dict."""
    if isinstance(token, dict):
        return token.get("content")
    return token if isinstance(token, str) else None
