"""Every model version over HTTP: OpenAI-compatible and MLflow-style endpoints (``duckreg serve --http PORT``).

- ``GET /v1/models``: every model (its default version) and every version, with task, functions and SQL name.
- ``POST /v1/embeddings``: a feature-extraction version's vectors, in OpenAI's response shape (``float`` or
  ``base64`` encoding, as the ``openai`` client asks by default).
- ``POST /v1/chat/completions``: a chat version (logged with an OpenAI chat signature), with its controls and
  ``response_format``; ``stream: true`` answers as server-sent ``chat.completion.chunk`` events.
- ``POST /models/{model}/versions/{version}/invocations``: any function of any version (``?function=``), with
  MLflow's ``dataframe_split``, ``dataframe_records`` or ``inputs`` bodies and ``params``, answering
  ``{"predictions": [row, ...]}``.
- ``GET /health`` (and MLflow's ``/ping``), ``GET /metrics`` (Prometheus text).

``model`` names a model (its default version), ``name/version`` or ``name/alias``. Rows go through the one
inference core, gathered across concurrent requests by ``RequestBatcher``. A token, when set, is required as
``Authorization: Bearer <token>`` on every endpoint but the health checks. Errors are JSON with the model,
version, function and column text: 400 for bad input, 401, 404, 413 for a body over the limit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from duckreg import pandas_io, threaded_server
from duckreg.function_spec import Implementation
from duckreg.inference import FunctionRunner
from duckreg.registry.indexes import vector_function
from duckreg.request_batching import Listeners, RequestBatcher
from duckreg.threaded_server import ThreadedServer, free_port
from duckreg.values import json_default

LOG = logging.getLogger("duckreg.http")
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
HEALTH_PATHS = ("/health", "/ping")


class HttpError(Exception):
    """An answer other than 200, with its status and words."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass
class HttpSettings:
    """How the HTTP door serves: the token, the body limit and the batching of rows across requests."""

    token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    batch_window: float = 0.005
    batch_max_rows: int = 256


class Metrics:
    """Prometheus counters and histograms of this server (``GET /metrics``)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "duckreg_http_requests", "HTTP requests answered", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "duckreg_http_request_seconds", "Time to answer a request", ["endpoint"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )  # fmt: skip
        self.rows = Counter(
            "duckreg_http_rows", "Rows computed for requests", ["model", "version", "function"], registry=self.registry
        )
        self.batch_rows = Histogram(
            "duckreg_http_batch_rows", "Rows per call of the inference core", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )  # fmt: skip
        self.batch_requests = Histogram(
            "duckreg_http_batch_requests", "Requests gathered per call of the inference core",
            registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128),
        )  # fmt: skip
        self.in_flight = Gauge("duckreg_http_requests_in_flight", "Requests being answered", registry=self.registry)
        self.cache_hits = Gauge(
            "duckreg_result_cache_hits", "Result cache hits (all processes)", registry=self.registry
        )
        self.cache_misses = Gauge(
            "duckreg_result_cache_misses", "Result cache misses (all processes)", registry=self.registry
        )

    def batch(self, rows: int, requests: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def render(self, cache: Any) -> bytes:
        from prometheus_client import generate_latest

        if cache is not None:
            counters = cache.counters()
            self.cache_hits.set(counters.get("hits", 0))
            self.cache_misses.set(counters.get("misses", 0))
        return generate_latest(self.registry)


RESOLVED_FOR_SECONDS = 2.0
"""How long a resolved ``model`` string is trusted without a catalog write through this registry: writes that
bypass it (raw SQL over Quack, another ``Registry`` object on the connection) are followed within this time."""
MAX_RESOLUTIONS = 1024


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` (and function) resolved to: the version and the runner of its function,
    with the catalog revision and the time it was resolved at."""

    mv: Any
    runner: FunctionRunner
    revision: int
    resolved_at: float


class ModelDoor:
    """Resolves ``model`` strings to versions and functions, and runs rows through the batcher.

    Resolutions are kept until the registry's catalog changes (``Catalog.revision``) or for
    ``RESOLVED_FOR_SECONDS``, so a request costs no catalog query, and an alias moved or a version deleted
    (from the UI beside it, say) is followed by the next request. Runners are kept per version, function and
    content, across resolutions, so requests keep sharing batches while the catalog changes around them.
    """

    def __init__(self, registry: Any, settings: HttpSettings, metrics: Metrics) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.batcher = RequestBatcher(settings.batch_window, settings.batch_max_rows, on_batch=metrics.batch)
        self._targets: dict[tuple[Any, ...], Target] = {}
        self._runners: dict[tuple[str, ...], FunctionRunner] = {}
        self._lock = threading.Lock()

    async def target(
        self, model: Any, version: str | None = None, function: str | None = None, pick: Any = None
    ) -> Target:
        """The version ``model`` names (``name``, ``name/version``, ``name/alias``; a 404 if none) and the
        runner of ``function``, or of the function ``pick(mv)`` names. Resolved off the event loop (it reads
        the catalog, and may load the model) unless a resolution still holds."""
        for what, value in (("model", model), ("version", version), ("function", function)):
            if value is not None and not isinstance(value, str):
                raise HttpError(400, f"{what} must be a string, not {type(value).__name__}")
        key = (model, version, function, pick)
        found = self._targets.get(key)  # no lock on the event loop: a resolution holds it across catalog reads
        if (
            found is not None
            and found.revision == self.registry.catalog.revision
            and time.monotonic() - found.resolved_at < RESOLVED_FOR_SECONDS
        ):
            return found
        return await asyncio.to_thread(self._resolve, key)

    def _resolve(self, key: tuple[Any, ...]) -> Target:
        model, version, function, pick = key
        revision = self.registry.catalog.revision  # read before the catalog: a change meanwhile reads again
        mv = self.version(model, version)
        try:
            spec = mv.get_function(pick(mv) if pick is not None else function)
        except ValueError as exc:
            raise HttpError(404 if function else 400, str(exc)) from None
        fresh = mv._runner(spec.name)
        identity = (mv.model_name, mv.version_name, spec.name, fresh.version.content_digest)
        with self._lock:
            if len(self._targets) >= MAX_RESOLUTIONS:  # case variants of names, say: start again
                self._targets.clear()
            if len(self._runners) >= MAX_RESOLUTIONS:
                self._runners.clear()
            runner = self._runners.setdefault(identity, fresh)
            found = self._targets[key] = Target(mv, runner, revision, time.monotonic())
        return found

    def version(self, model: Any, version: str | None = None) -> Any:
        """The version ``model`` names, or a 404."""
        if not isinstance(model, str) or not model:
            raise HttpError(400, "model must be a model name, name/version or name/alias")
        name, _, named = model.partition("/")
        named = version or named
        try:
            handle = self.registry.get_model(name)
            return handle.default if not named else handle.version(named)
        except ValueError as exc:
            raise HttpError(404, str(exc), "not_found_error") from None

    async def run(
        self,
        mv: Any,
        runner: FunctionRunner,
        columns: Sequence[Sequence[Any]],
        params: dict[str, Any] | None,
        listeners: Listeners | None = None,
    ) -> list[dict[str, Any] | None]:
        """The rows' outputs, computed with other requests' rows; a ``ValueError`` names the failing row.
        ``listeners`` (by row) follow generated answers as they are made, from another thread."""
        rows = len(columns[0]) if columns else 0
        if self.settings.batch_window == 0:
            results = await asyncio.to_thread(lambda: self.batcher.submit(runner, columns, params, listeners).result())
        else:
            results = await asyncio.wrap_future(self.batcher.submit(runner, columns, params, listeners))
        self.metrics.rows.labels(mv.model_name, mv.version_name, runner.function.name).inc(rows)
        return results

    def models(self) -> list[dict[str, Any]]:
        """``/v1/models``' entries: each model under its name (its default version), then each of its versions
        under ``name/version``, with the task, functions, aliases and the SQL functions that call it."""
        entries = []
        for model in self.registry.models():
            shown = model.show_versions()
            default = shown[shown["is_default_version"]].iloc[0]
            for row, model_id in [(default, model.name)] + [
                (r, f"{model.name}/{r['name']}") for _, r in shown.iterrows()
            ]:
                mv = model.version(row["name"])
                entries.append({
                    "id": model_id,
                    "object": "model",
                    "created": int(pd.Timestamp(row["created_on"]).timestamp()),
                    "owned_by": "duckreg",
                    "model": model.name,
                    "version": row["name"],
                    "aliases": list(row["aliases"]),
                    "task": row["task"],
                    "functions": list(row["functions"]),
                    "sql_names": mv.sql_function_names(bare=model_id == model.name),
                })  # fmt: skip
        return entries

    def close(self) -> None:
        self.batcher.close()


# ---------------------------------------------------------------------------------------------- the app
class Endpoints:
    """The routes' handlers over one registry."""

    def __init__(self, registry: Any, settings: HttpSettings, metrics: Metrics) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.door = ModelDoor(registry, settings, metrics)

    async def read_json(self, request: Any) -> dict[str, Any]:
        """The body as a JSON object, read no further than the body limit."""
        declared = request.headers.get("content-length")
        limit = self.settings.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HttpError(413, f"The request body ({int(declared):,} bytes) is over this server's limit of {limit:,}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HttpError(413, f"The request body is over this server's limit of {limit:,} bytes")
        try:
            data = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"The request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HttpError(400, "The request body must be a JSON object")
        return data

    async def models(self, request: Any) -> Any:
        entries = await asyncio.to_thread(self.door.models)
        return _json({"object": "list", "data": entries})

    async def embeddings(self, request: Any) -> Any:
        data = await self.read_json(request)
        target = await self.door.target(data.get("model"), pick=embedding_function)
        mv, runner = target.mv, target.runner
        texts = data.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise HttpError(400, "input must be a string or a non-empty list of strings (token arrays are not taken)")
        encoding = data.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise HttpError(400, f"encoding_format must be 'float' or 'base64', got {encoding!r}")
        rows = await self.door.run(mv, runner, [texts], None)
        output = runner.signature.outputs[0].name
        dimensions = data.get("dimensions")
        items = []
        for index, row in enumerate(rows):
            vector = np.asarray(row[output], dtype=np.float32)
            if dimensions is not None and dimensions != len(vector):
                raise HttpError(400, f"{runner.context()}: returns {len(vector)} dimensions, not {dimensions}")
            value: Any = base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector.tolist()
            items.append({"object": "embedding", "index": index, "embedding": value})
        tokens = await asyncio.to_thread(_prompt_tokens, runner, texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json({"object": "list", "data": items, "model": _model_id(mv), "usage": usage})

    async def chat(self, request: Any) -> Any:
        from starlette.responses import StreamingResponse

        data = await self.read_json(request)
        target = await self.door.target(data.get("model"), pick=chat_function)
        mv, runner = target.mv, target.runner
        columns, params = chat_row(runner, data)
        if not data.get("stream"):
            completion = (await self.door.run(mv, runner, columns, params))[0]
            if completion is None:
                raise HttpError(400, f"{runner.context('messages')}: messages must not be empty")
            return _json(completion)
        options = data.get("stream_options") or {}
        stream = ChatStream(_model_id(mv), bool(isinstance(options, dict) and options.get("include_usage")))
        answer = asyncio.ensure_future(self.door.run(mv, runner, columns, params, listeners={0: stream.hear}))
        await stream.started(answer, runner)  # a bad row is a 400 before any event is sent
        return StreamingResponse(stream.events(answer), media_type="text/event-stream")

    async def invocations(self, request: Any) -> Any:
        data = await self.read_json(request)
        # /models/{model}/versions/{version}/invocations, or MLflow's bare /invocations with the body's model.
        model = request.path_params.get("model") or data.get("model")
        function = request.query_params.get("function") or data.get("function")
        target = await self.door.target(model, request.path_params.get("version"), function)
        mv, runner = target.mv, target.runner
        frame = invocation_frame(data, runner)
        params = data.get("params")  # MLflow's runtime parameters: the signature's params
        if params is not None and not isinstance(params, dict):
            raise HttpError(400, "params must be an object of parameter names and values")
        columns = pandas_io.input_columns(frame, runner)
        rows = await self.door.run(mv, runner, columns, params)
        out = pandas_io.output_frame(rows, runner.signature, frame.index)
        records = [dict(zip(out.columns, values, strict=True)) for values in out.itertuples(False)]
        return _json({"predictions": records})

    async def health(self, request: Any) -> Any:
        return _json({"status": "ok", "models": len(self.registry.model_keys())})

    async def metrics_page(self, request: Any) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST
        from starlette.responses import Response

        cache = getattr(self.registry._context, "result_cache", None)
        return Response(await asyncio.to_thread(self.metrics.render, cache), media_type=CONTENT_TYPE_LATEST)

    def routes(self) -> list[Any]:
        from starlette.routing import Route

        return [
            Route("/v1/models", self.models),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/models/{model}/versions/{version}/invocations", self.invocations, methods=["POST"]),
            Route("/invocations", self.invocations, methods=["POST"]),
            Route("/health", self.health),
            Route("/ping", self.health),
            Route("/metrics", self.metrics_page),
        ]


class Guard:
    """ASGI middleware around every route: the token, errors as JSON, metrics and the access log."""

    def __init__(self, app: Any, settings: HttpSettings, metrics: Metrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            if not self._authorized(scope, path):
                refusal = "A valid token is required: send Authorization: Bearer <token>"
                await _error(401, refusal, "authentication_error", path)(scope, receive, sending)
                return
            try:
                await self.app(scope, receive, sending)
            except HttpError as exc:
                await _error(exc.status, str(exc), exc.kind, path)(scope, receive, sending)
            except ValueError as exc:  # the inference core's words: a bad row, parameter or column
                await _error(400, str(exc), "invalid_request_error", path)(scope, receive, sending)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            endpoint = _endpoint(path)
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(seconds)
            client = scope["client"][0] if scope.get("client") else "-"
            LOG.info('%s "%s %s" %s %.1f ms', client, scope["method"], path, status["code"], seconds * 1000)

    def _authorized(self, scope: dict[str, Any], path: str) -> bool:
        token = self.settings.token
        if token is None or path in HEALTH_PATHS:
            return True
        headers = dict(scope.get("headers") or [])
        scheme, _, value = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def create_app(registry: Any, settings: HttpSettings | None = None) -> Any:
    """The Starlette application serving ``registry`` (see the module docstring)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    settings = settings or HttpSettings()
    metrics = Metrics()
    endpoints = Endpoints(registry, settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(endpoints.door.close)  # after the requests in flight: answers what is queued

    app = Starlette(
        routes=endpoints.routes(),
        middleware=[Middleware(Guard, settings=settings, metrics=metrics)],
        lifespan=lifespan,
    )
    app.state.endpoints = endpoints
    return app


def _json(payload: Any) -> Any:
    from starlette.responses import Response

    return Response(json.dumps(payload, default=json_default), media_type="application/json")


def _error(status: int, message: str, kind: str, path: str) -> Any:
    """An error in OpenAI's shape under ``/v1/``, in MLflow's elsewhere."""
    from starlette.responses import JSONResponse

    if path.startswith("/v1/"):
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)
    code = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 404: "RESOURCE_DOES_NOT_EXIST", 413: "BAD_REQUEST"}
    return JSONResponse({"error_code": code.get(status, "INTERNAL_ERROR"), "message": message}, status_code=status)


def _endpoint(path: str) -> str:
    """A metrics label for ``path`` that does not grow with model names."""
    if path.startswith("/models/") and path.endswith("/invocations"):
        return "/models/{model}/versions/{version}/invocations"
    return path if path in ("/v1/models", "/v1/embeddings", "/v1/chat/completions", "/invocations", "/health",
                            "/ping", "/metrics") else "other"  # fmt: skip


def _retrieved(answer: asyncio.Future) -> None:
    if not answer.cancelled():
        answer.exception()


def _prompt_tokens(runner: FunctionRunner, texts: list[str]) -> int:
    """The tokens the model read for ``texts``; the words, for a custom model the core cannot count for."""
    counter = runner.count_tokens
    return counter(texts) if counter is not None else sum(len(text.split()) for text in texts)


def _model_id(mv: Any) -> str:
    return f"{mv.model_name}/{mv.version_name}"


def embedding_function(mv: Any) -> str:
    """The version's function from one text to one vector, or a 400 saying the version has none."""
    spec = vector_function(mv)
    if spec is not None:
        return spec.name
    raise HttpError(
        400,
        f"Model {mv.model_name} version {mv.version_name} has no function from one text to one vector; "
        "/v1/embeddings needs an embedding model (feature-extraction logged with options={'pooling': 'mean'})",
    )


def chat_function(mv: Any) -> str:
    """The version's OpenAI chat function, or a 400 saying the version has none."""
    for spec in mv.function_specs():
        if spec.implementation is Implementation.OPENAI_CHAT:
            return spec.name
    raise HttpError(
        400,
        f"Model {mv.model_name} version {mv.version_name} (task {mv.task}) takes no chat messages; "
        "/v1/chat/completions needs a version logged with an OpenAI chat signature",
    )


def chat_row(runner: FunctionRunner, data: dict[str, Any]) -> tuple[list[list[Any]], dict[str, Any] | None]:
    """One row of the chat function from an OpenAI request body: the messages and each control the signature
    takes as a column, or as a parameter (``max_tokens`` reads as ``max_completion_tokens``)."""
    body = dict(data)
    if "max_tokens" in body and "max_completion_tokens" not in body:
        body["max_completion_tokens"] = body.pop("max_tokens")
    if isinstance(body.get("stop"), str):
        body["stop"] = [body["stop"]]
    body.pop("stream", None)
    unsupported = sorted(k for k in ("tools", "tool_choice", "functions", "logprobs", "top_logprobs") if body.get(k))
    if unsupported:
        raise HttpError(400, f"{runner.context()}: {', '.join(unsupported)} are not supported here")
    taken = {"model", "stream_options", "user", "seed", "tools", "tool_choice", "functions", "logprobs",
             "top_logprobs"}  # fmt: skip
    inputs = [spec.name for spec in runner.signature.inputs]
    params = {p.name for p in runner.signature.params}
    unknown = sorted(set(body) - set(inputs) - params - taken)
    if unknown:
        raise HttpError(400, f"{runner.context()}: does not take {', '.join(unknown)}")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise HttpError(400, f"{runner.context('messages')}: messages must be a non-empty list")
    columns = [[body.get(name)] for name in inputs]
    chosen = {name: body[name] for name in params if name in body}
    return columns, chosen or None


class ChatStream:
    """One streamed chat answer: each choice's text as the inference core reports it (``hear``, from the
    worker thread), sent as OpenAI's ``chat.completion.chunk`` events while it is generated, then the finish
    reasons, the usage when asked for, and ``[DONE]``. The finished answer is the last word: what it adds to
    the text already sent goes out last, so the deltas join to exactly its content (a cached answer comes
    whole)."""

    _END = object()

    def __init__(self, model_id: str, include_usage: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.sent: dict[int, str] = {}
        self.diverged = False
        self.first: tuple[int, str] | None = None
        self.base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
                     "created": int(time.time()), "model": model_id}  # fmt: skip
        self.include_usage = include_usage

    def hear(self, choice: int, text: str) -> None:
        """A choice's text so far (called from the thread running the model)."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (choice, text))

    async def started(self, answer: asyncio.Future, runner: FunctionRunner) -> None:
        """Wait for the first text or the whole answer; the answer's error (a bad row) is raised here."""
        answer.add_done_callback(lambda _: self.queue.put_nowait(self._END))
        answer.add_done_callback(_retrieved)  # a client gone mid-stream leaves no "never retrieved" error
        item = await self.queue.get()
        if item is self._END:
            if answer.result()[0] is None:
                raise HttpError(400, f"{runner.context('messages')}: messages must not be empty")
        else:
            self.first = item

    async def events(self, answer: asyncio.Future) -> AsyncIterator[bytes]:
        """The server-sent events of the answer, as it is generated."""
        item = self.first if self.first is not None else self._END
        while item is not self._END:
            choice, text = item
            delta = self._delta(choice, text)
            if delta is not None:
                yield delta
            item = await self.queue.get()
        try:
            completion = answer.result()[0]
        except Exception as exc:  # noqa: BLE001 - the stream has begun: the error is its last event
            yield self._error(str(exc), 400 if isinstance(exc, ValueError) else 500)
            return
        choices = completion["choices"]
        if self.diverged or any(
            not (c["message"].get("content") or "").startswith(self.sent.get(c["index"], "")) for c in choices
        ):
            # A sampled row computed again (its forward batch failed elsewhere) answered differently from the
            # text already sent: say so rather than end a stream that does not join to its answer.
            yield self._error("the answer was computed again after a failure in its batch and differs from the "
                              "text already sent; ask again", 500)  # fmt: skip
            return
        for choice in choices:
            delta = self._delta(choice["index"], choice["message"].get("content") or "")
            if delta is not None:
                yield delta
            yield self._chunk(choice["index"], {}, choice["finish_reason"])
        if self.include_usage:
            yield self._event({**self.base, "choices": [], "usage": completion.get("usage")})
        yield b"data: [DONE]\n\n"

    def _delta(self, choice: int, text: str) -> bytes | None:
        """The chunk that brings ``choice`` from the text sent to ``text`` (the role first), or None."""
        already = self.sent.get(choice)
        if already is None:
            self.sent[choice] = ""
            role = self._chunk(choice, {"role": "assistant", "content": ""}, None)
            more = self._delta(choice, text)
            return role + (more or b"")
        if not text.startswith(already):
            self.diverged = True  # a sampled row computed again: its end is an error (see events)
            return None
        if len(text) <= len(already):
            return None  # a row computed again repeats text already sent
        self.sent[choice] = text
        return self._chunk(choice, {"content": text[len(already) :]}, None)

    def _error(self, message: str, status: int) -> bytes:
        kind = "invalid_request_error" if status == 400 else "server_error"
        return self._event({"error": {"message": message, "type": kind, "code": status}})

    def _chunk(self, choice: int, delta: dict[str, Any], finish: str | None) -> bytes:
        return self._event({**self.base, "choices": [{"index": choice, "delta": delta, "finish_reason": finish}]})

    @staticmethod
    def _event(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload, default=json_default)}\n\n".encode()


def invocation_frame(data: dict[str, Any], runner: FunctionRunner) -> pd.DataFrame:
    """The rows of an MLflow-style body: ``dataframe_split`` (columns and data), ``dataframe_records`` (a list
    of objects) or ``inputs`` (an object of columns, a list of objects, or a list of values for a function of
    one input)."""
    given = [key for key in ("dataframe_split", "dataframe_records", "inputs") if key in data]
    if len(given) != 1:
        raise HttpError(400, "Give the rows in exactly one of dataframe_split, dataframe_records or inputs")
    value = data[given[0]]
    try:
        if given[0] == "dataframe_split":
            if not isinstance(value, dict) or "data" not in value:
                raise ValueError("dataframe_split must be an object with columns and data")
            return pd.DataFrame(value["data"], columns=value.get("columns"), dtype=object)
        if isinstance(value, dict):
            return pd.DataFrame({k: v if isinstance(v, list) else [v] for k, v in value.items()}, dtype=object)
        if isinstance(value, list) and value and all(isinstance(row, dict) for row in value):
            return pd.DataFrame.from_records(value).astype(object)
        if isinstance(value, list) and value and len(runner.signature.inputs) - len(runner.optional_inputs) <= 1:
            return pd.DataFrame({runner.signature.inputs[0].name: value}, dtype=object)
        raise ValueError(f"{given[0]} must hold rows (a list of objects, or an object of columns)")
    except (ValueError, TypeError) as exc:
        raise HttpError(400, f"{runner.context()}: {exc}") from None


def start(
    registry: Any, *, host: str = "127.0.0.1", port: int = 0, settings: HttpSettings | None = None
) -> ThreadedServer:
    """Serve ``registry`` over HTTP from a background thread of this process (``port=0``: a free port).
    Off loopback a token is required. ``stop()`` lets the requests in flight finish first."""
    import uvicorn

    from duckreg.serve import require_token_off_loopback

    settings = settings or HttpSettings()
    require_token_off_loopback(host, settings.token, "Serving HTTP", ValueError)
    port = port or free_port(host)
    config = uvicorn.Config(create_app(registry, settings), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="on")  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    return threaded_server.start(config, "duckreg-http", f"http://{shown}:{port}")
