"""The flow services import one another one way: flows -> lifecycle -> thaw, flow_views and
triggers, never back (they used to import each other in a circle, broken by imports inside
functions)."""

from __future__ import annotations

import grimp
import pytest

# Each module, and the modules it must not reach, directly or through others.
NEVER = {
    "crmflow.services.lifecycle": ["crmflow.services.flows"],
    "crmflow.services.thaw": ["crmflow.services.flows", "crmflow.services.lifecycle"],
    "crmflow.services.flow_views": ["crmflow.services.flows", "crmflow.services.lifecycle"],
    "crmflow.services.flow_validation": ["crmflow.services.flows", "crmflow.services.lifecycle"],
    "crmflow.services.flow_members": ["crmflow.services.flows", "crmflow.services.lifecycle"],
    "crmflow.services.triggers": [
        "crmflow.services.flows",
        "crmflow.services.lifecycle",
        "crmflow.services.flow_views",
    ],
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("crmflow")


@pytest.mark.parametrize("importer", sorted(NEVER))
def test_a_lower_flow_service_never_reaches_a_higher_one(
    graph: grimp.ImportGraph, importer: str
) -> None:
    for imported in NEVER[importer]:
        chain = graph.find_shortest_chains(importer=importer, imported=imported)
        assert not chain, f"{importer} reaches {imported}: {sorted(chain)}"


def test_the_higher_ones_do_build_on_the_lower_ones(graph: grimp.ImportGraph) -> None:
    assert graph.direct_import_exists(
        importer="crmflow.services.flows", imported="crmflow.services.lifecycle"
    )
    assert graph.direct_import_exists(
        importer="crmflow.services.lifecycle", imported="crmflow.services.flow_views"
    )
