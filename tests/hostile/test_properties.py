"""Property tests (hypothesis): whatever values, ids and filters a client sends, the API answers
with a success or a 4xx that says what was wrong, never a 500, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The contact type's own fields, the meta fields, and names no type has.
FIELDS = [
    "first_name",
    "last_name",
    "email",
    "phone",
    "status",
    "client_since",
    "total_donations",
    "owner",
    "id",
    "created_at",
    "updated_at",
    "no_such_field",
    "",
    "a.b",
    "x" * 300,
]
OPERATORS = [
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "not in",
    "contains",
    "starts with",
    "is empty",
    "is not empty",
    "between",
    "~",
    "",
]
RELATIVE = [
    "today",
    "now",
    "today - 180 days",
    "today - 99999999 days",
    "now + 10000000000 hours",
    "start of month",
    "end of week + 1 month",
    "yesterday - -1 days",
    "today - 1e9 days",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(RELATIVE),
    st.dates().map(str),
    st.datetimes().map(lambda d: d.isoformat()),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=12,
)
ids = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 2**31, 2**63 - 1, 2**63, 2**64]),
)
conditions: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"field": st.sampled_from(FIELDS), "op": st.sampled_from(OPERATORS), "value": values}
)
filters = st.recursive(
    conditions,
    lambda children: st.one_of(
        st.fixed_dictionaries({"all": st.lists(children, max_size=3)}),
        st.fixed_dictionaries({"any": st.lists(children, max_size=3)}),
        st.fixed_dictionaries({"not": children}),
    ),
    max_leaves=6,
)

BOUNDED = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _refused_or_done(answer: Any) -> None:
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        body = answer.json()
        assert body.get("message"), body  # a refusal says what was wrong


@BOUNDED
@given(data=st.dictionaries(st.sampled_from(FIELDS), values, max_size=5), owner=values)
def test_any_record_values_are_stored_or_refused_with_a_reason(
    client: TestClient, as_admin: dict[str, str], data: dict[str, Any], owner: Any
) -> None:
    created = client.post(
        "/api/records/contact", json={"data": data, "owner": owner}, headers=as_admin
    )
    _refused_or_done(created)
    if created.status_code == 201:
        record_id = created.json()["id"]
        updated = client.patch(
            f"/api/records/contact/{record_id}", json={"data": data}, headers=as_admin
        )
        _refused_or_done(updated)


@BOUNDED
@given(record_id=ids, after=ids, limit=ids)
def test_any_ids_are_found_or_refused_with_a_reason(
    client: TestClient, as_admin: dict[str, str], record_id: int, after: int, limit: int
) -> None:
    for answer in (
        client.get(f"/api/records/contact/{record_id}", headers=as_admin),
        client.get(f"/api/records/contact/{record_id}/changes", headers=as_admin),
        client.delete(f"/api/records/contact/{record_id}", headers=as_admin),
        client.get(f"/api/records/contact?after={after}&limit={limit}", headers=as_admin),
        client.get(f"/api/changes?after={after}", headers=as_admin),
        client.get(f"/api/runs/{record_id}", headers=as_admin),
    ):
        _refused_or_done(answer)


@BOUNDED
@given(query_filter=filters)
def test_any_query_filter_is_counted_or_refused_with_a_reason(
    client: TestClient, as_admin: dict[str, str], query_filter: dict[str, Any]
) -> None:
    counted = client.post(
        "/api/queries/count",
        json={"record_type": "contact", "filter": query_filter},
        headers=as_admin,
    )
    _refused_or_done(counted)
