"""Run Python snippets each in its own forked child of one prepared interpreter.

A test that could crash the process (a segfault, an abort) must fail, not take the suite down, so each
snippet runs in a child process. Importing torch and transformers costs seconds; this interpreter does
it once and forks a child per snippet, which then starts in milliseconds.

    python forked.py < cases.json > results.json

``cases.json`` is ``{"prelude": code, "cases": {name: code}, "timeout": seconds}``; each result is
``{"exit": code or -signal, "output": last lines printed}``. A child still running at the timeout is
killed with SIGKILL and reported as ``-9``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time


def run_case(setup: str, prelude: str, code: str, timeout: float) -> dict:
    with tempfile.TemporaryFile(mode="w+") as log:
        pid = os.fork()
        if pid == 0:  # child: run the snippet, exit with its status
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            status = 0
            try:
                namespace: dict = {"__name__": "__forked__"}
                exec(compile(setup, "<setup>", "exec"), namespace)  # imported already: names only
                exec(compile(prelude, "<prelude>", "exec"), namespace)
                exec(compile(code, "<case>", "exec"), namespace)
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - reported through the exit status and the log
                import traceback

                traceback.print_exc()
                status = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.01)
        code_or_signal = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        log.seek(0)
        output = log.read()[-4000:]
    return {"exit": code_or_signal, "output": output}


def main() -> None:
    request = json.load(sys.stdin)
    setup = request.get("setup", "")
    exec(compile(setup, "<setup>", "exec"), {"__name__": "__setup__"})
    results = {
        name: run_case(setup, request.get("prelude", ""), code, float(request.get("timeout", 120)))
        for name, code in request["cases"].items()
    }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
