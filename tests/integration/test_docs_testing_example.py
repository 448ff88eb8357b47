"""The "Testing your flows" example of docs/flows.md runs as written, so it cannot drift from
`crmflow.testing`: its Python block is read from the page and each test it defines is called."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs" / "flows.md"
SECTION = "## Testing your flows"


def _example() -> str:
    """The first Python block of the section (the page's only one there)."""
    text = DOCS.read_text(encoding="utf-8")
    assert SECTION in text, f"{DOCS} has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, f"the section {SECTION!r} has no ```python block"
    return found.group(1)


def test_the_testing_example_of_the_flow_reference_runs() -> None:
    namespace: dict[str, Any] = {"__name__": "docs_flows_testing_example"}
    exec(compile(_example(), f"{DOCS}:{SECTION}", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert tests, "the example defines no test function"
    for test in tests:
        test()
