"""crmflow: self-hosted process automation for CRMs.

What a user's own code and tests need, in one place::

    import crmflow
    from pathlib import Path

    context = crmflow.ValidationContext(record_types=crmflow.type_catalog())
    try:
        flow = crmflow.parse_flow(Path("flows/thank-you.yaml").read_text(), context=context)
    except crmflow.InvalidInputError as error:
        for problem in error.problems:
            print(problem)  # file:line: steps[2].actions[0].to: unknown field 'emial' (...)

Running a flow in a test, through time, is `crmflow.testing`'s business (a frozen clock and a
harness on a temporary database); the rest of the package (`crmflow.services`, `.store`, ...)
is the application's inside and may change between versions.

`import crmflow` loads nothing but the errors: every other name is imported on first use (a
module `__getattr__`), so that `crmflow --help` does not pay for pydantic, SQLAlchemy or FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from crmflow.errors import (
    ConflictError,
    CrmflowError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    Problem,
)

if TYPE_CHECKING:
    from crmflow.engine.definition.flow import FlowDefinition
    from crmflow.engine.recordtypes import RecordType, record_type_from_definition, type_catalog
    from crmflow.engine.validation import ValidationContext, flow_from_data, parse_flow
    from crmflow.settings import Settings

__version__ = "0.1.0"
__all__ = [
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

# The names loaded on first use, and the module each comes from.
_LAZY = {
    "FlowDefinition": "crmflow.engine.definition.flow",
    "RecordType": "crmflow.engine.recordtypes",
    "record_type_from_definition": "crmflow.engine.recordtypes",
    "type_catalog": "crmflow.engine.recordtypes",
    "ValidationContext": "crmflow.engine.validation",
    "flow_from_data": "crmflow.engine.validation",
    "parse_flow": "crmflow.engine.validation",
    "Settings": "crmflow.settings",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'crmflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
