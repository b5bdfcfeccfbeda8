"""mkdocs hook: the contributing page's layer map, generated from the layer test's own list."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_LAYERS_TEST = Path(__file__).resolve().parent.parent / "tests" / "unit" / "test_layers.py"
_NAMES = ["leaves", "tasks, catalog, stages, engines", "handlers, SQL names and types", "the inference core",
          "front-door plumbing", "batch submission", "the registry", "front doors"]  # fmt: skip


def _layer_map() -> str:
    spec = importlib.util.spec_from_file_location("layers_under_test", _LAYERS_TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = ["| layer | modules |", "|---|---|"]
    for index, names in enumerate(module.LAYERS):
        label = _NAMES[index] if index < len(_NAMES) else ""
        rows.append(f"| {index}: {label} | {', '.join(f'`{name}`' for name in names)} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    return markdown.replace("<!-- layer-map -->", _layer_map()) if "<!-- layer-map -->" in markdown else markdown
