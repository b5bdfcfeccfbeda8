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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from duckreg.model_signature import FeatureGroupSpec, ModelSignature
from duckreg.tasks._generation import (
    ChatBackend,
    Generated,
    GenerationRequest,
    TokenStreamer,
    cap_new_tokens,
    generate_unpadded,
)
from duckreg.tasks.base import InputError, RunContext, Task, for_row
from duckreg.tasks.image_classification import open_image
from duckreg.tasks.limits import check_prompt_words, positions
from duckreg.tasks.messages import decode_messages
from duckreg.tasks.structured import SchemaLogitsProcessor, grammar, requested_schema

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

    def sort_key(self, row: dict[str, Any]) -> int:
        return sum(len(str(m.get("content") or "")) for m in row["messages"] or [])

    def coerce_input(self, spec: Any, value: Any) -> Any:
        """``messages`` may be a JSON string (Snowflake's batch examples); a message's content may be a string
        or a list of parts, whichever the signature declares."""
        if spec.name == "messages":
            try:
                value = decode_messages(value)
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

    def cacheable(self, rows: Sequence[dict[str, Any]], params: dict[str, Any], settings: dict[str, Any]) -> list[bool]:
        """A greedy request (temperature 0, one choice) always gets the same answer: it may be cached.

        A cached answer is the completion first computed, ``id`` and ``created`` included.
        """
        use_params = "temperature" in params
        return [_greedy(request_controls(params, row, use_params)) for row in rows]

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        backend = backend_of(ctx.model)
        requests = []
        for position, row in enumerate(rows):
            with for_row(position):
                requests.append(self.request(ctx, backend, row))
        generated = backend.generate(requests)
        tokenizer = backend.tokenizer
        return [
            completion(
                ctx.model_id,
                [finish_text(tokenizer, ids, request.stop, request.max_new_tokens) for ids in answer.choices],
                answer.prompt_tokens,
            )
            for request, answer in zip(requests, generated, strict=True)
        ]

    def request(self, ctx: RunContext, backend: ChatBackend, row: dict[str, Any]) -> GenerationRequest:
        """One row as a checked request: its prompt (token ids, or messages for a model that reads media) and
        its controls. Every backend gets the same request, so a bad row fails the same way on each."""
        controls = request_controls(ctx.params, row, bool(ctx.signature.params))
        temperature, max_new_tokens, n = core_controls(controls)
        messages = row["messages"]
        if not messages:
            raise InputError("messages", "needs at least one message")
        prompt_ids = None
        check_prompt_words("messages", [_text_of(m.get("content")) for m in messages], backend.context_length)
        if getattr(backend, "task", None) == "image-text-to-text":
            for message in messages:
                if not message.get("role"):
                    raise InputError("messages", "every message needs a role")
            check_media(messages)
        else:
            tokenizer = backend.tokenizer
            prompt_ids = tokenizer(chat_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
            try:
                max_new_tokens = cap_new_tokens(backend.context_length, len(prompt_ids), max_new_tokens)
            except ValueError as exc:
                raise InputError("messages", str(exc)) from None
        schema = requested_schema(controls["response_format"])
        if schema is not None:
            grammar(schema)  # a schema that cannot compile is this row's error, on every backend
        listener = ctx.listener(row)
        if controls["stream"] and listener is None:
            warnings.warn("stream=True is ignored: each row gets its whole completion", stacklevel=2)
        stop = tuple(controls["stop"] or ())
        return GenerationRequest(
            prompt_ids=prompt_ids,
            messages=None if prompt_ids is not None else _without_nulls(messages),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            n=n,
            top_p=None if controls["top_p"] is None else float(controls["top_p"]),
            stop=stop,
            frequency_penalty=None if controls["frequency_penalty"] is None else float(controls["frequency_penalty"]),
            presence_penalty=None if controls["presence_penalty"] is None else float(controls["presence_penalty"]),
            json_schema=schema,
            on_tokens=None if listener is None else AnswerText(backend.tokenizer, stop, listener).add,
        )


def backend_of(model: Any) -> ChatBackend:
    """The backend a loaded version answers chat requests with: its own (vLLM), else transformers ``generate``."""
    return model if isinstance(model, ChatBackend) else TransformersChat(model)


class TransformersChat:
    """Chat answers from a transformers pipeline's model: unpadded batches of the same prompt length and
    controls, JSON schemas held by a llguidance logits processor."""

    name = "transformers"

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.task = getattr(pipe, "task", None)
        self.processor = getattr(pipe, "processor", None)
        self.tokenizer = self.processor.tokenizer if self.task == "image-text-to-text" else pipe.tokenizer
        self.context_length = positions(pipe.model)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generated]:
        out: list[Generated | None] = [None] * len(requests)
        text = [i for i, r in enumerate(requests) if r.prompt_ids is not None]
        for i in range(len(requests)):
            if requests[i].prompt_ids is None:
                out[i] = self._with_media(requests[i])
        calls = [(requests[i].prompt_ids, self._generate_kwargs(requests[i])) for i in text]
        listeners = [requests[i].on_tokens for i in text]
        generated = generate_unpadded(self.pipe.model, calls, listeners, tokenizer=self.tokenizer)
        for i, choices in zip(text, generated, strict=True):
            out[i] = Generated(len(requests[i].prompt_ids or []), choices)
        return [g for g in out if g is not None]

    def _with_media(self, request: GenerationRequest) -> Generated:
        """One request to an image-text-to-text model: its processor turns text and image parts into inputs."""
        import torch

        model = self.pipe.model
        messages = [{"role": m["role"], "content": _processor_parts(m.get("content"))} for m in request.messages or []]
        inputs = self.processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        prompt_length = int(inputs["input_ids"].shape[1])
        kwargs = self._generate_kwargs(request)
        try:
            kwargs["max_new_tokens"] = cap_new_tokens(model, prompt_length, kwargs["max_new_tokens"])
        except ValueError as exc:
            raise InputError("messages", str(exc)) from None
        kwargs.pop("stop_strings", None)  # cut from the decoded text, as the text path does
        if request.json_schema is not None:
            kwargs["logits_processor"] = SchemaConstraint(self, request).build(request.n, prompt_length)
        if request.on_tokens is not None:
            kwargs["streamer"] = TokenStreamer([request.on_tokens], request.n)
        with torch.inference_mode():
            generated = model.generate(**inputs.to(model.device), **kwargs)
        return Generated(prompt_length, generated[:, prompt_length:].tolist())

    def _generate_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        do_sample = request.temperature > 0 or request.n > 1
        kwargs: dict[str, Any] = {
            "max_new_tokens": request.max_new_tokens,
            "do_sample": do_sample,
            "num_return_sequences": request.n,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if request.stop:
            kwargs["stop_strings"] = request.stop
        if do_sample:
            kwargs["temperature"] = request.temperature if request.temperature > 0 else 1.0
            if request.top_p is not None:
                kwargs["top_p"] = request.top_p
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        penalty = 1.0 + max(request.frequency_penalty or 0.0, 0.0)
        if penalty != 1.0:
            kwargs["repetition_penalty"] = penalty
        if request.presence_penalty:
            warnings.warn("presence_penalty is not supported by transformers generation and is ignored", stacklevel=2)
        if request.json_schema is not None and request.prompt_ids is not None:
            kwargs["logits_processor"] = SchemaConstraint(self, request)
        return kwargs


class SchemaConstraint:
    """The logits processor of a request whose answer follows a schema, built for each ``generate`` call (one
    grammar matcher per sequence). Equal for requests with the same schema, so their prompts batch together."""

    def __init__(self, backend: TransformersChat, request: GenerationRequest) -> None:
        self.backend, self.request = backend, request
        self.key = json.dumps(request.json_schema, sort_keys=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SchemaConstraint) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def build(self, rows: int, prompt_length: int) -> Any:
        from transformers import LogitsProcessorList

        vocab = int(self.backend.pipe.model.config.get_text_config().vocab_size)
        compiled = grammar(self.request.json_schema or {})
        processor = SchemaLogitsProcessor(self.backend.tokenizer, vocab, [compiled] * rows, prompt_length)
        return LogitsProcessorList([processor])


def _without_nulls(value: Any) -> Any:
    """Messages as OpenAI writes them: a field the signature added as NULL (``detail``, ``video_url``) left out."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _greedy(controls: dict[str, Any]) -> bool:
    try:
        temperature, _, n = core_controls(controls)
    except (InputError, TypeError, ValueError):
        return False
    return temperature == 0 and n == 1


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
            f"{kind} {url[:60]!r}: give a stage path (@stage/path/file) or a data URL (data:{example};base64,...)",
        )
    try:
        return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except ValueError as exc:
        raise InputError("messages", f"{kind} holds invalid base64 ({exc})") from None


def _image(url: str) -> Any:
    """A PIL image (RGB) from a ``data:`` URL."""
    return open_image(_media_bytes("image_url", url, "image/png"), "messages", "image_url holds no readable image")


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


def _eos_ids(tokenizer: Any) -> set[int]:
    eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, list) else [eos]) - {None}


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str | None:
    """``text`` up to the first of the stop words (in their order) it holds, or None when it holds none: one
    rule for finished and streamed answers."""
    for word in stop:
        if word and word in text:
            return text[: text.index(word)]
    return None


@dataclass
class _Following:
    """One choice's tokens and the text decoded from them so far, decoded a window at a time."""

    ids: list[int] = field(default_factory=list)
    text: str = ""
    prefix_offset: int = 0
    read_offset: int = 0
    ended: bool = False


class AnswerText:
    """A choice's text so far, from its token ids as they are generated, for a streamed answer.

    ``listener(choice, text)`` hears text the finished answer will begin with: cut at the end token and at a
    stop word as ``finish_text`` cuts, holding back what may still change (trailing whitespace, an incomplete
    character, the start of a stop word). Each token costs a decode of a few tokens, not of the answer so far
    (the windows vLLM's and transformers' streamers decode).
    """

    def __init__(self, tokenizer: Any, stop: tuple[str, ...], listener: Callable[[int, str], None]) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(word for word in stop if word)
        self.listener = listener
        self.eos_ids = _eos_ids(tokenizer)
        self.choices: dict[int, _Following] = {}

    def add(self, choice: int, ids: list[int]) -> None:
        """Take a choice's new token ids and tell the listener its text so far."""
        state = self.choices.setdefault(choice, _Following())
        if state.ended:
            return
        for token in ids:
            if token in self.eos_ids:
                state.ended = True
                break
            state.ids.append(token)
        decode = self.tokenizer.decode
        before = decode(state.ids[state.prefix_offset : state.read_offset], skip_special_tokens=True)
        after = decode(state.ids[state.prefix_offset :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):  # not the first bytes of a character
            state.text += after[len(before) :]
            state.prefix_offset, state.read_offset = state.read_offset, len(state.ids)
        text = state.text
        cut = cut_at_stop(text, self.stop)
        if cut is not None:
            state.ended, text = True, cut
        if not state.ended:
            text = text.rstrip()
            for word in self.stop:  # the text may end with the start of a stop word
                for size in range(min(len(word) - 1, len(text)), 0, -1):
                    if text.endswith(word[:size]):
                        text = text[:-size]
                        break
        self.listener(choice, text)


def finish_text(tokenizer: Any, ids: list[int], stop: tuple[str, ...], max_new_tokens: int) -> tuple[str, int, str]:
    """The answer text, the tokens it used, and why it ended."""
    eos_ids = _eos_ids(tokenizer)
    used = len(ids)
    for position, token in enumerate(ids):
        if token in eos_ids:
            used = position + 1
            break
    text = tokenizer.decode(ids[:used], skip_special_tokens=True)
    cut = cut_at_stop(text, stop)
    if cut is not None:
        return cut, used, "stop"
    ended_by_eos = used < len(ids) or (used and ids[used - 1] in eos_ids)
    return text, used, "stop" if ended_by_eos or used < max_new_tokens else "length"


TASK = OpenAIChat()
__all__ = ["TASK", "matches"]
