"""Artifact folders: written under a hidden staging name, published by one rename, reclaimed when orphaned.

A version's folder is ``<root>/<model>/<version>/`` holding ``model/`` (save_pretrained output)
and ``manifest.json``. Nothing half-written is ever visible under a published name, and nothing a
killed process leaves behind blocks a later write:

* a staging folder (``.staging-<pid>-*``) of a process that is gone is deleted;
* a folder being deleted is first renamed to ``.deleting-<pid>-*``, so it never shows half-removed;
* a published folder that no catalog row points at (the process died between publishing and its
  catalog commit, or between a delete's commit and the removal) is an orphan: it is deleted, and a
  retry of the same ``log_model`` publishes in its place.

The catalog commit is the point of truth: a version exists exactly when its row does. Writers of
one artifact root in this process take turns (``writing()``); DuckDB's single-writer lock keeps
other processes from writing the same catalog at the same time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from duckreg import faults

MANIFEST = "manifest.json"
_HIDDEN_PREFIXES = (".staging-", ".deleting-")
_ROOT_LOCKS: dict[Path, threading.RLock] = {}
_ROOT_LOCKS_GUARD = threading.Lock()
# Staging folders this process is writing now (any store, any thread).
_ACTIVE: set[Path] = set()


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` (and the catalog's copy) records about a version: how to load and run it."""

    model_type: str
    """The model handler that saved it and loads it (``huggingface_pipeline``, ``custom``)."""
    task: str | None
    functions: list[dict[str, Any]]
    """``FunctionSpec.to_record()`` of each function."""
    pipeline_settings: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = False
    library_versions: dict[str, str] = field(default_factory=dict)
    pip_requirements: list[str] = field(default_factory=list)
    conda_dependencies: list[str] = field(default_factory=list)
    target_platforms: list[str] = field(default_factory=list)
    python_version: str | None = None
    registry: dict[str, Any] | None = None
    """The registry that wrote it (database file and schema): only it may reclaim the folder."""
    handler_data: dict[str, Any] | None = None
    """What the model handler needs to load it again (a custom model's class and context)."""
    files: dict[str, str] | None = None
    """sha256 of every file under ``model/``, checked before loading."""
    format_version: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        known = {name for name in cls.__dataclass_fields__}
        if "custom" in data and "handler_data" not in data:
            data["handler_data"] = data["custom"]  # the key custom models used before handlers shared one
        return cls(**{k: v for k, v in data.items() if k in known})


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ArtifactStore:
    """A local folder of model version artifacts, owned by one registry (``owner`` goes in manifests)."""

    def __init__(self, root: str | Path, owner: dict[str, Any]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.owner = owner

    def path(self, relative: str) -> Path:
        return self.root / relative

    @contextmanager
    def writing(self) -> Iterator[None]:
        """One writer of this root at a time in this process (log, delete, reclaim)."""
        with _ROOT_LOCKS_GUARD:
            lock = _ROOT_LOCKS.setdefault(self.root, threading.RLock())
        with lock:
            yield

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh hidden folder under the root, removed unless it was published."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root / f".staging-{os.getpid()}-{uuid.uuid4().hex}"
        folder.mkdir()
        _ACTIVE.add(folder)
        try:
            yield folder
        finally:
            _ACTIVE.discard(folder)
            shutil.rmtree(folder, ignore_errors=True)

    def publish(self, staged: Path, model_key: str, version_key: str, is_referenced: Callable[[Path], bool]) -> str:
        """Move a staged folder to its final name; returns the path relative to the root.

        A folder already there that no catalog row points at is a killed write's orphan and makes way.
        """
        relative = f"{model_key}/{version_key}"
        target = self.root / relative
        if target.exists():
            if is_referenced(target):
                raise FileExistsError(f"artifact folder {target} already exists and belongs to a logged version")
            self._discard(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(target)
        return relative

    def remove(self, path: Path) -> None:
        """Delete a published folder; it disappears from its name in one rename, then is removed."""
        if path.exists():
            self._discard(path, kill_point="delete:mid_removal")
        parent = path.parent
        if parent != self.root and parent.exists() and not any(parent.iterdir()):
            parent.rmdir()

    def _discard(self, path: Path, kill_point: str | None = None) -> None:
        doomed = self.root / f".deleting-{os.getpid()}-{uuid.uuid4().hex}"
        path.rename(doomed)
        if kill_point:
            faults.point(kill_point)
        shutil.rmtree(doomed, ignore_errors=True)

    def reclaim(self, referenced: set[Path]) -> list[Path]:
        """Delete what killed writes left: dead staging and deleting folders, and orphaned versions.

        ``referenced`` holds the folders the catalog points at. Only folders whose manifest names this
        store's owner are taken as orphans, so registries sharing a root never reclaim each other's.
        Returns what was removed.
        """
        if not self.root.is_dir():
            return []
        removed = []
        for entry in self.root.iterdir():
            if entry.name.startswith(_HIDDEN_PREFIXES):
                if self._abandoned(entry):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
                continue
            if not entry.is_dir():
                continue
            for folder in entry.iterdir():
                if folder.is_dir() and folder.resolve() not in referenced and self._owned(folder):
                    self._discard(folder)
                    removed.append(folder)
            if not any(entry.iterdir()):
                entry.rmdir()
        return removed

    def _abandoned(self, hidden: Path) -> bool:
        """A hidden folder whose writer is gone (another process that exited, or no writer here)."""
        parts = hidden.name.split("-")
        pid = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None
        if pid is None or pid != os.getpid():
            return pid is None or not process_alive(pid)
        return hidden not in _ACTIVE

    def _owned(self, folder: Path) -> bool:
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            return False
        return manifest.get("registry") == self.owner


class TamperedArtifact(ValueError):
    """A version's files differ from what was logged: refused before anything is loaded."""


# Folders verified by this process: folder -> {relative path: (size, mtime_ns)} when they matched.
_VERIFIED: dict[Path, dict[str, tuple[int, int]]] = {}
_VERIFIED_LOCK = threading.Lock()


def verify_files(folder: Path, expected: dict[str, str], what: str) -> None:
    """Refuse a folder whose files are not exactly the logged ones with their logged sha256.

    A changed, missing or added file (a ``pytorch_model.bin`` or a pickle dropped in beside the
    safetensors) raises ``TamperedArtifact`` naming it. Files are hashed once per process; later
    checks compare sizes and modification times and hash again only what changed.
    """
    present = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    for relative in sorted(set(present) - set(expected)):
        raise TamperedArtifact(
            f"{what}: {folder / relative} was not logged with this version; refusing to load it. Remove the "
            "file, or log the model again."
        )
    for relative in sorted(set(expected) - set(present)):
        raise TamperedArtifact(f"{what}: {folder / relative} is missing; the version cannot be loaded.")
    stats = {relative: _stat(present[relative]) for relative in expected}
    with _VERIFIED_LOCK:
        known = _VERIFIED.get(folder, {})
    for relative, digest in sorted(expected.items()):
        if known.get(relative) == stats[relative]:
            continue
        if file_sha256(present[relative]) != digest:
            raise TamperedArtifact(
                f"{what}: {folder / relative} does not match the sha256 logged for it (the file changed after "
                "logging); refusing to load it."
            )
    with _VERIFIED_LOCK:
        _VERIFIED[folder] = stats


def forget_verified(folder: Path) -> None:
    """Hash ``folder``'s files again at the next check."""
    with _VERIFIED_LOCK:
        _VERIFIED.pop(folder, None)


def _stat(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def link_tree(source: Path, target: Path, *, skip: Iterable[str] = ()) -> list[str]:
    """Hard-link (or, across devices, copy) every file below ``source`` into ``target``, except the
    top-level names in ``skip``; returns the relative POSIX paths placed. Version files are never
    changed in place, so a link shares them safely."""
    skipped = set(skip)
    placed = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        if relative.parts[0] in skipped:
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)
        placed.append(relative.as_posix())
    return placed


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder``, keyed by relative POSIX path."""
    hashes = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        hashes[path.relative_to(folder).as_posix()] = file_sha256(path)
    return hashes


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ArtifactLocations:
    """Where a registry's files are, from where its database is and what its catalog recorded: the artifact
    folder now (after a copy, move, rename or snapshot), a version's folder from the path the catalog keeps,
    and the path the catalog keeps for a folder."""

    def __init__(self, db_path: Path | None, read_setting: Callable[[], str | None]) -> None:
        """``db_path``: the database file (None in memory); ``read_setting()``: the catalog's
        ``artifact_location`` setting."""
        self.db_path = db_path
        self._read_setting = read_setting
        self._home_cache: tuple[str | None, Path | None, Path] | None = None

    def database_folder(self) -> Path:
        """What relative paths in the catalog are relative to: the database's folder (in memory: here)."""
        return self.db_path.parent if self.db_path is not None else Path.cwd()

    def location_and_home(self) -> tuple[Path | None, Path]:
        """The catalog's ``artifact_location`` (absolute, as written; None if never set) and where that
        folder is now, so that a registry survives copy, move, rename and snapshots.

        The catalog keeps the location relative to the database's folder when it lies under it, else
        absolute (a snapshot names its registry's folder absolutely). The default folder is
        ``<database file>.artifacts``: a database renamed together with its folder finds the renamed
        folder; one copied under a new name beside the original, without a folder of its own, shares
        the original's. A kept location that does not exist while the folder beside the database does
        (a copy made together with its folder) gives way to that folder; a default one that does not
        exist, to the folder beside the database even when that is missing too (its error names it).
        """
        if self._home_cache is not None and self._home_cache[0] is not None:
            # The catalog sets its location once, with its first version: no need to read it again.
            return self._home_cache[1], self._home_cache[2]
        setting = self._read_setting() or None
        if self._home_cache is not None and self._home_cache[0] == setting:
            return self._home_cache[1], self._home_cache[2]
        beside = self.db_path.with_name(self.db_path.name + ".artifacts") if self.db_path is not None else None
        if setting is None:
            location = None
            home = beside if beside is not None else Path(tempfile.mkdtemp(prefix="duckreg-artifacts-"))
        else:
            location = Path(setting)
            if not location.is_absolute():
                location = self.database_folder() / location
            is_default = not Path(setting).is_absolute() and "/" not in setting and setting.endswith(".artifacts")
            moved = beside is not None and beside.is_dir() and (is_default or not location.exists())
            # A database copied elsewhere without any folder looks for (and names) the one beside it.
            orphaned = beside is not None and is_default and not location.exists()
            home = beside if moved or orphaned else location
        self._home_cache = (setting, location, home)
        return location, home

    def relative_to_database(self, path: Path) -> str:
        """``path`` as the catalog keeps it: relative to the database's folder when it lies under it, so
        copying, zipping or mounting the two together keeps every model working; else absolute."""
        path = path.resolve()
        if self.db_path is not None and path.is_relative_to(self.db_path.parent):
            return path.relative_to(self.db_path.parent).as_posix()
        return str(path)

    def version_folder(self, stored: str) -> Path:
        """A version folder from the catalog (kept as ``relative_to_database`` wrote it).

        A folder inside the registry's artifact folder, as the catalog named it, is looked up inside
        that folder wherever it is now (renamed, moved, or shared by a snapshot). Others (logged with
        another ``artifact_location``) are where the catalog says; one that is gone is looked up under
        this registry's folder by its last two parts, as catalogs that kept absolute paths need.
        """
        location, home = self.location_and_home()
        path = Path(stored)
        full = path if path.is_absolute() else self.database_folder() / path
        if location is not None and full.is_relative_to(location):
            return home / full.relative_to(location)
        if full.is_dir():
            return full
        under_home = home.joinpath(*path.parts[-2:])
        return under_home if under_home.is_dir() else full
