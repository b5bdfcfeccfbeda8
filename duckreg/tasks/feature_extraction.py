"""feature-extraction pooled to one unit vector per row, for similarity search in SQL.

Raw feature extraction returns a ragged [tokens][hidden] array per row, which SQL cannot rank by.
With ``options={"pooling": "mean"}`` duckreg mean-pools over the attention mask and (by default)
L2-normalises, the sentence-transformers recipe, typed as ``FLOAT[hidden]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature
from duckreg.tasks.base import InferredFunction, RunContext, Task

POOLINGS = ("mean", "cls")


class FeatureExtraction(Task):
    names = ("feature-extraction",)
    engines = ("torch", "onnxruntime")
    option_keys = ("pooling", "normalize")
    no_signature_hint = " Log it with options={'pooling': 'mean'} to get one vector per row."

    def infer(self, task, pipeline, settings, options) -> InferredFunction | None:
        pooling = options.get("pooling")
        if pooling is None:
            return None
        if pooling not in POOLINGS:
            raise ValueError(f"options['pooling'] must be one of {POOLINGS}, got {pooling!r}")
        width = pipeline.model.config.hidden_size
        signature = ModelSignature(
            inputs=[FeatureSpec(name="inputs", dtype=DataType.STRING)],
            outputs=[FeatureSpec(name="embedding", dtype=DataType.FLOAT, shape=(width,))],
        )
        return InferredFunction(signature)

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        import torch

        pipe = ctx.model
        pooling = ctx.options.get("pooling", "mean")
        normalize = ctx.options.get("normalize", True)
        max_length = min(getattr(pipe.tokenizer, "model_max_length", 512) or 512, 512)
        texts = [row["inputs"] for row in rows]
        out: list[dict[str, Any]] = []
        with torch.inference_mode():
            for start in range(0, len(texts), ctx.batch_size):
                batch = pipe.tokenizer(
                    texts[start : start + ctx.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                ).to(pipe.model.device)
                hidden = pipe.model(**batch).last_hidden_state
                if pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(1).to(hidden.dtype)  # [batch, 1, tokens]
                    pooled = torch.bmm(mask, hidden).squeeze(1) / mask.sum(-1).clamp(min=1e-9)
                if normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out.extend({"embedding": vector} for vector in pooled.float().cpu().numpy())
        return out


TASK = FeatureExtraction()
