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
# Without max_completion_tokens an answer is at most this many tokens.
DEFAULT_MAX_COMPLETION_TOKENS = 1024


def matches(task: str, signature: ModelSignature) -> bool:
    """Whether a user signature asks for OpenAI chat on a text-generation model."""
    first = signature.inputs[0] if signature.inputs else None
    outputs = {o.name for o in signature.outputs}
    return (
        task == "text-generation"
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
        tokenizer, model = pipe.tokenizer, pipe.model
        use_params = bool(ctx.signature.params)
        requests = []
        for row in rows:
            controls = {k: (ctx.params if use_params else row).get(k) for k in CONTROLS}
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
            choices, completion_tokens = [], 0
            for index, ids in enumerate(sequences):
                stop = kwargs.get("stop_strings", ())
                text, used, reason = finish_text(tokenizer, ids, stop, kwargs["max_new_tokens"])
                completion_tokens += used
                choices.append(
                    {
                        "index": index,
                        "message": {"content": text, "name": None, "role": "assistant"},
                        "logprobs": None,
                        "finish_reason": reason,
                    }
                )
            results.append(
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": float(int(time.time())),
                    "model": ctx.model_id,
                    "choices": choices,
                    "usage": {
                        "completion_tokens": completion_tokens,
                        "prompt_tokens": len(prompt_ids),
                        "total_tokens": len(prompt_ids) + completion_tokens,
                    },
                }
            )
        return results


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


def _generate_kwargs(controls: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    temperature = 1.0 if controls["temperature"] is None else float(controls["temperature"])
    n = int(controls["n"] or 1)
    if n < 1:
        raise InputError("n", f"must be at least 1, got {n}")
    do_sample = temperature > 0 or n > 1
    kwargs: dict[str, Any] = {
        "max_new_tokens": int(controls["max_completion_tokens"] or DEFAULT_MAX_COMPLETION_TOKENS),
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
