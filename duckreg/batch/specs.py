"""The batch-inference specs, as in ``snowflake.ml.model.batch``: where input comes from, how file
columns are read, where output goes, and how the job runs."""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import uuid
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

from duckreg.identifiers import is_identifier

_Spec = TypeVar("_Spec")


def spec(cls: type[_Spec]) -> type[_Spec]:
    """A dataclass whose missing, unknown or invalid arguments raise ``ValueError``, as Snowflake's
    pydantic specs do (a ``ValidationError`` is a ``ValueError``)."""
    cls = dataclass(cls)
    init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls) if f.init]

    @functools.wraps(init)
    def checked_init(self: Any, *args: Any, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ValueError(f"{cls.__name__} has no field(s) {unknown}; its fields are {names}.")
        try:
            init(self, *args, **kwargs)
        except TypeError as exc:
            raise ValueError(f"{cls.__name__}: {exc}") from None

    cls.__init__ = checked_init
    return cls


class SaveMode(str, enum.Enum):
    """What to do when the output location already holds files."""

    OVERWRITE = "overwrite"
    ERROR = "error"


class InferenceEngine(str, enum.Enum):
    """Where ``run_batch`` computes (``inference_engine_options={"engine": InferenceEngine.VLLM}``); the plain
    strings work too."""

    LOCAL = "local"
    PYTHON_GENERIC = "python_generic"  # Snowflake's name for the default engine: the local one here
    RAY = "ray"
    VLLM = "vllm"


class InputFormat(str, enum.Enum):
    """How a column refers to its data."""

    FULL_STAGE_PATH = "full_stage_path"


class FileEncoding(str, enum.Enum):
    """What the model receives for a file: its bytes, or its bytes as a base64 string."""

    RAW_BYTES = "raw_bytes"
    BASE64 = "base64"
    BASE64_DATA_URL = "base64_data_url"


class ColumnHandlingOptions(TypedDict):
    input_format: InputFormat
    convert_to: FileEncoding


@spec
class InputSpec:
    """Runtime ``params`` for the function and per-column file handling (keys match case-insensitively)."""

    params: dict[str, Any] | None = None
    column_handling: dict[str, ColumnHandlingOptions] | None = None
    partition_column: str | None = None

    def __post_init__(self) -> None:
        if self.partition_column is not None:
            raise ValueError(
                "partition_column is not supported for these models in batch inference jobs. "
                "Please remove the partition_column from input_spec."
            )
        for name in ("params", "column_handling"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"InputSpec.{name} must be a dict, got {type(value).__name__}")
        handling = {}
        for column, options in (self.column_handling or {}).items():
            if not isinstance(options, dict) or set(options) != {"input_format", "convert_to"}:
                raise ValueError(
                    f"column_handling[{column!r}] must be {{'input_format': InputFormat..., "
                    f"'convert_to': FileEncoding...}}, got {options!r}"
                )
            handling[column] = {
                "input_format": InputFormat(options["input_format"]),
                "convert_to": FileEncoding(options["convert_to"]),
            }
        self.column_handling = handling or None


@spec
class OutputSpec:
    """A stage location (``@stage/path/``) for the parquet output, and what to do if it is not empty."""

    stage_location: str | None = None
    mode: SaveMode = SaveMode.ERROR
    base_stage_location: str | None = None

    def __post_init__(self) -> None:
        if (self.stage_location is None) == (self.base_stage_location is None):
            raise ValueError(
                "OutputSpec needs exactly one of stage_location (the output folder, such as '@my_stage/out/') "
                "or base_stage_location (a folder under which each job writes to a folder named after it)."
            )
        for name in ("stage_location", "base_stage_location"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.startswith("@")):
                raise ValueError(f"{name} must be a stage path such as '@my_stage/out/', got {value!r}")
        try:
            self.mode = SaveMode(self.mode)
        except ValueError:
            raise ValueError(f"mode must be one of {[m.value for m in SaveMode]}, got {self.mode!r}") from None

    def location_for(self, job_name: str) -> str:
        """Where a job of this name writes: the stage location, or ``<base_stage_location>/<job_name>/``."""
        if self.stage_location is not None:
            return self.stage_location
        return f"{self.base_stage_location.rstrip('/')}/{job_name}/"


_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|[KMGT]i?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30,
          "ti": 2**40}  # fmt: skip


def parse_memory(text: str) -> int:
    """``"8GiB"``, ``"8Gi"``, ``"512MB"`` -> bytes; a bare number needs a unit."""
    match = _MEMORY.match(str(text))
    if not match or match.group(2) is None:
        raise ValueError(f"memory_requests must have a unit, e.g. '8GiB' or '512Mi', got {text!r}")
    unit = match.group(2).lower().removesuffix("b")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_count(text: str | int | float, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid {what}: {text!r} (expected a number such as '2' or '0.5')") from None
    if value <= 0:
        raise ValueError(f"Invalid {what}: {text!r} (must be positive)")
    return value


@spec
class JobSpec:
    """How the job runs. Every field is either honoured by the chosen engine or refused."""

    job_name: str | None = None
    job_name_prefix: str | None = None
    cpu_requests: str | None = None
    memory_requests: str | None = None
    gpu_requests: str | None = None
    max_batch_rows: int = 1024
    replicas: int | None = None
    num_workers: int | None = None
    function_name: str | None = None
    block: bool = False
    force_rebuild: bool = False
    on_error: str = "raise"
    """``raise`` (Snowflake's behaviour): a failing row fails the job. ``continue``: every row is written,
    a failed one with NULL outputs and its message in the ``_error`` column, and the job ends DONE."""

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "continue"):
            raise ValueError(f"on_error must be 'raise' or 'continue', got {self.on_error!r}")
        if self.job_name is not None and self.job_name_prefix is not None:
            raise ValueError("Give job_name or job_name_prefix, not both.")
        for name in ("job_name", "job_name_prefix"):
            value = getattr(self, name)
            if value is not None and not is_identifier(str(value)):
                raise ValueError(f"{name} must be an identifier ([A-Za-z_][A-Za-z0-9_]*), got {value!r}")
        if not isinstance(self.max_batch_rows, int) or self.max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be a positive integer, got {self.max_batch_rows!r}")
        if self.cpu_requests is not None:
            parse_count(self.cpu_requests, "cpu_requests")
        if self.gpu_requests is not None:
            parse_count(self.gpu_requests, "gpu_requests")
        if self.memory_requests is not None:
            parse_memory(self.memory_requests)
        for name in ("replicas", "num_workers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def new_job_name(self) -> str:
        """``job_name``, or a fresh ``<job_name_prefix or BATCH_INFERENCE>_<UUID>``."""
        return self.job_name or f"{self.job_name_prefix or 'BATCH_INFERENCE'}_{uuid.uuid4().hex.upper()}"
