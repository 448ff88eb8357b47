"""Which senders (From) emails may have: CRMFLOW_EMAIL_ALLOWED_FROM, addresses and whole
domains (`news@example.org,@example.org`; a domain does not cover its subdomains). Unset,
any sender.

Checked twice: when a flow is loaded (`flow_sender_problems`: a send_email action whose `from`
is written out and outside the list makes the flow invalid, at that action), and by the
dispatcher before each email goes (`sender_refusal`: a `from` made from a record's field or a
stored template's, and the server's default sender, are known only then).
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from functools import lru_cache

from crmflow.engine.actions.send_email import SendEmailAction
from crmflow.engine.definition import ActionStep, FlowDefinition
from crmflow.engine.templates import is_template
from crmflow.errors import Problem
from crmflow.settings import Settings, allowed_senders

__all__ = ["HINT", "flow_sender_problems", "sender_refusal"]

HINT = (
    "send from one of them, or an administrator adds the address (or its @domain) to "
    "CRMFLOW_EMAIL_ALLOWED_FROM"
)
_SEED_FIELD = re.compile(r"%\w+%")  # the seed syntax %ab_email%: a record's field


@lru_cache(maxsize=16)
def _allowed(setting: str | None) -> frozenset[str]:
    return allowed_senders(setting)


def sender_refusal(settings: Settings, sender: str) -> str | None:
    """Why an email from `sender` ("Name <news@example.org>" or a bare address) may not go,
    or None when it may."""
    allowed = _allowed(settings.email_allowed_from)
    if not allowed:
        return None
    found = [address for _, address in getaddresses([sender]) if address]
    address = found[0].strip().lower() if len(found) == 1 else ""
    domain = address.rpartition("@")[2]
    if address and (address in allowed or (domain and f"@{domain}" in allowed)):
        return None
    return (
        f"the sender {sender!r} is not one this server allows (CRMFLOW_EMAIL_ALLOWED_FROM: "
        f"{', '.join(sorted(allowed))})"
    )


def flow_sender_problems(settings: Settings, flow: FlowDefinition) -> list[Problem]:
    """A problem at each send_email action whose written-out `from` the server does not allow
    (a `from` made from the record is checked when the email is sent)."""
    if not _allowed(settings.email_allowed_from):
        return []
    problems = []
    for step_index, step in enumerate(flow.steps):
        if not isinstance(step, ActionStep):
            continue
        for index, action in enumerate(step.actions):
            sender = action.from_ if isinstance(action, SendEmailAction) else None
            if sender is None or is_template(sender) or _SEED_FIELD.search(sender):
                continue
            refusal = sender_refusal(settings, sender)
            if refusal is not None:
                path = f"steps[{step_index}].actions[{index}].from"
                problems.append(Problem(path, refusal, HINT))
    return problems
