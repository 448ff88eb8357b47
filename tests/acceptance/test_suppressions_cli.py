"""`crmflow suppressions list/add/remove` as an admin runs them (the command line acts as the
system user, an admin): an address added is listed with its reason and note, a bad address is
refused saying why, and removing one not listed says so."""

from __future__ import annotations

import json

from tests.acceptance.conftest import Run


def test_an_admin_keeps_the_suppression_list_from_the_command_line(crmflow: Run) -> None:
    crmflow("db", "upgrade")
    added = crmflow("suppressions", "add", "Ana@Example.org", "--note", "asked by phone")
    assert added.stdout.strip() == "ana@example.org is on the suppression list"
    [entry] = json.loads(crmflow("suppressions", "list", "--json").stdout)["items"]
    assert (entry["address"], entry["reason"], entry["source"]) == (
        "ana@example.org",
        "admin",
        "added by system: asked by phone",
    )

    refused = crmflow("suppressions", "add", "ana-at-example.org", check_exit=1)
    assert "'ana-at-example.org' is not an email address" in refused.stderr

    removed = crmflow("suppressions", "remove", "ANA@example.org")
    assert removed.stdout.strip() == "ana@example.org is off the suppression list"
    missing = crmflow("suppressions", "remove", "ana@example.org", check_exit=1)
    assert "'ana@example.org' is not on the suppression list" in missing.stderr
