"""automatic-speech-recognition: audio file bytes (WAV, FLAC, OGG) to ``{text, chunks}``.

Audio is decoded with soundfile (libsndfile ships in its wheel, so no system ffmpeg is needed),
mixed down to mono and resampled to the model's rate before the pipeline sees it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from duckreg.model_signature import DataType, FeatureGroupSpec, FeatureSpec, ModelSignature, ParamSpec
from duckreg.tasks._generation import GENERATION_PARAMS, generation_params
from duckreg.tasks.base import InferredFunction, InputError, RunContext, Task, as_result_list, for_row

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


# An unchunked CTC model (wav2vec2, HuBERT) attends over every frame of a clip at once, needing
# heads x frames^2 x 4 bytes per layer; a clip whose attention would pass this is refused before decoding.
ATTENTION_BUDGET_BYTES = 2 * 2**30


def longest_unchunked_seconds(pipe: Any) -> float | None:
    """The longest clip ``pipe`` reads in one pass within ``ATTENTION_BUDGET_BYTES`` (None: no such limit,
    because the pipeline reads in ``chunk_length_s`` windows or the model is an encoder-decoder like Whisper)."""
    config = pipe.model.config
    params = getattr(pipe, "_preprocess_params", None) or {}
    ratio = getattr(config, "inputs_to_logits_ratio", None)
    heads = getattr(config, "num_attention_heads", None)
    if params.get("chunk_length_s") or config.is_encoder_decoder or not ratio or not heads:
        return None
    frames = math.sqrt(ATTENTION_BUDGET_BYTES / (4 * heads))
    return frames * ratio / int(getattr(pipe.feature_extractor, "sampling_rate", 16000))


def check_duration(data: bytes, column: str, longest: float | None) -> None:
    """Refuse a clip longer than ``longest`` seconds from its header alone (undecodable bytes are left to
    ``decode_audio``, which names them)."""
    if longest is None:
        return
    import soundfile

    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - decode_audio reports bytes that are not audio
        return
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if seconds > longest:
        raise InputError(
            column,
            f"{seconds:.0f} s of audio is longer than the {longest:.0f} s this model reads in one pass; log the "
            "pipeline with chunk_length_s=30 to read long audio in chunks",
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

    def infer(self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]) -> InferredFunction:
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
        longest = longest_unchunked_seconds(pipe)
        for position, row in enumerate(rows):
            with for_row(position):
                check_duration(row["audio"], "audio", longest)
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
