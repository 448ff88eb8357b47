"""An SMTP server in a process of its own that writes down what it accepts, for the delivery fault
test (tests/integration/test_delivery_faults.py): it can be killed (SIGKILL: every connection
is cut at once, as when a mail server crashes) and started again on the same port, and what it
wrote survives it.

    python -m tests.integration.counting_smtp PORT JOURNAL

Each line of JOURNAL, written (unbuffered) before the server answers:

    D <connection> <Message-ID>    a message accepted by DATA (the 250 goes after the line)
    Q <connection>                 the client said QUIT (the connection ended in good order)

`<connection>` names one connection: this process's pid and a counter.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


class Journal:
    """aiosmtpd handler: one journal line per accepted message and per QUIT."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.numbers = itertools.count(1)
        self.prefix = f"{os.getpid()}-"

    def _connection(self, session: Any) -> str:
        name = getattr(session, "journal_name", None)
        if name is None:
            name = f"{self.prefix}{next(self.numbers)}"
            session.journal_name = name
        return str(name)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        found = _MESSAGE_ID.search(envelope.content)
        mid = found.group(1).decode() if found else "<none>"
        os.write(self.fd, f"D {self._connection(session)} {mid}\n".encode())
        return "250 2.0.0 queued"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        os.write(self.fd, f"Q {self._connection(session)}\n".encode())
        return "221 Bye"


def main() -> None:
    port, path = int(sys.argv[1]), Path(sys.argv[2])
    controller = Controller(Journal(path), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
