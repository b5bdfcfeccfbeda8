"""OpenAI chat ``messages`` as a job's rows hold them: a JSON string (Snowflake's examples) or a list of structs."""

from __future__ import annotations

import json
from typing import Any


def parse_messages(value: Any) -> list[dict[str, Any]]:
    """The messages of one row as a list of dicts; a message without a role, or anything else, is an error."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"messages is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, list) or not value:
        raise ValueError(f"messages must be a non-empty list of {{role, content}} objects, got {value!r}")
    for message in value:
        if not isinstance(message, dict) or not message.get("role"):
            raise ValueError(f"every message needs a role, got {message!r}")
    return value
