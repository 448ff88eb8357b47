"""What the demo loader (`services.demo`) looks at before it loads each part of the demo data:
which users, groups and flows exist, and whether there is any record at all.

Reads only, of several table groups at once: the demo adds what is missing through the services
(users, groups, imports, flows), which write through their own store modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from crmflow.store.schema import flows, groups, records, users

__all__ = ["PresentData", "present_data"]


@dataclass(frozen=True)
class PresentData:
    usernames: frozenset[str]
    group_names: frozenset[str]
    flow_keys: frozenset[str]
    has_records: bool


def present_data(conn: sa.Connection) -> PresentData:
    """The users, groups and flows there are, by name, and whether any record exists."""
    usernames = frozenset(conn.execute(sa.select(users.c.username)).scalars())
    group_names = frozenset(conn.execute(sa.select(groups.c.name)).scalars())
    has_records = conn.execute(sa.select(records.c.id).limit(1)).first() is not None
    flow_keys = frozenset(conn.execute(sa.select(flows.c.key)).scalars())
    return PresentData(usernames, group_names, flow_keys, has_records)
