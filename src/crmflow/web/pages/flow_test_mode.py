"""A flow's test mode switch on its page (`POST /flows/{key}/test-mode`): admins switch it on
or off; the flow's page shows it with who switched it and when (`flow_test_mode.html`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Form, Request
from fastapi.responses import Response

from crmflow.errors import InvalidInputError
from crmflow.services import flow_test_mode
from crmflow.web.auth import CurrentUser, context_of, web_router
from crmflow.web.render import flash, see_other

router = web_router()


@router.post("/flows/{key}/test-mode")
def switch_test_mode(
    request: Request,
    user: CurrentUser,
    key: str,
    enabled: Annotated[Literal["on", "off"], Form()],
) -> Response:
    """Switch the flow's test mode; back to the flow's page saying what changed, or why not."""
    response = see_other(f"/flows/{key}#test-mode")
    try:
        mode = flow_test_mode.set_flow_test_mode(context_of(request), user, key, enabled == "on")
    except InvalidInputError as exc:
        flash(response, "; ".join(str(p) for p in exc.problems) or exc.message, "error")
        return response
    if mode.enabled:
        flash(response, f"Test mode on: {key}'s messages go to {', '.join(mode.recipients)}.")
    else:
        flash(response, f"Test mode off: {key}'s messages go to their recipients.")
    return response
