"""The admin pages and imports in a real browser: alice (the admin) creates a user, gives them a
manager and an API token shown once; andrei (a member) gets the 403 page on /admin saying who
may; maria (a manager) imports a CSV of companies with one bad row and watches its progress, then
the report with the bad row's line, the good rows being records."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from crmflow.services import imports, records, users
from tests.browser.conftest import SignedIn, Site, assert_accessible, expect, screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page


def test_an_admin_creates_a_user_with_a_manager_and_a_token_a_member_is_refused(
    page: Page, site: Site, signed_in: SignedIn
) -> None:
    signed_in(page, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    expect(page.get_by_role("heading", name="Users")).to_be_visible()
    page.get_by_text("Create a user").click()
    page.get_by_label("Username", exact=True).fill("ioana")
    page.get_by_label("Display name").fill("Ioana <Popescu>")
    page.get_by_label("Email", exact=True).fill("ioana@example.org")
    page.get_by_label("Role", exact=True).select_option("member")
    page.get_by_label("Password (8").fill("a long password")
    page.get_by_role("button", name="Create the user").click()
    expect(page.get_by_role("status")).to_have_text("User ioana created.")
    row = page.locator("#users tr", has_text="ioana@example.org")
    expect(row).to_contain_text("Ioana <Popescu>")

    # Her manager is maria; a cycle is refused in the service's words.
    row.get_by_label("Manager of ioana").fill("maria")
    row.get_by_role("button", name="Save ioana").click()
    expect(page.get_by_role("status")).to_have_text("ioana: role member, manager maria.")
    assert users.get_user(site.ctx, "ioana").manager == "maria"
    assert_accessible(page)
    screenshot(page, "admin-users")
    maria_row = page.locator("#users tr", has_text="maria@")
    maria_row.get_by_label("Manager of maria").fill("ioana")
    maria_row.get_by_role("button", name="Save maria").click()
    expect(page.get_by_role("alert")).to_contain_text("cannot be managed by 'ioana'")

    # A token for ioana, shown once, with a copy button; the list never shows it again.
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="API tokens").click()
    page.get_by_label("For user").fill("ioana")
    page.get_by_label("Token name").fill("mailing tool")
    page.get_by_role("button", name="Create a token").click()
    expect(page.get_by_role("heading", name="Token created")).to_be_visible()
    token = page.get_by_label("The token").input_value()
    assert token.startswith("crm_")
    assert users.authenticate_token(site.ctx, token).username == "ioana"
    page.wait_for_load_state("load")  # the Copy button's script is deferred: ready at load
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#copy-said")).not_to_be_empty()
    assert_accessible(page)
    page.goto("/admin/tokens")
    expect(page.locator("#tokens")).to_contain_text("mailing tool")
    assert token not in page.content()
    assert_accessible(page)

    # ioana joins the sales group; the private flows' members are one more page of the same kind.
    admin_nav = page.get_by_role("navigation", name="Admin")
    admin_nav.get_by_role("link", name="Groups").click()
    page.get_by_label("Add a member to sales (username)").fill("ioana")
    page.get_by_role("button", name="Add to sales").click()
    expect(page.get_by_role("status")).to_have_text("ioana added to sales.")
    expect(page.get_by_role("button", name="Remove ioana from sales")).to_be_visible()
    assert_accessible(page)
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Flow members").click()
    expect(page.get_by_role("heading", name="Members of private flows")).to_be_visible()
    assert_accessible(page)

    # andrei, a member, is refused the admin pages, told who may.
    page.get_by_role("button", name="Sign out").click()
    signed_in(page, "andrei")
    answer = page.goto("/admin")
    assert answer is not None and answer.status == 403
    expect(page.locator("main")).to_contain_text("only admins may open the admin pages")
    assert_accessible(page)


@pytest.fixture
def held_import(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Imports pause after their first batch until the event is set: the test sees them run."""
    release = threading.Event()
    real = imports.import_records

    def held(*args: Any, on_progress: Any = None, **kwargs: Any) -> imports.ImportReport:
        def progress(rows: int, position: int) -> None:
            if on_progress is not None:
                on_progress(rows, position)
            release.wait(timeout=20)

        return real(*args, on_progress=progress, **kwargs)

    monkeypatch.setattr(imports, "import_records", held)
    yield release
    release.set()


def test_an_import_shows_its_progress_then_the_refused_line(
    page: Page,
    site: Site,
    signed_in: SignedIn,
    held_import: threading.Event,
    tmp_path: Path,
) -> None:
    csv_file = tmp_path / "new-companies.csv"
    csv_file.write_text(
        "name,email,industry\n"
        "Atelier Brâncuși,hello@brancusi.example,Design\n"
        "Broken Email Ltd,not-an-email,Retail\n"
        "Carpați Tours,office@carpati.example,Travel\n",
        encoding="utf-8",
    )
    signed_in(page, "maria")
    page.goto("/imports")
    page.get_by_label("Record type").select_option("company")
    page.get_by_label("File (.csv").set_input_files(str(csv_file))
    assert_accessible(page)
    page.get_by_role("button", name="Import").click()

    # The page answers at once; the import is held after its first batch, still running.
    expect(page.get_by_role("heading", name="Import of new-companies.csv")).to_be_visible()
    expect(page.locator("#import-state")).to_contain_text("3 rows read so far")
    expect(page.locator("progress")).to_be_visible()
    held_import.set()

    # The polled fragment turns into the report: the bad row by its line (the header is line 1).
    expect(page.locator("#import-state")).to_contain_text(
        "Import done: 2 imported, 1 refused, 3 read", timeout=10_000
    )
    refused = page.locator("#refused-rows tbody tr")
    expect(refused).to_have_count(1)
    expect(refused.first.locator("td").first).to_have_text("3")
    expect(refused.first).to_contain_text("email")
    assert_accessible(page)
    screenshot(page, "import-report")

    names: set[object] = set()
    after = None
    while True:
        found = records.list_records(site.ctx, "company", after=after, limit=1000)
        names |= {r.data.get("name") for r in found.items}
        if found.next_after is None:
            break
        after = found.next_after
    assert {"Atelier Brâncuși", "Carpați Tours"} <= names
    assert "Broken Email Ltd" not in names
