"""Demo data for `crmflow serve --demo`: users of each role, groups, the example record types,
saved queries and flows, and a few hundred records. Loaded once: a database that already has
the demo users is left as it is."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any

import orjson

from crmflow.engine.lifecycle import LifecycleAction
from crmflow.errors import NotFoundError
from crmflow.services import flows, imports, queries, record_types, templates, users
from crmflow.services.context import Actor, Context, Role
from crmflow.store.database import read_connection
from crmflow.store.demo import present_data

__all__ = ["DEMO_LOGINS", "DemoLogin", "examples_dir", "load_demo"]


@dataclass(frozen=True)
class DemoLogin:
    username: str
    role: str
    display_name: str
    password: str
    token: str  # a documented, demo-only token: never use the demo data in production


DEMO_LOGINS = (
    DemoLogin("alice", "admin", "Alice Martin", "alice-demo", "crm_demo_alice_admin"),
    DemoLogin("maria", "manager", "Maria Popescu", "maria-demo", "crm_demo_maria_manager"),
    DemoLogin("andrei", "member", "Andrei Ionescu", "andrei-demo", "crm_demo_andrei_member"),
    DemoLogin("bogdan", "member", "Bogdan Stan", "bogdan-demo", "crm_demo_bogdan_member"),
)
DEMO_GROUPS = {
    "management": ["alice"],
    "sales": ["maria", "andrei"],
    "service": ["maria", "bogdan"],
}
FIRST = ["Ana", "Ion", "Elena", "Luca", "Chiara", "Jean", "Marie", "Paul", "Sofia", "Matei"]
LAST = ["Popa", "Dubois", "Rossi", "Lefevre", "Ionescu", "Bianchi", "Moreau", "Stan", "Neri"]
CITIES = ["Paris", "Lyon", "Cluj", "Milano", "Montréal", "Bucharest", "Torino"]


def examples_dir() -> Path:
    """`examples/` of a source checkout (where `make run` runs)."""
    return Path(__file__).resolve().parents[3] / "examples"


def load_demo(ctx: Context) -> str:
    """Load whatever part of the demo data is missing; return a one-line summary.

    Each part (users, groups, types, records, queries, flows) is added only when absent, so a
    second run changes nothing and a run that stopped half way is completed by the next one.
    """
    if not examples_dir().is_dir():
        raise NotFoundError(
            f"the demo needs the examples folder of a source checkout ({examples_dir()}); "
            "run it from a clone of crmflow"
        )
    system = users.ensure_system_user(ctx)
    with read_connection(ctx.engine) as conn:
        present = present_data(conn)
    done: list[str] = []
    new_users = [login for login in DEMO_LOGINS if login.username not in present.usernames]
    for login in new_users:
        users.create_user(
            ctx,
            system,
            username=login.username,
            role=login.role,
            display_name=login.display_name,
            email=f"{login.username}@example.org",
            password=login.password,
        )
        users.store_known_token(ctx, login.username, login.token, "demo")
    if new_users:
        done.append(f"{len(new_users)} users")
    for group, members in DEMO_GROUPS.items():
        if group not in present.group_names:
            users.create_group(ctx, system, group, f"The {group} team")
            for member in members:
                users.add_group_member(ctx, system, group, member)
    alice = users.actor_by_username(ctx, "alice")
    folder = examples_dir()
    for path in sorted((folder / "types").glob("*.yaml")):
        record_types.load_record_type_file(ctx, alice, path)
    if not present.has_records:
        counts = _records(ctx, alice)
        done.append("records (" + ", ".join(f"{n} {kind}" for kind, n in counts.items()) + ")")
    for path in sorted((folder / "queries").glob("*.yaml")):
        queries.load_query_file(ctx, alice, path)
    # Before the flows: a send_email naming a template that is not loaded is refused.
    for path in sorted((folder / "templates").glob("*.yaml")):
        templates.load_template_file(ctx, alice, path)
    flow_count = _flows(ctx, alice, folder, present.flow_keys)
    if flow_count:
        done.append(f"{flow_count} flows")
    return "loaded " + ", ".join(done) if done else "already loaded (left as it is)"


def _records(ctx: Context, owner: Actor) -> dict[str, int]:
    """A few hundred records of every built-in type, owned by the demo's non-admin users.

    One seeded generator draws them all, type after type in this order, so that every demo
    database holds the same records."""
    rng = random.Random(2026)
    today = ctx.now().astimezone(ctx.zone).date()
    usernames = [login.username for login in DEMO_LOGINS if login.role != Role.ADMIN.value]
    rows: dict[str, list[dict[str, Any]]] = {
        "company": _companies(rng, today),
        "contact": _contacts(rng, today),
        "event": _events(rng, today, ctx.zone),
        "quote": _quotes(rng, today),
        "order": _orders(rng),
        "property": _properties(rng),
    }
    counts: dict[str, int] = {}
    owners = [u for u in usernames if u != "system"] or [owner.username]
    for kind, items in rows.items():
        # The demo goes through the same import as a user's file: checks, change events and all.
        lines = "".join(
            orjson.dumps({**item, "owner": rng.choice(owners)}).decode() + "\n" for item in items
        )
        report = imports.import_records(ctx, owner, kind, io.StringIO(lines), fmt="jsonl")
        if not report.ok:
            raise RuntimeError(f"demo {kind} records were refused: {report.summary()}")
        counts[kind] = report.imported
    return counts


def _companies(rng: random.Random, today: date) -> list[dict[str, Any]]:
    return [
        {
            "name": f"{rng.choice(LAST)} & {rng.choice(LAST)} {('SARL', 'SRL', 'SpA')[i % 3]}",
            "status": rng.choice(["prospect", "client", "former_client"]),
            "client_since": (today - timedelta(days=rng.randint(10, 900))).isoformat(),
        }
        for i in range(40)
    ]


def _contacts(rng: random.Random, today: date) -> list[dict[str, Any]]:
    contacts: list[dict[str, Any]] = []
    for i in range(300):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        # Some contacts became clients exactly 180 days ago, so the seed 002 query finds them.
        since = today - timedelta(days=180 if i % 40 == 0 else rng.randint(1, 1000))
        contact: dict[str, Any] = {
            "first_name": first,
            "last_name": last,
            "email": f"{first.lower()}.{last.lower()}{i}@example.org",
            "status": rng.choice(["lead", "prospect", "client", "donor"]),
            "client_since": since.isoformat(),
            "language": rng.choice(["en", "fr", "ro", "it"]),
            "birth_date": date(
                rng.randint(1950, 2000), rng.randint(1, 12), rng.randint(1, 28)
            ).isoformat(),
            "newsletter": rng.random() < 0.6,
        }
        if contact["status"] == "donor":
            # Donors gave at some point in the last year: the recent ones form seed 000's list.
            contact["last_donation_date"] = (
                today - timedelta(days=rng.randint(1, 365))
            ).isoformat()
            contact["last_donation_amount"] = rng.choice([10, 25, 50, 100, 500])
            contact["total_donations"] = contact["last_donation_amount"] * rng.randint(1, 10)
        contacts.append(contact)
    return contacts


def _events(rng: random.Random, today: date, zone: tzinfo) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(30):
        start = datetime.combine(today + timedelta(days=rng.randint(-20, 60)), time(18, 0))
        events.append(
            {
                "title": f"{('Gala', 'Workshop', 'Open day', 'Concert')[i % 4]} #{i + 1}",
                "start": start.replace(tzinfo=zone).isoformat(),
                "end": (start + timedelta(hours=3)).replace(tzinfo=zone).isoformat(),
                "location": rng.choice(CITIES),
                "status": "planned",
            }
        )
    return events


def _quotes(rng: random.Random, today: date) -> list[dict[str, Any]]:
    return [
        {
            "number": f"Q-2026-{i + 1:04d}",
            "amount": rng.randint(200, 20000),
            "status": rng.choice(["draft", "sent", "accepted", "refused"]),
            "valid_until": (today + timedelta(days=rng.randint(-10, 60))).isoformat(),
        }
        for i in range(40)
    ]


def _orders(rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "number": f"O-2026-{i + 1:04d}",
            "kind": "sale" if i % 2 else "service",
            "amount": rng.randint(50, 9000),
            "status": "new",
        }
        for i in range(40)
    ]


def _properties(rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "address": f"{rng.randint(1, 200)} rue {rng.choice(LAST)}",
            "city": rng.choice(CITIES),
            "price": rng.randint(90, 900) * 1000,
            "status": rng.choice(["available", "under_offer", "sold"]),
        }
        for _ in range(20)
    ]


def _flows(ctx: Context, alice: Actor, folder: Path, known: frozenset[str]) -> int:
    created = 0
    for path in sorted(folder.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        definition = flows.validate_flow_text(ctx, alice, text, source=str(path))
        if definition.key in known:
            continue
        view = flows.create_flow(ctx, alice, text, source=str(path))
        created += 1
        # Two flows are started to show active ones; donor-thank-you stays a draft so that the
        # README's tour can show its start-list confirmation.
        if view.key in ("event-automations", "six-month-promotion"):
            flows.change_status(ctx, alice, view.key, LifecycleAction.START)
    return created
