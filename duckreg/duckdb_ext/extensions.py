"""DuckDB extensions duckreg loads (quack for ``serve``, vss and fts for semantic indexes), wherever they are.

DuckDB 2.0 installs extensions from its repository (``INSTALL vss``), which needs the network once; DuckDB
1.5.x also ships them on PyPI as ``duckdb-extension-<name>`` packages, whose file must match the running
DuckDB version exactly. ``load`` tries an installed extension first, then the PyPI package's file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

from duckreg.identifiers import quote_literal


def extension_file(name: str) -> Path | None:
    """The extension shipped by the PyPI package ``duckdb-extension-<name>`` for this DuckDB, if installed."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
        if candidate.is_file():
            return candidate
    return None


def install_hint(name: str) -> str:
    """How to make extension ``name`` loadable for the DuckDB this process runs."""
    version = duckdb.__version__
    if version.startswith("1."):
        return (
            f"Install it from PyPI for DuckDB {version} (the versions must match exactly): "
            f"pip install duckdb-extension-{name}=={version}"
        )
    return (
        f"Run INSTALL {name}; once on a machine that can reach the DuckDB extension repository, or copy "
        f"{name}.duckdb_extension for DuckDB {version} into ~/.duckdb/extensions/v{version}/<platform>/. "
        f"DuckDB 1.5.x installs it from PyPI instead (pip install duckdb-extension-{name}==<duckdb version>)."
    )


def load(con: duckdb.DuckDBPyConnection, name: str) -> str:
    """Load extension ``name`` (installed, or from its PyPI package): where it was loaded from, or a
    ``LookupError`` saying it is not available here and how to get it."""
    try:
        con.execute(f"LOAD {name}")
        return "installed"
    except duckdb.Error:
        path = extension_file(name)
        if path is None:
            raise LookupError(
                f"The DuckDB extension {name!r} is not available for DuckDB {duckdb.__version__} in this "
                f"environment. {install_hint(name)}"
            ) from None
        con.execute(f"LOAD {quote_literal(str(path))}")
        return str(path)
