"""conversational: the next response in a conversation.

Inputs are ``user_inputs`` (every user turn so far; the last one is the current turn) and
``generated_responses`` (the model's earlier responses, one fewer than the user turns). The output
``generated_responses`` is the earlier responses plus the new one, so a conversation continues in
SQL with ``list_append``. Causal language models get the conversation through the tokenizer's chat
template; a tokenizer without one gets the turns joined by its end-of-sequence token (the DialoGPT
convention). Encoder-decoder models read the same text as their input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature
from duckreg.tasks._generation import GENERATION_PARAMS, cap_new_tokens, generate_unpadded, generation_params, greedy
from duckreg.tasks.base import InferredFunction, InputError, RunContext, Task, TaskModel
from duckreg.tasks.limits import check_prompt_words, positions
from duckreg.tasks.text2text_generation import generate_texts

TURNS = FeatureSpec(name="user_inputs", dtype=DataType.STRING, shape=(-1,))
RESPONSES = FeatureSpec(name="generated_responses", dtype=DataType.STRING, shape=(-1,))
# A causal model answers with at most this many new tokens unless told otherwise.
DEFAULT_MAX_NEW_TOKENS = 256


class Conversational(Task):
    names = ("conversational",)
    optional_inputs = frozenset({"generated_responses"})
    needs_pad_token = True

    def deterministic(self, params: dict[str, Any], settings: dict[str, Any]) -> bool:
        return greedy(params, settings)

    def model_class(self, config: Any) -> str:
        return "AutoModelForSeq2SeqLM" if getattr(config, "is_encoder_decoder", False) else "AutoModelForCausalLM"

    def infer(self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]) -> InferredFunction:
        signature = ModelSignature(inputs=[TURNS, RESPONSES], outputs=[RESPONSES], params=GENERATION_PARAMS)
        return InferredFunction(signature)

    def sort_key(self, row: dict[str, Any]) -> int:
        return sum(len(t) for t in row["user_inputs"]) + sum(len(t) for t in row.get("generated_responses") or [])

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        task_model: TaskModel = ctx.model
        settings = {**task_model.settings, **generation_params(ctx.params)}
        conversations = [_messages(row) for row in rows]
        if task_model.model.config.is_encoder_decoder:
            texts = [_fallback_text(task_model.tokenizer, messages) for messages in conversations]
            replies = [generated[0] for generated in generate_texts(task_model, texts, settings, ctx.batch_size)]
        else:
            replies = _causal_replies(task_model, conversations, settings)
        return [
            {"generated_responses": [*(row.get("generated_responses") or []), reply.strip()]}
            for row, reply in zip(rows, replies, strict=True)
        ]


def _messages(row: dict[str, Any]) -> list[dict[str, str]]:
    turns = row["user_inputs"]
    responses = row.get("generated_responses") or []
    if not turns:
        raise InputError("user_inputs", "needs at least one user turn (the last one is the current input)")
    if len(responses) != len(turns) - 1:
        raise InputError(
            "generated_responses",
            f"expected {len(turns) - 1} earlier responses for {len(turns)} user inputs, got {len(responses)}",
        )
    messages = []
    for i, turn in enumerate(turns):
        messages.append({"role": "user", "content": turn})
        if i < len(responses):
            messages.append({"role": "assistant", "content": responses[i]})
    return messages


def _fallback_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The conversation as one string: every turn followed by the end-of-sequence token."""
    eos = tokenizer.eos_token or ""
    return "".join(m["content"] + eos for m in messages)


def _causal_replies(
    task_model: TaskModel, conversations: list[list[dict[str, str]]], settings: dict[str, Any]
) -> list[str]:
    """The model's next turn for each conversation."""
    tokenizer, model = task_model.tokenizer, task_model.model
    for messages in conversations:
        check_prompt_words("user_inputs", [m["content"] for m in messages], positions(model))
    if getattr(tokenizer, "chat_template", None):
        prompts = [
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            for messages in conversations
        ]
    else:
        prompts = [_fallback_text(tokenizer, messages) for messages in conversations]
    kwargs = dict(settings)
    if "max_new_tokens" not in kwargs and "max_length" not in kwargs:
        kwargs["max_new_tokens"] = DEFAULT_MAX_NEW_TOKENS
    kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    requests = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        call = dict(kwargs)
        if "max_new_tokens" in call:
            try:
                call["max_new_tokens"] = cap_new_tokens(model, len(ids), call["max_new_tokens"])
            except ValueError as exc:
                raise InputError("user_inputs", str(exc)) from None
        requests.append((ids, call))
    return [
        tokenizer.decode(sequences[0], skip_special_tokens=True) for sequences in generate_unpadded(model, requests)
    ]


TASK = Conversational()
