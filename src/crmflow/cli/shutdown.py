"""Stopping `crmflow serve` in a bounded time.

On SIGTERM (or Ctrl-C) the server stops taking connections, gives the requests being served
GRACEFUL_SECONDS to finish, and the embedded worker ends after its batch (itself bounded by
settings.batch_time_limit_ms). What does not end by HARD_STOP_SECONDS after the signal (a request
stuck in a thread, which Python cannot interrupt; a batch that never returns) does not keep the
process alive: it exits with status 1, saying so. Whatever a batch had not committed is rolled
back by the database, as after a crash; nothing half-written remains.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

__all__ = ["GRACEFUL_SECONDS", "HARD_STOP_SECONDS", "StoppingServer", "arm_hard_stop"]

GRACEFUL_SECONDS = 5
HARD_STOP_SECONDS = 10.0
# The last resort, for a thread that holds the interpreter lock (a long call into native code)
# so that no Python code, the hard stop's included, can run: a watchdog written in C.
_NATIVE_BACKSTOP_SECONDS = 2.0


class StoppingServer(uvicorn.Server):
    """uvicorn's server that, at the first stop signal, also calls `on_stop` (stop the worker)
    and arms the hard stop."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._stopping = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._stopping:
            self._stopping = True
            arm_hard_stop(HARD_STOP_SECONDS)
            self._on_stop()
        super().handle_exit(sig, frame)


def arm_hard_stop(seconds: float) -> None:
    """End the process `seconds` from now unless it has ended by then."""

    def stop_now() -> None:
        sys.stderr.write(
            f"crmflow: still running {seconds:g} s after the stop signal (a request or a batch "
            "that did not end); exiting now, with what was not committed rolled back\n"
        )
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, stop_now)
    timer.daemon = True
    timer.name = "crmflow-hard-stop"
    timer.start()
    faulthandler.dump_traceback_later(seconds + _NATIVE_BACKSTOP_SECONDS, exit=True)
