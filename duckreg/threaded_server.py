"""A uvicorn server in a background thread of this process: the UI and the HTTP door both run this way."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class ThreadedServer:
    """A server answering from a background thread; ``stop()`` ends it after the requests in flight."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting connections, let the requests in flight finish, and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self.url!r})"


def free_port(host: str) -> int:
    """A port on ``host`` nothing listens on now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def start(config: Any, name: str, url: str) -> ThreadedServer:
    """Run uvicorn with ``config`` in a daemon thread named ``name``; returns once it listens (or raises a
    ``RuntimeError`` when it cannot)."""
    import uvicorn

    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} could not start on {config.host}:{config.port}.")
        time.sleep(0.02)
    return ThreadedServer(url, server, thread)
