"""One exception root for everything crmflow refuses, with what, where and how to fix it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_LISTED_PROBLEMS",
    "AuthenticationError",
    "ConflictError",
    "CrmflowError",
    "InvalidInputError",
    "LimitExceededError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "Problem",
    "TooManyRequestsError",
    "listed_problems",
    "refusal_body",
    "shown",
]

# A refusal lists this many problems at most (an `in` list of 100,000 unknown users would
# otherwise answer megabytes); the others are counted: "and N more".
MAX_LISTED_PROBLEMS = 100


def shown(value: object, *, quote: bool = True, width: int = 60) -> str:
    """`value` as an error message quotes it (its repr, or its text when not `quote`): a value
    of thousands of characters is cut, and says how long it was."""
    text = repr(value) if quote else str(value)
    return text if len(text) <= width else f"{text[:width]}... ({len(text):,} characters)"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where it is, what is wrong, and (optionally) how to fix it.

    `path` is a dotted/indexed path into the document (`steps[2].actions[0].to`); `line` is the
    1-based line in the source file when the input came from a file.
    """

    path: str
    message: str
    hint: str = ""
    line: int | None = None
    source: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.source:
            where = self.source
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        text = f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "message": self.message,
            "hint": self.hint or None,
            "line": self.line,
            "source": self.source,
        }


class CrmflowError(Exception):
    """Root of every error crmflow raises on purpose: the message says what, where, what to do."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict[str, object]:
        return {"error": type(self).__name__, "message": self.message}


def listed_problems(
    problems: Sequence[Problem], not_listed: int = 0
) -> tuple[Sequence[Problem], int]:
    """The problems a refusal shows (the first MAX_LISTED_PROBLEMS) and how many more there
    were (`not_listed`: those a caller counted without keeping them)."""
    listed = problems[:MAX_LISTED_PROBLEMS]
    return listed, len(problems) - len(listed) + not_listed


def refusal_body(
    what: str,
    problems: Sequence[Problem],
    *,
    not_listed: int = 0,
    error: str = "InvalidInputError",
) -> dict[str, object]:
    """The JSON body of a refused input: what was refused, its first MAX_LISTED_PROBLEMS
    problems, and how many more there were ("and N more"). The one renderer of a list of
    problems: a service's InvalidInputError, the request guard's refusals and FastAPI's own
    refusals of a parameter or a body all answer through it, with the same cap and shape."""
    listed, more = listed_problems(problems, not_listed)
    message = f"{what} was refused"
    if more:
        message += (
            f" ({len(listed) + more:,} problems: the first {len(listed)} are listed, "
            f"and {more:,} more)"
        )
    return {"error": error, "message": message, "problems": [p.as_dict() for p in listed]}


class InvalidInputError(CrmflowError):
    """The input was refused whole; `problems` lists every reason, each with its place (or the
    first ones, and `not_listed` counts the others, when there could be millions)."""

    status_code = 422

    MAX_LISTED = MAX_LISTED_PROBLEMS

    def __init__(self, what: str, problems: list[Problem], *, not_listed: int = 0) -> None:
        self.what = what
        self.problems = list(problems)
        self.not_listed = not_listed
        listed, more = listed_problems(self.problems, not_listed)
        lines = "\n".join(f"  - {p}" for p in listed)
        count = len(listed) + more
        noun = "problem" if count == 1 else "problems"
        tail = f"\n  ... and {more:,} more" if more else ""
        super().__init__(f"{what} was refused ({count:,} {noun}):\n{lines}{tail}")

    def as_dict(self) -> dict[str, object]:
        return refusal_body(
            self.what, self.problems, not_listed=self.not_listed, error=type(self).__name__
        )


class NotFoundError(CrmflowError):
    status_code = 404


class ConflictError(CrmflowError):
    """The request is well formed but the current state does not allow it (the message says why)."""

    status_code = 409


class PermissionDeniedError(CrmflowError):
    status_code = 403


class AuthenticationError(CrmflowError):
    status_code = 401


class PreconditionFailedError(CrmflowError):
    """An update or delete said which version it read (If-Match, --if-version), and the row has
    changed since: nothing was written; read it again and redo the change on the new version."""

    status_code = 412


class PayloadTooLargeError(CrmflowError):
    """A request body or a document is larger than the configured limit (the message names it)."""

    status_code = 413


class TooManyRequestsError(CrmflowError):
    """Too many attempts (failed sign-ins): `retry_after` says in how many seconds to try again."""

    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "retry_after": self.retry_after}


class LimitExceededError(CrmflowError):
    """An evaluation (a template, a CEL condition) went over one of its budgets: `limit` names
    which (output size, loop iterations, list size, time), `where` the place in the flow."""

    status_code = 422

    def __init__(self, limit: str, message: str, where: str = "") -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.limit = limit
        self.where = where
