"""Stages: named folders or object-store prefixes (any fsspec URL) a registry reads and writes files in
(batch jobs' input and output, stage files read from SQL, chat media).

A path ``@name/sub/path`` resolves inside the stage root and can never leave it: ``..`` segments,
absolute sub-paths and (for local stages) symlinks pointing outside are refused.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from duckreg.identifiers import IDENTIFIER, is_identifier

_STAGE_PATH = re.compile(rf"^@({IDENTIFIER.pattern})(?:/(.*))?$")


@dataclass(frozen=True)
class Stage:
    name: str
    url: str

    @property
    def filesystem(self) -> Any:
        import fsspec

        fs, _ = fsspec.core.url_to_fs(self.url)
        return fs

    @property
    def root(self) -> str:
        import fsspec

        _, root = fsspec.core.url_to_fs(self.url)
        return root.rstrip("/") or "/"

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.filesystem)

    def resolve(self, relative: str) -> str:
        """The filesystem path of ``relative`` inside this stage; refuses anything outside it."""
        relative = relative or ""
        if relative.startswith("/") or "\\" in relative:
            raise ValueError(f"Stage path '@{self.name}/{relative}' must be relative to the stage.")
        normal = posixpath.normpath(relative) if relative else "."
        if normal == ".." or normal.startswith("../"):
            raise ValueError(f"Stage path '@{self.name}/{relative}' leaves the stage.")
        path = self.root if normal == "." else f"{self.root}/{normal}"
        if self.is_local:
            real_root = os.path.realpath(self.root)
            real = os.path.realpath(path)
            if real != real_root and not real.startswith(real_root + os.sep):
                raise ValueError(f"Stage path '@{self.name}/{relative}' leaves the stage (through a symlink).")
        return path

    def relative(self, path: str) -> str:
        """The stage-relative form of a filesystem path under the root."""
        root = self.root.rstrip("/")
        path = path.rstrip("/")
        if path == root:
            return ""
        if not path.startswith(root + "/"):
            # Some filesystems (memory://) report paths with a leading slash.
            stripped = path.lstrip("/")
            if stripped.startswith(root.lstrip("/") + "/"):
                return stripped[len(root.lstrip("/")) + 1 :]
            raise ValueError(f"{path!r} is not inside stage {self.name}")
        return path[len(root) + 1 :]


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return set(protocol) if isinstance(protocol, (tuple, list)) else {protocol}


def parse_stage_path(stage_path: str) -> tuple[str, str]:
    """``@name/sub/path`` -> (name, 'sub/path'); a missing ``@`` is added."""
    text = stage_path if stage_path.startswith("@") else "@" + stage_path
    match = _STAGE_PATH.match(text)
    if not match:
        raise ValueError(f"Invalid stage path {stage_path!r}: expected '@stage_name/optional/path'.")
    return match.group(1), (match.group(2) or "").strip("/")


def normalize_url(url: str) -> str:
    """Local folders become absolute ``file://`` URLs; other fsspec URLs are kept as they are."""
    if "://" in url:
        return url
    return "file://" + os.path.abspath(os.path.expanduser(url))


class StageCatalog:
    """Stages kept in the registry's catalog table ``stages``."""

    def __init__(self, catalog: Any) -> None:
        self._catalog = catalog

    def create(self, name: str, url: str, comment: str | None = None, *, replace: bool = False) -> Stage:
        if not is_identifier(name):
            raise ValueError(f"Invalid stage name {name!r}: use letters, digits and underscores.")
        if not isinstance(url, str) or not url:
            raise ValueError("A stage needs a url: a local folder or an fsspec URL such as 's3://bucket/prefix'.")
        existing = self.find(name)
        if existing is not None and not replace:
            raise ValueError(f"Stage {name} already exists. Drop it first, or pass replace=True.")
        stage = Stage(name, normalize_url(url))
        fs = stage.filesystem  # fails early on an unknown protocol or a missing fsspec extra
        fs.makedirs(stage.root, exist_ok=True)
        self._catalog.execute(
            "INSERT OR REPLACE INTO {schema}.stages (stage_key, name, url, comment, created_on) "
            "VALUES (?, ?, ?, ?, current_timestamp)",
            [name.lower(), name, stage.url, comment],
        )
        return stage

    def find(self, name: str) -> Stage | None:
        rows = self._catalog.query("SELECT name, url FROM {schema}.stages WHERE stage_key = ?", [name.lower()])
        return Stage(rows[0][0], rows[0][1]) if rows else None

    def get(self, name: str) -> Stage:
        stage = self.find(name)
        if stage is None:
            raise ValueError(f"Stage {name} does not exist. Create it with registry.create_stage({name!r}, url).")
        return stage

    def drop(self, name: str) -> None:
        """Forget the stage; its files are left where they are."""
        self.get(name)
        self._catalog.execute("DELETE FROM {schema}.stages WHERE stage_key = ?", [name.lower()])

    def rows(self) -> list[tuple]:
        return self._catalog.query("SELECT name, url, comment, created_on FROM {schema}.stages ORDER BY name")

    def locate(self, stage_path: str) -> tuple[Stage, str]:
        """``@stage/sub/path`` -> (stage, filesystem path), checked to stay inside the stage."""
        name, relative = parse_stage_path(stage_path)
        stage = self.get(name)
        return stage, stage.resolve(relative)

    def list_files(self, stage_path: str, pattern: str | None = None) -> list[str]:
        """Full stage paths (``@stage/a/b.png``) of the files under ``stage_path``, sorted.

        ``pattern`` is a regular expression the whole stage path must match, as in Snowflake's LIST.
        """
        stage, path = self.locate(stage_path)
        fs = stage.filesystem
        regex = re.compile(pattern) if pattern else None
        if fs.isfile(path):
            found = [path]
        elif fs.isdir(path):
            found = [p for p in fs.find(path) if not fs.isdir(p)]
        else:
            found = []
        out = []
        for item in found:
            full = f"@{stage.name}/{stage.relative(item)}"
            if stage.is_local:
                try:
                    stage.resolve(stage.relative(item))
                except ValueError:
                    continue  # a symlink out of the stage is not listed
            if regex is None or regex.fullmatch(full):
                out.append(full)
        return sorted(out)

    def open(self, stage_path: str, mode: str = "rb") -> Any:
        stage, path = self.locate(stage_path)
        return stage.filesystem.open(path, mode)

    def read_bytes(self, stage_path: str) -> bytes:
        with self.open(stage_path) as handle:
            return handle.read()


def read_stage_bytes(stages: dict[str, Stage], stage_path: str) -> bytes:
    """Read ``@stage/path`` given the stages by lower-cased name (no catalog needed, e.g. on a Ray worker)."""
    name, relative = parse_stage_path(stage_path)
    stage = stages.get(name.lower())
    if stage is None:
        raise ValueError(f"Stage {name} does not exist.")
    with stage.filesystem.open(stage.resolve(relative), "rb") as handle:
        return handle.read()
