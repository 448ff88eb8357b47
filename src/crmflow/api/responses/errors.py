"""The answer of every refused request (`ErrorBody`) and one problem of a refused input
(`ProblemBody`, also the shape of a refused import row's problems): what `crmflow.errors`
renders, described for the OpenAPI document."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["ErrorBody", "ProblemBody"]


class ProblemBody(BaseModel):
    """One thing wrong with an input: where, what, and how to fix it."""

    path: str = Field(
        description="Where in the input: `steps[2].actions[0].to`, a field or a column; '' for "
        "the input as a whole"
    )
    message: str
    hint: str | None = Field(default=None, description="How to fix it, when known")
    line: int | None = Field(default=None, description="1-based line in the document, if any")
    source: str | None = Field(default=None, description="The file or input it came from")


class ErrorBody(BaseModel):
    """What every refused request answers: the error's kind, a sentence that says what was
    wrong and what to do, and for a refused input each of its problems."""

    error: str = Field(description="The kind of error: InvalidInputError, NotFoundError, ...")
    message: str
    problems: list[ProblemBody] | None = None
    retry_after: int | None = Field(default=None, description="429: seconds to wait")
