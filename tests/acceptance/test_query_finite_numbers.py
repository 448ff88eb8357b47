"""A saved query's number that no JSON holds (NaN, an infinity, 1e400) is refused at its
condition's path by every way in: the API, `crmflow queries load` and the services. It was
saved as `"value": null` (JSON has no NaN), and the query then said "'>' needs a value"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from crmflow.errors import InvalidInputError
from crmflow.services.context import Actor, Context
from crmflow.services.queries import load_query_file, save_query
from tests.acceptance.conftest import Run

VALUE = "filter.all[0].value"


def _query(value: str) -> bytes:
    """A POST /api/queries body with `value` written as is (json.dumps cannot write NaN)."""
    condition = f'{{"field": "total_donations", "op": ">", "value": {value}}}'
    return (
        f'{{"name": "big-givers", "record_type": "contact", "filter": {{"all": [{condition}]}}}}'
    ).encode()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "[1, NaN]"])
def test_the_api_refuses_a_number_that_is_not_finite_at_its_path(
    client: TestClient, as_admin: dict[str, str], value: str
) -> None:
    body = _query(value).replace(b'"op": ">"', b'"op": "in"') if "[" in value else _query(value)
    answer = client.post(
        "/api/queries", content=body, headers={**as_admin, "Content-Type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    problems = answer.json()["problems"]
    path = f"{VALUE}[1]" if "[" in value else VALUE
    assert [p["path"] for p in problems] == [path], problems
    assert "is not a finite number" in problems[0]["message"]
    assert problems[0]["hint"] == "write digits, e.g. 1000 or 12.5"
    assert client.get("/api/queries/big-givers", headers=as_admin).status_code == 404


@pytest.mark.parametrize(
    ("field", "op", "value", "path"),
    [
        ("total_donations", ">", float("nan"), VALUE),
        ("total_donations", ">=", float("inf"), VALUE),
        ("total_donations", "<", -float("inf"), VALUE),
        ("total_donations", ">", "1.5e400", VALUE),  # a number field reads a text of digits
        ("total_donations", "in", [1, float("nan")], f"{VALUE}[1]"),
        ("first_name", "=", float("nan"), VALUE),  # stored as null whatever the field
    ],
)
def test_the_services_refuse_it_at_its_path(
    ctx: Context, manager: Actor, field: str, op: str, value: Any, path: str
) -> None:
    condition = {"field": field, "op": op, "value": value}
    with pytest.raises(InvalidInputError) as info:
        save_query(ctx, manager, name="big", record_type="contact", filter={"all": [condition]})
    [problem] = info.value.problems
    assert problem.path == path
    assert "is not a finite number" in problem.message


def test_an_integer_past_a_floats_range_is_refused_not_a_500_when_counted(
    ctx: Context, manager: Actor
) -> None:
    condition = {"field": "total_donations", "op": ">", "value": 10**400}
    with pytest.raises(InvalidInputError) as info:
        save_query(ctx, manager, name="big", record_type="contact", filter={"all": [condition]})
    [problem] = info.value.problems
    assert (problem.path, problem.message) == (
        VALUE,
        "the number is out of range: numbers run to about ±1.8e308",
    )


def test_a_query_file_with_nan_is_refused_with_its_line(
    ctx: Context, manager: Actor, tmp_path: Path
) -> None:
    file = tmp_path / "big.yaml"
    file.write_text(
        "name: big\n"
        "record_type: contact\n"
        "filter:\n"
        "  all:\n"
        "    - {field: total_donations, op: '>', value: .nan}\n"
    )
    with pytest.raises(InvalidInputError) as info:
        load_query_file(ctx, manager, file)
    assert [(p.path, p.line) for p in info.value.problems] == [(VALUE, 5)]
    assert "nan is not a finite number" in str(info.value)


def test_crmflow_queries_load_refuses_an_infinite_number(crmflow: Run, tmp_path: Path) -> None:
    crmflow("db", "upgrade")
    file = tmp_path / "big.yaml"
    file.write_text(
        "name: big\nrecord_type: contact\nfilter:\n  all:\n"
        "    - {field: total_donations, op: '>', value: .inf}\n"
    )
    refused = crmflow("queries", "load", str(file), check_exit=1)
    said = refused.stdout + refused.stderr
    assert f"big.yaml:5: {VALUE}: inf is not a finite number" in said, said
    assert "Traceback" not in said
    assert crmflow("queries", "show", "big", check_exit=None).returncode != 0  # not saved
