"""Random and mutated flow documents never crash the validator: valid, or refused with problems."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmflow.engine.definition import FlowDefinition
from crmflow.engine.recordtypes import RecordType, type_catalog
from crmflow.engine.source import parse_source
from crmflow.engine.validation import ValidationContext, flow_from_data, parse_flow
from crmflow.errors import InvalidInputError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEEDS = [parse_source(p.read_text()).data for p in sorted(EXAMPLES.glob("*.yaml"))]
CONTEXT = ValidationContext(
    record_types=type_catalog(
        RecordType.from_dict(parse_source(p.read_text()).data)
        for p in sorted((EXAMPLES / "types").glob("*.yaml"))
    ),
    users=frozenset({"alice", "maria", "andrei", "bogdan"}),
    groups=frozenset({"management", "sales", "service"}),
)
KEYS = sorted(
    {"type", "key", "steps", "actions", "triggers", "field", "next", "goto", "timing", "if"}
    | {"schema_version", "record_type", "values", "responsibility", "members", "visibility"}
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x", "09:30", "record.status == 'x'", "{{ record.x }}", "{{", "end"]),
    st.text(max_size=8),
)
trees = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), children, max_size=5
        ),
    ),
    max_leaves=25,
)


def check(data: Any) -> None:
    try:
        result = flow_from_data(data, context=CONTEXT)
    except InvalidInputError as exc:
        assert exc.problems
        assert all(isinstance(p.path, str) and p.message for p in exc.problems)
    else:
        assert isinstance(result, FlowDefinition)


@SETTINGS
@given(trees)
def test_random_trees_never_crash(data: Any) -> None:
    check(data)


@SETTINGS
@given(st.dictionaries(st.sampled_from(KEYS), trees, max_size=8))
def test_random_flow_like_mappings_never_crash(data: dict[str, Any]) -> None:
    check({"schema_version": 1, **data})


def paths_of(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths_of(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += paths_of(value, (*prefix, index))
    return out


@st.composite
def mutated_examples(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        places = [p for p in paths_of(doc) if p]
        if not places:
            break
        place = draw(st.sampled_from(places))
        parent = doc
        for part in place[:-1]:
            parent = parent[part]
        last = place[-1]
        action = draw(st.sampled_from(["drop", "retype", "rename"]))
        if action == "drop":
            del parent[last]
        elif action == "retype":
            parent[last] = draw(scalars | st.lists(scalars, max_size=2) | st.just({}))
        elif isinstance(parent, dict):
            parent[str(last) + draw(st.sampled_from(["x", "_", "s"]))] = parent.pop(last)
    return doc


@SETTINGS
@given(mutated_examples())
def test_mutated_examples_never_crash(data: Any) -> None:
    check(data)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:- \n[]{}\"'#\t&*!|>%@`0")), max_size=60))
def test_random_text_never_crashes(text: str) -> None:
    try:
        parse_flow(text, context=CONTEXT)
    except InvalidInputError as exc:
        assert exc.problems
