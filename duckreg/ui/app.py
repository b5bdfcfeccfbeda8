"""The web layer of ``duckreg ui``: Starlette routes over ``duckreg.ui.pages``, rendered with Jinja2.

Every action goes through the registry API (``mv.run``, ``run_batch``, ``set_alias``, ...), so its
checks and error messages are the ones users get in Python and SQL. The browser never sends SQL: a
batch job's input is a table picked from the database's own list, quoted here, with its columns mapped
onto the function's inputs by name.

Safety: writes are refused (403) on a read-only UI; every POST must carry the page's CSRF token in a
header, which another site's page cannot set; with a token, every request must present it once
(``?token=``, then a cookie) or as ``Authorization: Bearer``.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hmac
import json
import math
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from duckreg.model_signature import DataType, FeatureGroupSpec
from duckreg.registry.registry import Registry
from duckreg.ui import pages
from duckreg.values import human_size, to_python

HERE = Path(__file__).parent
COOKIE = "duckreg_ui_token"
CSRF_HEADER = "x-duckreg-csrf"


def create_app(registry: Registry, *, read_only: bool = False, token: str | None = None) -> Starlette:
    """The UI as an ASGI app over an open registry (served by uvicorn in ``duckreg ui`` and ``start``)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["size"] = lambda nbytes: "-" if nbytes is None else human_size(nbytes)
    csrf = secrets.token_urlsafe(24)

    database = database_path(registry)

    def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        context.update(read_only=read_only, csrf=csrf, database=database)
        return templates.TemplateResponse(request, name, context, status_code=status_code)

    def writable(request: Request) -> None:
        if read_only:
            raise HTTPException(403, "This UI is read-only (duckreg ui --read-only).")

    async def body(request: Request) -> dict[str, Any]:
        if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), csrf):
            raise HTTPException(403, "Missing or wrong CSRF token: reload the page.")
        try:
            data = await request.json()
        except ValueError:
            raise HTTPException(400, "The request body must be JSON.") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "The request body must be a JSON object.")
        return data

    # ------------------------------------------------------------------ pages
    def models_page(request: Request) -> Response:
        query = request.query_params.get("q", "")
        return render(request, "models.html", models=pages.models(registry, query), query=query)

    def model_page(request: Request) -> Response:
        return render(request, "model.html", model=_found(pages.model, registry, request.path_params["model"]))

    def version_page(request: Request) -> Response:
        detail = _found(pages.version, registry, request.path_params["model"], request.path_params["version"])
        return render(request, "version.html", v=detail)

    def compare_page(request: Request) -> Response:
        return render(request, "compare.html", c=_found(pages.compare, registry, request.path_params["model"]))

    def jobs_page(request: Request) -> Response:
        return render(request, "jobs.html", jobs=pages.job_list(registry))

    def job_page(request: Request) -> Response:
        return render(request, "job.html", job=_found(pages.job, registry, request.path_params["name"], logs=True))

    def stages_page(request: Request) -> Response:
        return render(request, "stages.html", stages=pages.stages(registry))

    def stage_page(request: Request) -> Response:
        return render(request, "stage.html", stage=_found(pages.stage_files, registry, request.path_params["name"]))

    # ------------------------------------------------------------------ JSON
    def jobs_json(request: Request) -> Response:
        return JSONResponse(pages.job_list(registry))

    def job_json(request: Request) -> Response:
        return JSONResponse(_found(pages.job, registry, request.path_params["name"], logs=True))

    async def cancel_job(request: Request) -> Response:
        await body(request)
        writable(request)
        from duckreg import jobs

        try:
            # Cancelling waits for the part being written: off the event loop, so other pages keep answering.
            await run_in_threadpool(jobs.get_job(registry, request.path_params["name"]).cancel)
        except (RuntimeError, ValueError) as exc:
            return _error(exc)
        return JSONResponse(pages.job(registry, request.path_params["name"]))

    async def run_version(request: Request) -> Response:
        data = await body(request)
        mv = _version(registry, request)
        try:
            function = mv.get_function(data.get("function") or None)
            frame = _input_frame(function, data.get("rows") or [])
            params = _params(function, data.get("params") or {})
            started = time.perf_counter()
            out, said = await run_in_threadpool(_run_noting_warnings, mv, frame, function.name, params)
            seconds = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - every error is shown as duckreg words it
            return _error(exc)
        rows = [{c: _plain(v) for c, v in zip(out.columns, values, strict=True)} for values in out.itertuples(False)]
        return JSONResponse({"columns": list(out.columns), "rows": rows, "seconds": seconds, "warnings": said})

    async def start_batch(request: Request) -> Response:
        data = await body(request)
        writable(request)
        mv = _version(registry, request)
        from duckreg.batch import InputSpec, JobSpec, OutputSpec

        try:
            source = data.get("input") or ""
            function = mv.get_function(data.get("function") or None)
            if source.startswith("@"):
                X: Any = source
            elif source in pages.tables(registry):
                columns = [name for name, _ in pages.table_columns(registry, source)]
                X = _mapped_query(source, columns, data.get("columns") or {})
            else:
                raise ValueError(f"Input {source!r} is neither a table of this database nor a stage path (@stage/...).")
            rows = int(data.get("max_batch_rows") or 1024)
            job = await run_in_threadpool(
                mv.run_batch,
                X,
                output_spec=OutputSpec(stage_location=data.get("output") or ""),
                input_spec=InputSpec(params=_params(function, data.get("params") or {}) or None),
                job_spec=JobSpec(function_name=function.name, max_batch_rows=rows,
                                 job_name=data.get("job_name") or None),
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - shown as duckreg words it
            return _error(exc)
        return JSONResponse({"job": job.name, "url": f"/jobs/{job.name}"})

    def table_columns(request: Request) -> Response:
        try:
            return JSONResponse(pages.table_columns(registry, request.path_params["table"]))
        except ValueError as exc:
            return _error(exc)

    async def create_stage(request: Request) -> Response:
        data = await body(request)
        writable(request)
        url = str(data.get("url") or "").strip()
        if url and "://" not in url and not Path(url).expanduser().is_absolute() and database != ":memory:":
            url = str(Path(database).resolve().parent / url)  # a relative folder is beside the database
        try:
            await run_in_threadpool(
                registry.create_stage, str(data.get("name") or ""), url, comment=data.get("comment") or None
            )
        except Exception as exc:  # noqa: BLE001 - shown as duckreg words it
            return _error(exc)
        return JSONResponse({"stages": pages.stages(registry)})

    def verify_files(request: Request) -> Response:
        mv = _version(registry, request)
        return JSONResponse(_plain(mv.show_files(verify=True).to_dict("records")))

    def model_of(request: Request) -> Any:
        return registry.get_model(request.path_params["model"])

    def version_of(request: Request) -> Any:
        return model_of(request).version(request.path_params["version"])

    async def set_default(request: Request) -> Response:
        data = await body(request)
        writable(request)
        return await _act(lambda: setattr(model_of(request), "default", data.get("version")))

    async def set_alias(request: Request) -> Response:
        data = await body(request)
        writable(request)
        return await _act(lambda: version_of(request).set_alias(str(data.get("alias") or "")))

    async def unset_alias(request: Request) -> Response:
        data = await body(request)
        writable(request)
        return await _act(lambda: version_of(request).unset_alias(str(data.get("alias") or "")))

    async def set_tag(request: Request) -> Response:
        data = await body(request)
        writable(request)
        return await _act(lambda: model_of(request).set_tag(str(data.get("name") or ""), str(data.get("value") or "")))

    async def unset_tag(request: Request) -> Response:
        data = await body(request)
        writable(request)
        return await _act(lambda: model_of(request).unset_tag(str(data.get("name") or "")))

    async def delete_version(request: Request) -> Response:
        await body(request)
        writable(request)
        return await _act(lambda: model_of(request).delete_version(request.path_params["version"]))

    async def http_error(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", str(exc))
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": detail}, status_code=code)
        return render(request, "error.html", status_code=code, code=code, message=detail)

    version_path = "/api/models/{model}/versions/{version}"
    routes = [
        Route("/", models_page),
        Route("/models/{model}", model_page),
        Route("/models/{model}/compare", compare_page),
        Route("/models/{model}/versions/{version}", version_page),
        Route("/jobs", jobs_page),
        Route("/jobs/{name}", job_page),
        Route("/stages", stages_page),
        Route("/stages/{name}", stage_page),
        Route("/api/jobs", jobs_json),
        Route("/api/stages", create_stage, methods=["POST"]),
        Route("/api/tables/{table}/columns", table_columns),
        Route("/api/jobs/{name}", job_json),
        Route("/api/jobs/{name}/cancel", cancel_job, methods=["POST"]),
        Route(f"{version_path}/run", run_version, methods=["POST"]),
        Route(f"{version_path}/batch", start_batch, methods=["POST"]),
        Route(f"{version_path}/files", verify_files),
        Route(f"{version_path}/alias", set_alias, methods=["POST"]),
        Route(f"{version_path}/unset-alias", unset_alias, methods=["POST"]),
        Route(f"{version_path}/delete", delete_version, methods=["POST"]),
        Route("/api/models/{model}/default", set_default, methods=["POST"]),
        Route("/api/models/{model}/tag", set_tag, methods=["POST"]),
        Route("/api/models/{model}/unset-tag", unset_tag, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(TokenCheck, token=token)] if token else []
    return Starlette(
        routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error, 404: http_error}
    )


class TokenCheck(BaseHTTPMiddleware):
    """Let a request in only with the token: ``?token=`` (kept in a cookie), the cookie, or a Bearer header."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next: Any) -> Response:
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given, self.token):
            response = RedirectResponse(str(request.url.remove_query_params("token")), status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return response
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        presented = request.cookies.get(COOKIE) or bearer
        if presented and hmac.compare_digest(presented, self.token):
            return await call_next(request)
        return PlainTextResponse("This duckreg UI needs its token: open the address it printed (…?token=…).", 401)


def database_path(registry: Registry) -> str:
    """The database file the registry lives in (``:memory:`` for an in-memory one)."""
    rows = registry.catalog.query(
        "SELECT coalesce(path, ':memory:') FROM duckdb_databases() WHERE database_name = current_database()"
    )
    return rows[0][0] if rows else registry.location


def _found(read: Any, *args: Any, **kwargs: Any) -> Any:
    """A page's data, or 404 when the model, version, job or stage does not exist."""
    try:
        return read(*args, **kwargs)
    except (ValueError, KeyError) as exc:
        raise HTTPException(404, str(exc)) from None


def _version(registry: Registry, request: Request) -> Any:
    try:
        return registry.get_model(request.path_params["model"]).version(request.path_params["version"])
    except ValueError as exc:
        raise HTTPException(404, str(exc)) from None


def _error(exc: BaseException) -> Response:
    return JSONResponse({"error": str(exc) or type(exc).__name__}, status_code=400)


async def _act(action: Any) -> Response:
    """Run a registry write off the event loop; its refusal is the answer's error."""
    try:
        await run_in_threadpool(action)
    except (ValueError, TypeError, RuntimeError) as exc:
        return _error(exc)
    return JSONResponse({"ok": True})


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _convert(spec: Any, raw: Any, what: str) -> Any:
    """A form value as the signature's type: numbers and booleans from text, JSON for lists and structs,
    ``{"base64": ...}`` for file uploads; an empty field is NULL."""
    if raw is None or raw == "":
        return None
    if isinstance(spec, FeatureGroupSpec) or getattr(spec, "shape", None) or getattr(spec, "specs", None):
        if isinstance(raw, str):
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{what} {spec.name}: not valid JSON ({exc.msg} at character {exc.pos})") from None
        return raw
    dtype = spec.dtype
    if dtype is DataType.BYTES:
        if isinstance(raw, dict) and "base64" in raw:
            return base64.b64decode(raw["base64"])
        return str(raw).encode()
    if dtype is DataType.BOOL:
        return raw if isinstance(raw, bool) else str(raw).lower() in ("true", "1", "yes", "on")
    if dtype is DataType.STRING or not isinstance(raw, str):
        return raw
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"{what} {spec.name}: {raw!r} is not a number") from None
    return number if dtype in (DataType.FLOAT, DataType.DOUBLE) or not number.is_integer() else int(number)


def _run_noting_warnings(mv: Any, frame: pd.DataFrame, function: str, params: dict[str, Any]) -> tuple[Any, list]:
    """``mv.run``, with what it warns about (NULL inputs, version skew) returned for the page to show
    instead of printed on the server's terminal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = mv.run(frame, function_name=function, params=params)
    return out, list(dict.fromkeys(str(w.message) for w in caught))


def _mapped_query(table: str, columns: list[str], mapping: dict[str, Any]) -> str:
    """``SELECT`` over ``table`` with each function input a mapping names fed from the column it names
    (``{"inputs": "body"}``), so a table whose columns are named otherwise can be scored as it is."""
    if not isinstance(mapping, dict):
        raise ValueError("columns must map each function input to a column of the table.")
    renamed = {str(k): str(v) for k, v in mapping.items() if v and str(v) != str(k)}
    for source in renamed.values():
        if source not in columns:
            raise ValueError(f"Column {source!r} is not in {table} (columns: {columns}).")
    replaced = [c for c in columns if c.lower() in {k.lower() for k in renamed}]
    keep = "*" + (f" EXCLUDE ({', '.join(_quote(c) for c in replaced)})" if replaced else "")
    extra = "".join(f", {_quote(source)} AS {_quote(target)}" for target, source in renamed.items())
    return f"SELECT {keep}{extra} FROM " + ".".join(_quote(part) for part in table.split("."))


def _input_frame(function: Any, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows the form sent, typed by the function's signature."""
    if not rows:
        raise ValueError("Give at least one row.")
    if not all(isinstance(row, dict) for row in rows):
        raise ValueError("Each row must be an object of column names and values.")
    specs = {s.name: s for s in function.signature.inputs}
    # A form row left blank arrives with no fields; a JSON row may name a NULL on purpose.
    for number, row in enumerate(rows, start=1):
        if all(value == "" for value in row.values()):
            raise ValueError(f"Row {number} is empty: fill in {', '.join(specs)}.")
    names = list(dict.fromkeys(name for row in rows for name in row))
    # Columns the signature does not know are passed on, so the registry's own matching reports them.
    return pd.DataFrame(
        {
            name: [_convert(specs[name], row.get(name), "input") if name in specs else row.get(name) for row in rows]
            for name in names
        }
    )


def _params(function: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The parameters the form filled in (empty fields keep their defaults)."""
    specs = {p.name: p for p in function.signature.params}
    out = {}
    for name, raw in given.items():
        if name not in specs:
            out[name] = raw  # refused by the registry with its own message
        elif raw not in (None, ""):
            out[name] = _convert(specs[name], raw, "parameter")
    return out


def _plain(value: Any) -> Any:
    """A result value as JSON: arrays as lists, bytes as their size, NaN and NA as null, times as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    value = to_python(value)  # numpy scalars and pd.NA
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (datetime.datetime, datetime.date, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value
