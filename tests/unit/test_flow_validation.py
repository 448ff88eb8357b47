"""The validator: every category of problem a user can make, reported with path, line and hint."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from crmflow.engine.recordtypes import BUILTIN_TYPES, type_catalog
from crmflow.engine.validation import ValidationContext, flow_from_data, parse_flow
from crmflow.errors import InvalidInputError, Problem

CONTEXT = ValidationContext(
    record_types=BUILTIN_TYPES,
    users=frozenset({"alice", "maria", "andrei", "bogdan"}),
    groups=frozenset({"management", "sales", "service"}),
    queries={"six-month-clients": "contact", "open-orders": "order"},
    flows={"other-flow": "contact", "order-flow": "order"},
)


def flow(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "key": "test-flow",
        "name": "Test",
        "record_type": "contact",
        "owner": "alice",
        "controller": "maria",
        "triggers": [{"type": "manual"}],
        "steps": [{"key": "only", "actions": [{"type": "history", "message": "hi"}]}],
    }
    doc.update(overrides)
    return doc


def problems(doc: dict[str, Any], context: ValidationContext = CONTEXT) -> list[Problem]:
    with pytest.raises(InvalidInputError) as caught:
        flow_from_data(doc, context=context)
    assert caught.value.problems
    return caught.value.problems


def paths(doc: dict[str, Any], context: ValidationContext = CONTEXT) -> dict[str, Problem]:
    return {p.path: p for p in problems(doc, context)}


def step(key: str = "only", **fields: Any) -> dict[str, Any]:
    return {"key": key, **fields}


def test_a_valid_flow_passes() -> None:
    definition = flow_from_data(flow(), context=CONTEXT)
    assert definition.key == "test-flow"
    assert definition.steps[0].type == "action"


TYPO_FLOW = textwrap.dedent(
    """\
    schema_version: 1
    key: donors
    name: Donors
    record_type: contact
    triggers:
      - type: manual
    steps:
      - key: first
        actions:
          - type: history
            message: hello
      - key: second
        actions:
          - type: send_email
            subject: Thanks
            body: Thank you
            emial: someone@example.org
    """
)


def test_a_typo_is_reported_with_file_line_path_and_hint() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_flow(TYPO_FLOW, context=CONTEXT, source="donors.yaml")
    [problem] = caught.value.problems
    assert problem.path == "steps[1].actions[0].emial"
    assert problem.line == 17
    assert problem.source == "donors.yaml"
    assert problem.message == "unknown field 'emial'"
    assert problem.hint.startswith("allowed here: ")
    assert {"to", "cc", "bcc", "subject"} <= set(
        problem.hint.removeprefix("allowed here: ").split(", ")
    )
    assert str(problem).startswith("donors.yaml:17: steps[1].actions[0].emial: unknown field")


def test_a_close_key_gets_a_did_you_mean_hint() -> None:
    doc = flow(steps=[step(actions=[{"type": "history", "mesage": "x"}])])
    found = paths(doc)["steps[0].actions[0].mesage"]
    assert "did you mean 'message'?" in found.hint


def test_every_problem_is_listed_at_once_with_lines() -> None:
    text = textwrap.dedent(
        """\
        schema_version: 1
        key: many
        name: Many problems
        record_type: contact
        timezone: Mars/Olympus
        triggers:
          - type: date_reached
            field: first_name
        steps:
          - key: a
            condition: record.stauts == "client"
            actions:
              - type: history
                message: "{{ record.nmae }}"
              - type: history
                mesage: typo
            next: nowhere
          - key: a
            type: end
        """
    )
    with pytest.raises(InvalidInputError) as caught:
        parse_flow(text, context=CONTEXT, source="many.yaml")
    found = {p.path: p.line for p in caught.value.problems}
    assert found == {
        "timezone": 5,
        "triggers[0].field": 8,
        "steps[0].condition": 11,
        "steps[0].actions[0].message": 14,
        "steps[0].actions[1].message": 15,  # missing: the line of its action
        "steps[0].actions[1].mesage": 16,
        "steps[0].next": 17,
        "steps[1].key": 18,
    }
    assert all(p.source == "many.yaml" and p.hint for p in caught.value.problems)


def test_wrong_types_are_refused_not_coerced() -> None:
    doc = flow(steps=[step(active="yes", order="1", actions=[])], name=12)
    found = paths(doc)
    assert "expected true or false" in found["steps[0].active"].message
    assert "expected a whole number" in found["steps[0].order"].message
    assert "expected text" in found["name"].message


def test_missing_required_keys() -> None:
    doc = flow()
    del doc["record_type"]
    doc["steps"] = [{"actions": []}]
    found = paths(doc)
    assert found["record_type"].message == "is required"
    assert found["steps[0].key"].message == "is required"


def test_unknown_trigger_type_suggests_the_right_one() -> None:
    found = paths(flow(triggers=[{"type": "record_creatd"}]))
    assert "did you mean 'record_created'?" in found["triggers[0].type"].hint


def test_duplicate_step_keys() -> None:
    doc = flow(steps=[step("a"), step("a")])
    assert "used twice" in paths(doc)["steps[1].key"].message


def test_targets_must_exist() -> None:
    doc = flow(
        steps=[
            step("a", type="decision", branches=[{"if": "true", "goto": "bb"}], **{"else": "zz"}),
            step(
                "b",
                type="approval",
                responsibility={"type": "flow_owner"},
                buttons=[{"key": "ok", "label": "OK", "goto": "nope"}],
            ),
            step("bb", type="wait", until="true", timeout={"amount": 1}, on_timeout="gone"),
        ]
    )
    found = paths(doc)
    assert set(found) >= {"steps[0].else", "steps[1].buttons[0].goto", "steps[2].on_timeout"}


def test_unreachable_steps() -> None:
    doc = flow(steps=[step("a", next="c"), step("b"), step("c", type="end")])
    found = paths(doc)
    assert list(found) == ["steps[1]"]
    assert "never be reached" in found["steps[1]"].message


def test_branches_make_steps_reachable() -> None:
    doc = flow(
        steps=[
            step(
                "a",
                type="decision",
                branches=[{"if": "record.status == 'client'", "goto": "c"}],
                **{"else": "b"},
            ),
            step("skip", type="end"),
            step("b", next="end"),
            step("c"),
            step("end", type="end"),
        ]
    )
    assert list(paths(doc)) == ["steps[1]"]


def test_fields_the_record_type_lacks_and_fields_of_the_wrong_type() -> None:
    doc = flow(
        triggers=[
            {"type": "date_reached", "field": "first_name"},
            {"type": "field_changed", "field": "emial"},
            {"type": "record_updated", "fields": ["phone", "fax"]},
        ],
        steps=[
            step(
                "a",
                timing={"type": "date", "field": "birthdate"},
                responsibility={"type": "field", "field": "email"},
                actions=[
                    {"type": "update_record", "values": {"newsleter": True, "total_donations": "x"}}
                ],
            )
        ],
    )
    found = paths(doc)
    assert "is a text field" in found["triggers[0].field"].message
    assert "did you mean 'email'?" in found["triggers[1].field"].hint
    assert "no field 'fax'" in found["triggers[2].fields[1]"].message
    assert "did you mean 'birth_date'?" in found["steps[0].timing.field"].hint
    assert "a user field is needed" in found["steps[0].responsibility.field"].message
    assert "did you mean 'newsletter'?" in found["steps[0].actions[0].values.newsleter"].hint
    assert "expected a number" in found["steps[0].actions[0].values.total_donations"].message


def test_status_changed_needs_a_status_field_and_known_statuses() -> None:
    found = paths(flow(triggers=[{"type": "status_changed", "to": "clinet"}]))
    assert "did you mean 'client'?" in found["triggers[0].to"].hint


def test_cel_that_does_not_compile_or_names_unknown_fields() -> None:
    doc = flow(
        entry_condition="record.status ==",
        goal="record.totl_donations > 10",
        steps=[step("a", condition="recrod.status == 'x'")],
    )
    found = paths(doc)
    assert "does not compile" in found["entry_condition"].message
    assert "did you mean 'total_donations'?" in found["goal"].hint
    assert "unknown variable 'recrod'" in found["steps[0].condition"].message


def test_templates_that_do_not_parse_or_use_unknown_variables() -> None:
    actions = [
        {"type": "history", "message": "{{ record.first_name"},
        {"type": "history", "message": "{{ contact.first_name }}"},
        {
            "type": "send_email",
            "subject": "{{ flow.nam }}",
            "body": "{{ code }} {{ vars.cod }}",
            "variables": {"code": "A1"},
        },
    ]
    found = paths(flow(steps=[step(actions=actions)]))
    assert "does not parse" in found["steps[0].actions[0].message"].message
    assert "unknown template variable 'contact'" in found["steps[0].actions[1].message"].message
    assert "did you mean 'name'?" in found["steps[0].actions[2].subject"].hint
    assert "did you mean 'code'?" in found["steps[0].actions[2].body"].hint


def test_unknown_record_type() -> None:
    found = paths(flow(record_type="contacts"))
    assert "did you mean 'contact'?" in found["record_type"].hint


def test_unknown_users_groups_queries_and_flows() -> None:
    doc = flow(
        owner="alicia",
        triggers=[{"type": "schedule", "time": "09:30", "query": "six-month-client"}],
        steps=[
            step(
                responsibility={"type": "group", "group": "managment"},
                actions=[
                    {"type": "start_flow", "flow": "othr-flow"},
                    {"type": "notify", "users": ["andrej"], "message": "hi"},
                ],
            )
        ],
    )
    found = paths(doc)
    assert "did you mean 'alice'?" in found["owner"].hint
    assert "did you mean 'six-month-clients'?" in found["triggers[0].query"].hint
    assert "did you mean 'management'?" in found["steps[0].responsibility.group"].hint
    assert "unknown flow" in found["steps[0].actions[0].flow"].message
    assert "unknown user 'andrej'" in found["steps[0].actions[1].users[0]"].message


def test_names_are_not_checked_when_the_context_does_not_know_them() -> None:
    bare = ValidationContext(record_types=BUILTIN_TYPES)
    doc = flow(owner="nobody", triggers=[{"type": "start_list", "query": "anything"}])
    assert flow_from_data(doc, context=bare).start_list_queries() == ["anything"]


def test_a_query_of_another_record_type() -> None:
    found = paths(flow(triggers=[{"type": "start_list", "query": "open-orders"}]))
    assert "selects 'order' records" in found["triggers[0].query"].message


def test_a_follow_up_flow_of_another_record_type() -> None:
    doc = flow(steps=[step(actions=[{"type": "start_flow", "flow": "order-flow"}])])
    assert "runs on 'order' records" in paths(doc)["steps[0].actions[0].flow"].message


def test_private_flows_need_members_and_responsible_members() -> None:
    assert "at least one member" in paths(flow(visibility="private"))["members"].message
    doc = flow(
        visibility="private",
        members=["maria", "andrei"],
        steps=[step(responsibility={"type": "user", "user": "bogdan"})],
    )
    found = paths(doc)
    assert "'bogdan' is not a member of this private flow" in (
        found["steps[0].responsibility.user"].message
    )


def test_run_sql_is_refused_unless_allowed_and_takes_bound_parameters_only() -> None:
    sql = {"type": "run_sql", "sql": "update t set a = :a where id = :id", "params": {"a": 1}}
    doc = flow(steps=[step(actions=[sql])])
    assert "turned off" in paths(doc)["steps[0].actions[0]"].message
    allowed = ValidationContext(record_types=BUILTIN_TYPES, allow_sql=True)
    assert "no 'id'" in paths(doc, allowed)["steps[0].actions[0].params"].message
    interpolated = {"type": "run_sql", "sql": "delete from t where id = {{ record.id }}"}
    found = paths(flow(steps=[step(actions=[interpolated])]), allowed)
    assert "may not be built from text" in found["steps[0].actions[0].sql"].message
    fine = {
        "type": "run_sql",
        "sql": "update t set a = 1 where id = :id",
        "params": {"id": {"cel": "record.id"}},
    }
    assert flow_from_data(flow(steps=[step(actions=[fine])]), context=allowed)


def test_time_zones_times_and_dates() -> None:
    doc = flow(
        timezone="Europe/Pariss",
        start_at="2024-06-01T10:00:00+02:00",
        archive_at="2024-05-01T10:00:00+02:00",
        triggers=[{"type": "schedule", "time": "9:30", "query": "six-month-clients"}],
        steps=[step(timing={"type": "at_time", "time": "24:00"})],
    )
    found = paths(doc)
    assert "unknown time zone" in found["timezone"].message
    assert "after start_at" in found["archive_at"].message
    assert "HH:MM" in found["triggers[0].time"].message
    assert "HH:MM" in found["steps[0].timing.time"].message


def test_schema_version_missing_or_unsupported() -> None:
    doc = flow()
    del doc["schema_version"]
    assert "schema_version: 1" in paths(doc)["schema_version"].hint
    assert "unsupported" in paths(flow(schema_version=2))["schema_version"].message
    assert "unsupported" in paths(flow(schema_version="1"))["schema_version"].message


def test_a_document_that_is_not_a_mapping() -> None:
    for text in ("- a\n- b\n", "just text\n", ""):
        with pytest.raises(InvalidInputError) as caught:
            parse_flow(text, context=CONTEXT)
        assert "mapping" in caught.value.problems[0].message


def test_json_documents_get_lines_too() -> None:
    text = '{\n "schema_version": 1,\n "key": "j",\n "name": "J",\n "record_type": "contact",\n'
    text += ' "triggers": [{"type": "manual"}],\n "steps": [{"key": "a", "nxt": "a"}]\n}\n'
    with pytest.raises(InvalidInputError) as caught:
        parse_flow(text, context=CONTEXT, source="j.json")
    [problem] = caught.value.problems
    assert (problem.path, problem.line) == ("steps[0].nxt", 7)
    assert "did you mean 'next'?" in problem.hint


def test_deadlines_need_a_controller_and_approvals_someone_to_decide() -> None:
    approval = step(
        "a", type="approval", deadline={"days": 2}, buttons=[{"key": "ok", "label": "OK"}]
    )
    found = paths(flow(controller=None, steps=[approval]))
    assert "controller" in found["steps[0].deadline"].message
    assert "someone to decide" in found["steps[0].responsibility"].message


def test_email_defaults_and_addresses() -> None:
    email = {"type": "send_email", "subject": "x", "body": "y", "cc": ["not an address"]}
    found = paths(flow(record_type="property", steps=[step(actions=[email])]))
    assert "no email field" in found["steps[0].actions[0].to"].message
    assert "not an email address" in found["steps[0].actions[0].cc[0]"].message


def test_reentry_and_assign_owner_options() -> None:
    assign = {
        "type": "assign_owner",
        "strategy": "weighted",
        "users": ["alice", "maria"],
        "weights": {"alice": 2},
    }
    found = paths(flow(reentry={"mode": "once_per_days"}, steps=[step(actions=[assign])]))
    assert "needs days" in found["reentry.days"].message
    assert "has no weight" in found["steps[0].actions[0].users[1]"].message


def test_an_unknown_holiday_country_is_refused_when_the_flow_is_saved() -> None:

    text = """\
schema_version: 1
key: cal
name: Calendar
record_type: contact
calendar:
  holidays: QQ
triggers: [{type: manual}]
steps:
  - key: note
    actions: [{type: history, message: hi}]
"""
    with pytest.raises(InvalidInputError) as caught:
        parse_flow(text, context=ValidationContext(record_types=type_catalog()), source="cal.yaml")
    [problem] = [p for p in caught.value.problems if p.path == "calendar.holidays"]
    assert problem.line == 6


def _webhook(secret: str) -> dict[str, Any]:
    return flow(triggers=[{"type": "manual"}, {"type": "webhook", "key": "k", "secret": secret}])


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("", "the secret is empty"),
        ("   ", "the secret is empty"),
        ("whsec_", "nothing follows 'whsec_'"),
        ("whsec_!!!!", "character 7 is '!', which base64 does not use"),
        ("whsec_c2VjcmV0 dA==", "character 15 is a space"),
        ("whsec_c2Vj-mV0", "URL-safe base64 is not taken: use + and /"),
        ("whsec_c2VjcmV0d", "9 base64 characters cannot encode whole bytes"),
        ("whsec_c2Vj===", "it ends in 3 '=', at most 2"),
        ("whsec_==", "decodes to no bytes"),
    ],
)
def test_a_webhook_secret_that_cannot_sign_is_refused_when_the_flow_is_saved(
    secret: str, message: str
) -> None:
    [problem] = problems(_webhook(secret))
    assert problem.path == "triggers[1].secret"
    assert message in problem.message
    assert "openssl rand -base64 32" in problem.hint
    # The secret itself is never repeated: problems are shown and logged.
    encoded = secret.removeprefix("whsec_").strip()
    assert len(encoded) < 3 or encoded not in problem.message


def test_a_bad_webhook_secret_gets_its_line_and_a_hint_saying_what_a_whsec_secret_is() -> None:
    text = textwrap.dedent(
        """\
        schema_version: 1
        key: hooked
        name: Hooked
        record_type: contact
        triggers:
          - type: webhook
            key: web-form
            secret: whsec_not*base64
        steps:
          - key: note
            actions: [{type: history, message: hi}]
        """
    )
    with pytest.raises(InvalidInputError) as caught:
        parse_flow(text, context=CONTEXT, source="hooked.yaml")
    [problem] = caught.value.problems
    assert str(problem).startswith(
        "hooked.yaml:8: triggers[0].secret: what follows 'whsec_' is not base64: character 10 "
        "is '*'"
    )
    assert "a whsec_ secret is 'whsec_' followed by standard base64" in problem.hint


@pytest.mark.parametrize(
    "secret",
    [
        "change-me",  # any other secret is its UTF-8 bytes
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # as Standard Webhooks libraries make them
        "whsec_c2VjcmV0",  # unpadded
        "whsec_c2VjcmV0cw",
        "whsec_c2VjcmV0cw==",
        "whsec_+/+/",
    ],
)
def test_usable_webhook_secrets_pass(secret: str) -> None:
    assert flow_from_data(_webhook(secret), context=CONTEXT).triggers[1].type == "webhook"
