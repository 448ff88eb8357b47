"""Replay a CSV of changes from an existing CRM through crmflow's sync endpoint.

    python examples/replay_changes.py contact examples/replay_changes.csv \
        --base-url http://127.0.0.1:8000 --token crm_...        # a manager's or admin's token
    python examples/replay_changes.py contact changes.csv --secret whsec_...  # or signed

Each CSV row is one change: `op` (upsert or delete), `external_id` (the existing CRM's id of the
record), `owner` (a username, optional) and the record type's fields (an empty cell leaves a
field out: it keeps its value). The rows are sent as JSON Lines to
`POST /api/records/{type}/changes`, `--batch` rows a call, each call signed the Standard
Webhooks way when `--secret` (the server's CRMFLOW_SYNC_SECRET) is given. The answers are
printed, and the exit status is 1 when a line was refused. See docs/integrations.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook


def changes(path: Path) -> Iterator[dict[str, Any]]:
    """The CSV's rows as changes, in order."""
    with path.open(encoding="utf-8", newline="") as file:
        for row in csv.DictReader(file):
            op = row.pop("op", "") or "upsert"
            change: dict[str, Any] = {"op": op, "external_id": row.pop("external_id", "")}
            owner = row.pop("owner", "")
            if op == "upsert":
                change["data"] = {field: value for field, value in row.items() if value}
                if owner:
                    change["owner"] = owner
            yield change


def _batches(items: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _signer(secret: str) -> Webhook:
    """As crmflow reads a secret: whsec_<base64> is the bytes it encodes, else its UTF-8."""
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


def replay(
    client: httpx.Client,
    record_type: str,
    path: Path,
    *,
    token: str | None = None,
    secret: str | None = None,
    batch: int = 1000,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[dict[str, Any]]:
    """Send the CSV's changes, `batch` a call, each signed at `clock()` when there is a
    secret; the answers (sync reports), one per call."""
    answers = []
    for part in _batches(changes(path), batch):
        body = "".join(json.dumps(change) + "\n" for change in part)
        headers = {"Content-Type": "application/x-ndjson"}
        if secret:
            msg_id, now = f"msg_{uuid.uuid4().hex}", clock()
            headers |= {
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": _signer(secret).sign(msg_id, now, body),
            }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        answer = client.post(f"/api/records/{record_type}/changes", content=body, headers=headers)
        answer.raise_for_status()
        answers.append(answer.json())
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record_type")
    parser.add_argument("csv", type=Path)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--token", help="a manager's or admin's API token")
    parser.add_argument("--secret", help="the server's CRMFLOW_SYNC_SECRET: sign instead")
    parser.add_argument("--batch", type=int, default=1000, help="changes per call (max 10000)")
    args = parser.parse_args(argv)
    with httpx.Client(base_url=args.base_url, timeout=60) as client:
        answers = replay(
            client,
            args.record_type,
            args.csv,
            token=args.token,
            secret=args.secret,
            batch=args.batch,
        )
    refused = 0
    for answer in answers:
        print(json.dumps(answer))
        refused += answer["rejected"]
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
