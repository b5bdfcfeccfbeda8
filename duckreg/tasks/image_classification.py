"""image-classification: image file bytes (PNG, JPEG, ...) to a list of ``{label, score}``.

Images are decoded with pillow (``pip install duckreg[files]``); feed stage files with
``column_handling={"images": {"input_format": InputFormat.FULL_STAGE_PATH, "convert_to": FileEncoding.RAW_BYTES}}``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import DataType, FeatureGroupSpec, FeatureSpec, ModelSignature
from duckreg.tasks.base import InferredFunction, InputError, RunContext, Task, as_nested_result_list, declared, for_row
from duckreg.values import drop_unset_params

LABELS = FeatureGroupSpec(
    "labels", [FeatureSpec("label", DataType.STRING), FeatureSpec("score", DataType.DOUBLE)], shape=(-1,)
)


def open_image(data: bytes, column: str, what: str = "not an image pillow can read") -> Any:
    """An RGB picture from encoded bytes; ``what`` opens the error for bytes that do not decode.

    A picture whose header claims more pixels than pillow's decompression-bomb limit is refused before any
    pixel is decoded.
    """
    try:
        from PIL import Image
    except ImportError:
        raise RuntimeError("Reading images needs pillow: pip install 'duckreg[files]'") from None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError as exc:  # the header alone was read
        raise InputError(column, f"an image too large to decode: {exc} Resize it.") from None
    except Exception as exc:  # noqa: BLE001 - any decoder error means "not an image"
        reason = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))  # the same bytes, the same error
        raise InputError(column, f"{what} ({type(exc).__name__}: {reason})") from None
    return image.convert("RGB")


class ImageClassification(Task):
    names = ("image-classification",)

    def infer(self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]) -> InferredFunction:
        signature = ModelSignature(
            inputs=[FeatureSpec("images", DataType.BYTES)],
            outputs=[LABELS],
            params=[
                declared("top_k", DataType.INT64, 5, settings),
                declared("function_to_apply", DataType.STRING, None, settings),
                declared("timeout", DataType.DOUBLE, None, settings),
            ],
        )
        return InferredFunction(signature)

    def sort_key(self, row: dict[str, Any]) -> int:
        return 0

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        images = []
        for position, row in enumerate(rows):
            with for_row(position):
                images.append(open_image(row["images"], "images"))
        results = as_nested_result_list(
            ctx.model(images, batch_size=ctx.batch_size, **drop_unset_params(ctx.params)), len(images)
        )
        return [{"labels": [{"label": r["label"], "score": float(r["score"])} for r in result]} for result in results]


TASK = ImageClassification()
