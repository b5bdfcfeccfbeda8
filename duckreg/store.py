"""What the layers below the registry read of it: its connection, its catalog tables and its stages.

Batch jobs and the jobs table take this protocol, not ``Registry``, so they depend on three things and the
import graph has no loop back up to the registry (``Registry`` satisfies it as it is).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import duckdb

    from duckreg.catalog import Catalog
    from duckreg.stages import StageCatalog


class RegistryStore(Protocol):
    """A registry's storage: the DuckDB connection it reads inputs on, its catalog and its stages."""

    @property
    def connection(self) -> duckdb.DuckDBPyConnection: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def stages(self) -> StageCatalog: ...
