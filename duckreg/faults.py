"""Named points where a crash test can have the process kill itself.

``DUCKREG_KILL_AT=log_model:after_publish`` makes the process SIGKILL itself when it reaches that
point, so tests can check what a registry looks like after a process dies there. Unset (always, in
normal use), a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "DUCKREG_KILL_AT"
POINTS = (
    "log_model:before_staging",
    "log_model:after_staging",
    "log_model:after_publish",
    "log_model:in_transaction",
    "log_model:after_commit",
    "delete:in_transaction",
    "delete:after_commit",
    "delete:mid_removal",
    "set_engine:after_staging",
    "set_engine:after_publish",
    "set_engine:in_transaction",
    "set_engine:after_commit",
    "index_refresh:after_delete",
    "index_refresh:before_commit",
    "index_switch:before_commit",
    "index_ann:building",
    "index_keyword:building",
)


def point(name: str) -> None:
    """Die here if a crash test asked for it."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
