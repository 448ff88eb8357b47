"""Optimistic concurrency: update or delete a row only if it is still at the version read.

Records and saved queries carry a `version`, flows a `revision` (their `version` already names the
definition's version); every write to the row adds one. A caller that read version 6 and passes
it (HTTP `If-Match: "6"`, CLI `--if-version 6`) has its change refused with
PreconditionFailedError (412) when the row is now at 7: the check runs on the row locked by the
write's own transaction, so no other write can slip between the check and the write.
"""

from __future__ import annotations

from collections.abc import Collection

from crmflow.errors import PreconditionFailedError

__all__ = ["ExpectedVersion", "require_version"]

# None: any version (no precondition, or `If-Match: *`); an int or several: one of those.
ExpectedVersion = int | Collection[int] | None


def require_version(
    what: str,
    current: int,
    expected: ExpectedVersion,
    *,
    read_again: str,
    noun: str = "version",
) -> None:
    """PreconditionFailedError unless `current` is one of the `expected` versions.

    `what` names the row ("record 12"), `read_again` says how to read it again.
    """
    if expected is None:
        return
    wanted = {expected} if isinstance(expected, int) else set(expected)
    if current in wanted:
        return
    if wanted:
        given = " or ".join(str(v) for v in sorted(wanted))
        mismatch = f"{what} is at {noun} {current}, not {given}"
    else:
        # Only weak entity tags (W/"6"), which If-Match never matches (it compares strongly).
        mismatch = f"{what} is at {noun} {current}, and the precondition named no {noun}"
    raise PreconditionFailedError(
        f"{mismatch}: it changed since you read it, and nothing was written; read it again "
        f"({read_again}) and redo your change on {noun} {current}"
    )
