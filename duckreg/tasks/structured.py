"""Structured output: answers held to a JSON schema, as OpenAI's ``response_format`` asks.

The schema becomes a grammar with llguidance, the library vLLM's ``guidance`` backend also uses, so the
transformers backend (a logits processor here) and the vLLM backend constrain an answer the same way:
compact JSON (no whitespace between tokens), every answer parsing and valid against the schema unless
``max_completion_tokens`` cuts it (its ``finish_reason`` is then ``"length"``).
"""

from __future__ import annotations

import json
import weakref
from typing import Any

from duckreg.tasks.base import InputError

COMPILE_OPTIONS = {"whitespace_flexible": False}
"""JSON as ``json.dumps(separators=(",", ":"))`` writes it: a model cannot pad an answer with whitespace."""
ANY_OBJECT: dict[str, Any] = {"type": "object"}
INSTALL_HINT = "pip install 'duckreg[structured]' (llguidance)"
_TOKENIZERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def requested_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema ``response_format`` asks for (``{"type": "object"}`` for ``json_object``), or None
    for free text. The params signature's default (a ``json_schema`` with no schema) asks for nothing."""
    if not response_format:
        return None
    if isinstance(response_format, str):
        response_format = _json(response_format, "response_format")
    if not isinstance(response_format, dict):
        raise InputError(
            "response_format", f"must be an object such as {{'type': 'json_object'}}, got {response_format!r}"
        )
    kind = response_format.get("type") or "text"
    if kind == "text":
        return None
    if kind == "json_object":
        return dict(ANY_OBJECT)
    if kind != "json_schema":
        raise InputError("response_format", f"type must be 'text', 'json_object' or 'json_schema', got {kind!r}")
    schema = (response_format.get("json_schema") or {}).get("schema")
    if schema in (None, "", {}):
        return None
    if isinstance(schema, str):
        schema = _json(schema, "response_format.json_schema.schema")
    if not isinstance(schema, dict):
        raise InputError("response_format", f"json_schema.schema must be a JSON object, got {schema!r}")
    return schema


def grammar(schema: dict[str, Any]) -> str:
    """The llguidance grammar of ``schema``; a schema it cannot compile is the row's input error."""
    llguidance = _llguidance()
    try:
        compiled = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=COMPILE_OPTIONS)
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(compiled)
    except (ValueError, TypeError) as exc:
        raise InputError("response_format", f"the JSON schema cannot be compiled: {exc}") from None
    if failed:
        raise InputError("response_format", f"the JSON schema cannot be compiled: {'; '.join(messages)}")
    return compiled


class SchemaLogitsProcessor:
    """A ``transformers`` logits processor: at each step, only tokens that keep every row's answer inside
    its grammar may be sampled; a finished answer may only end."""

    def __init__(self, tokenizer: Any, vocab_size: int, grammars: list[str], prompt_length: int) -> None:
        llguidance = _llguidance()
        from llguidance import torch as masks

        self._torch = masks
        lltokenizer = ll_tokenizer(tokenizer, vocab_size)
        self.matchers = [llguidance.LLMatcher(lltokenizer, g) for g in grammars]
        self.bitmask = masks.allocate_token_bitmask(len(grammars), lltokenizer.vocab_size)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if input_ids.shape[1] > self.prompt_length:
            for matcher, token in zip(self.matchers, input_ids[:, -1].tolist(), strict=True):
                if not matcher.is_stopped():
                    matcher.consume_token(token)
        for row, matcher in enumerate(self.matchers):
            self._torch.fill_next_token_bitmask(matcher, self.bitmask, row)
        return scores.masked_fill(~self._allowed(scores), float("-inf"))

    def _allowed(self, scores: Any) -> Any:
        """The bitmask (32 tokens per int32) as one boolean per token and row, shaped like ``scores``.

        Plain tensor operations: llguidance's own helper compiles a kernel with ``torch.compile``, which
        needs a C compiler at run time and costs seconds on a first call.
        """
        import torch

        bits = torch.arange(32, dtype=torch.int32)
        allowed = ((self.bitmask.unsqueeze(-1) >> bits) & 1).bool().reshape(self.bitmask.shape[0], -1)
        vocab = scores.shape[-1]
        if allowed.shape[1] < vocab:  # logits past the tokenizer's vocabulary (padding rows) are never allowed
            allowed = torch.nn.functional.pad(allowed, (0, vocab - allowed.shape[1]), value=False)
        return allowed[:, :vocab].to(scores.device)


def ll_tokenizer(tokenizer: Any, vocab_size: int) -> Any:
    """llguidance's view of a Hugging Face tokenizer (built once per tokenizer: it walks the vocabulary)."""
    found = _TOKENIZERS.get(tokenizer)
    if found is None or found[0] != vocab_size:
        import llguidance.hf

        found = _TOKENIZERS[tokenizer] = (vocab_size, llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size))
    return found[1]


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError("response_format", f"{what} is not valid JSON ({exc.msg} at character {exc.pos})") from None


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        raise InputError("response_format", f"structured output needs llguidance: {INSTALL_HINT}") from None
    return llguidance
