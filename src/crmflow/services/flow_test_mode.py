"""A flow's test mode switch (admins): while it is on, every message the flow's runs write goes
to the flow's test recipients, marked test (services.test_mode rewrites them). Who switched it
and when is kept, and written in the flow's history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crmflow.errors import InvalidInputError, Problem
from crmflow.services.context import Actor, Context
from crmflow.services.flow_views import get_flow, log_status_change
from crmflow.services.permissions import require_admin
from crmflow.store import flow_test_modes as store
from crmflow.store.database import read_connection

__all__ = ["FlowTestModeView", "flow_test_mode", "set_flow_test_mode"]


@dataclass(frozen=True)
class FlowTestModeView:
    """A flow's test mode: on or off, who switched it last and when (None: never switched),
    and where its messages go while it is on."""

    key: str
    enabled: bool
    changed_by: str | None
    changed_at: datetime | None
    recipients: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.key,
            "enabled": self.enabled,
            "changed_by": self.changed_by,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
            "test_recipients": self.recipients,
        }


def flow_test_mode(ctx: Context, actor: Actor, key: str) -> FlowTestModeView:
    """Flow `key`'s test mode (NotFoundError for who may not see the flow)."""
    flow = get_flow(ctx, actor, key)
    with read_connection(ctx.engine) as conn:
        mode = store.test_mode_of(conn, flow.id)
    return _view(key, flow.document or {}, mode)


def _view(key: str, document: dict[str, Any], mode: store.FlowTestMode | None) -> FlowTestModeView:
    recipients = [str(r) for r in document.get("test_recipients") or []]
    if mode is None:
        return FlowTestModeView(key, False, None, None, recipients)
    return FlowTestModeView(key, mode.enabled, mode.changed_by, mode.changed_at, recipients)


def set_flow_test_mode(ctx: Context, actor: Actor, key: str, enabled: bool) -> FlowTestModeView:
    """Switch flow `key`'s test mode on or off (admins). On needs the flow's current version to
    list `test_recipients`; the switch and who made it go in the flow's history."""
    require_admin(actor, "switch a flow's test mode")
    flow = get_flow(ctx, actor, key)
    document = flow.document or {}
    recipients = [str(r) for r in document.get("test_recipients") or []]
    if enabled and not recipients:
        raise InvalidInputError(
            f"test mode of flow {key!r}",
            [
                Problem(
                    "test_recipients",
                    "the flow lists no test recipients, so its messages would go nowhere",
                    "add e.g. `test_recipients: [you@example.org, +40 721 000 000]` to the "
                    "flow and save it, then switch test mode on",
                )
            ],
        )
    now = ctx.now()
    with ctx.engine.begin() as conn:
        before = store.test_mode_of(conn, flow.id)
        if before is None or before.enabled != enabled:
            store.set_test_mode(conn, flow.id, enabled=enabled, by=actor.id, now=now)
            note = (
                f"test mode on: messages go to {', '.join(recipients)}"
                if enabled
                else "test mode off: messages go to their recipients"
            )
            status = flow.status.value
            log_status_change(conn, ctx, actor, flow.id, status, status, flow.version, note)
        mode = store.test_mode_of(conn, flow.id)
    return _view(key, document, mode)
