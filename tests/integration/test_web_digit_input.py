"""Numbers typed in the web forms that int() and JSON cannot take (a tester's findings): digits of
another kind ('²', '①', '٣': `str.isdigit()` is true of them, int() refuses or misreads them),
ids past 64 bits and numbers that are not finite ('nan', 'inf', '1e400') are refused at their
field in words, with the form kept as typed: a 422, never a 500 (nor a query saved broken)."""

from __future__ import annotations

from collections.abc import Iterator
from html import unescape

import pytest
from fastapi.testclient import TestClient

from crmflow.engine.recordtypes import MAX_ROW_ID
from crmflow.errors import NotFoundError
from crmflow.services import flows, queries, users, web_sessions
from crmflow.services.context import Context
from crmflow.services.web_sessions import SESSION_COOKIE
from crmflow.web import create_site
from tests.conftest import make_user

FLOW = """\
schema_version: 1
key: hello
name: Hello
record_type: contact
controller: system
triggers: [{type: manual}]
steps:
  - key: greet
    actions:
      - type: history
        message: hi
      - type: history
        message: again
"""
CONDITION = "/flows/new/form/widgets/condition"
DIGIT_LIKE = ("²", "①", "٣")
NOT_FINITE = ("nan", "inf", "-inf", "1e400")


@pytest.fixture
def site(ctx: Context) -> Iterator[tuple[TestClient, str]]:
    """An admin's browser that shows a server failure as its page: the client, the CSRF token."""
    alice = make_user(ctx, "alice", "admin")
    flows.create_flow(ctx, alice, FLOW)
    with TestClient(
        create_site(ctx), raise_server_exceptions=False, follow_redirects=False
    ) as client:
        signed = web_sessions.sign_in(ctx, "alice", "password123")
        client.cookies.set(SESSION_COOKIE, signed.token)
        yield client, signed.session.csrf_token


def _no_query(ctx: Context, name: str) -> bool:
    try:
        queries.get_query(ctx, name)
    except NotFoundError:
        return True
    return False


def test_a_number_of_days_in_digits_of_another_kind_is_refused_at_its_condition(
    site: tuple[TestClient, str], ctx: Context
) -> None:
    client, token = site
    for typed in (*DIGIT_LIKE, "1" * 5000):
        row = {"record_type": "contact", "field": "client_since", "op": "in the last"}
        said = f"condition 1: 'in the last' needs a whole number of days, got {typed[:20]!r}"
        preview = client.get("/queries/preview", params={**row, "value": typed})
        assert preview.status_code == 200, (typed[:5], preview.status_code)
        assert said in unescape(preview.text)
        form = {**row, "value": typed, "name": "recent", "csrf_token": token}
        saved = client.post("/queries/new", data=form)
        assert saved.status_code == 422, (typed[:5], saved.status_code)
        page = unescape(saved.text)
        assert said in page and "(write e.g. 30)" in page
        assert f'value="{typed}"' in page  # the form is kept as typed
        assert _no_query(ctx, "recent")


def test_a_number_that_is_not_finite_is_refused_at_its_value_not_saved_as_null(
    site: tuple[TestClient, str], ctx: Context
) -> None:
    client, token = site
    for typed in NOT_FINITE:
        row = {"record_type": "contact", "field": "total_donations", "op": ">", "value": typed}
        said = f"condition 1, value: {typed[:20]!r} is not a finite number"
        preview = client.get("/queries/preview", params=row)
        assert preview.status_code == 200
        assert said in unescape(preview.text), typed
        saved = client.post("/queries/new", data={**row, "name": "big", "csrf_token": token})
        assert saved.status_code == 422, (typed, saved.status_code)
        page = unescape(saved.text)
        assert said in page and "write digits, e.g. 1000 or 12.5" in page
        assert f'value="{typed}"' in page
        assert _no_query(ctx, "big")
    # Past a float's range an integer is no number a field holds (and SQLite cannot bind it).
    row = {"record_type": "contact", "field": "total_donations", "op": ">", "value": "9" * 400}
    saved = client.post("/queries/new", data={**row, "name": "big", "csrf_token": token})
    assert saved.status_code == 422
    said = "condition 1, value: the number is out of range: numbers run to about ±1.8e308"
    assert said in unescape(saved.text)
    # 'between' and 'in' take a list: each item is checked.
    row = {"record_type": "contact", "field": "total_donations", "op": "between", "value": "1, nan"}
    saved = client.post("/queries/new", data={**row, "name": "big", "csrf_token": token})
    assert saved.status_code == 422
    assert "condition 1, value: '1, nan' is not a finite number" in unescape(saved.text)


def test_the_flow_forms_condition_builder_reads_digits_of_another_kind_in_words(
    site: tuple[TestClient, str],
) -> None:
    client, _ = site
    path = "steps[0].condition"
    rows = {
        "path": path,
        "record_type": "contact",
        f"cb-mode:{path}": "builder",
        f"cb-match:{path}": "all",
        f"cb-group:{path}": "0",
        f"cb-field:{path}": "client_since",
        f"cb-op:{path}": "in the last",
    }
    # The builder's fragment is live: a row it cannot read is said at the row (as 'soon' is).
    for typed in DIGIT_LIKE:
        answer = client.get(CONDITION, params={**rows, f"cb-value:{path}": typed})
        assert answer.status_code == 200, (typed, answer.status_code)
        page = unescape(answer.text)
        assert f"condition 1: 'in the last' needs a whole number of days, got {typed!r}" in page
        assert "write a number from 1 to 36500, e.g. 30" in page
        assert f'value="{typed}"' in page
    # A group number is the page's own: one int() cannot read puts the row in the top group.
    answer = client.get(
        CONDITION, params={**rows, f"cb-value:{path}": "3", f"cb-group:{path}": "²"}
    )
    assert answer.status_code == 200
    assert 'duration("72h")' in unescape(answer.text)
    # A number that is not finite would write CEL that is no number ('nan'): said at its row.
    number = {**rows, f"cb-field:{path}": "total_donations", f"cb-op:{path}": ">"}
    for typed in NOT_FINITE:
        answer = client.get(CONDITION, params={**number, f"cb-value:{path}": typed})
        assert answer.status_code == 200
        assert f"condition 1: {typed!r} is not a finite number" in unescape(answer.text)


def test_a_switch_naming_its_action_in_digits_of_another_kind_is_refused(
    site: tuple[TestClient, str], ctx: Context
) -> None:
    client, token = site
    alice = users.actor_by_username(ctx, "alice")
    revision = flows.get_flow(ctx, alice, "hello").revision
    for typed in (*DIGIT_LIKE, "1" * 5000):
        form = {"step": "greet", "action": typed, "active": "false", "csrf_token": token}
        answer = client.post("/flows/hello/switch", data=form)
        assert answer.status_code == 422, (typed[:5], answer.status_code)
        assert f"action: {typed[:20]!r} is not a switch of this page" in unescape(answer.text)
        assert "reload the page" in answer.text
    form = {"step": "greet", "action": "0", "active": "maybe", "csrf_token": token}
    answer = client.post("/flows/hello/switch", data=form)
    assert answer.status_code == 422
    assert "active: 'maybe' is not a switch of this page" in unescape(answer.text)
    assert flows.get_flow(ctx, alice, "hello").revision == revision  # nothing switched


def test_a_simulation_of_a_record_id_past_64_bits_is_refused_as_the_api_refuses_it(
    site: tuple[TestClient, str],
) -> None:
    client, token = site
    for typed in (str(MAX_ROW_ID + 1), "99999999999999999999", "0"):
        form = {"flow": "hello", "record_id": typed, "days": "30", "csrf_token": token}
        answer = client.post("/simulate", data=form)
        assert answer.status_code == 422, (typed, answer.status_code)
        page = unescape(answer.text)
        assert (
            f"record: {typed} is out of range: record ids are whole numbers from 1 to "
            f"{MAX_ROW_ID} (2^63-1)"
        ) in page
        assert f'value="{typed}"' in page
    # The largest id is one: it names no record here.
    form = {"flow": "hello", "record_id": str(MAX_ROW_ID), "days": "30", "csrf_token": token}
    answer = client.post("/simulate", data=form)
    assert answer.status_code == 404
    assert f"no record with id {MAX_ROW_ID}" in answer.text


def test_a_simulation_says_the_days_it_takes(site: tuple[TestClient, str]) -> None:
    client, token = site
    for typed in ("9999", "0", "²"):
        form = {"flow": "hello", "record_text": "first_name: Ann", "days": typed}
        answer = client.post("/simulate", data={**form, "csrf_token": token})
        assert answer.status_code == 422, (typed, answer.status_code)
        page = unescape(answer.text)
        assert f"days: {typed!r} is not a number of days between 1 and 366 (e.g. 30)" in page
        assert "first_name: Ann" in page  # the record pasted is kept
