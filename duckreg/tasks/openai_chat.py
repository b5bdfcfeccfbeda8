"""OpenAI-compatible chat on a text-generation model: ``messages`` in, a ``chat.completion`` out.

Used for text-generation models logged with one of ``duckreg.openai_signatures``. The prompt is
the tokenizer's chat template, or ChatML (``<|im_start|>role\\ncontent<|im_end|>``) when the
tokenizer has none. Requests with the same settings and prompt length are generated together.
``finish_reason`` is ``"length"`` when ``max_completion_tokens`` cut the answer, else ``"stop"``.
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import FeatureGroupSpec, ModelSignature
from duckreg.tasks._generation import cap_new_tokens, generate_unpadded
from duckreg.tasks.base import InputError, RunContext, Task

CONTROLS = (
    "temperature",
    "max_completion_tokens",
    "stop",
    "n",
    "stream",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "response_format",
)
# The pipeline tasks whose models answer OpenAI chat requests (image-text-to-text: images in the messages).
CHAT_TASKS = ("text-generation", "image-text-to-text")
# Without max_completion_tokens an answer is at most this many tokens.
DEFAULT_MAX_COMPLETION_TOKENS = 1024


def matches(task: str, signature: ModelSignature) -> bool:
    """Whether a user signature asks for OpenAI chat on a text-generation model."""
    first = signature.inputs[0] if signature.inputs else None
    outputs = {o.name for o in signature.outputs}
    return (
        task in CHAT_TASKS
        and isinstance(first, FeatureGroupSpec)
        and first.name == "messages"
        and {"choices", "usage"} <= outputs
    )


class OpenAIChat(Task):
    names = ()
    optional_inputs = frozenset(CONTROLS)
    needs_pad_token = True

    def deterministic(self, params: dict[str, Any], settings: dict[str, Any]) -> bool:
        return False  # each response carries its own id and creation time

    def sort_key(self, row: dict[str, Any]) -> int:
        return sum(len(str(m.get("content") or "")) for m in row["messages"] or [])

    def coerce_input(self, spec: Any, value: Any) -> Any:
        """``messages`` may be a JSON string (Snowflake's batch examples); a message's content may be a string
        or a list of parts, whichever the signature declares."""
        if spec.name == "messages" and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                return value  # reported as not a list of messages
        if spec.name != "messages" or not isinstance(value, list):
            return value
        content_spec = next((c for c in spec.specs if c.name == "content"), None)
        wants_parts = isinstance(content_spec, FeatureGroupSpec)
        out = []
        for message in value:
            if not isinstance(message, dict):
                return value
            content = message.get("content")
            if wants_parts and isinstance(content, str):
                message = {**message, "content": [{"type": "text", "text": content}]}
            elif not wants_parts and isinstance(content, list):
                message = {**message, "content": _text_of(content)}
            out.append(message)
        return out

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        pipe = ctx.model
        if getattr(pipe, "task", None) == "image-text-to-text":
            return [self._answer_with_images(ctx, row) for row in rows]
        tokenizer, model = pipe.tokenizer, pipe.model
        use_params = bool(ctx.signature.params)
        requests = []
        for row in rows:
            controls = request_controls(ctx.params, row, use_params)
            prompt_ids = tokenizer(chat_prompt(tokenizer, row["messages"]), add_special_tokens=False)["input_ids"]
            kwargs = _generate_kwargs(controls, tokenizer)
            try:
                kwargs["max_new_tokens"] = cap_new_tokens(model, len(prompt_ids), kwargs["max_new_tokens"])
            except ValueError as exc:
                raise InputError("messages", str(exc)) from None
            requests.append((prompt_ids, kwargs))
        generated = generate_unpadded(model, requests, tokenizer=tokenizer)
        results = []
        for (prompt_ids, kwargs), sequences in zip(requests, generated, strict=True):
            stop = kwargs.get("stop_strings", ())
            answers = [finish_text(tokenizer, ids, stop, kwargs["max_new_tokens"]) for ids in sequences]
            results.append(completion(ctx.model_id, answers, len(prompt_ids)))
        return results

    def _answer_with_images(self, ctx: RunContext, row: dict[str, Any]) -> dict[str, Any]:
        """One request to an image-text-to-text model: its processor turns text and image parts into inputs."""
        import torch

        pipe = ctx.model
        processor, model = pipe.processor, pipe.model
        tokenizer = processor.tokenizer
        controls = request_controls(ctx.params, row, bool(ctx.signature.params))
        messages = [{"role": m["role"], "content": _processor_parts(m.get("content"))} for m in row["messages"] or []]
        if not messages:
            raise InputError("messages", "needs at least one message")
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        prompt_length = int(inputs["input_ids"].shape[1])
        kwargs = _generate_kwargs(controls, tokenizer)
        try:
            kwargs["max_new_tokens"] = cap_new_tokens(model, prompt_length, kwargs["max_new_tokens"])
        except ValueError as exc:
            raise InputError("messages", str(exc)) from None
        kwargs.pop("stop_strings", None)  # cut from the decoded text, as the text path does
        stop = tuple(controls["stop"] or ())
        with torch.inference_mode():
            generated = model.generate(**inputs.to(model.device), **kwargs)
        answers = [finish_text(tokenizer, ids, stop, kwargs["max_new_tokens"])
                   for ids in generated[:, prompt_length:].tolist()]  # fmt: skip
        return completion(ctx.model_id, answers, prompt_length)


def completion(model_id: str, answers: Sequence[tuple[str, int, str]], prompt_tokens: int) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` from each choice's (text, tokens used, finish reason): one shape for
    every engine that answers chat requests."""
    completion_tokens = sum(used for _, used, _ in answers)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": float(int(time.time())),
        "model": model_id,
        "choices": [
            {"index": index, "message": {"content": text, "name": None, "role": "assistant"}, "logprobs": None,
             "finish_reason": reason}
            for index, (text, _, reason) in enumerate(answers)
        ],
        "usage": {"completion_tokens": completion_tokens, "prompt_tokens": prompt_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }  # fmt: skip


def _processor_parts(content: Any) -> list[dict[str, Any]]:
    """OpenAI content parts as a processor's chat template takes them: text, and images decoded from data URLs."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    parts = []
    for part in content or []:
        kind = part.get("type") or "text"
        if kind == "text":
            parts.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "image_url":
            parts.append({"type": "image", "image": _image(((part.get("image_url") or {}).get("url")) or "")})
        elif kind == "video_url":
            parts.append({"type": "video", "video": _video(((part.get("video_url") or {}).get("url")) or "")})
        else:
            raise InputError("messages", f"{kind} parts are not supported by image-text-to-text models")
    return parts


def check_media(messages: list[dict[str, Any]]) -> None:
    """Refuse, as the local engine would, a row whose media another engine would fail on for the whole batch:
    an image or video that does not decode, or a part this task cannot take."""
    for message in messages:
        _processor_parts(message.get("content"))


def _media_bytes(kind: str, url: str, example: str) -> bytes:
    """The bytes of a ``data:`` URL; stage paths are turned into data URLs before the model sees them."""
    import base64

    if not url.startswith("data:") or ";base64," not in url:
        raise InputError(
            "messages",
            f"{kind} {url[:60]!r}: give a data URL (data:{example};base64,...); mv.run and run_batch also read stage "
            "paths (@stage/path/file), and in SQL 'data:...;base64,' || base64(read_stage_file('@stage/path/file')) "
            "makes the URL",
        )
    try:
        return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except ValueError as exc:
        raise InputError("messages", f"{kind} holds invalid base64 ({exc})") from None


def _image(url: str) -> Any:
    """A PIL image (RGB) from a ``data:`` URL."""
    import io

    from PIL import Image

    data = _media_bytes("image_url", url, "image/png")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # noqa: BLE001 - any undecodable image is the row's input error
        raise InputError("messages", f"image_url holds no readable image ({exc})") from None
    return image.convert("RGB")


def _video(url: str) -> Any:
    """Every frame of a video ``data:`` URL as RGB (frames, height, width, 3), decoded with OpenCV as vLLM does."""
    import tempfile

    import numpy as np

    data = _media_bytes("video_url", url, "video/x-msvideo")
    try:
        import cv2
    except ImportError:
        raise InputError(
            "messages", "video_url parts are decoded with OpenCV: pip install opencv-python-headless"
        ) from None
    with tempfile.NamedTemporaryFile(suffix=".video") as file:
        file.write(data)
        file.flush()
        capture = cv2.VideoCapture(file.name)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        capture.release()
    if not frames:
        raise InputError("messages", "video_url holds no readable video")
    return np.stack(frames)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text") or "" for part in content or [] if part.get("type", "text") == "text")


def chat_prompt(tokenizer: Any, messages: list[dict[str, Any]] | None) -> str:
    if not messages:
        raise InputError("messages", "needs at least one message")
    plain = []
    for message in messages:
        if not message.get("role"):
            raise InputError("messages", "every message needs a role")
        plain.append({"role": message["role"], "content": _text_of(message.get("content"))})
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in plain) + "<|im_start|>assistant\n"


def request_controls(params: dict[str, Any], row: dict[str, Any], use_params: bool) -> dict[str, Any]:
    """A request's controls (temperature, stop, ...): the call's parameters when the signature has them
    (``OPENAI_CHAT_WITH_PARAMS_SIGNATURE``), else the row's control columns; every engine reads them here."""
    return {k: (params if use_params else row).get(k) for k in CONTROLS}


def core_controls(controls: dict[str, Any]) -> tuple[float, int, int]:
    """Temperature, answer length and number of choices, with OpenAI's defaults: every engine reads them here."""
    temperature = 1.0 if controls.get("temperature") is None else float(controls["temperature"])
    n = int(controls.get("n") or 1)
    if n < 1:
        raise InputError("n", f"must be at least 1, got {n}")
    return temperature, int(controls.get("max_completion_tokens") or DEFAULT_MAX_COMPLETION_TOKENS), n


def _generate_kwargs(controls: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    temperature, max_new_tokens, n = core_controls(controls)
    do_sample = temperature > 0 or n > 1
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "num_return_sequences": n,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if controls["stop"]:
        kwargs["stop_strings"] = tuple(controls["stop"])
    if do_sample:
        kwargs["temperature"] = temperature if temperature > 0 else 1.0
        if controls["top_p"] is not None:
            kwargs["top_p"] = float(controls["top_p"])
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    penalty = 1.0 + max(float(controls["frequency_penalty"] or 0.0), 0.0)
    if penalty != 1.0:
        kwargs["repetition_penalty"] = penalty
    if controls["presence_penalty"]:
        warnings.warn("presence_penalty is not supported by transformers generation and is ignored", stacklevel=2)
    if controls["stream"]:
        warnings.warn("stream=True is ignored: each row gets its whole completion", stacklevel=2)
    if controls["response_format"]:
        warnings.warn(
            "response_format is ignored: transformers generation cannot hold an answer to a format", stacklevel=2
        )
    return kwargs


def finish_text(tokenizer: Any, ids: list[int], stop: tuple[str, ...], max_new_tokens: int) -> tuple[str, int, str]:
    """The answer text, the tokens it used, and why it ended."""
    eos = tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    used = len(ids)
    for position, token in enumerate(ids):
        if token in eos_ids:
            used = position + 1
            break
    text = tokenizer.decode(ids[:used], skip_special_tokens=True)
    for word in stop:
        if word and word in text:
            return text[: text.index(word)], used, "stop"
    ended_by_eos = used < len(ids) or (used and ids[used - 1] in eos_ids)
    return text, used, "stop" if ended_by_eos or used < max_new_tokens else "length"


TASK = OpenAIChat()
__all__ = ["TASK", "matches"]
