"""``duckreg ui``: a local web page over a registry for models, versions, signatures, metrics, jobs and stages.

``duckreg ui shop.duckdb`` serves it from the command line; ``duckreg.ui.start(registry)`` serves it from
a running Python process (a notebook), so the jobs that process starts show their progress live.
Everything it loads (styles, scripts, the Chart.js chart library) ships inside the package: it works
with no network. It binds to loopback unless told otherwise, and any other address needs a token.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from duckreg import threaded_server
from duckreg.registry.registry import Registry
from duckreg.serve import require_token_off_loopback
from duckreg.threaded_server import ThreadedServer, free_port

UIServer = ThreadedServer
"""A UI served from a background thread of this process; ``stop()`` ends it."""


def start(
    registry: Registry,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    read_only: bool = False,
    token: str | None = None,
) -> UIServer:
    """Serve the UI for ``registry`` from a background thread; ``port=0`` picks a free port.

    Jobs this process starts with ``run_batch`` appear on its Jobs page with live progress, and can be
    cancelled there.
    """
    require_token_off_loopback(host, token, "The UI", ValueError)
    port = port or free_port(host)
    return threaded_server.start(_config(registry, host, port, read_only, token), "duckreg-ui",
                                 _address(host, port, token))  # fmt: skip


def serve(
    registry: Registry, *, host: str, port: int, read_only: bool, token: str | None, announce: Any = print
) -> None:
    """Serve the UI in this thread until Ctrl-C or SIGTERM (``duckreg ui``)."""
    import uvicorn

    from duckreg.ui.app import database_path

    require_token_off_loopback(host, token, "The UI", ValueError)
    config = _config(registry, host, port, read_only, token)
    database = database_path(registry)
    shown = _address(host, port, token)

    class Announcing(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # Ctrl-C and SIGTERM stop serving and return here (uvicorn's own handling would re-raise them).
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                mode = " (read-only)" if read_only else ""
                announce(f"duckreg UI for {database}{mode} at {shown}  (Ctrl-C stops it)")

    server = Announcing(config)
    server.run()


def _config(registry: Registry, host: str, port: int, read_only: bool, token: str | None) -> Any:
    """The uvicorn configuration serving the UI app for ``registry``."""
    import uvicorn

    from duckreg.ui.app import create_app

    app = create_app(registry, read_only=read_only, token=token)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")


def _address(host: str, port: int, token: str | None) -> str:
    """The address to open in a browser; with a token, it carries it once (then a cookie keeps it)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
