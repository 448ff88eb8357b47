"""`observe_all` counts a batch's amounts in a histogram exactly as one `observe` per amount."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from crmflow.metrics import observe_all

BUCKETS = (0.05, 0.1, 1, 10, 3600)


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    """(suffix: _bucket, _count, _sum; its `le`) -> value."""
    [metric] = histogram.collect()
    return {
        (s.name.removeprefix(metric.name), s.labels.get("le", "")): s.value
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def _histogram(name: str) -> Histogram:
    return Histogram(name, "test", buckets=BUCKETS, registry=CollectorRegistry())


@pytest.mark.parametrize(
    "amounts",
    [
        [],
        [0.0] * 300,
        [0.05, 0.1, 1.0, 10.0, 3600.0],  # on the bounds: counted in the bucket they bound
        [0.0500001, 0.7, 0.7, 12.5, 4000.0, 86_400.0, 0.0, 2.0],
    ],
)
def test_observe_all_counts_as_observe_one_by_one(amounts: list[float]) -> None:
    one_by_one, together = _histogram("one"), _histogram("together")
    for amount in amounts:
        one_by_one.observe(amount)
    observe_all(together, amounts)
    expected, got = _samples(one_by_one), _samples(together)
    assert got.pop(("_sum", "")) == pytest.approx(expected.pop(("_sum", "")))
    assert got == expected  # every bucket (cumulative, as scraped) and the count
    assert got[("_count", "")] == len(amounts)


def test_a_labelled_histogram_is_refused_as_observe_refuses_it() -> None:
    labelled = Histogram("by_flow", "test", ["flow"], buckets=BUCKETS, registry=CollectorRegistry())
    with pytest.raises(ValueError):
        labelled.observe(1.0)
    with pytest.raises(ValueError):
        observe_all(labelled, [1.0])
