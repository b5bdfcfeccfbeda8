"""The interface every inference engine implements, and what it reports at log time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EngineReport:
    """What preparing an engine measured: stored as the version's metrics (agreement with torch)."""

    metrics: dict[str, Any] = field(default_factory=dict)


class Engine:
    """One way to run a logged model's forward pass. Subclasses set ``name`` and implement both methods."""

    name: str = ""
    reads_samples: bool = False
    """Whether ``prepare`` checks the engine on ``sample_input_data`` (so logging it is not a wasted argument)."""
    files: tuple[str, ...] = ()
    """Names under the model folder that ``prepare`` writes (left behind when a version changes engine)."""
    tasks: tuple[str, ...] | None = None
    """Pipeline tasks this engine runs; None: the tasks whose ``Task.engines`` name it."""
    option_keys: tuple[str, ...] = ()
    """``log_model`` options this engine reads besides ``engine``."""
    own_threads: bool = False
    """Whether the engine sizes and binds its own compute threads (duckreg leaves torch's alone then)."""
    one_per_process: bool = False
    """Whether a process can hold only one loaded model of this engine at a time (vLLM's parallel state)."""

    def torch_device(self, device: str) -> str:
        """Where the torch weights load before ``attach``: the run device, unless this engine replaces them."""
        return device

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse options this engine cannot honour, before anything is saved."""

    def check_functions(self, functions: Sequence[Any], where: str) -> None:
        """Refuse, before anything is saved or run, a version whose functions this engine cannot answer."""

    def default_device(self) -> str:
        """Where a version on this engine runs when its options name no device (a GPU torch can see, else CPU)."""
        from duckreg import model_cache

        return model_cache.default_device()

    def load_model(
        self, folder: Path, task: str, settings: dict[str, Any], options: dict[str, Any], device: str
    ) -> Any | None:
        """At load time: a model object that answers on its own (the task calls it), or None to load the torch
        pipeline and ``attach`` this engine to it. ``settings`` are the pipeline's logged call settings."""
        return None

    def library_versions(self) -> dict[str, str]:
        """Versions of the libraries this engine computes with (part of every result cache key)."""
        return {}

    def run_conditions(self, options: dict[str, Any]) -> dict[str, str]:
        """What a version's results depend on in this process besides its files and libraries (the precision
        it actually runs in here): part of its result cache key. Cheap: a cached answer needs it, and
        should not wait for torch to import."""
        return {}

    def prepare(self, model: Any, folder: Path, options: dict[str, Any], sample_texts: list[str]) -> EngineReport:
        """At log time: write the engine's files under ``folder`` (the model's folder) and check them.

        ``model`` is the pipeline or ``TaskModel`` being logged, with its torch weights. A check that
        fails raises ``ValueError``, so the version is not logged.
        """
        raise NotImplementedError

    def attach(self, model: Any, folder: Path, options: dict[str, Any], device: str) -> None:
        """At load time: make ``model`` (a freshly loaded pipeline or ``TaskModel``) run on this engine."""
        raise NotImplementedError
