"""Batch inference: ``ModelVersion.run_batch`` over tables, queries, DataFrames or stage files.

The spec classes mirror ``snowflake.ml.model.batch``.
"""

from duckreg.batch.specs import (
    ColumnHandlingOptions,
    FileEncoding,
    InferenceEngine,
    InputFormat,
    InputSpec,
    JobSpec,
    OutputSpec,
    SaveMode,
)

__all__ = [
    "ColumnHandlingOptions",
    "FileEncoding",
    "InferenceEngine",
    "InputFormat",
    "InputSpec",
    "JobSpec",
    "OutputSpec",
    "SaveMode",
]
