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
