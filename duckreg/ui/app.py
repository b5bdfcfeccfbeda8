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

import hmac
import secrets
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

from duckreg import jobs
from duckreg.batch import InputSpec, JobSpec, OutputSpec
from duckreg.registry.indexes import MODES
from duckreg.registry.model import Model
from duckreg.registry.model_version import ModelVersion
from duckreg.registry.registry import Registry
from duckreg.ui import pages
from duckreg.ui.forms import form_params, input_frame, mapped_query, plain
from duckreg.values import human_size

HERE = Path(__file__).parent
COOKIE = "duckreg_ui_token"
CSRF_HEADER = "x-duckreg-csrf"


@dataclass(frozen=True)
class UiState:
    """What every route reads: the registry, whether writes are allowed, the page's CSRF token, the database's
    path as shown, and the templates."""

    registry: Registry
    read_only: bool
    csrf: str
    database: str
    templates: Jinja2Templates


def create_app(registry: Registry, *, read_only: bool = False, token: str | None = None) -> Starlette:
    """The UI as an ASGI app over an open registry (served by uvicorn in ``duckreg ui`` and ``start``)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["size"] = lambda nbytes: "-" if nbytes is None else human_size(nbytes)
    middleware = [Middleware(TokenCheck, token=token)] if token else []
    app = Starlette(
        routes=ROUTES, middleware=middleware, exception_handlers={HTTPException: http_error, 404: http_error}
    )
    app.state.ui = UiState(registry, read_only, secrets.token_urlsafe(24), database_path(registry), templates)
    return app


def _ui(request: Request) -> UiState:
    return request.app.state.ui


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    ui = _ui(request)
    context.update(read_only=ui.read_only, csrf=ui.csrf, database=ui.database)
    return ui.templates.TemplateResponse(request, name, context, status_code=status_code)


async def write_request(request: Request) -> dict[str, Any]:
    """The JSON object a write sends, after its CSRF token is checked and writes are found allowed."""
    data = await body(request)
    if _ui(request).read_only:
        raise HTTPException(403, "This UI is read-only (duckreg ui --read-only).")
    return data


async def body(request: Request) -> dict[str, Any]:
    """The JSON object a POST sends, after its CSRF token is checked."""
    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), _ui(request).csrf):
        raise HTTPException(403, "Missing or wrong CSRF token: reload the page.")
    try:
        data = await request.json()
    except ValueError:
        raise HTTPException(400, "The request body must be JSON.") from None
    if not isinstance(data, dict):
        raise HTTPException(400, "The request body must be a JSON object.")
    return data


# ---------------------------------------------------------------------- pages
def models_page(request: Request) -> Response:
    query = request.query_params.get("q", "")
    return render(request, "models.html", models=pages.models(_ui(request).registry, query), query=query)


def model_page(request: Request) -> Response:
    return render(request, "model.html", model=_found(pages.model, _ui(request).registry, request.path_params["model"]))


def version_page(request: Request) -> Response:
    params = request.path_params
    return render(request, "version.html", v=_found(pages.version, _ui(request).registry, params["model"],
                                                   params["version"]))  # fmt: skip


def compare_page(request: Request) -> Response:
    return render(request, "compare.html", c=_found(pages.compare, _ui(request).registry, request.path_params["model"]))


def jobs_page(request: Request) -> Response:
    return render(request, "jobs.html", jobs=pages.job_list(_ui(request).registry))


def job_page(request: Request) -> Response:
    job = _found(pages.job, _ui(request).registry, request.path_params["name"], logs=True)
    return render(request, "job.html", job=job)


def indexes_page(request: Request) -> Response:
    """The indexes, and the results of a search when the form named an index and a query."""
    registry = _ui(request).registry
    name, query = request.query_params.get("index"), request.query_params.get("q", "")
    k = int(request.query_params.get("k") or 10) if (request.query_params.get("k") or "10").isdigit() else 10
    mode = request.query_params.get("mode", "vector")
    results, refusal = None, None
    if name and query:
        _found(registry.get_index, name)
        try:  # a search the index cannot run here (keyword modes without fts) is said on the page
            results = pages.index_search(registry, name, query, max(1, min(k, 1000)), mode)
        except ValueError as exc:
            refusal = str(exc)
    return render(request, "indexes.html", indexes=pages.indexes(registry), chosen=name, query=query, k=k,
                  mode=mode, modes=MODES, results=results, refusal=refusal)  # fmt: skip


def stages_page(request: Request) -> Response:
    return render(request, "stages.html", stages=pages.stages(_ui(request).registry))


def stage_page(request: Request) -> Response:
    stage = _found(pages.stage_files, _ui(request).registry, request.path_params["name"])
    return render(request, "stage.html", stage=stage)


async def http_error(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "status_code", 500)
    detail = getattr(exc, "detail", str(exc))
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": detail}, status_code=code)
    return render(request, "error.html", status_code=code, code=code, message=detail)


# ----------------------------------------------------------------------- JSON
def jobs_json(request: Request) -> Response:
    return JSONResponse(pages.job_list(_ui(request).registry))


def job_json(request: Request) -> Response:
    return JSONResponse(_found(pages.job, _ui(request).registry, request.path_params["name"], logs=True))


def table_columns(request: Request) -> Response:
    try:
        return JSONResponse(pages.table_columns(_ui(request).registry, request.path_params["table"]))
    except ValueError as exc:
        return _error(exc)


def verify_files(request: Request) -> Response:
    return JSONResponse(plain(_version(request).show_files(verify=True).to_dict("records")))


async def cancel_job(request: Request) -> Response:
    await write_request(request)
    registry = _ui(request).registry
    try:
        # Cancelling waits for the part being written: off the event loop, so other pages keep answering.
        await run_in_threadpool(jobs.get_job(registry, request.path_params["name"]).cancel)
    except (RuntimeError, ValueError) as exc:
        return _error(exc)
    return JSONResponse(pages.job(registry, request.path_params["name"]))


async def run_version(request: Request) -> Response:
    data = await body(request)
    mv = _version(request)
    try:
        function = mv.get_function(data.get("function") or None)
        frame = input_frame(function, data.get("rows") or [])
        params = form_params(function, data.get("params") or {})
        started = time.perf_counter()
        out, said = await run_in_threadpool(_run_noting_warnings, mv, frame, function.name, params)
        seconds = time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - every error is shown as duckreg words it
        return _error(exc)
    rows = [{c: plain(v) for c, v in zip(out.columns, values, strict=True)} for values in out.itertuples(False)]
    return JSONResponse({"columns": list(out.columns), "rows": rows, "seconds": seconds, "warnings": said})


async def start_batch(request: Request) -> Response:
    data = await write_request(request)
    registry, mv = _ui(request).registry, _version(request)
    try:
        source = data.get("input") or ""
        function = mv.get_function(data.get("function") or None)
        if source.startswith("@"):
            X: Any = source
        elif source in pages.tables(registry):
            columns = [name for name, _ in pages.table_columns(registry, source)]
            X = mapped_query(source, columns, data.get("columns") or {})
        else:
            raise ValueError(f"Input {source!r} is neither a table of this database nor a stage path (@stage/...).")
        job = await run_in_threadpool(
            mv.run_batch,
            X,
            output_spec=OutputSpec(stage_location=data.get("output") or ""),
            input_spec=InputSpec(params=form_params(function, data.get("params") or {}) or None),
            job_spec=JobSpec(function_name=function.name, max_batch_rows=int(data.get("max_batch_rows") or 1024),
                             job_name=data.get("job_name") or None),
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - shown as duckreg words it
        return _error(exc)
    return JSONResponse({"job": job.name, "url": f"/jobs/{job.name}"})


async def create_stage(request: Request) -> Response:
    data = await write_request(request)
    ui = _ui(request)
    url = str(data.get("url") or "").strip()
    if url and "://" not in url and not Path(url).expanduser().is_absolute() and ui.database != ":memory:":
        url = str(Path(ui.database).resolve().parent / url)  # a relative folder is beside the database
    try:
        await run_in_threadpool(
            ui.registry.create_stage, str(data.get("name") or ""), url, comment=data.get("comment") or None
        )
    except Exception as exc:  # noqa: BLE001 - shown as duckreg words it
        return _error(exc)
    return JSONResponse({"stages": pages.stages(ui.registry)})


def _model(request: Request) -> Model:
    return _ui(request).registry.get_model(request.path_params["model"])


async def set_default(request: Request) -> Response:
    data = await write_request(request)
    return await _act(lambda: setattr(_model(request), "default", data.get("version")))


async def set_alias(request: Request) -> Response:
    data = await write_request(request)
    return await _act(lambda: _version(request, found=False).set_alias(str(data.get("alias") or "")))


async def unset_alias(request: Request) -> Response:
    data = await write_request(request)
    return await _act(lambda: _version(request, found=False).unset_alias(str(data.get("alias") or "")))


async def set_tag(request: Request) -> Response:
    data = await write_request(request)
    return await _act(lambda: _model(request).set_tag(str(data.get("name") or ""), str(data.get("value") or "")))


async def unset_tag(request: Request) -> Response:
    data = await write_request(request)
    return await _act(lambda: _model(request).unset_tag(str(data.get("name") or "")))


async def delete_version(request: Request) -> Response:
    await write_request(request)
    return await _act(lambda: _model(request).delete_version(request.path_params["version"]))


_VERSION_API = "/api/models/{model}/versions/{version}"
ROUTES = [
    Route("/", models_page),
    Route("/models/{model}", model_page),
    Route("/models/{model}/compare", compare_page),
    Route("/models/{model}/versions/{version}", version_page),
    Route("/jobs", jobs_page),
    Route("/jobs/{name}", job_page),
    Route("/indexes", indexes_page),
    Route("/stages", stages_page),
    Route("/stages/{name}", stage_page),
    Route("/api/jobs", jobs_json),
    Route("/api/stages", create_stage, methods=["POST"]),
    Route("/api/tables/{table}/columns", table_columns),
    Route("/api/jobs/{name}", job_json),
    Route("/api/jobs/{name}/cancel", cancel_job, methods=["POST"]),
    Route(f"{_VERSION_API}/run", run_version, methods=["POST"]),
    Route(f"{_VERSION_API}/batch", start_batch, methods=["POST"]),
    Route(f"{_VERSION_API}/files", verify_files),
    Route(f"{_VERSION_API}/alias", set_alias, methods=["POST"]),
    Route(f"{_VERSION_API}/unset-alias", unset_alias, methods=["POST"]),
    Route(f"{_VERSION_API}/delete", delete_version, methods=["POST"]),
    Route("/api/models/{model}/default", set_default, methods=["POST"]),
    Route("/api/models/{model}/tag", set_tag, methods=["POST"]),
    Route("/api/models/{model}/unset-tag", unset_tag, methods=["POST"]),
    Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
]
"""Every page and JSON endpoint; the app's state (``UiState``) says which registry they serve."""


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
    return str(registry.database_path) if registry.database_path is not None else ":memory:"


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


def _version(request: Request, *, found: bool = True) -> ModelVersion:
    """The version a route's path names; a 404 when it does not exist (``found``), else the registry's error."""
    try:
        return _model(request).version(request.path_params["version"])
    except ValueError as exc:
        if not found:
            raise
        raise HTTPException(404, str(exc)) from None


def _error(exc: BaseException) -> Response:
    return JSONResponse({"error": str(exc) or type(exc).__name__}, status_code=400)


async def _act(action: Callable[[], object]) -> Response:
    """Run a registry write off the event loop; its refusal is the answer's error."""
    try:
        await run_in_threadpool(action)
    except (ValueError, TypeError, RuntimeError) as exc:
        return _error(exc)
    return JSONResponse({"ok": True})


def _run_noting_warnings(mv: Any, frame: pd.DataFrame, function: str, params: dict[str, Any]) -> tuple[Any, list]:
    """``mv.run``, with what it warns about (NULL inputs, version skew) returned for the page to show
    instead of printed on the server's terminal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = mv.run(frame, function_name=function, params=params)
    return out, list(dict.fromkeys(str(w.message) for w in caught))
