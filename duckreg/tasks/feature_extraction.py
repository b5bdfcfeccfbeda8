"""feature-extraction pooled to one unit vector per row, for similarity search in SQL.

Raw feature extraction returns a ragged [tokens][hidden] array per row, which SQL cannot rank by.
With ``options={"pooling": "mean"}`` duckreg mean-pools over the attention mask and (by default)
L2-normalises, the sentence-transformers recipe, typed as ``FLOAT[hidden]``. A text longer than the model
reads is embedded by its start, as sentence-transformers does; ``options={"truncation": False}`` refuses it
instead, for a caller who would rather split a long document than embed only its beginning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature
from duckreg.tasks.base import InferredFunction, RunContext, Task, no_grad, tensor_kind, to_numpy
from duckreg.tasks.limits import check_lengths

POOLINGS = ("mean", "cls")


class FeatureExtraction(Task):
    names = ("feature-extraction",)
    engines = ("torch", "onnxruntime")
    option_keys = ("pooling", "normalize", "truncation")
    no_signature_hint = " Log it with options={'pooling': 'mean'} to get one vector per row."

    def infer(
        self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]
    ) -> InferredFunction | None:
        pooling = options.get("pooling")
        if pooling is None:
            return None
        if pooling not in POOLINGS:
            raise ValueError(f"options['pooling'] must be one of {POOLINGS}, got {pooling!r}")
        if not isinstance(options.get("truncation", True), bool):
            raise ValueError(f"options['truncation'] must be true or false, got {options['truncation']!r}")
        width = pipeline.model.config.hidden_size
        signature = ModelSignature(
            inputs=[FeatureSpec(name="inputs", dtype=DataType.STRING)],
            outputs=[FeatureSpec(name="embedding", dtype=DataType.FLOAT, shape=(width,))],
        )
        return InferredFunction(signature)

    def token_counter(self, model: Any) -> Any:
        """Tokens read per text, truncation included, from a copy of the model's fast tokenizer: counting then
        never reconfigures the tokenizer a forward pass is using on another thread."""
        tokenizer = getattr(model, "tokenizer", None)
        backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "backend", None)
        if backend is None or not hasattr(backend, "to_str"):
            return None
        from tokenizers import Tokenizer

        counting = Tokenizer.from_str(backend.to_str())
        counting.no_padding()
        counting.enable_truncation(_max_length(tokenizer))

        def count(texts: Sequence[str]) -> int:
            return sum(len(encoding.ids) for encoding in counting.encode_batch(list(texts), add_special_tokens=True))

        return count

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        pipe = ctx.model
        pooling = ctx.options.get("pooling", "mean")
        normalize = ctx.options.get("normalize", True)
        max_length = _max_length(pipe.tokenizer)
        texts = [row["inputs"] for row in rows]
        if not ctx.options.get("truncation", True):
            check_lengths("inputs", texts, pipe.tokenizer, what="split it, or log the model without "
                          "options={'truncation': False} to embed its start")  # fmt: skip
        tensors = tensor_kind(pipe)
        out: list[dict[str, Any]] = []
        with no_grad():
            for start in range(0, len(texts), ctx.batch_size):
                batch = pipe.tokenizer(
                    texts[start : start + ctx.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors=tensors,
                )
                if tensors == "pt":
                    batch = batch.to(pipe.model.device)
                hidden = pipe.model(**batch).last_hidden_state
                if tensors == "pt" and hidden.device.type != "cpu":
                    pooled = to_numpy(_pool_torch(hidden, batch["attention_mask"], pooling, normalize))
                else:
                    mask = np.asarray(batch["attention_mask"])
                    pooled = _pool_numpy(to_numpy(hidden), mask, pooling, normalize)
                out.extend({"embedding": vector} for vector in pooled)
        return out


def _max_length(tokenizer: Any) -> int:
    """The most tokens of a text the model reads (the rest is cut off, as sentence-transformers does)."""
    return min(getattr(tokenizer, "model_max_length", 512) or 512, 512)


def _pool_torch(hidden: Any, mask: Any, pooling: str, normalize: bool) -> Any:
    """Pool on the model's device (a GPU's hidden states stay there)."""
    import torch

    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        weights = mask.unsqueeze(1).to(hidden.dtype)  # [batch, 1, tokens]
        pooled = torch.bmm(weights, hidden).squeeze(1) / weights.sum(-1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled


def _pool_numpy(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """Pool on the CPU in one thread: torch's or a BLAS thread pool waking between two forward passes
    would compete for the cores with the engine's own threads (ONNX Runtime's cost 8% here)."""
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        weights = mask.astype(hidden.dtype)
        pooled = np.einsum("bt,bth->bh", weights, hidden) / np.maximum(weights.sum(1, keepdims=True), 1e-9)
    if normalize:
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled


TASK = FeatureExtraction()
