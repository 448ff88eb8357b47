"""The public names of `crmflow` and `crmflow.testing` are exactly these, each one resolves, and
`import crmflow` stays cheap (as httpx's tests/test_exported_members.py pins its own)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import crmflow
import crmflow.testing

CRMFLOW = [
    "ConflictError",
    "CrmflowError",
    "FlowDefinition",
    "InvalidInputError",
    "NotFoundError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "Problem",
    "RecordType",
    "Settings",
    "ValidationContext",
    "__version__",
    "flow_from_data",
    "parse_flow",
    "record_type_from_definition",
    "type_catalog",
]
TESTING = ["FlowHarness", "FrozenClock", "Message", "Run", "StepRun"]


def test_crmflow_exports_exactly_these_names() -> None:
    assert sorted(crmflow.__all__) == sorted(CRMFLOW)
    assert len(set(crmflow.__all__)) == len(crmflow.__all__)


def test_crmflow_testing_exports_exactly_these_names() -> None:
    assert sorted(crmflow.testing.__all__) == sorted(TESTING)


@pytest.mark.parametrize("name", CRMFLOW)
def test_each_crmflow_name_resolves_and_is_listed(name: str) -> None:
    value = getattr(crmflow, name)
    assert value is not None
    assert name in dir(crmflow)
    # A public class or function comes from crmflow itself, not from a library it uses.
    if name != "__version__":
        assert value.__module__.startswith("crmflow.")


@pytest.mark.parametrize("name", TESTING)
def test_each_testing_name_resolves(name: str) -> None:
    value = getattr(crmflow.testing, name)
    assert value.__module__ == "crmflow.testing"
    assert value.__doc__


def test_an_unknown_name_is_an_attribute_error() -> None:
    misspelt = "parse_flows"
    with pytest.raises(AttributeError, match="no attribute 'parse_flows'"):
        getattr(crmflow, misspelt)


def test_the_errors_share_one_root() -> None:
    errors = [getattr(crmflow, n) for n in CRMFLOW if n.endswith("Error")]
    assert errors
    assert all(issubclass(e, crmflow.CrmflowError) for e in errors)


def test_import_crmflow_loads_no_database_web_or_validation_library() -> None:
    heavy = ("sqlalchemy", "fastapi", "pydantic", "pydantic_settings", "crmflow.engine")
    code = (
        f"import sys, crmflow\nprint(' '.join(m for m in sys.modules if m.startswith({heavy!r})))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == []
