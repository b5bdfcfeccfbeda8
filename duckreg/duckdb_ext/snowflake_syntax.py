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
from typing import TYPE_CHECKING

from duckreg.identifiers import IDENTIFIER, is_identifier, quote

if TYPE_CHECKING:
    from sqlglot.tokens import Token, TokenType

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


def _name(token: Token) -> str | None:
    text = token.text.strip('"')
    return text if is_identifier(text) else None


def _rewrite_call(
    text: str, tokens: list[Token], i: int, aliases: dict[str, tuple[str, str | None]], resolve: Resolver,
    edits: list[tuple[int, int, str]], used: set[str],
) -> None:  # fmt: skip
    """Record the edits that turn the model call whose ``!`` is token ``i`` into a function call."""
    _CallRewrite(text, tokens, i, edits).rewrite(aliases, resolve, used)


@dataclass
class _CallRewrite:
    """One ``model!method(...)`` call: where its parts are among the tokens, and the edits that replace them."""

    text: str
    tokens: list[Token]
    bang: int
    """The index of the call's ``!``."""
    edits: list[tuple[int, int, str]]

    def fail(self, why: str) -> ValueError:
        tokens, i = self.tokens, self.bang
        near = self.text[tokens[max(i - 4, 0)].start : tokens[min(i + 3, len(tokens) - 1)].end + 1]
        return ValueError(f"Unsupported model call syntax near {near!r}: {why}")

    def kind(self, index: int) -> TokenType:
        return self.tokens[index].token_type

    def matching(self, index: int, step: int) -> int:
        """The index of the parenthesis that closes (``step`` 1) or opens (-1) the one at ``index``."""
        from sqlglot.tokens import TokenType

        opening, closing = (TokenType.L_PAREN, TokenType.R_PAREN)[::step]
        depth = 0
        while 0 <= index < len(self.tokens):
            if self.kind(index) == opening:
                depth += 1
            elif self.kind(index) == closing:
                depth -= 1
                if depth == 0:
                    return index
            index += step
        raise self.fail("unbalanced parentheses")

    def rewrite(self, aliases: dict[str, tuple[str, str | None]], resolve: Resolver, used: set[str]) -> None:
        from sqlglot.tokens import TokenType

        tokens, i = self.tokens, self.bang
        model, version, ref_start = self.target(aliases)
        if i + 2 >= len(tokens) or not _name(tokens[i + 1]) or self.kind(i + 2) != TokenType.L_PAREN:
            raise self.fail("expected !method(arguments)")
        resolved = resolve(model, version, _name(tokens[i + 1]))
        used.add(resolved.model_key)
        close = self.matching(i + 2, 1)
        self.arguments(i + 3, close, resolved)
        fields, end = self.fields(close + 1)
        if fields and resolved.single_output is not None and fields[0].lower() == resolved.single_output.lower():
            fields = fields[1:]  # `:embedding` of a one-output function is the value SQL returns already
            if not fields:
                self.edits.append((tokens[close + 1].start, end, ""))
        self.edits.append((ref_start, tokens[i + 2].end + 1, ("(" if fields else "") + resolved.sql_name + "("))
        if fields:
            self.edits.append((tokens[close + 1].start, end, ")" + "".join(f"['{f}']" for f in fields)))

    def target(self, aliases: dict[str, tuple[str, str | None]]) -> tuple[str, str | None, int]:
        """(model, version or None, where the reference starts) of ``MODEL(m[, v])!`` or ``name!``."""
        from sqlglot.tokens import TokenType

        tokens, i = self.tokens, self.bang
        if i == 0:
            raise self.fail("'!' needs a model before it")
        before = tokens[i - 1]
        if before.token_type == TokenType.R_PAREN:
            opening = self.matching(i - 1, -1)
            if opening == 0 or tokens[opening - 1].text.upper() != "MODEL":
                raise self.fail("use MODEL(name, version)!method(...) or name!method(...)")
            inner = tokens[opening + 1 : i - 1]
            parts = [_name(t) for t in inner if t.token_type != TokenType.COMMA]
            commas = sum(t.token_type == TokenType.COMMA for t in inner)
            if len(parts) not in (1, 2) or commas != len(parts) - 1 or None in parts:
                raise self.fail("MODEL() takes a model name and optionally a version or alias")
            return parts[0], parts[1] if len(parts) == 2 else None, tokens[opening - 1].start
        name = _name(before)
        if not name:
            raise self.fail("use MODEL(name, version)!method(...) or name!method(...)")
        if i >= 2 and self.kind(i - 2) == TokenType.DOT:
            raise self.fail("qualified model names are not supported; use MODEL(name, version)")
        model, version = aliases.get(name.lower(), (name, None))
        return model, version, before.start

    def arguments(self, start: int, close: int, resolved: ResolvedFunction) -> None:
        """A top-level ``*`` becomes the function's input columns; ``=>`` becomes ``:=``."""
        from sqlglot.tokens import TokenType

        depth = 0
        for k in range(start, close):
            kind = self.kind(k)
            if kind in (TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE):
                depth += 1
            elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE):
                depth -= 1
            elif depth == 0 and kind == TokenType.STAR:
                columns = ", ".join(quote(name) for name in resolved.inputs)
                self.edits.append((self.tokens[k].start, self.tokens[k].end + 1, columns))
            elif depth == 0 and kind == TokenType.FARROW:
                self.edits.append((self.tokens[k].start, self.tokens[k].end + 1, ":="))

    def fields(self, k: int) -> tuple[list[str], int]:
        """The ``:field`` (and ``:a.b``) accesses after the call from token ``k``, and where they end."""
        from sqlglot.tokens import TokenType

        fields: list[str] = []
        while k + 1 < len(self.tokens) and (
            self.kind(k) == TokenType.COLON or (fields and self.kind(k) == TokenType.DOT)
        ):
            field = _name(self.tokens[k + 1])
            if field is None:
                raise self.fail("expected a field name after ':'")
            fields.append(field)
            k += 2
        return fields, (self.tokens[k - 1].end + 1 if fields else 0)


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
