"""The model's own torch forward pass, in the logged fp32 weights or, with ``precision="bf16"``, in bfloat16.

bf16 keeps fp32's range with an 8-bit mantissa: on a CPU with bf16 instructions (AVX-512 BF16, AMX,
Arm's BF16) oneDNN runs an encoder about twice as fast as fp32, and its vectors stay close to fp32's.
Like int8 it is a trade-off, so it is gated the same way at log time: the bf16 weights run beside the
fp32 ones on the sample texts, and a version whose outputs drift below the floors is not logged. Where
the CPU has no bf16 instructions, emulating them would be slower than fp32, so such a version loads
in fp32 there, with a warning that says so.
"""

from __future__ import annotations

import copy
import functools
import platform
import subprocess
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from duckreg.inference_engines.agreement import floors_over, shortfalls
from duckreg.inference_engines.base import Engine, EngineReport
from duckreg.inference_engines.reference import agreement_with, length_batches, speeds_by_length, torch_outputs

PRECISIONS = ("fp32", "bf16")
BF16_FLOORS = {"mean_cosine": 0.999, "neighbour_overlap": 0.95, "label_agreement": 0.95}
"""Defaults for bf16; ``options['quality_floor']`` lowers (or raises) any of them."""
_X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX-512 BF16 or AMX, Arm's BF16 extension)."""
    system = platform.system()
    if system == "Linux":
        try:
            with open("/proc/cpuinfo") as info:
                words = set(info.read().split())
        except OSError:
            return False
        return any(flag in words for flag in _X86_BF16_FLAGS) or "bf16" in words  # Arm lists "bf16"
    if system == "Darwin":
        probe = subprocess.run(
            ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, check=False
        )
        return probe.stdout.strip() == "1"
    return False


def bf16_runs_on(device: str) -> bool:
    """Whether bf16 weights run natively on ``device`` (a CUDA GPU that supports them, or such a CPU)."""
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return cpu_has_bf16()


def floors_for(options: dict[str, Any]) -> dict[str, float]:
    """The floors a bf16 version must reach: the defaults, or the user's ``quality_floor`` over them."""
    given = options.get("quality_floor")
    return dict(BF16_FLOORS) if given is None else floors_over(BF16_FLOORS, given)


class TorchEngine(Engine):
    """The model's own torch forward pass: nothing to prepare in fp32; bf16 is checked and recorded."""

    name = "torch"
    option_keys = ("precision",)

    def check_options(self, options: dict[str, Any]) -> None:
        if options.get("engine_args") is not None:
            raise ValueError("options['engine_args'] holds vllm.LLM arguments; it needs options['engine'] = 'vllm'")
        if options.get("quantize") is not None or options.get("graph") is not None:
            raise ValueError(
                "options['quantize'] and options['graph'] need options['engine'] = 'onnxruntime'; the torch engine "
                "runs the logged weights (in bf16 with options['precision'] = 'bf16')"
            )
        precision = options.get("precision", "fp32")
        if precision not in PRECISIONS:
            raise ValueError(f"options['precision'] must be one of {PRECISIONS}, got {precision!r}")
        if precision == "fp32" and options.get("quality_floor") is not None:
            raise ValueError("options['quality_floor'] gates a reduced precision; fp32 runs the logged weights")
        if precision == "bf16":
            floors_for(options)

    def prepare(self, model: Any, folder: Path, options: dict[str, Any], sample_texts: list[str]) -> EngineReport:
        if options.get("precision", "fp32") == "fp32":
            return EngineReport()
        _check_encoder(model)
        floors = floors_for(options)
        module, tokenizer = model.model, model.tokenizer
        reference = torch_outputs(module, tokenizer, sample_texts)
        halved = copy.deepcopy(module).to(_bfloat16())
        figures: dict[str, Any] = agreement_with(reference, _forward(halved))
        failed = shortfalls(figures, floors)
        if failed:
            raise ValueError(
                f"bf16 weights disagree with fp32 on {len(sample_texts)} sample texts: {'; '.join(failed)}. Lower the "
                "floor with options['quality_floor'] if the trade-off is acceptable, or log without precision."
            )
        batches = length_batches(model, sample_texts)
        figures["speed_vs_fp32"] = speeds_by_length(_forward(module), _forward(halved), batches)
        figures["cpu_bf16"] = cpu_has_bf16()
        if not figures["cpu_bf16"]:
            warnings.warn(_fallback_message("this version"), RuntimeWarning, stacklevel=2)
        return EngineReport(metrics={"engine_agreement": {"engine": self.name, "precision": "bf16", **figures}})

    def attach(self, model: Any, folder: Path, options: dict[str, Any], device: str) -> None:
        """bf16 weights where the device computes them natively; fp32 (with a warning) elsewhere."""
        if options.get("precision", "fp32") != "bf16":
            return
        if not bf16_runs_on(device):
            warnings.warn(_fallback_message(f"a bf16 version on {device}"), RuntimeWarning, stacklevel=2)
            return
        model.model.to(_bfloat16())

    def run_conditions(self, options: dict[str, Any]) -> dict[str, str]:
        if options.get("precision", "fp32") != "bf16":
            return {}
        device = options.get("device") or self.default_device()
        return {"precision": "bf16" if bf16_runs_on(device) else "fp32"}


def _fallback_message(what: str) -> str:
    return (
        f"This CPU has no bf16 instructions (AVX-512 BF16, AMX or Arm BF16), so {what} runs in fp32 here; "
        "it runs in bf16 where the CPU has them."
    )


def _bfloat16() -> Any:
    import torch

    return torch.bfloat16


def _check_encoder(model: Any) -> None:
    from duckreg.tasks import get_task

    task = getattr(model, "task", "") or ""
    impl = get_task(task)
    if impl is None or "onnxruntime" not in impl.engines:
        raise ValueError(
            f"options['precision'] = 'bf16' is gated on encoder outputs (embeddings, labels, spans); {task!r} is a "
            "generative task: log it in its own dtype, or serve it on the vllm engine"
        )


def _forward(module: Any) -> Any:
    """numpy batch in, float32 numpy outputs out, through a torch module."""
    import torch

    def forward(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            outputs = module(**{name: torch.from_numpy(value) for name, value in batch.items()})
        return {name: value.float().numpy() for name, value in outputs.items() if isinstance(value, torch.Tensor)}

    return forward
