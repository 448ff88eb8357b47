"""The address the links of emails start with: CRMFLOW_PUBLIC_URL, else the host and port
served, and whether that default names an address nobody can open."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from crmflow.services.approval_links import link_url
from crmflow.services.context import Context
from crmflow.services.suppressions import unsubscribe_url
from crmflow.settings import Settings


def _ctx(**values: Any) -> Context:
    given: dict[str, Any] = {"public_url": None, "secret_key": "s" * 32, **values}
    settings = Settings(_env_file=None, **given)
    return Context(engine=sa.create_engine("sqlite://"), settings=settings)


def test_the_links_follow_the_port_served_when_no_public_url_is_set() -> None:
    ctx = _ctx(host="127.0.0.1", port=8765)
    assert link_url(ctx, "TOKEN") == "http://127.0.0.1:8765/a/TOKEN"
    assert unsubscribe_url(ctx, "ana@example.org").startswith("http://127.0.0.1:8765/u/")
    # What `crmflow serve --port 9001` does with the settings its process runs with.
    served = Context(engine=ctx.engine, settings=ctx.settings.model_copy(update={"port": 9001}))
    assert link_url(served, "TOKEN") == "http://127.0.0.1:9001/a/TOKEN"


def test_the_public_url_wins_with_or_without_its_trailing_slash() -> None:
    for public in ("https://crm.example.org", "https://crm.example.org/"):
        ctx = _ctx(port=8765, public_url=public)
        assert link_url(ctx, "TOKEN") == "https://crm.example.org/a/TOKEN"
        assert unsubscribe_url(ctx, "ana@example.org").startswith("https://crm.example.org/u/")
        assert not ctx.settings.public_url_unreachable


def test_an_ipv6_host_is_written_in_brackets() -> None:
    assert _ctx(host="::1", port=8000).settings.public_base_url == "http://[::1]:8000"


@pytest.mark.parametrize(
    ("host", "unreachable"),
    [("0.0.0.0", True), ("::", True), ("127.0.0.1", False), ("crm.local", False)],
)
def test_a_host_meaning_every_address_makes_links_nobody_can_open(
    host: str, unreachable: bool
) -> None:
    assert _ctx(host=host).settings.public_url_unreachable is unreachable
    assert not _ctx(host=host, public_url="https://crm.example.org").settings.public_url_unreachable
