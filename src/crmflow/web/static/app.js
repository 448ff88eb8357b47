// crmflow's page behaviour. Small on purpose: pages are rendered by the server and htmx does
// the rest. No inline handlers exist (the Content-Security-Policy forbids them), so behaviour
// is attached here by data attributes.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  // <button data-confirm="Start 1,234 records?"> asks before its form is sent.
  document.body.addEventListener("click", function (event) {
    var target = event.target instanceof Element ? event.target.closest("[data-confirm]") : null;
    if (target && !window.confirm(target.getAttribute("data-confirm"))) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);
});

// A session that ends while a page is open (idle too long, or signed out in another tab) must
// not take the page away, nor what was typed in it. The page's htmx requests are then answered
// 401 with the banner #session-ended (web/errors.py), which is let swap in place of the page's
// hidden one; a page where nothing was typed goes to the sign-in page instead, as before. Once
// something was typed, a form that leaves the page (a save) first asks GET /session: when the
// session has ended the banner shows and the form stays as typed. Signed in again in another tab (the same cookie, a new
// session), the page takes the new session's CSRF token, and the form is sent as it was.
(function () {
  var typed = false;

  function banner() {
    return document.getElementById("session-ended");
  }

  function shown() {
    var element = banner();
    return Boolean(element) && !element.hidden;
  }

  function useToken(token) {
    document.querySelectorAll('input[name="csrf_token"]').forEach(function (input) {
      input.value = token;
    });
    var headers = {};
    try {
      headers = JSON.parse(document.body.getAttribute("hx-headers") || "{}");
    } catch (ignored) {
      headers = {};
    }
    headers["X-CSRF-Token"] = token;
    document.body.setAttribute("hx-headers", JSON.stringify(headers));
  }

  // Whether the session is live (true: the page now carries its token). `say`: when it has
  // ended, show the banner the server sent (again only if it is not showing already).
  function checkSession(say) {
    var asked = { headers: { "HX-Request": "true" }, credentials: "same-origin", cache: "no-store" };
    return window.fetch("/session", asked).then(function (answer) {
      if (answer.status === 200) {
        return answer.json().then(function (session) {
          useToken(session.csrf_token);
          var element = banner();
          if (element) {
            element.hidden = true;
          }
          return true;
        });
      }
      if (answer.status === 401) {
        return answer.text().then(function (html) {
          var element = banner();
          if (say && element && !shown()) {
            element.outerHTML = html; // a new element: role=alert says it
          }
          return false;
        });
      }
      return true; // another answer: let the form go, its answer will say what is wrong
    }, function () {
      return true; // the server did not answer: the form's own request will say so
    });
  }

  document.addEventListener("input", function (event) {
    if (event.target instanceof Element && event.target.closest("form")) {
      typed = true;
    }
  }, true);

  document.addEventListener("DOMContentLoaded", function () {
    document.body.addEventListener("htmx:beforeSwap", function (event) {
      var xhr = event.detail.xhr;
      var signIn = xhr.status === 401 ? xhr.getResponseHeader("X-Crmflow-Sign-In") : null;
      if (!signIn) {
        return;
      }
      if (!typed) {
        event.detail.shouldSwap = false;
        window.location.href = signIn;
        return;
      }
      event.detail.shouldSwap = !shown(); // said once, not at each live check
      event.detail.isError = false;
    });
  });

  // A form that leaves the page (not one htmx sends) is sent once the session is known live.
  // Listening on the bubble phase: form_widgets.js may hold the form first (capture phase).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || event.defaultPrevented || !banner() || !typed) {
      return; // nothing typed: nothing to lose, the answer says what happened
    }
    if (form.method.toLowerCase() !== "post" || form.hasAttribute("data-no-session-check")) {
      return;
    }
    if (form.hasAttribute("hx-post") && !form.hasAttribute("data-live-check")) {
      return; // htmx sends it: its answer shows the banner
    }
    if (form.getAttribute("data-session-checked") === "yes") {
      form.removeAttribute("data-session-checked");
      return;
    }
    event.preventDefault();
    var submitter = event.submitter || null;
    checkSession(true).then(function (live) {
      if (live) {
        form.setAttribute("data-session-checked", "yes");
        form.requestSubmit(submitter);
      }
    });
  });

  // Back from the tab where one signed in again: take the new session's token at once.
  window.addEventListener("focus", function () {
    if (shown()) {
      checkSession(false);
    }
  });
})();
