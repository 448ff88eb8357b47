"""docs/grafana-dashboard.json and docs/observability.md name exactly the metrics crmflow
exports: a dashboard panel on a metric that does not exist would stay empty without a word."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from crmflow.api.metrics import STORE_METRICS
from crmflow.metrics import metric_names

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\bcrmflow_[a-z_]+\b")


def _exprs(node: Any) -> list[str]:
    """Every PromQL expression of the dashboard: the panels' targets and the variables' queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if (key in ("expr", "definition") and isinstance(value, str)) or (
                key == "query" and isinstance(value, str)
            ):
                found.append(value)
            else:
                found += _exprs(value)
    elif isinstance(node, list):
        for item in node:
            found += _exprs(item)
    return found


def _families(names: set[str]) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def test_every_dashboard_expression_names_exported_metrics_and_uses_them_all() -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = _exprs(dashboard)
    assert len(exprs) > 20
    exported = metric_names() | set(STORE_METRICS)
    used: set[str] = set()
    for expr in exprs:
        names = set(NAME.findall(expr))
        assert names, f"no crmflow metric in {expr!r}"
        assert names <= exported, f"{expr!r} names {sorted(names - exported)}, not exported"
        assert expr.count("(") == expr.count(")"), expr
        used |= names
    # Every family crmflow exports has a panel.
    assert _families(exported) == _families(used)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_metrics_tables_of_the_docs_are_what_is_exported() -> None:
    text = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(crmflow_[a-z_]+)` \|", text, flags=re.M))
    exported = _families(metric_names()) | set(STORE_METRICS)
    assert documented == exported
