"""CEL expressions whose cost is not bounded by their text run here: in a child process with a
memory limit, killed when it goes over its time.

The CEL library is native code that cannot be interrupted from Python, and its comprehension
macros are slow (a `map` over 10,000 items takes seconds, and each item can make a long string
with `+`). An expression that may do that much work (see `Scope.evaluate`) is sent to a child
process; the common case (comparisons of a few fields) never comes here and stays in-process.
Children are kept and reused (starting one costs about half a second, excluded from the
evaluation's time); one that goes over its time is killed, one that runs out of memory dies.

This is infrastructure, not engine: the pure engine starts no process. It receives a runner
through `EvaluationLimits.cel_runner` (the engine's `CelRunner`); the services' limits
(`Context.evaluation_limits`) and `crmflow simulate` give it `SANDBOX`.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from crmflow.engine.budget import CelEvaluationError
from crmflow.errors import LimitExceededError

__all__ = ["SANDBOX", "CelSandbox"]

_STARTUP_SECONDS = 30.0
_KEEP_IDLE = 2

# The child: it loads the CEL extension alone (not the package, whose interactive shell costs
# most of the start-up), caps its own address space, says it is ready, then answers requests.
_CHILD = r"""
import importlib.machinery, importlib.util, os, pickle, resource, struct, sys
path = sys.argv[1]
loader = importlib.machinery.ExtensionFileLoader("cel.cel", path)
spec = importlib.util.spec_from_file_location("cel.cel", path, loader=loader)
cel = importlib.util.module_from_spec(spec)
loader.exec_module(cel)
with open("/proc/self/statm") as statm:
    pages = int(statm.read().split()[0])
limit = pages * os.sysconf("SC_PAGE_SIZE") + int(sys.argv[2]) * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
inp, out = sys.stdin.buffer, sys.stdout.buffer
def send(obj):
    data = pickle.dumps(obj)
    out.write(struct.pack("<I", len(data)) + data)
    out.flush()
send(("ready", None))
while True:
    head = inp.read(4)
    if len(head) < 4:
        break
    expression, variables = pickle.loads(inp.read(struct.unpack("<I", head)[0]))
    try:
        result = cel.compile(expression).execute(variables)
        pickle.dumps(result)
        send(("ok", result))
    except MemoryError:
        send(("memory", None))
    except BaseException as exc:
        send(("error", (type(exc).__name__, str(exc))))
"""


class _Child:
    def __init__(self, memory_mb: int) -> None:
        self.memory_mb = memory_mb
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, _extension_path(), str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        status, _ = self.receive(time.monotonic() + _STARTUP_SECONDS)
        if status != "ready":  # pragma: no cover - the child failed to start
            self.kill()
            raise RuntimeError("the CEL sandbox process did not start")

    def send(self, payload: Any) -> None:
        assert self.process.stdin is not None
        data = pickle.dumps(payload)
        self.process.stdin.write(struct.pack("<I", len(data)) + data)
        self.process.stdin.flush()

    def receive(self, deadline: float) -> tuple[str, Any]:
        head = self._read(4, deadline)
        size = struct.unpack("<I", head)[0]
        message: tuple[str, Any] = pickle.loads(self._read(size, deadline))
        return message

    def _read(self, size: int, deadline: float) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        chunks: list[bytes] = []
        wanted = size
        while wanted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, wanted)
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            wanted -= len(chunk)
        return b"".join(chunks)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def _extension_path() -> str:
    """Where the CEL library's native module is, found without importing the package."""
    loaded = sys.modules.get("cel.cel")
    if loaded is not None and loaded.__file__:
        return loaded.__file__
    spec = importlib.util.find_spec("cel")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "cel" + suffix)
            if os.path.exists(path):
                return path
    raise RuntimeError("the CEL library's native module was not found")  # pragma: no cover


class CelSandbox:
    """A `CelRunner` that evaluates in child processes, a few of which it keeps for reuse."""

    def __init__(self, keep_idle: int = _KEEP_IDLE) -> None:
        self._keep_idle = keep_idle
        self._idle: list[_Child] = []
        self._lock = threading.Lock()

    def _take(self, memory_mb: int) -> _Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.memory_mb == memory_mb and child.process.poll() is None:
                    return child
                child.kill()
        return _Child(memory_mb)

    def _give_back(self, child: _Child) -> None:
        with self._lock:
            if len(self._idle) < self._keep_idle:
                self._idle.append(child)
                return
        child.kill()

    def warm(self, memory_mb: int) -> None:
        """Start a child ahead of need (a worker may call this once at start-up)."""
        self._give_back(self._take(memory_mb))

    def evaluate(
        self, expression: str, variables: dict[str, Any], *, time_limit_ms: int, memory_mb: int
    ) -> Any:
        """The value of `expression`, computed in a child process within the time and memory
        given.

        Raises LimitExceededError ("time" or "memory") when the child goes over, and
        CelEvaluationError when the expression itself fails.
        """
        child = self._take(memory_mb)
        try:
            child.send((expression, variables))
            status, value = child.receive(time.monotonic() + time_limit_ms / 1000)
        except TimeoutError:
            child.kill()
            raise LimitExceededError(
                "time", f"the CEL process went over its {time_limit_ms:,} ms"
            ) from None
        except (EOFError, BrokenPipeError, OSError):
            child.kill()
            raise _over_memory(memory_mb) from None
        if status == "memory":
            child.kill()
            raise _over_memory(memory_mb)
        self._give_back(child)
        if status == "error":
            kind, message = value
            raise CelEvaluationError(kind, message)
        return value


def _over_memory(memory_mb: int) -> LimitExceededError:
    return LimitExceededError("memory", f"the CEL process went over its {memory_mb:,} MB")


# One pool for the process: the services and the CLI share its children.
SANDBOX = CelSandbox()
