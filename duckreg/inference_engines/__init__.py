"""Inference engines: what computes a logged version's answers (torch, an ONNX Runtime export, vLLM).

A version picks its engine at log time with ``options={"engine": ...}``. The engine prepares its
files beside the model's (an export, checked against torch on sample inputs) and, when the version
loads, puts its forward pass in place of the torch module's. Tasks and pipelines run unchanged on
top, so every front door gets the engine without knowing about it. Adding an engine is one module
here and one entry in ``ENGINES``.
"""

from __future__ import annotations

from typing import Any

from duckreg.inference_engines.base import Engine, EngineReport
from duckreg.inference_engines.onnx_runtime import OnnxRuntimeEngine
from duckreg.inference_engines.torch_engine import TorchEngine
from duckreg.inference_engines.vllm import VllmEngine

ENGINE_OPTION_KEYS = frozenset({"engine", "quantize", "quality_floor", "engine_args", "graph", "precision"})
"""``log_model`` options that choose and gate an engine."""


ENGINES: dict[str, Engine] = {engine.name: engine for engine in (TorchEngine(), OnnxRuntimeEngine(), VllmEngine())}


def engine_for(options: dict[str, Any]) -> Engine:
    """The engine ``options`` name (torch when none), or a ``ValueError`` listing the known ones."""
    name = options.get("engine") or "torch"
    engine = ENGINES.get(name) if isinstance(name, str) else None
    if engine is None:
        raise ValueError(f"options['engine'] must be one of {sorted(ENGINES)}, got {name!r}")
    return engine


__all__ = ["ENGINES", "ENGINE_OPTION_KEYS", "Engine", "EngineReport", "TorchEngine", "engine_for"]
