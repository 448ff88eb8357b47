"""One renderer for every list of problems (`crmflow.errors.refusal_body`): at most 100 listed,
the message saying how many more there were, in the API's JSON and the command line's text."""

from __future__ import annotations

from crmflow.errors import InvalidInputError, Problem, refusal_body, shown


def _problems(count: int) -> list[Problem]:
    return [
        Problem(f"values[{i}]", "is not a user", "see `crmflow users list`") for i in range(count)
    ]


def test_a_refusal_lists_the_first_100_problems_and_says_how_many_more() -> None:
    body = refusal_body("the saved query", _problems(250))
    assert body["error"] == "InvalidInputError"
    assert body["message"] == (
        "the saved query was refused (250 problems: the first 100 are listed, and 150 more)"
    )
    listed = body["problems"]
    assert isinstance(listed, list) and len(listed) == 100
    assert listed[0] == {
        "path": "values[0]",
        "message": "is not a user",
        "hint": "see `crmflow users list`",
        "line": None,
        "source": None,
    }
    assert listed[-1]["path"] == "values[99]"


def test_up_to_100_problems_are_all_listed_with_a_plain_message() -> None:
    body = refusal_body("the flow", _problems(100))
    assert body["message"] == "the flow was refused"
    assert len(body["problems"]) == 100  # type: ignore[arg-type]


def test_problems_counted_but_not_kept_are_in_the_count() -> None:
    """The request guard keeps 100 problems of a body and only counts the others."""
    error = InvalidInputError("the request body", _problems(100), not_listed=1_234_500)
    assert error.as_dict()["message"] == (
        "the request body was refused (1,234,600 problems: the first 100 are listed, "
        "and 1,234,500 more)"
    )
    assert str(error).startswith("the request body was refused (1,234,600 problems):\n  - ")
    assert str(error).endswith("\n  ... and 1,234,500 more")


def test_the_error_and_the_body_render_the_same_list() -> None:
    error = InvalidInputError("the import", _problems(101))
    assert error.as_dict() == refusal_body("the import", _problems(101))
    text = str(error)
    assert text.count("\n  - ") == 100 and text.endswith("\n  ... and 1 more")
    one = InvalidInputError("the record", _problems(1))
    assert str(one) == (
        "the record was refused (1 problem):\n"
        "  - values[0]: is not a user (see `crmflow users list`)"
    )


def test_a_long_value_is_shown_cut_with_its_length() -> None:
    assert shown("short") == "'short'"
    assert shown(12345678, quote=False) == "12345678"
    cut = shown("x" * 10_000)
    assert cut == "'" + "x" * 59 + "... (10,002 characters)"
