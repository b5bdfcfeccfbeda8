"""What each page of ``duckreg ui`` shows, read through the registry's own API into plain dicts.

Nothing here knows about HTTP or HTML, so the pages can be checked without a browser and the web
layer (``duckreg.ui.app``) only routes and renders.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from typing import Any

from duckreg import jobs
from duckreg.duckdb_ext.names import table_macro_name
from duckreg.duckdb_ext.types import feature_types, output_types, param_type
from duckreg.function_spec import FunctionSpec
from duckreg.model_signature import DataType, FeatureGroupSpec, ParamGroupSpec, ParamSpec
from duckreg.registry.model_version import SYSTEM_ALIASES, ModelVersion
from duckreg.registry.registry import Registry

JOB_LIMIT = 200


def _user_aliases(aliases: Iterable[str]) -> list[str]:
    return [a for a in aliases if a.upper() not in SYSTEM_ALIASES]


def models(registry: Registry, query: str = "") -> list[dict[str, Any]]:
    """Every model: default version, versions, aliases, tags, tasks, comment, last logged; filtered by
    ``query`` (case-insensitive, in the name, a tag name or value, a task, or the comment)."""
    wanted = query.strip().lower()
    shown = []
    for model in registry.models():
        versions = model.show_versions()
        tags = model.show_tags()
        tasks = sorted({t for t in versions["task"] if t})
        row = {
            "name": model.name,
            "default": model.default.version_name,
            "versions": len(versions),
            "aliases": sorted({a for names in versions["aliases"] for a in _user_aliases(names)}),
            "tags": tags,
            "tasks": tasks,
            "comment": model.comment,
            "last_logged": versions["created_on"].max() if len(versions) else None,
        }
        haystack = [model.name, *tags, *tags.values(), *tasks, model.comment or ""]
        if not wanted or any(wanted in str(text).lower() for text in haystack):
            shown.append(row)
    return shown


def model(registry: Registry, model_name: str) -> dict[str, Any]:
    """A model's versions (newest first), its tags and whether any version has metrics to compare."""
    handle = registry.get_model(model_name)
    rows = handle.show_versions().to_dict("records")
    versions = [
        {
            "name": r["name"],
            "task": r["task"],
            "default": bool(r["is_default_version"]),
            "aliases": list(r["aliases"]),
            "functions": list(r["functions"]),
            "metrics": json.loads(r["metadata"]).get("metrics", {}),
            "comment": r["comment"],
            "created_on": r["created_on"],
        }
        for r in reversed(rows)
    ]
    return {"name": handle.name, "comment": handle.comment, "tags": handle.show_tags(), "versions": versions}


def _input_kind(spec: Any) -> str:
    """How the "try it" form asks for an input: text, number, boolean, file (BYTES) or json."""
    if isinstance(spec, FeatureGroupSpec) or spec.shape:
        return "json"
    if spec.dtype is DataType.BYTES:
        return "file"
    if spec.dtype is DataType.BOOL:
        return "boolean"
    if spec.dtype is DataType.STRING:
        return "text"
    return "number"


def _param_kind(spec: ParamSpec | ParamGroupSpec) -> str:
    if isinstance(spec, ParamGroupSpec) or spec.shape:
        return "json"
    return _input_kind(spec)


def _default_text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def sql_calls(
    mv: ModelVersion, functions: list[FunctionSpec], optional: dict[str, frozenset[str]], is_default: bool
) -> dict[str, list[dict[str, str]]]:
    """Per function, how SQL calls it (its required inputs): by model (default version only), by version, as
    a table macro and in Snowflake's form, each with a ready example query."""
    by_version = mv.sql_function_names()
    by_model = mv.sql_function_names(bare=True) if is_default else {}
    calls: dict[str, list[dict[str, str]]] = {}
    for function in functions:
        inputs = ", ".join(s.name for s in function.signature.inputs if s.name not in optional[function.name])
        entries = []
        for name in [by_model.get(function.name), by_version[function.name]]:
            if name:
                entries.append({"label": "scalar", "call": f"{name}({inputs})",
                                "example": f"SELECT {inputs}, {name}({inputs}) AS result FROM my_table;"})  # fmt: skip
        table = table_macro_name(by_version[function.name])
        entries.append({"label": "table", "call": f"{table}('my_table')", "example": f"FROM {table}('my_table');"})
        snowflake = f"MODEL({mv.model_name}, {mv.version_name})!{function.target_method}"
        entries.append({"label": "Snowflake", "call": f"{snowflake}({inputs})",
                        "example": f"SELECT {snowflake}({inputs}) FROM my_table;"})  # fmt: skip
        calls[function.name] = entries
    return calls


def version(registry: Registry, model_name: str, version_name: str) -> dict[str, Any]:
    """Everything the version page shows: task, functions with typed signatures, SQL names, files,
    library versions, metrics and aliases."""
    handle = registry.get_model(model_name)
    mv = handle.version(version_name)
    is_default = handle.default.version_name == mv.version_name
    specs = mv.function_specs()
    optional = {f.name: mv.optional_inputs(f.name) for f in specs}
    functions = []
    for function in specs:
        signature = function.signature
        functions.append({
            "name": function.name,
            "target_method": function.target_method,
            "inputs": [{"name": s.name, "type": feature_types(s, shape=s.shape)[0], "kind": _input_kind(s),
                        "optional": s.name in optional[function.name]} for s in signature.inputs],
            "outputs": [{"name": o.name, "type": sql}
                        for o, (sql, _) in zip(signature.outputs, output_types(function), strict=True)],
            "params": [{"name": p.name, "type": param_type(p), "kind": _param_kind(p),
                        "default": _default_text(p.default_value)} for p in signature.params],
        })  # fmt: skip
    aliases = _user_aliases(next(r for r in handle.show_versions().to_dict("records")
                                 if r["name"] == mv.version_name)["aliases"])  # fmt: skip
    files = mv.show_files().to_dict("records")
    return {
        "model": handle.name,
        "version": mv.version_name,
        "is_default": is_default,
        "task": mv.task,
        "comment": mv.comment,
        "aliases": aliases,
        "functions": functions,
        "calls": sql_calls(mv, specs, optional, is_default),
        "files": files,
        "files_bytes": sum(f["size"] or 0 for f in files),
        "library_versions": mv.library_versions,
        "metrics": {k: _default_text(v) for k, v in mv.show_metrics().items()},
        "tables": tables(registry),
        # Each function's inputs for the batch form's column mapping: name and whether it may be left out.
        "batch_inputs": {f["name"]: [[i["name"], i["optional"], i["type"]] for i in f["inputs"]] for f in functions},
        "stages": [s["name"] for s in stages(registry)],
    }


def compare(registry: Registry, model_name: str) -> dict[str, Any]:
    """Each version's metrics side by side (oldest first), and the numeric ones as chart series."""
    handle = registry.get_model(model_name)
    versions = [(mv.version_name, mv.show_metrics()) for mv in handle.versions()]
    names = sorted({name for _, metrics in versions for name in metrics})
    series = []
    for name in names:
        values = [metrics.get(name) for _, metrics in versions]
        if all(v is None or (_is_number(v)) for v in values) and any(v is not None for v in values):
            series.append({"metric": name, "values": [None if v is None else float(v) for v in values]})
    return {
        "model": handle.name,
        "versions": [v for v, _ in versions],
        "metrics": names,
        "table": [{"version": v, "values": [_default_text(m.get(n)) for n in names]} for v, m in versions],
        "series": series,
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def job_list(registry: Registry) -> list[dict[str, Any]]:
    """The newest jobs first, each with its progress."""
    return [_job_info(registry, record) for record in jobs.job_records(registry, JOB_LIMIT)]


def job(registry: Registry, name: str, *, logs: bool = False) -> dict[str, Any]:
    """One job: status, rows done of total, rows/s, output location and whether ``_SUCCESS`` is there."""
    found = jobs.job_records(registry, name=name)
    if not found:
        raise ValueError(f"Job {name} does not exist or not authorized.")
    info = _job_info(registry, found[0])
    if logs:
        info["logs"] = jobs.get_job(registry, name).get_logs(as_list=True)
    return info


def _job_info(registry: Registry, record: dict[str, Any]) -> dict[str, Any]:
    """A job's record as its pages show it: percent done, rows/s, ``_SUCCESS``, whether it can be cancelled."""
    status, done, total = record["status"], record["rows_done"], record["rows_total"]
    created, finished = record["created_time"], record["completed_time"]
    seconds = ((finished.timestamp() if finished else time.time()) - created.timestamp()) if created else None
    return {
        "name": record["name"],
        "status": status,
        "message": record["message"],
        "model": record["model_name"],
        "version": record["version_name"],
        "function": record["function_name"],
        "engine": record["engine"],
        "output": record["output_location"],
        "rows_done": done,
        "rows_total": total,
        "rows_failed": record.get("rows_failed", 0),
        "percent": round(100.0 * done / total, 1) if total else (100.0 if status == "DONE" else 0.0),
        "rows_per_second": round(done / seconds, 1) if seconds and done else None,
        "created_on": str(created)[:19] if created else None,
        "finished_on": str(finished)[:19] if finished else None,
        "success_file": _has_success(registry, record["output_location"]),
        "cancellable": status in ("PENDING", "RUNNING") and record["runs_here"],
    }


def _has_success(registry: Registry, output: str | None) -> bool:
    if not output:
        return False
    try:
        stage, path = registry.stages.locate(output.rstrip("/") + "/_SUCCESS")
        return bool(stage.filesystem.exists(path))
    except (OSError, ValueError):
        return False


def indexes(registry: Registry) -> list[dict[str, Any]]:
    """Every semantic index with its model version, rows, last refresh and the changes a refresh would make."""
    found = []
    for name in registry.show_indexes()["name"]:
        index = registry.get_index(name)
        found.append({**index.show(), "pending": index.pending_changes()})
    return found


def index_search(registry: Registry, name: str, query: str, k: int, mode: str = "vector") -> dict[str, Any]:
    """The rows of index ``name`` that best match ``query`` by ``mode``: column names and rows as text."""
    frame = registry.get_index(name).search(query, k=k, mode=mode)
    return {"columns": list(frame.columns), "rows": frame.astype("string").fillna("NULL").values.tolist()}


def stages(registry: Registry) -> list[dict[str, Any]]:
    """The registry's stages: name, location, comment."""
    return [
        {"name": r["name"], "url": r["url"], "comment": r["comment"]} for r in registry.show_stages().to_dict("records")
    ]


def stage_files(registry: Registry, name: str) -> dict[str, Any]:
    """A stage's files, as stage paths (``@name/sub/file``) with their sizes; nothing outside the stage."""
    stage = registry.stages.get(name)
    files = []
    for path in registry.stages.list_files(f"@{stage.name}"):
        located, file = registry.stages.locate(path)
        try:
            size = located.filesystem.size(file)
        except (OSError, ValueError):
            size = None
        files.append({"path": path, "size": size})
    return {"name": stage.name, "url": stage.url, "files": files}


def table_columns(registry: Registry, table: str) -> list[list[str]]:
    """The columns of one of ``tables(registry)`` with their types, for mapping them onto a function's inputs."""
    if table not in tables(registry):
        raise ValueError(f"{table!r} is not a table of this database.")
    schema, _, name = table.rpartition(".")
    rows = registry.catalog.query(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = ? AND table_schema = ? "
        "AND table_name = ? ORDER BY ordinal_position",
        [registry.catalog.database_name, schema or "main", name],
    )
    return [[column, kind] for column, kind in rows]


def tables(registry: Registry) -> list[str]:
    """The database's tables and views a batch job may read (the registry's own schema left out)."""
    catalog = registry.catalog
    rows = catalog.query(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = ? AND table_schema <> ? ORDER BY ALL",
        [catalog.database_name, catalog.schema_name],
    )
    return [name if schema == "main" else f"{schema}.{name}" for schema, name in rows]
