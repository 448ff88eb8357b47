"""One exception root for everything crmflow refuses, with what, where and how to fix it.

Every exception class crmflow raises to a user is defined here, below every other layer, so that
the API and the command line catch the real class (never by the name of an attribute) without
importing the service that raises it. The tree, with each class's HTTP status (a unit test checks
that it names exactly the classes of this module, and that no other module defines one):

    CrmflowError(Exception)             400  what, where, what to do
        InvalidInputError               422  every problem, each with its place
        NotFoundError                   404
        ConflictError                   409  the current state does not allow it
            ConfirmationRequiredError   409  confirm a number seen first (`count`, `confirm_with`)
            MovesRequiredError          409  say where the records of removed steps go (`steps`)
        PermissionDeniedError           403
        AuthenticationError             401
            SignInRequiredError         401  a web page sends the browser to sign in (`next_path`)
        CsrfError                       403  a web form without its page's CSRF token
        PreconditionFailedError         412  the row changed since it was read (If-Match)
        PayloadTooLargeError            413
        TooManyRequestsError            429  `retry_after` seconds
        LimitExceededError              422  an evaluation went over a budget (`limit`, `where`)
            OutputTooLargeError         422  a rendered text longer than its output budget
        ImportInterruptedError          500  an import stopped (422: the file is unreadable)

Inside the engine, evaluating a flow's conditions and templates, and never an answer by
themselves (no status): the engine turns them into an action that failed, a condition that
counts as false, or one of the errors above. They are importable from the engine modules that
raise them too (`engine.steps.scope`, `engine.budget`).

    EvaluationError(ValueError)         -    a condition, template or value could not be evaluated
        BudgetExceededError             -    it went over one of its budgets (`limit`)
    CelEvaluationError(Exception)       -    the CEL library's own error (`kind`)

Inside the dispatcher, an attempt to deliver one outbox message that did not deliver: the
dispatcher writes it on the message's row (retrying, or failed when `permanent`), never an answer
by itself. Importable from `delivery.email` too.

    DeliveryError(Exception)            -    not delivered; `permanent`: trying again cannot help
        RetryLaterError                 -    a temporary refusal that says when (`retry_after`)

Inside a background job's runner (services.jobs), never an answer: its step rolls back and
the job is left to the runner that took it over.

    JobLeaseLostError(Exception)        -    another runner took the job over (the lease expired)
    JobStoppedError(Exception)          -    the runner is stopping: the job waits for the next one
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

__all__ = [
    "MAX_LISTED_PROBLEMS",
    "AuthenticationError",
    "BudgetExceededError",
    "CelEvaluationError",
    "ConfirmationRequiredError",
    "ConflictError",
    "CrmflowError",
    "CsrfError",
    "DeliveryError",
    "EvaluationError",
    "ImportInterruptedError",
    "InvalidInputError",
    "JobLeaseLostError",
    "JobStoppedError",
    "LimitExceededError",
    "MovesRequiredError",
    "NotFoundError",
    "OutputTooLargeError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "Problem",
    "RetryLaterError",
    "SignInRequiredError",
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
        self.headline = f"{what} was refused ({count:,} {noun})"  # the message's first line
        super().__init__(f"{self.headline}:\n{lines}{tail}")

    def as_dict(self) -> dict[str, object]:
        return refusal_body(
            self.what, self.problems, not_listed=self.not_listed, error=type(self).__name__
        )


class NotFoundError(CrmflowError):
    status_code = 404


class ConflictError(CrmflowError):
    """The request is well formed but the current state does not allow it (the message says why)."""

    status_code = 409


class ConfirmationRequiredError(ConflictError):
    """The change needs the user to confirm a number they have seen (ProDon's confirmation):
    the records a start list enters, the records inside a flow that a pause or an archive stops.
    `confirm_with` is the command that confirms it, for the command line to suggest."""

    def __init__(self, message: str, *, count: int, confirm_with: str) -> None:
        super().__init__(message)
        self.count = count
        self.confirm_with = confirm_with

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "count": self.count, "confirm_with": self.confirm_with}


class _Described(Protocol):
    """What an error lists in its JSON body (a step's impact): its own `as_dict`. A protocol,
    because the classes listed live in the layers above this module."""

    def as_dict(self) -> dict[str, object]: ...


class MovesRequiredError(ConflictError):
    """The resume would strand records at steps the new version removed: say where they go.
    `steps`: the removed steps that have records (`engine.version_move.StepImpact`)."""

    def __init__(self, message: str, *, steps: Sequence[_Described]) -> None:
        super().__init__(message)
        self.steps = list(steps)

    def as_dict(self) -> dict[str, object]:
        return {**super().as_dict(), "steps": [s.as_dict() for s in self.steps]}


class PermissionDeniedError(CrmflowError):
    status_code = 403


class AuthenticationError(CrmflowError):
    status_code = 401


class SignInRequiredError(AuthenticationError):
    """A web page needs a signed-in user: the web app answers with a redirect to its sign-in
    page, which comes back to `next_path` (a local path) after signing in."""

    def __init__(self, next_path: str) -> None:
        super().__init__(f"sign in to see {next_path}")
        self.next_path = next_path


class CsrfError(CrmflowError):
    """A web form or htmx request came without the page's CSRF token (or with a stale one)."""

    status_code = 403


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


class OutputTooLargeError(LimitExceededError):
    """The rendered text is longer than the output budget."""


class _ImportProgress(Protocol):
    """How far an import got (`services.imports.ImportReport`): what the error's message says."""

    @property
    def source(self) -> str: ...
    @property
    def all_or_nothing(self) -> bool: ...
    @property
    def imported(self) -> int: ...
    @property
    def last_line(self) -> int: ...


class ImportInterruptedError(CrmflowError):
    """The import stopped on an unexpected error; `report` says what was committed before it."""

    status_code = 500

    def __init__(self, report: _ImportProgress, cause: BaseException) -> None:
        self.report = report
        if isinstance(cause, UnicodeDecodeError | csv.Error):
            self.status_code = 422  # the file itself is unreadable past this point
        kept = (
            "nothing was written"
            if report.all_or_nothing
            else f"{report.imported} rows before it are imported"
        )
        super().__init__(
            f"{report.source}: the import stopped near line {report.last_line} on "
            f"{type(cause).__name__}: {cause}; {kept}"
        )


# -- inside the engine ----------------------------------------------------------------------------


class EvaluationError(ValueError):
    """A condition, template or value could not be evaluated; the message says why."""


class BudgetExceededError(EvaluationError):
    """The evaluation went over one of its budgets; `limit` names which (output, size, range,
    iterations, number, nesting, time, memory, or work: a condition too heavy to run in process
    with no runner to send it to). The message says which and how to stay within it; the
    caller adds where (`steps.welcome.actions[0].body: ...`)."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit

    def at(self, where: str) -> BudgetExceededError:
        """The same error, its message starting with the place in the flow."""
        return BudgetExceededError(self.limit, f"{where}: {self}" if where else str(self))


class CelEvaluationError(Exception):
    """A `CelRunner` could not evaluate the expression (the CEL library's own error): `kind` is
    the library's error type, the message its words."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class DeliveryError(Exception):
    """An attempt that did not deliver; `permanent`: trying again cannot help (a 5xx refusal,
    an invalid address), so the message fails at once."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class RetryLaterError(DeliveryError):
    """A temporary refusal that says when to come back (429 or 503 with Retry-After)."""

    def __init__(self, message: str, *, retry_after: timedelta) -> None:
        super().__init__(message, permanent=False)
        self.retry_after = retry_after


class JobLeaseLostError(Exception):
    """A background job's runner no longer holds its lease (another runner took the job over
    after the lease expired): the step it was committing rolls back. Internal to the job
    runners (services.jobs), never shown to a user."""


class JobStoppedError(Exception):
    """A background job's runner is stopping (its process was told to end) between two steps of
    a job: the job is handed back, waiting, and the next runner goes on from its last committed
    step. Internal to the job runners (services.jobs), never shown to a user."""
