"""automatic-speech-recognition: audio file bytes (WAV, FLAC, OGG) to ``{text, chunks}``.

Audio is decoded with soundfile (libsndfile ships in its wheel, so no system ffmpeg is needed),
mixed down to mono and resampled to the model's rate before the pipeline sees it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from duckreg.model_signature import DataType, FeatureGroupSpec, FeatureSpec, ModelSignature, ParamSpec
from duckreg.tasks._generation import GENERATION_PARAMS, generation_params
from duckreg.tasks.base import InferredFunction, InputError, RunContext, Task, as_result_list

OUTPUTS = FeatureGroupSpec(
    "outputs",
    [
        FeatureSpec("text", DataType.STRING),
        FeatureGroupSpec(
            "chunks",
            [FeatureSpec("timestamp", DataType.DOUBLE, shape=(2,)), FeatureSpec("text", DataType.STRING)],
            shape=(-1,),
        ),
    ],
)


def decode_audio(data: bytes, column: str, sampling_rate: int) -> np.ndarray:
    """Mono float32 samples at ``sampling_rate``."""
    try:
        import soundfile
    except ImportError:
        raise RuntimeError("Reading audio needs soundfile: pip install 'duckreg[files]'") from None
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - any decoder error means "not audio"
        raise InputError(column, f"not audio soundfile can read ({type(exc).__name__}: {exc})") from None
    mono = samples.mean(axis=1)
    if rate != sampling_rate and len(mono):
        # Linear resampling: enough for speech models, and no extra dependency.
        duration = len(mono) / rate
        target = np.linspace(0.0, duration, round(duration * sampling_rate), endpoint=False)
        mono = np.interp(target, np.arange(len(mono)) / rate, mono).astype(np.float32)
    return mono


class SpeechRecognition(Task):
    names = ("automatic-speech-recognition",)

    def infer(self, task, pipeline, settings, options) -> InferredFunction:
        signature = ModelSignature(
            inputs=[FeatureSpec("audio", DataType.BYTES)],
            outputs=[OUTPUTS],
            params=[ParamSpec("return_timestamps", DataType.STRING, None), *GENERATION_PARAMS],
        )
        return InferredFunction(signature)

    def sort_key(self, row: dict[str, Any]) -> int:
        return len(row["audio"])

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        pipe = ctx.model
        rate = int(getattr(pipe.feature_extractor, "sampling_rate", 16000))
        inputs = [{"raw": decode_audio(row["audio"], "audio", rate), "sampling_rate": rate} for row in rows]
        params = generation_params(ctx.params)
        call: dict[str, Any] = {}
        if "return_timestamps" in params:
            stamps = params.pop("return_timestamps")
            call["return_timestamps"] = True if stamps.lower() == "true" else stamps
        if params:
            call["generate_kwargs"] = params
        results = as_result_list(pipe(inputs, batch_size=ctx.batch_size, **call))
        out = []
        for result in results:
            chunks = [
                {"timestamp": [float(t) if t is not None else None for t in c["timestamp"]], "text": c["text"]}
                for c in result.get("chunks") or []
            ]
            out.append({"outputs": {"text": result["text"], "chunks": chunks}})
        return out


TASK = SpeechRecognition()
