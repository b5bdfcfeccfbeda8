"""Names users give duckreg objects (models, versions, aliases, tags, stages, jobs) and how SQL quotes them."""

from __future__ import annotations

import re
from typing import Any

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A name SQL accepts unquoted: what models, versions, aliases, tags, stages and job names must be."""
MAX_NAME_LENGTH = 128


def is_identifier(text: Any) -> bool:
    return isinstance(text, str) and IDENTIFIER.fullmatch(text) is not None


def normalize(name: str) -> str:
    """The key a name is stored and looked up by: names are case-insensitive, as SQL identifiers are."""
    return name.lower()


def check_identifier(name: Any, what: str) -> str:
    """``name`` if it can name a model, version, alias or tag; a ``ValueError`` saying why not otherwise."""
    if not is_identifier(name):
        raise ValueError(
            f"Invalid {what} {name!r}: use letters, digits and underscores, starting with a letter or underscore."
        )
    if "__" in name:
        raise ValueError(f"Invalid {what} {name!r}: '__' is reserved (it separates model and version in SQL names).")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"Invalid {what} {name[:20]!r}...: at most {MAX_NAME_LENGTH} characters, got {len(name)}.")
    return name


def quote(identifier: str) -> str:
    """An SQL identifier in double quotes, safe whatever it holds."""
    return '"' + identifier.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """An SQL string literal, safe whatever it holds."""
    return "'" + text.replace("'", "''") + "'"
