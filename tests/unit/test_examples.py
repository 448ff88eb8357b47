"""Every flow in examples/ and every YAML example in docs/flows.md validates."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from crmflow.engine.definition import FlowDefinition
from crmflow.engine.recordtypes import RecordType, type_catalog
from crmflow.engine.simulation import sample_record
from crmflow.engine.source import parse_source
from crmflow.engine.validation import ValidationContext, parse_flow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs" / "flows.md"
FLOW_FILES = sorted(EXAMPLES.glob("*.yaml"))


def example_context() -> ValidationContext:
    """Built-in types + examples/types, the saved queries of examples/queries, the demo users."""
    types = [
        RecordType.from_dict(parse_source(p.read_text()).data)
        for p in sorted((EXAMPLES / "types").glob("*.yaml"))
    ]
    queries = {}
    for path in sorted((EXAMPLES / "queries").glob("*.yaml")):
        data = parse_source(path.read_text()).data
        queries[data["name"]] = data["record_type"]
    flows = {}
    for path in FLOW_FILES:
        data = parse_source(path.read_text()).data
        flows[data["key"]] = data["record_type"]
    return ValidationContext(
        record_types=type_catalog(types),
        users=frozenset({"alice", "maria", "andrei", "bogdan"}),
        groups=frozenset({"management", "sales", "service"}),
        queries=queries,
        flows=flows,
    )


def test_the_seed_flows_are_all_there() -> None:
    keys = {path.stem for path in FLOW_FILES}
    assert keys >= {
        "donor-thank-you",
        "event-automations",
        "six-month-promotion",
        "recruitment-approval",
        "sales-orders",
        "service-orders",
        "property-sale-follow-up",
        "property-after-sale",
    }


@pytest.mark.parametrize("path", FLOW_FILES, ids=lambda p: p.name)
def test_example_flow_validates_and_round_trips(path: Path) -> None:
    context = example_context()
    flow = parse_flow(path.read_text(), context=context, source=str(path))
    assert flow.key == path.stem
    again = parse_flow(json.dumps(flow.to_document()), context=context, fmt="json")
    assert again == flow


@pytest.mark.parametrize("path", FLOW_FILES, ids=lambda p: p.name)
def test_each_example_has_a_valid_sample_record(path: Path) -> None:

    flow = parse_flow(path.read_text(), context=example_context())
    sample = json.loads(path.with_suffix(".record.json").read_text())
    assert sample["record_type"] == flow.record_type
    record_type = example_context().record_types[flow.record_type]
    # Dates in samples may be relative to the simulation's start ("today + 20 days").
    record = sample_record(
        sample, record_type, now=datetime(2026, 1, 15, 12, tzinfo=UTC), zone=ZoneInfo("UTC")
    )
    assert record.type == flow.record_type


def test_the_private_service_flow_and_the_follow_up_chain() -> None:
    context = example_context()
    service = parse_flow((EXAMPLES / "service-orders.yaml").read_text(), context=context)
    assert service.visibility == "private" and "andrei" in service.members
    chain = parse_flow((EXAMPLES / "property-sale-follow-up.yaml").read_text(), context=context)
    starts = [
        a for s in chain.steps if s.type == "action" for a in s.actions if a.type == "start_flow"
    ]
    assert [a.flow for a in starts] == ["property-after-sale"]


def doc_examples() -> list[tuple[int, str]]:
    text = DOCS.read_text()
    found = []
    for match in re.finditer(r"```yaml\n(.*?)```", text, re.DOTALL):
        line = text.count("\n", 0, match.start()) + 2
        found.append((line, match.group(1)))
    return found


def as_flow(snippet: str) -> str:
    """A snippet is a whole flow, or a fragment wrapped into one by its `# in:` comment."""
    first = snippet.splitlines()[0] if snippet.strip() else ""
    if not first.startswith("# in:"):
        return snippet
    where = first.removeprefix("# in:").strip()
    body = "\n".join(snippet.splitlines()[1:])
    record_type = "contact"
    type_match = re.search(r"record_type=(\w+)", where)
    if type_match:
        record_type = type_match.group(1)
        where = where.split()[0]
    header = (
        "schema_version: 1\nkey: doc-example\nname: Doc example\n"
        f"record_type: {record_type}\nowner: alice\ncontroller: maria\n"
    )

    def indent(text: str, n: int) -> str:
        return "\n".join(" " * n + line for line in text.splitlines())

    if where == "triggers":
        return header + "triggers:\n" + indent(body, 2) + "\nsteps:\n  - key: only\n"
    if where == "steps":
        return header + "triggers:\n  - type: manual\nsteps:\n" + indent(body, 2) + "\n"
    if where == "actions":
        return (
            header
            + "triggers:\n  - type: manual\nsteps:\n  - key: only\n    actions:\n"
            + indent(body, 6)
            + "\n"
        )
    if where == "step":
        return (
            header
            + "triggers:\n  - type: manual\nsteps:\n  - key: only\n"
            + indent(body, 4)
            + "\n  - key: follow-up\n  - key: late\n"
        )
    if where == "flow":
        return (
            header
            + body
            + "\n"
            + ("" if "steps:" in body else "steps:\n  - key: only\n")
            + ("" if "triggers:" in body else "triggers:\n  - type: manual\n")
        )
    raise AssertionError(f"unknown snippet place {where!r}")


def test_the_reference_has_examples() -> None:
    assert len(doc_examples()) >= 30


@pytest.mark.parametrize(("line", "snippet"), doc_examples(), ids=lambda v: str(v)[:20])
def test_every_yaml_example_in_the_reference_validates(line: int, snippet: str) -> None:
    document = as_flow(snippet)
    # The run_sql example needs the server setting that allows SQL actions.
    context = dataclasses.replace(example_context(), allow_sql=True)
    try:
        flow = parse_flow(document, context=context, source=f"docs/flows.md:{line}")
    except Exception as exc:  # pragma: no cover - shown on failure only
        raise AssertionError(f"docs/flows.md example at line {line}:\n{document}\n{exc}") from exc
    assert isinstance(flow, FlowDefinition)
