"""Snowflake model-call syntax, rewritten to duckreg's SQL functions (with sqlglot).

Supported, in any duckreg SQL entry point (``duckreg.sql``, the shell, ``duckreg run``/``sql``):

    MODEL(m, v1)!predict(a, b)        -> m__v1(a, b)
    MODEL(m, LAST)!predict(a)         -> the last version (FIRST, DEFAULT and aliases too)
    m!predict(a, k => 3)              -> m(a, k := 3)       (default version, named parameters)
    m!predict(*)                      -> m(<input columns by signature name>)
    m!predict(a):label                -> m(a)['label']      (a field of the result)
    WITH mv AS MODEL m VERSION v1 SELECT mv!predict(a) FROM t

Only the calls are rewritten, in place: the rest of the statement reaches DuckDB exactly as
written, and statements without model calls pass through untouched. Anything else in model-call
position raises ``ValueError``; nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from duckreg.identifiers import IDENTIFIER, is_identifier, quote

# Cheap test before tokenizing: a '!' followed by a name (not '!='), or a model CTE.
_ID = IDENTIFIER.pattern
_MODEL_CALL = re.compile(r"!(?!=)\s*[A-Za-z_\"]")
_MODEL_CTE = re.compile(
    rf"(?P<lead>\bWITH\s+|,\s*)(?P<alias>{_ID})\s+AS\s+MODEL\s+(?P<model>{_ID})"
    rf"(?:\s+VERSION\s+(?P<version>{_ID}))?(?=\s*(?:,|SELECT\b|WITH\b|\())\s*(?P<comma>,)?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ResolvedFunction:
    """The SQL function a model call maps to, and its signature's input names (for ``*``)."""

    sql_name: str
    inputs: tuple[str, ...]
    model_key: str
    single_output: str | None = None
    """The output's name when the function has one (SQL returns its value itself, not a struct)."""


Resolver = Callable[[str, str | None, str], ResolvedFunction]


def has_model_calls(sql: str) -> bool:
    return bool(_MODEL_CALL.search(sql) or _MODEL_CTE.search(sql))


def rewrite(sql: str, resolve: Resolver) -> tuple[str, set[str]]:
    """The DuckDB SQL for ``sql`` and the model keys it calls.

    Only the model calls are rewritten, in place in the text; every other character of the
    statement stays as written, so DuckDB syntax around the calls keeps its meaning.
    """
    if not has_model_calls(sql):
        return sql, set()
    from sqlglot.dialects.snowflake import Snowflake
    from sqlglot.errors import TokenError
    from sqlglot.tokens import TokenType

    text, aliases = _strip_model_ctes(sql)
    try:
        tokens = Snowflake().tokenize(text)
    except TokenError as exc:
        raise ValueError(f"Cannot read this statement: {exc}") from None
    edits: list[tuple[int, int, str]] = []  # (start, end exclusive, replacement)
    used: set[str] = set()
    for i, token in enumerate(tokens):
        if token.token_type == TokenType.EXCLAMATION:
            _rewrite_call(text, tokens, i, aliases, resolve, edits, used)
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text, used


def _name(token) -> str | None:
    text = token.text.strip('"')
    return text if is_identifier(text) else None


def _rewrite_call(text, tokens, i, aliases, resolve: Resolver, edits: list, used: set[str]) -> None:
    """Record the edits that turn the model call whose ``!`` is token ``i`` into a function call."""
    from sqlglot.tokens import TokenType

    def fail(why: str) -> ValueError:
        near = text[tokens[max(i - 4, 0)].start : tokens[min(i + 3, len(tokens) - 1)].end + 1]
        return ValueError(f"Unsupported model call syntax near {near!r}: {why}")

    def matching(index: int, step: int) -> int:
        opening, closing = (
            (TokenType.L_PAREN, TokenType.R_PAREN) if step > 0 else (TokenType.R_PAREN, TokenType.L_PAREN)
        )
        depth = 0
        while 0 <= index < len(tokens):
            if tokens[index].token_type == opening:
                depth += 1
            elif tokens[index].token_type == closing:
                depth -= 1
                if depth == 0:
                    return index
            index += step
        raise fail("unbalanced parentheses")

    if i == 0:
        raise fail("'!' needs a model before it")
    before = tokens[i - 1]
    if before.token_type == TokenType.R_PAREN:
        opening = matching(i - 1, -1)
        if opening == 0 or tokens[opening - 1].text.upper() != "MODEL":
            raise fail("use MODEL(name, version)!method(...) or name!method(...)")
        inner = tokens[opening + 1 : i - 1]
        parts = [_name(t) for t in inner if t.token_type != TokenType.COMMA]
        commas = sum(t.token_type == TokenType.COMMA for t in inner)
        if len(parts) not in (1, 2) or commas != len(parts) - 1 or None in parts:
            raise fail("MODEL() takes a model name and optionally a version or alias")
        model, version = parts[0], parts[1] if len(parts) == 2 else None
        ref_start = tokens[opening - 1].start
    elif _name(before):
        if i >= 2 and tokens[i - 2].token_type == TokenType.DOT:
            raise fail("qualified model names are not supported; use MODEL(name, version)")
        model, version = aliases.get(_name(before).lower(), (_name(before), None))
        ref_start = before.start
    else:
        raise fail("use MODEL(name, version)!method(...) or name!method(...)")
    if i + 2 >= len(tokens) or not _name(tokens[i + 1]) or tokens[i + 2].token_type != TokenType.L_PAREN:
        raise fail("expected !method(arguments)")
    resolved = resolve(model, version, _name(tokens[i + 1]))
    used.add(resolved.model_key)
    close = matching(i + 2, 1)
    depth = 0
    for k in range(i + 3, close):
        kind = tokens[k].token_type
        if kind in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
            depth += 1
        elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
            depth -= 1
        elif depth == 0 and kind == TokenType.STAR:
            columns = ", ".join(quote(name) for name in resolved.inputs)
            edits.append((tokens[k].start, tokens[k].end + 1, columns))
        elif depth == 0 and kind == TokenType.FARROW:
            edits.append((tokens[k].start, tokens[k].end + 1, ":="))
    # `:field` (and `:a.b`) on the result become struct field access.
    fields: list[str] = []
    k = close + 1
    while k + 1 < len(tokens) and (
        tokens[k].token_type == TokenType.COLON or (fields and tokens[k].token_type == TokenType.DOT)
    ):
        field = _name(tokens[k + 1])
        if field is None:
            raise fail("expected a field name after ':'")
        fields.append(field)
        k += 2
    end = tokens[k - 1].end + 1 if fields else 0
    if fields and resolved.single_output is not None and fields[0].lower() == resolved.single_output.lower():
        fields = fields[1:]  # `:embedding` of a one-output function is the value SQL returns already
        if not fields:
            edits.append((tokens[close + 1].start, end, ""))
    edits.append((ref_start, tokens[i + 2].end + 1, ("(" if fields else "") + resolved.sql_name + "("))
    if fields:
        access = ")" + "".join(f"['{f}']" for f in fields)
        edits.append((tokens[close + 1].start, end, access))


def _strip_model_ctes(sql: str) -> tuple[str, dict[str, tuple[str, str | None]]]:
    """Take ``alias AS MODEL m [VERSION v]`` entries out of WITH clauses; returns the aliases."""
    aliases: dict[str, tuple[str, str | None]] = {}

    def drop(match: re.Match) -> str:
        aliases[match.group("alias").lower()] = (match.group("model"), match.group("version"))
        lead = match.group("lead")
        if lead.strip().upper() == "WITH":
            return "WITH " if match.group("comma") else ""
        return "," if match.group("comma") else ""

    previous = None
    while previous != sql:
        previous = sql
        sql = _MODEL_CTE.sub(drop, sql, count=1)
    return sql, aliases
