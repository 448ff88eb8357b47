"""Browser tests: a real server and Debian's chromium driven by playwright (sync API).

One server per test module (module-scoped), one browser per test process (session-scoped: a
chromium start costs ~1 s of CPU), a new browser context per test.

- `site`: the server (uvicorn in a thread on 127.0.0.1, a free port) over a fresh SQLite
  database with the demo data (`load_demo`: alice the admin, maria the manager, andrei and
  bogdan members; two flows running) and a frozen clock (`site.clock`) that tests may move.
- `page`: a page of a new context on the site; every request it makes is recorded and the test
  FAILS if any goes to another host than the server (requests elsewhere are also aborted).
- `signed_in(page, "alice")`: signs in through the sign-in form.
- `assert_accessible(page)`: runs the vendored axe-core in the page; fails on serious or
  critical violations.
- `screenshot(page, "name")`: writes docs/screenshots/name.png (the README shows them).

Without playwright or /usr/bin/chromium the tests are skipped, saying why; with
CRMFLOW_REQUIRE_BROWSER=1 (as .ci/run sets) they fail instead.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
import uvicorn

from crmflow.services.context import Context
from crmflow.services.demo import DEMO_LOGINS, load_demo
from crmflow.services.jobs import JobRunner
from crmflow.services.setup import upgrade_database
from crmflow.settings import Settings
from crmflow.testing import FrozenClock
from crmflow.web import create_site

try:  # test modules take `expect` from here, so that they load (and skip) without playwright
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the `browser` fixture says why the tests skip
    expect = sync_playwright = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Route

__all__ = [
    "SignedIn",
    "Site",
    "assert_accessible",
    "expect",
    "screenshot",
    "watch_foreign_requests",
]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "docs" / "screenshots"
AXE = "/static/web/vendor/axe-core/axe.min.js"
# A Monday morning, so that pages showing times look the same in every run.
START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
PASSWORDS = {login.username: login.password for login in DEMO_LOGINS}


def _browser_missing() -> str | None:
    if sync_playwright is None:
        return "the playwright package is not installed (make install-dev)"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium)"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    reason = _browser_missing()
    if reason is not None:
        if os.environ.get("CRMFLOW_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CRMFLOW_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(f"browser tests skipped: {reason}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Site:
    """The running server: its address, services context and frozen clock."""

    base_url: str
    ctx: Context
    clock: FrozenClock
    passwords: dict[str, str] = field(default_factory=lambda: dict(PASSWORDS))

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("site")
    settings = Settings(database_url=f"sqlite:///{folder / 'site.db'}", timezone="Europe/Paris")
    ctx = Context.from_settings(settings)
    clock = FrozenClock(START)
    ctx.clock = clock
    upgrade_database(ctx)
    load_demo(ctx)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(create_site(ctx), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start within 20 s")
        time.sleep(0.02)
    # The background jobs (a long start, an import) run beside the server, as `crmflow serve`
    # runs them; woken by each job submitted, so no test waits for its idle look.
    job_runner = JobRunner(ctx, name="browser-tests:jobs")
    job_thread = threading.Thread(target=job_runner.run, daemon=True)
    job_thread.start()
    try:
        yield Site(f"http://127.0.0.1:{port}", ctx, clock)
    finally:
        job_runner.stop()
        job_thread.join(timeout=10)
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
        ctx.engine.dispose()


def watch_foreign_requests(context: BrowserContext, host: str) -> list[str]:
    """Abort and list every request of `context` to another host than `host`."""
    foreign: list[str] = []

    def watch(route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about") or parts.netloc == host:
            route.continue_()
        else:
            foreign.append(url)
            route.abort()

    context.route("**/*", watch)
    return foreign


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    """A page of a new browser context; fails the test on any request to another host."""
    context = browser.new_context(base_url=site.base_url, viewport={"width": 1280, "height": 800})
    foreign = watch_foreign_requests(context, site.host)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()
    if foreign:
        pytest.fail(f"the page asked for another host than the server: {foreign}")


SignedIn = Callable[["Page", str], None]


@pytest.fixture
def signed_in(site: Site) -> SignedIn:
    """Sign `username` in through the form (the demo users' passwords are known)."""

    def sign_in(page: Page, username: str) -> None:
        page.goto("/sign-in")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(site.passwords[username])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: urlsplit(url).path != "/sign-in")

    return sign_in


def assert_accessible(page: Page) -> None:
    """Run axe-core in the page; fail on serious or critical violations, listing them."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(url=AXE)
    violations = page.evaluate(
        """async () => {
            const result = await window.axe.run(document, {resultTypes: ["violations"]});
            return result.violations
                .filter(v => v.impact === "serious" || v.impact === "critical")
                .map(v => ({id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))}));
        }"""
    )
    assert not violations, f"accessibility violations on {page.url}: {violations}"


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as docs/screenshots/NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
