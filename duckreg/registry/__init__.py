"""The user-facing API, shaped like Snowflake's Model Registry: one class per module."""

from duckreg.registry.model import Model
from duckreg.registry.model_version import ModelVersion
from duckreg.registry.registry import Registry

__all__ = ["Model", "ModelVersion", "Registry"]
