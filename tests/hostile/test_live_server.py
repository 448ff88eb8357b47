"""The live server fixture itself: it serves, and its memory can be read."""

from __future__ import annotations

import httpx

from tests.hostile.conftest import MEMBER_TOKEN, LiveServer


def test_the_live_server_answers_a_member_and_reports_its_memory(live_server: LiveServer) -> None:
    answer = httpx.get(
        f"{live_server.base}/api/flows", headers=live_server.headers(MEMBER_TOKEN), timeout=10
    )
    assert answer.status_code == 200
    assert 10 < live_server.rss_mb() <= live_server.peak_rss_mb() < 2000
