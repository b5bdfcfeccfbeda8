"""A model version's function as the catalog stores it: name, signature, and how it is computed.

Model handlers create these when a version is logged; the inference core runs them; the DuckDB
layer types its SQL functions from them. It imports nothing but the signature types, so all three
can depend on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from duckreg.model_signature import DataType, FeatureSpec, ModelSignature


class Implementation(str, enum.Enum):
    """What computes a function's rows."""

    TASK = "task"
    """The version's task module (``tasks/<task>.py``), with the signature it inferred."""
    GENERIC = "generic"
    """The pipeline called with a user signature's inputs by name, outputs taken by name."""
    CUSTOM = "custom"
    """A method of a custom model, called with a DataFrame."""
    OPENAI_CHAT = "openai-chat"
    """A chat model behind an OpenAI-style signature."""


@dataclass(frozen=True)
class FunctionSpec:
    """One callable function of a model version."""

    name: str
    target_method: str
    signature: ModelSignature
    json_outputs: frozenset[str] = frozenset()
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Outputs whose stored shape is more precise than the signature's (a table's cell coordinates)."""
    implementation: Implementation = Implementation.TASK

    def output_shape(self, name: str) -> tuple[int, ...] | None:
        """The shape an output's values have: the stored one, else the signature's."""
        spec = next(o for o in self.signature.outputs if o.name == name)
        return self.output_shapes.get(name, spec.shape)

    def replaced_columns(self) -> set[str]:
        """Columns (lower-cased) of an input table that this function's outputs replace in its result.

        An output replaces the column of its name: conversational's ``generated_responses`` is an
        input and an output, and the result carries the updated list, not both.
        """
        return {o.name.lower() for o in self.signature.outputs}

    def single_file_input(self, optional_inputs: frozenset[str]) -> str | None:
        """The input's name when the function takes exactly one required scalar BYTES input (a file)."""
        required = [s for s in self.signature.inputs if s.name not in optional_inputs]
        if len(required) != 1:
            return None
        only = required[0]
        if isinstance(only, FeatureSpec) and only.dtype is DataType.BYTES and only.shape is None:
            return only.name
        return None

    def to_record(self) -> dict[str, Any]:
        return {
            "runner": self.implementation.value,
            "name": self.name,
            "target_method": self.target_method,
            "signature": self.signature.to_dict(),
            "json_outputs": sorted(self.json_outputs),
            "sql_shapes": {k: list(v) for k, v in self.output_shapes.items()},
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> FunctionSpec:
        return cls(
            name=record["name"],
            target_method=record["target_method"],
            signature=ModelSignature.from_dict(record["signature"]),
            json_outputs=frozenset(record.get("json_outputs", ())),
            output_shapes={k: tuple(v) for k, v in record.get("sql_shapes", {}).items()},
            implementation=Implementation(record.get("runner", "task")),
        )
