"""The web application: server-rendered pages over the services, for people who never open a
terminal (issue 12). `create_site(ctx)` is the API app (`crmflow.api.create_app`) plus these
pages; `crmflow serve` and `crmflow.testing` serve it.

Conventions for every page (read before adding one)
---------------------------------------------------

Layer. `crmflow.web` sits above `crmflow.api` (testing -> cli -> web -> api | worker -> ...).
Pages call services only (`crmflow.services.*`), never the store, never SQL, never the API over
HTTP. Exceptions are defined in `crmflow/errors.py` only.

A page module. One module per area in `crmflow/web/pages/` (flows.py, records.py, tasks.py, ...)
with a module-level `router = web_router()` (from `crmflow.web.auth`). Every module of that package
that has a `router` is included by `create_site`, in name order: no list to edit. Paths are at
the root, as the nav in `templates/base.html` lists them: `/flows`, `/records`, `/queries`,
`/tasks`, `/stats`, `/messages`, `/simulate`, `/inbox`, `/admin` (sub-pages below them,
`/flows/{key}`, ...). htmx fragments live under the page they belong to (`/flows/{key}/counts`).

Signed-in user. A page depends on `CurrentUser` (`crmflow.web.auth`): the services' `Actor` of the
session; without a session the browser is sent to `/sign-in?next=<this page>` (htmx requests get
an `HX-Redirect`). `CurrentSession` gives the whole `WebSession` when a page needs it.

Rendering. `render(request, "name.html", **ctx)` (`crmflow.web.render`) answers a template of
`crmflow/web/templates/`, autoescaped, with undefined names an error. It adds `user` (the Actor or
None), `csrf_token`, `unread` (the user's unread notifications), `flashes` (messages left by the
previous request), `nav` and `current_path`. Page templates `{% extends "base.html" %}` and fill
`{% block title %}` and `{% block content %}`; fragments for htmx extend nothing. After a POST,
answer `see_other(url)` (303) and leave a message for the next page with `flash(response, text,
kind="ok" | "error")`.

Forms and CSRF. Every POST, PUT, PATCH and DELETE of a web route is checked (`web_router()` adds the
check): a form carries `<input type="hidden" name="csrf_token" value="{{ csrf_token }}">`; htmx
requests carry the `X-CSRF-Token` header that `base.html` sets once on `<body hx-headers=...>`.
A request without it is refused with a 403 page that says to reload the page.

Errors. A service's error on a web route becomes an HTML page (`crmflow/web/errors.py`):
NotFoundError 404, PermissionDeniedError 403 with its message (it says who may), InvalidInputError
400/422 with its problems in plain words, TooManyRequestsError 429 with when to retry, anything
else 500 with no trace. Raise the service errors; do not build error pages by hand. API routes
(`/api/...`, `/hooks/...`, `/a/...`, `/u/...`, `/docs`, `/openapi.json`) keep their JSON answers.
To show a refusal inside a page instead (a form's field errors), catch InvalidInputError and
render the form again with `problems=exc.problems` and status 422.

Browser code. The Content-Security-Policy allows scripts, styles, images, fonts and connections
from the server only ('self'): no inline `<script>`, no `style=` attributes, no `on...=`
handlers, no `hx-on` (it needs eval). Put behaviour in `static/app.js` (or a file of your own
under `static/`, loaded with `<script src defer>` from your page's `{% block scripts %}`), and
styles in `static/app.css`. Vendored libraries are under `/static/web/vendor/<name>/` (htmx, pico,
mermaid, chart.js, codemirror, axe-core). Nothing is loaded from another host; the browser tests
fail a page that asks for one.

Tests. Browser tests in `tests/browser/` (playwright, Debian's chromium; see its conftest: the
`site`, `page`, `signed_in`, `assert_accessible` and `screenshot` helpers); fast rule tests with
FastAPI's TestClient in `tests/integration/test_web_*.py`.
"""

from __future__ import annotations

from crmflow.web.site import create_site

__all__ = ["create_site"]
