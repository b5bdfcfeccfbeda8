"""summarization, text2text-generation and translation: one string in, one generated string out.

duckreg runs these on ``AutoModelForSeq2SeqLM`` itself (transformers 5 has no pipeline for them)
with the transformers 4 pipelines' defaults, so a model gives the same text on both lines. With
``num_return_sequences`` > 1 the output column holds a JSON list of ``{<output>: text}`` objects.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Sequence
from typing import Any

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature, ParamSpec
from duckreg.tasks._generation import GENERATION_PARAMS, generation_params, greedy, pipeline_generation_config
from duckreg.tasks.base import InferredFunction, RunContext, Task, TaskModel
from duckreg.tasks.limits import cap_generation, check_lengths
from duckreg.values import to_json

# Settings that shape tokenization or decoding; every other setting is passed to ``generate``.
_TOKENIZE_KEYS = frozenset({"truncation", "src_lang", "tgt_lang", "prefix"})
_DECODE_KEYS = frozenset({"clean_up_tokenization_spaces", "return_text", "return_type", "return_tensors"})

_COMMON_PARAMS = [
    ParamSpec("clean_up_tokenization_spaces", DataType.BOOL, None),
    ParamSpec("truncation", DataType.BOOL, None),
]


class Seq2SeqGeneration(Task):
    """One task of the family: its names and its input and output column names."""

    def deterministic(self, params: dict[str, Any], settings: dict[str, Any]) -> bool:
        return greedy(params, settings)

    def __init__(
        self, names: tuple[str, ...], input_name: str, output_name: str, extra_params: Sequence[ParamSpec] = ()
    ) -> None:
        self.names = names
        self.input_name = input_name
        self.output_name = output_name
        self.params = [*extra_params, *_COMMON_PARAMS, *GENERATION_PARAMS]

    def model_class(self, config: Any) -> str:
        return "AutoModelForSeq2SeqLM"

    def serves(self, name: str) -> bool:
        return name in self.names or (self is TRANSLATION and _TRANSLATION_PAIR.fullmatch(name) is not None)

    def resolve_task(self, task: str, config: Any) -> str:
        """As transformers 4 did: plain "translation" on a model that knows its language pair (T5's
        ``task_specific_params``) means that pair."""
        if task != "translation":
            return task
        for key in getattr(config, "task_specific_params", None) or {}:
            if key.startswith("translation"):
                warnings.warn(
                    f'"translation" task was used, instead of "translation_XX_to_YY", defaulting to "{key}"',
                    UserWarning,
                    stacklevel=4,
                )
                return key
        return task

    def infer(self, task: str, pipeline: Any, settings: dict[str, Any], options: dict[str, Any]) -> InferredFunction:
        signature = ModelSignature(
            inputs=[FeatureSpec(name=self.input_name, dtype=DataType.STRING)],
            outputs=[FeatureSpec(name=self.output_name, dtype=DataType.STRING)],
            params=self.params,
        )
        return InferredFunction(signature)

    def predict(self, ctx: RunContext, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        task_model: TaskModel = ctx.model
        texts = [row[self.input_name] for row in rows]
        outputs = generate_texts(
            task_model, texts, {**task_model.settings, **generation_params(ctx.params)}, ctx.batch_size
        )
        out = []
        for generated in outputs:
            if len(generated) == 1:
                out.append({self.output_name: generated[0]})
            else:
                out.append({self.output_name: to_json([{self.output_name: text} for text in generated])})
        return out


def generate_texts(
    task_model: TaskModel, texts: Sequence[str], settings: dict[str, Any], batch_size: int
) -> list[list[str]]:
    """Generate for each text in padded batches; one list of texts per input (num_return_sequences)."""
    model, tokenizer = task_model.model, task_model.tokenizer
    if "generation" not in task_model.cache:
        task_model.cache["generation"] = pipeline_generation_config(model, tokenizer, task_model.task)
    generation_config, prefix = task_model.cache["generation"]
    prefix = settings.get("prefix", prefix)
    tokenize = {k: v for k, v in settings.items() if k in _TOKENIZE_KEYS}
    clean_up = bool(settings.get("clean_up_tokenization_spaces", False))
    generate_kwargs = {k: v for k, v in settings.items() if k not in _TOKENIZE_KEYS | _DECODE_KEYS}
    # Settings go into a copy of the config (what generate would do), so generate gets one source.
    generation_config = copy.deepcopy(generation_config)
    generate_kwargs = generation_config.update(**generate_kwargs)
    cap_generation(generation_config, model)
    src_lang, tgt_lang = _languages(task_model.task, tokenize)
    truncation = tokenize.get("truncation", True)
    if not truncation:
        check_lengths("inputs", [prefix + text for text in texts], tokenizer, what="pass truncation := true to cut it")
    results: list[list[str]] = []
    for start in range(0, len(texts), batch_size):
        batch = [prefix + text for text in texts[start : start + batch_size]]
        if getattr(tokenizer, "_build_translation_inputs", None) and (src_lang or tgt_lang):
            # Multilingual tokenizers (mBART, M2M100, NLLB) set the source language and force the target.
            inputs = tokenizer._build_translation_inputs(
                batch, return_tensors="pt", truncation=truncation, src_lang=src_lang, tgt_lang=tgt_lang, padding=True
            )
        else:
            inputs = tokenizer(batch, padding=True, truncation=truncation, return_tensors="pt")
        inputs.pop("token_type_ids", None)
        inputs = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in inputs.items()}
        output_ids = model.generate(**inputs, generation_config=generation_config, **generate_kwargs)
        decoded = tokenizer.batch_decode(output_ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up)
        per_input = len(decoded) // len(batch)
        results.extend(decoded[i * per_input : (i + 1) * per_input] for i in range(len(batch)))
    return results


def _languages(task: str, settings: dict[str, Any]) -> tuple[str | None, str | None]:
    """Explicit ``src_lang``/``tgt_lang``, else the codes in a ``translation_xx_to_yy`` task name."""
    src, tgt = settings.get("src_lang"), settings.get("tgt_lang")
    if src is None and tgt is None:
        parts = task.split("_")
        if len(parts) == 4 and parts[0] == "translation" and parts[2] == "to":
            return parts[1], parts[3]
    return src, tgt


# translation_xx_to_yy for any two-letter language codes.
_TRANSLATION_PAIR = re.compile(r"translation_[a-z]{2}_to_[a-z]{2}")

SUMMARIZATION = Seq2SeqGeneration(("summarization",), "documents", "summary_text")
TEXT2TEXT = Seq2SeqGeneration(("text2text-generation",), "inputs", "generated_text")
TRANSLATION = Seq2SeqGeneration(
    ("translation",),
    "inputs",
    "translation_text",
    extra_params=[ParamSpec("src_lang", DataType.STRING, None), ParamSpec("tgt_lang", DataType.STRING, None)],
)
TASK = (SUMMARIZATION, TEXT2TEXT, TRANSLATION)
