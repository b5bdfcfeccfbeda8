"""Artifact folders: written under a hidden staging name, published by one rename.

A version's folder is ``<root>/<model>/<version>/`` holding ``model/`` (save_pretrained output)
and ``manifest.json``. Nothing half-written is ever visible under a published name.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ArtifactStore:
    """A local folder of model version artifacts."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def path(self, relative: str) -> Path:
        return self.root / relative

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh hidden folder under the root, removed unless it was published."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / f".staging-{uuid.uuid4().hex}"
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, staged: Path, model_key: str, version_key: str) -> str:
        """Move a staged folder to its final name; returns the path relative to the root."""
        relative = f"{model_key}/{version_key}"
        target = self.root / relative
        if target.exists():
            raise FileExistsError(f"artifact folder {target} already exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(target)
        return relative

    def remove(self, relative: str) -> None:
        target = self.root / relative
        if target.exists():
            # Rename first so a crash mid-delete never leaves a half-deleted folder under its name.
            doomed = self.root / f".deleting-{uuid.uuid4().hex}"
            target.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        parent = target.parent
        if parent != self.root and parent.exists() and not any(parent.iterdir()):
            parent.rmdir()


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder``, keyed by relative POSIX path."""
    hashes = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        hashes[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return hashes
