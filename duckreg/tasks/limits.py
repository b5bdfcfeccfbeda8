"""How much text a model can read, and what happens to an input that is longer.

A model has a fixed number of positions. Fed more tokens it fails deep inside torch ("The size of
tensor a (100002) must match ...", "index out of range in self"), and a whole SQL query fails with
it. duckreg instead truncates where the reference pipeline truncates (zero-shot, summarization,
translation, pooled embeddings, TAPAS dropping rows) and otherwise refuses the one long input with an
error that says how long it is and what the model takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duckreg.tasks.base import InputError

# Tokenizers saved without a limit report this (transformers' VERY_LARGE_INTEGER is ~1e30).
_NO_LIMIT = 1_000_000
# Model types whose position ids start after the padding index (RoBERTa's offset of 2).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xmod", "mpnet")
# What a model without absolute positions (T5's relative attention) reads when its tokenizer names no
# limit either: attention's memory grows with the square of the input, so a megabyte is never encoded whole.
UNBOUNDED_MODEL_TOKENS = 2048
# Room for special tokens ([CLS], [SEP], </s>, ...) on top of a text's own tokens.
_SPECIAL_ROOM = 8


def positions(model: Any) -> int | None:
    """The most tokens ``model`` can take, when its config says (None: no fixed limit, e.g. T5)."""
    config = getattr(model, "config", None)
    if hasattr(config, "get_text_config"):  # a vision-language model's positions are its language model's
        config = config.get_text_config()
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            if getattr(config, "model_type", "") in _OFFSET_POSITIONS and isinstance(config.pad_token_id, int):
                value -= config.pad_token_id + 1
            return value
    return None


def clamp_tokenizer(tokenizer: Any, model: Any) -> None:
    """Give a tokenizer that knows no limit (or too high a one) the model's, so truncation works.

    A model with no fixed number of positions gets ``UNBOUNDED_MODEL_TOKENS`` when its tokenizer names
    no limit either.
    """
    if tokenizer is None:
        return
    limit = positions(model)
    current = getattr(tokenizer, "model_max_length", None)
    known = isinstance(current, int) and current < _NO_LIMIT
    if limit is None and not known:
        tokenizer.model_max_length = UNBOUNDED_MODEL_TOKENS
    elif limit is not None and (not known or current > limit):
        tokenizer.model_max_length = limit


def truncates(pipeline: Any) -> bool:
    """Whether a pipeline was logged to truncate its inputs (``truncation=True`` or a tokenizer kwarg)."""
    params = getattr(pipeline, "_preprocess_params", None) or {}
    nested = {**(params.get("tokenizer_kwargs") or {}), **(params.get("tokenizer_params") or {})}
    return bool(params.get("truncation") or nested.get("truncation"))


def max_tokens(tokenizer: Any) -> int | None:
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < _NO_LIMIT else None


def check_lengths(
    column: str, texts: Sequence[str], tokenizer: Any, pairs: Sequence[str | None] | None = None, what: str = ""
) -> None:
    """Refuse any text (with its pair) longer than the tokenizer's model takes; ``what`` says how to cut it.
    The error names the text's position in ``texts`` as its row (a caller checking one row's several texts
    names that row with ``for_row``).

    Only texts whose UTF-8 length could exceed the limit are tokenized (a token covers at least one
    byte). A character is at most four bytes, so most rows are cleared by their length alone and cost
    no encoding at all.
    """
    limit = max_tokens(tokenizer)
    if limit is None:
        return
    for i, text in enumerate(texts):
        pair = (pairs[i] if pairs is not None else None) or None
        if 4 * (len(text) + len(pair or "")) + _SPECIAL_ROOM <= limit:
            continue
        size = len(text.encode("utf-8", "replace")) + len((pair or "").encode("utf-8", "replace"))
        if size + _SPECIAL_ROOM <= limit:
            continue
        words = word_count(text) + word_count(pair or "")
        if words > limit:  # every word is a token at least: refused without encoding a megabyte
            raise too_long(column, text, words, limit, what or "shorten it", at_least=True, row=i)
        count = len(tokenizer(text, pair, truncation=False)["input_ids"])
        if count > limit:
            raise too_long(column, text, count, limit, what or "shorten it", row=i)


def word_count(text: str) -> int:
    """Whitespace-separated words in ``text``: a lower bound on its tokens that costs no encoding."""
    return len(text.split())


def check_prompt_words(column: str, texts: Sequence[str], limit: int | None) -> None:
    """Refuse a prompt (the texts of every message or turn) whose words alone fill the model's ``limit``
    tokens, before a chat template renders it or a tokenizer encodes it."""
    if limit is None:
        return
    words = sum(word_count(text) for text in texts)
    if words >= limit:
        raise InputError(column, f"the prompt has at least {words} tokens; the model reads at most {limit}")


def too_long(
    column: str, text: str, count: int, limit: int, what: str, *, at_least: bool = False, row: int | None = None
) -> InputError:
    """The error for one input of ``count`` tokens (``at_least`` that many) where the model reads ``limit``."""
    snippet = text[:40] + ("..." if len(text) > 40 else "")
    size = f"at least {count}" if at_least else str(count)
    return InputError(
        column, f"an input of {size} tokens ({snippet!r}) is longer than the {limit} this model reads; {what}", row
    )


def cap_generation(generation_config: Any, model: Any) -> None:
    """Keep ``max_new_tokens`` / ``max_length`` within what the decoder has positions for."""
    limit = positions(model)
    if limit is None:
        return
    if generation_config.max_new_tokens is not None:
        generation_config.max_new_tokens = min(generation_config.max_new_tokens, limit - 1)
    if generation_config.max_length is not None:
        generation_config.max_length = min(generation_config.max_length, limit)
