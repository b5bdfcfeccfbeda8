"""What every generative task shares: its runtime parameters and its generation config.

Generative functions declare the usual ``generate`` arguments as ParamSpecs whose default is None
("use the model's own setting"), so ``mv.run(df, params={"max_new_tokens": 40})`` and
``summarizer(doc, max_new_tokens := 40)`` work on every generative model.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from duckreg.model_signature import DataType, ParamGroupSpec, ParamSpec
from duckreg.tasks.limits import positions
from duckreg.values import drop_unset_params, freeze

_INT = (
    "max_length max_new_tokens min_length min_new_tokens num_beams num_beam_groups top_k no_repeat_ngram_size "
    "forced_bos_token_id forced_eos_token_id num_return_sequences pad_token_id bos_token_id eos_token_id "
    "encoder_no_repeat_ngram_size decoder_start_token_id num_assistant_tokens prompt_lookup_num_tokens "
    "max_matching_ngram_size assistant_early_exit assistant_lookbehind target_lookbehind prefill_chunk_size"
).split()
_DOUBLE = (
    "max_time penalty_alpha temperature top_p min_p top_h typical_p epsilon_cutoff eta_cutoff diversity_penalty "
    "repetition_penalty encoder_repetition_penalty length_penalty assistant_confidence_threshold guidance_scale"
).split()
_BOOL = (
    "do_sample renormalize_logits remove_invalid_values token_healing output_attentions output_hidden_states "
    "output_scores output_logits is_assistant low_memory disable_compile use_cache"
).split()
_STRING = ["early_stopping", "num_assistant_tokens_schedule", "cache_implementation"]
_SHAPED = {
    "stop_strings": (DataType.STRING, (-1,)),
    "suppress_tokens": (DataType.INT64, (-1,)),
    "begin_suppress_tokens": (DataType.INT64, (-1,)),
    "bad_words_ids": (DataType.INT64, (-1, -1)),
    "force_words_ids": (DataType.INT64, (-1, -1)),
    "forced_decoder_ids": (DataType.INT64, (-1, -1)),
}


_WATERMARKING = ParamGroupSpec(
    "watermarking_config",
    [
        ParamSpec("greenlist_ratio", DataType.DOUBLE, None),
        ParamSpec("bias", DataType.DOUBLE, None),
        ParamSpec("hashing_key", DataType.INT64, None),
        ParamSpec("seeding_scheme", DataType.STRING, None),
        ParamSpec("context_width", DataType.INT64, None),
    ],
)


def _generation_params() -> list[ParamSpec | ParamGroupSpec]:
    specs: list[ParamSpec | ParamGroupSpec] = [ParamSpec(name, DataType.INT64, None) for name in _INT]
    specs += [ParamSpec(name, DataType.DOUBLE, None) for name in _DOUBLE]
    specs += [ParamSpec(name, DataType.BOOL, None) for name in _BOOL]
    specs += [ParamSpec(name, DataType.STRING, None) for name in _STRING]
    specs += [ParamSpec(name, dtype, None, shape=shape) for name, (dtype, shape) in _SHAPED.items()]
    return [*specs, _WATERMARKING]


def generation_params(params: dict[str, Any]) -> dict[str, Any]:
    """The ``generate`` arguments a caller set; a watermarking struct becomes the config object
    ``generate`` needs (its unset fields keep the library defaults)."""
    given = drop_unset_params(params)
    watermarking = given.get("watermarking_config")
    if isinstance(watermarking, dict):
        from transformers import WatermarkingConfig

        given["watermarking_config"] = WatermarkingConfig(**drop_unset_params(watermarking))
    return given


# The ``generate`` arguments a generative function accepts at call time (all default to the model's).
GENERATION_PARAMS: list[ParamSpec | ParamGroupSpec] = _generation_params()
GENERATION_PARAM_NAMES = frozenset(p.name for p in GENERATION_PARAMS)

# Defaults the transformers 4 seq2seq pipelines apply unless the model's generation config says otherwise.
PIPELINE_DEFAULTS = {"max_new_tokens": 256, "num_beams": 4}


def pipeline_generation_config(model: Any, tokenizer: Any, task: str) -> tuple[Any, str]:
    """The generation config and input prefix a transformers 4 seq2seq pipeline would use.

    Pipeline defaults (``num_beams=4``, ``max_new_tokens=256``) first, then values the model's own
    generation config sets, then the task's entry in ``config.task_specific_params`` (T5's
    ``"translate English to French: "`` prefix and its generation settings).
    """
    from transformers import GenerationConfig

    config = GenerationConfig(**PIPELINE_DEFAULTS)
    global_defaults = GenerationConfig()
    for key, value in vars(model.generation_config).items():
        if key.startswith("_") or key == "transformers_version":
            continue
        if key == "cache_implementation" and value == "hybrid":
            continue
        default = getattr(global_defaults, key, None)
        if getattr(config, key, None) == default and value != default:
            setattr(config, key, value)
    if config.temperature == 0.0:
        config.do_sample = False
    if (
        config.max_new_tokens == PIPELINE_DEFAULTS["max_new_tokens"]
        and config.max_length is not None
        and config.max_length != 20
    ):
        # A model that sets max_length keeps it rather than the pipeline's max_new_tokens.
        config.max_new_tokens = None
    prefix = getattr(model.config, "prefix", None) or ""
    task_params = getattr(model.config, "task_specific_params", None) or {}
    if task in task_params:
        extra = copy.deepcopy(dict(task_params[task]))
        prefix = extra.pop("prefix", prefix) or ""
        config.update(**extra)
    if tokenizer.pad_token_id is not None and config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config, prefix


def greedy(params: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether generation is explicitly greedy or beam search (``do_sample`` false in the call or as logged).

    A model's own generation config may turn sampling on, so an unset ``do_sample`` does not count.
    """
    chosen = params.get("do_sample")
    if chosen is None:
        chosen = settings.get("do_sample")
    return chosen is False


def cap_new_tokens(model: Any, prompt_length: int, requested: int) -> int:
    """``requested`` new tokens, or fewer so that prompt plus answer fit the model's context
    (``model`` a torch model, or the number of tokens it reads).

    Raises ``ValueError`` when the prompt alone fills the context.
    """
    limit = model if isinstance(model, int) or model is None else positions(model)
    if limit is None:
        return requested
    if prompt_length >= limit:
        raise ValueError(f"the prompt has {prompt_length} tokens; the model reads at most {limit}")
    return min(requested, limit - prompt_length)


TokenListener = Callable[[int, list[int]], None]
"""Told a choice's new token ids as they are generated: ``listener(choice, ids)``."""


class TokenStreamer:
    """A transformers ``generate`` streamer for a batch: each sequence's new token goes to its request's
    listener (``per_request`` sequences per request, one per returned choice). The first ``put`` is the
    prompt, which nobody is told."""

    def __init__(self, listeners: Sequence[TokenListener | None], per_request: int) -> None:
        self.listeners = listeners
        self.per_request = per_request
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        # One token per sequence per step ([sequences]); assisted decoding hands several ([sequences, tokens]).
        rows = value.reshape(len(self.listeners) * self.per_request, -1).tolist()
        for sequence, tokens in enumerate(rows):
            listener = self.listeners[sequence // self.per_request]
            if listener is not None:
                listener(sequence % self.per_request, tokens)

    def end(self) -> None:
        """Nothing to flush: each token was handed on as it came."""


def generate_unpadded(
    model: Any,
    requests: Sequence[tuple[list[int], dict[str, Any]]],
    listeners: Sequence[TokenListener | None] | None = None,
    **shared: Any,
) -> list[list[list[int]]]:
    """The new token ids of every returned sequence, for each (prompt ids, generate kwargs) request.

    Requests with the same prompt length and the same kwargs run as one batch, so no prompt is
    padded and each result equals that prompt generated alone. ``listeners`` (one per request, or None)
    are told each request's tokens as they are generated.
    """
    import torch

    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, (ids, kwargs) in enumerate(requests):
        groups[(len(ids), freeze(kwargs))].append(index)
    out: list[list[list[int]]] = [[] for _ in requests]
    for (length, _), indices in groups.items():
        input_ids = torch.tensor([requests[i][0] for i in indices], device=model.device)
        call = dict(requests[indices[0]][1])
        constraint = call.get("logits_processor")
        if hasattr(constraint, "build"):  # one per call: it keeps a state for each sequence it constrains
            call["logits_processor"] = constraint.build(len(indices) * call.get("num_return_sequences", 1), length)
        following = [listeners[i] for i in indices] if listeners else []
        if any(following):
            call["streamer"] = TokenStreamer(following, call.get("num_return_sequences", 1))
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **call, **shared)
        per_request = output.shape[0] // len(indices)
        for n, index in enumerate(indices):
            out[index] = output[n * per_request : (n + 1) * per_request, length:].tolist()
    return out


@dataclass(frozen=True)
class GenerationRequest:
    """One chat request as every generation backend takes it: the prompt and OpenAI's controls, checked.

    A text model's prompt is its token ids (the task applies the chat template once, for every backend);
    a model that reads media gets the ``messages`` and its processor (or vLLM's chat parser) builds it.
    """

    prompt_ids: list[int] | None
    messages: list[dict[str, Any]] | None
    max_new_tokens: int
    temperature: float = 1.0
    n: int = 1
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    json_schema: dict[str, Any] | None = None
    """The JSON schema every answer must follow (``{}``: any JSON object); None for free text."""
    on_tokens: TokenListener | None = field(default=None, compare=False, repr=False)
    """Told each choice's new token ids as they are generated (a streamed answer); None: nobody follows."""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 and self.n == 1


@dataclass
class Generated:
    """A backend's answer to one request: the prompt's length and each choice's new token ids."""

    prompt_tokens: int
    choices: list[list[int]] = field(default_factory=list)


@runtime_checkable
class ChatBackend(Protocol):
    """What computes chat answers for a version (transformers ``generate``, vLLM): the task does the rest."""

    name: str
    tokenizer: Any
    context_length: int | None
    """The most tokens prompt plus answer may hold (None: no fixed limit)."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generated]:
        """Each request's answer, in order; a request this backend cannot run raises ``InputError``."""
        ...
