"""ONNX Runtime as an inference engine for encoder models, in fp32 or dynamically quantized int8.

At log time the torch module is exported to ``onnx/model.onnx`` inside the model's folder (so its
sha256 is logged and checked like every other file), optionally quantized, then run beside torch on
sample texts: an export whose outputs disagree beyond the floors is refused and nothing is logged.
At load time the pipeline's torch module is replaced by ``OnnxModule``, which takes the same
keyword tensors and returns the same named outputs, so pipelines and tasks run unchanged.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from duckreg import model_cache
from duckreg.inference_engines.agreement import floors_over, shortfalls
from duckreg.inference_engines.base import Engine, EngineReport
from duckreg.inference_engines.onnx_encoder import (
    RUNTIME_FILE,
    FastTokenizer,
    OnnxEncoder,
    light_settings,
    read_config,
    runs_light,
    tokenizer_matches,
)
from duckreg.inference_engines.reference import (
    Reference,
    agreement_with,
    encode,
    graph_inputs,
    length_batches,
    speeds_by_length,
    torch_outputs,
)

ONNX_FILE = "onnx/model.onnx"
QUANTIZATIONS = ("int8",)
SKIPPED_OUTPUTS = frozenset({"hidden_states", "attentions", "past_key_values"})
FP32_FLOORS = {"min_cosine": 0.9999, "label_agreement": 1.0}
"""An fp32 export must give torch's outputs: anything less is an export bug, never a trade-off."""
INT8_FLOORS = {"mean_cosine": 0.99, "neighbour_overlap": 0.9, "label_agreement": 0.95}
"""Defaults for int8; ``options['quality_floor']`` lowers (or raises) any of them."""
GELU_OPS = frozenset({"Erf", "Tanh", "Gelu", "FastGelu", "BiasGelu"})
OPSET = 17
FUSED_MARGIN = 1.02
"""With ``graph="auto"`` the fused graph is kept when it runs more than this many times the plain one's speed
at every timed length (a margin over timing noise): a graph that is faster on pages but slower on sentences
would slow the short rows down."""


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("options['engine'] = 'onnxruntime' needs ONNX Runtime: pip install 'duckreg[onnx]'") from None
    return onnxruntime


def floors_for(options: dict[str, Any]) -> dict[str, float]:
    """The agreement floors an export must reach: fixed for fp32, the defaults or the user's for int8."""
    quantize = options.get("quantize")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"options['quantize'] must be one of {QUANTIZATIONS} or None, got {quantize!r}")
    given = options.get("quality_floor")
    if given is None:
        return dict(INT8_FLOORS if quantize else FP32_FLOORS)
    if quantize is None:
        raise ValueError("options['quality_floor'] applies to a quantized export; fp32 must match torch")
    return floors_over(INT8_FLOORS, given)


def _traceable(module: Any, inputs: list[str], outputs: list[str]) -> Any:
    """The torch module as a function of positional tensors returning a tuple (what the exporter traces)."""
    import torch

    class Traceable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *tensors: Any) -> tuple[Any, ...]:
            result = self.inner(**dict(zip(inputs, tensors, strict=True)))
            return tuple(result[name] for name in outputs)

    return Traceable().eval()


def export(module: Any, tokenizer: Any, target: Path) -> None:
    """Trace ``module`` on a padded batch and write an ONNX graph with dynamic batch and sequence axes."""
    import warnings

    import torch

    inputs = graph_inputs(module, tokenizer)
    sample = encode(tokenizer, ["a short text", "a somewhat longer text, so that the batch is padded"])
    feed = [sample[name] for name in inputs]
    with torch.inference_mode():
        probe = module(**dict(zip(inputs, feed, strict=True)))
    outputs = [name for name, value in probe.items() if name not in SKIPPED_OUTPUTS and isinstance(value, torch.Tensor)]
    wrapped = _traceable(module, inputs, outputs)
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs} | {name: {0: "batch"} for name in outputs}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about Python control flow the padded sample exercises
        torch.onnx.export(
            wrapped,
            tuple(feed),
            str(target),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(source: Path, target: Path, fp32_nodes: list[str]) -> None:
    """Dynamic int8: weight MatMuls per output channel, activations quantized per batch at run time;
    the MatMuls named in ``fp32_nodes`` stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    advice = _DropPreprocessingAdvice()
    root.addFilter(advice)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=fp32_nodes,
        )
    finally:
        root.removeFilter(advice)


def int8_ladder(graph: Any) -> list[tuple[str, list[str]]]:
    """The MatMuls to keep fp32, from the fastest choice to the most faithful: each step keeps more of
    the feed-forward blocks, whose activations carry the outliers that cost int8 the most agreement.

    Measured on all-MiniLM-L6-v2 against fp32 (1,000 near-duplicate texts): quantizing every MatMul
    runs 1.9x fp32 at top-10 neighbour overlap 0.83; keeping the down-projections 1.5x at 0.88; and
    every other up-projection too 1.3x at 0.91; every feed-forward MatMul 1.2x at 0.93.
    """
    down = feed_forward_outputs(graph)
    up = feed_forward_inputs(graph)
    return [
        ("feed_forward_down", down),
        ("feed_forward_down_and_half_up", down + up[::2]),
        ("feed_forward", down + up),
    ]


class _DropPreprocessingAdvice(logging.Filter):
    """The quantizer logs advice to pre-process the graph for static quantization; dynamic has no use for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def feed_forward_outputs(graph: Any, hops: int = 4) -> list[str]:
    """Names of the MatMuls whose input comes out of a GELU (an ``Erf`` or ``Tanh`` a few nodes up)."""
    producers = {output: node for node in graph.node for output in node.output}

    def after_gelu(tensor: str, depth: int) -> bool:
        node = producers.get(tensor)
        if node is None or depth == 0:
            return False
        if node.op_type in GELU_OPS:
            return True
        return any(after_gelu(name, depth - 1) for name in node.input)

    return [node.name for node in graph.node if node.op_type == "MatMul" and after_gelu(node.input[0], hops)]


def feed_forward_inputs(graph: Any, hops: int = 4) -> list[str]:
    """Names of the MatMuls whose output goes into a GELU a few nodes down (the up-projections), in graph order."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def before_gelu(tensor: str, depth: int) -> bool:
        if depth == 0:
            return False
        return any(
            node.op_type in GELU_OPS or any(before_gelu(name, depth - 1) for name in node.output)
            for node in consumers.get(tensor, [])
        )

    return [node.name for node in graph.node if node.op_type == "MatMul" and before_gelu(node.output[0], hops)]


def open_session(path: Path, device: str) -> Any:
    """An inference session on CUDA where the device and the installed ONNX Runtime allow, else the CPU."""
    onnxruntime = _require_onnxruntime()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = model_cache.compute_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return onnxruntime.InferenceSession(str(path), options, providers=providers)


class OnnxModule:
    """Stands in for the torch module: keyword tensors in, named tensors out, run by ONNX Runtime.

    With ``tensors="pt"`` it takes and gives torch tensors (under a transformers pipeline); with
    ``tensors="np"`` numpy arrays, and torch is never imported.
    """

    def __init__(self, session: Any, config: Any, nbytes: int, tensors: str = "pt") -> None:
        self.session = session
        self.config = config
        self.nbytes = nbytes
        self.tensors = tensors
        self.device: Any = "cpu"
        if tensors == "pt":
            import torch

            self.device = torch.device("cpu")
            self.dtype = torch.float32
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self.main_input_name = "input_ids"

    def __call__(self, **inputs: Any) -> OnnxOutputs:
        return self.forward(**inputs)

    def forward(self, **inputs: Any) -> OnnxOutputs:
        """Run the graph on the inputs it declares (``token_type_ids`` default to zeros)."""
        feed = {}
        for name in self.input_names:
            value = inputs.get(name)
            if value is None and name == "token_type_ids":
                value = np.zeros(np.shape(inputs["input_ids"]), dtype=np.int64)
            if value is None:
                raise ValueError(f"the ONNX graph needs input {name!r}")
            if not isinstance(value, np.ndarray):
                value = value.detach().cpu().numpy()
            feed[name] = value.astype(np.int64, copy=False)
        results = self.session.run(self.output_names, feed)
        if self.tensors == "pt":
            import torch

            results = [torch.from_numpy(r) for r in results]
        return OnnxOutputs(zip(self.output_names, results, strict=True))

    def eval(self) -> OnnxModule:
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxModule:
        return self

    def can_generate(self) -> bool:
        return False


class OnnxOutputs(dict):
    """Named outputs that read like a ``transformers`` ``ModelOutput``: by key, attribute or position."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())


def session_forward(session: Any) -> Any:
    """``inputs -> outputs`` by name over numpy arrays, for the agreement gate and the timing."""
    module = OnnxModule(session, None, 0, tensors="np")
    return lambda batch: dict(module(**batch))


@contextmanager
def eager_attention(module: Any) -> Iterator[None]:
    """Attention written out as MatMul and Softmax while exporting (the pattern ONNX Runtime's fusion
    recognises), restored afterwards; a model without the switch exports as it is."""
    config = getattr(module, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = getattr(module, "set_attn_implementation", None)
    if not callable(switch) or before in (None, "eager"):
        yield
        return
    switch("eager")
    try:
        yield
    finally:
        switch(before)


def fuse(module: Any, tokenizer: Any, target: Path) -> dict[str, int]:
    """Export with eager attention and fuse it with ONNX Runtime's transformer optimizer (attention, embedding
    and skip LayerNorm, bias GELU); the fused operators by count, empty when no pattern matched."""
    from onnxruntime.transformers.optimizer import optimize_model

    eager = target.with_name("eager.onnx")
    with eager_attention(module):
        export(module, tokenizer, eager)
    config = module.config
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or 0
    width = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or 0
    # Its modules log under their bare names ("fusion_attention", ...) about patterns they did not find:
    # notes for its developers, not for someone logging a model.
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        # opt_level 0: only the portable fusions; the session applies its own, machine-specific ones at load.
        optimized = optimize_model(str(eager), model_type="bert", num_heads=heads, hidden_size=width, opt_level=0)
    finally:
        logging.disable(disabled)
    operators = {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}
    optimized.save_model_to_file(str(target))
    return operators


GRAPHS = ("auto", "fused", "plain")


class OnnxRuntimeEngine(Engine):
    """Encoders exported to ONNX and run by ONNX Runtime (CPU, or CUDA where the GPU package is installed)."""

    name = "onnxruntime"
    reads_samples = True
    files = (ONNX_FILE.split("/")[0],)
    own_threads = True
    option_keys = ("graph",)

    def torch_device(self, device: str) -> str:
        return "cpu"  # the torch module only hands its config over; ONNX Runtime picks its own provider

    def default_device(self) -> str:
        onnxruntime = _require_onnxruntime()
        return "cuda" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"

    def check_options(self, options: dict[str, Any]) -> None:
        if options.get("engine_args") is not None:
            raise ValueError("options['engine_args'] holds vllm.LLM arguments; it needs options['engine'] = 'vllm'")
        if options.get("precision") not in (None, "fp32"):
            raise ValueError(
                f"options['precision'] = {options['precision']!r} runs on the torch engine: ONNX Runtime's CPU "
                "kernels compute in fp32 or int8 (options['quantize'] = 'int8')"
            )
        graph = options.get("graph", "auto")
        if graph not in GRAPHS:
            raise ValueError(f"options['graph'] must be one of {GRAPHS}, got {graph!r}")
        if graph != "auto" and options.get("quantize") is not None:
            raise ValueError("options['graph'] chooses among fp32 graphs; an int8 export quantizes the plain graph")
        _require_onnxruntime()
        floors_for(options)

    def prepare(self, model: Any, folder: Path, options: dict[str, Any], sample_texts: list[str]) -> EngineReport:
        floors = floors_for(options)
        module, tokenizer = model.model, model.tokenizer
        target = folder / ONNX_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        reference = torch_outputs(module, tokenizer, sample_texts)
        with tempfile.TemporaryDirectory(prefix="duckreg-onnx-") as scratch:
            exported = Path(scratch) / "model.onnx"
            export(module, tokenizer, exported)
            if options.get("quantize") == "int8":
                figures = _best_int8(exported, target, reference, floors, len(sample_texts))
            else:
                figures = _best_fp32(model, exported, target, reference, options.get("graph", "auto"), sample_texts)
        matches = tokenizer_matches(folder, tokenizer, sample_texts)
        runtime = {"tokenizer": "tokenizers" if matches else "transformers", "graph": figures["graph"]}
        (folder / RUNTIME_FILE).write_text(json.dumps(runtime, indent=2) + "\n")
        return EngineReport(metrics={"engine_agreement": {"engine": self.name, **options_summary(options), **figures}})

    def load_model(
        self, folder: Path, task: str, settings: dict[str, Any], options: dict[str, Any], device: str
    ) -> Any | None:
        """Embedding and classification versions whose tokenizer checked out at log time: without torch."""
        split = light_settings(task, settings)
        if split is None or not runs_light(folder, task, settings):
            return None
        from duckreg.tasks.limits import clamp_tokenizer

        path = folder / ONNX_FILE
        module = OnnxModule(open_session(path, device), read_config(folder), path.stat().st_size, tensors="np")
        tokenizer = FastTokenizer(folder)
        clamp_tokenizer(tokenizer, module)
        return OnnxEncoder(task, module, tokenizer, *split)

    def attach(self, model: Any, folder: Path, options: dict[str, Any], device: str) -> None:
        path = folder / ONNX_FILE
        model.model = OnnxModule(open_session(path, device), model.model.config, path.stat().st_size)


def _gate(path: Path, reference: Reference, floors: dict[str, float]) -> tuple[dict[str, Any], list[str]]:
    """The agreement figures of the graph at ``path`` and the floors it misses."""
    figures: dict[str, Any] = agreement_with(reference, session_forward(open_session(path, "cpu")))
    return figures, shortfalls(figures, floors)


def _best_int8(
    exported: Path, target: Path, reference: Reference, floors: dict[str, float], samples: int
) -> dict[str, Any]:
    """The fastest int8 step that passes the floors: keep more in fp32 only when needed."""
    import onnx

    failed: list[str] = []
    for kept, fp32_nodes in int8_ladder(onnx.load(str(exported)).graph):
        quantize_int8(exported, target, fp32_nodes)
        figures, failed = _gate(target, reference, floors)
        if not failed:
            return {**figures, "fp32_kept": kept, "graph": "plain"}
    raise ValueError(
        f"the int8 ONNX export disagrees with torch on {samples} sample texts: {'; '.join(failed)}, even with every "
        "feed-forward MatMul kept fp32. Lower the floor with options['quality_floor'] if the trade-off is "
        "acceptable, or log without quantize."
    )


def _best_fp32(
    model: Any, exported: Path, target: Path, reference: Reference, graph: str, texts: list[str]
) -> dict[str, Any]:
    """The plain export, or its fused form when it agrees as closely and (with ``graph="auto"``) runs faster."""
    figures, failed = _gate(exported, reference, FP32_FLOORS)
    if failed:
        raise ValueError(
            f"the fp32 ONNX export disagrees with torch on the sample texts: {'; '.join(failed)}. "
            "Log it with the torch engine."
        )
    chosen, fusion = exported, fusion_candidate(model, exported, reference, graph, texts)
    if fusion.get("chosen"):
        chosen = exported.with_name("fused.onnx")
        figures = {name: fusion[name] for name in figures}
    shutil.move(chosen, target)
    return {**figures, "graph": "fused" if fusion.get("chosen") else "plain", "fusion": fusion}


def fusion_candidate(model: Any, exported: Path, reference: Reference, graph: str, texts: list[str]) -> dict[str, Any]:
    """Try the fused graph beside ``exported``: what fused, how it agrees, how fast it runs, and whether it is
    chosen. ``graph="fused"`` insists (a fused graph that fails the gate refuses the log), ``"plain"`` skips it."""
    if graph == "plain":
        return {"skipped": "options['graph'] = 'plain'"}
    fused = exported.with_name("fused.onnx")
    try:
        operators = fuse(model.model, model.tokenizer, fused)
    except Exception as exc:  # an architecture the optimizer does not know: the plain graph serves
        if graph == "fused":
            raise ValueError(f"ONNX Runtime's transformer optimizer cannot fuse this model: {exc}") from exc
        return {"skipped": f"the optimizer failed: {type(exc).__name__}: {exc}"}
    if not operators:
        if graph == "fused":
            raise ValueError("ONNX Runtime's transformer optimizer found nothing to fuse in this model")
        return {"skipped": "no fusable pattern in this model"}
    figures, failed = _gate(fused, reference, FP32_FLOORS)
    outcome: dict[str, Any] = {"operators": operators, **figures}
    if failed:
        if graph == "fused":
            raise ValueError(f"the fused ONNX graph disagrees with torch: {'; '.join(failed)}. Log it without "
                             "options['graph'] = 'fused'.")  # fmt: skip
        return {**outcome, "refused": "; ".join(failed), "chosen": False}
    plain_forward, fused_forward = (
        session_forward(open_session(exported, "cpu")),
        session_forward(open_session(fused, "cpu")),
    )
    speeds = speeds_by_length(plain_forward, fused_forward, length_batches(model, texts))
    faster_everywhere = min(speeds.values()) > FUSED_MARGIN
    return {**outcome, "speed_vs_plain": speeds, "chosen": graph == "fused" or faster_everywhere}


def options_summary(options: dict[str, Any]) -> dict[str, Any]:
    return {"quantize": options.get("quantize")}
