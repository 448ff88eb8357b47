// The flow forms' pickers (issue 13; templates/flow_forms_fields.html): insert a record's field
// at the cursor of a template text, add a picked name as a new line of a list, and keep a form
// from being sent while the conditions builder is still writing its CEL. Loaded once by each
// page of the form editor (its {% block scripts %}); its listeners are on the document, so
// fields swapped in by htmx work too. The guard below keeps a second load harmless.
"use strict";

(function () {
  if (window.crmflowFormWidgets) {
    return;
  }
  window.crmflowFormWidgets = true;

  function insertAt(input, text) {
    var start = typeof input.selectionStart === "number" ? input.selectionStart : input.value.length;
    var end = typeof input.selectionEnd === "number" ? input.selectionEnd : start;
    input.value = input.value.slice(0, start) + text + input.value.slice(end);
    input.focus();
    input.setSelectionRange(start + text.length, start + text.length);
    input.dispatchEvent(new Event("input", { bubbles: true }));
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function addLine(source) {
    var target = document.getElementById(source.getAttribute("data-lines-target"));
    var value = source.value.trim();
    if (!target || !value) {
      return;
    }
    var lines = target.value.split("\n").map(function (l) { return l.trim(); }).filter(Boolean);
    if (lines.indexOf(value) === -1) {
      lines.push(value);
    }
    target.value = lines.join("\n");
    target.dispatchEvent(new Event("change", { bubbles: true }));
    source.value = "";
    source.focus();
  }

  document.addEventListener("click", function (event) {
    var el = event.target instanceof Element ? event.target : null;
    var insert = el ? el.closest("[data-insert]") : null;
    if (insert) {
      var input = document.getElementById(insert.getAttribute("data-insert-target"));
      if (input) {
        insertAt(input, insert.getAttribute("data-insert"));
      }
      return;
    }
    var add = el ? el.closest("[data-add-line]") : null;
    if (add) {
      var source = document.getElementById(add.getAttribute("data-add-line"));
      if (source) {
        addLine(source);
      }
    }
  });

  // Enter in an "Add one" input adds the line instead of sending the form.
  document.addEventListener("keydown", function (event) {
    var el = event.target instanceof Element ? event.target : null;
    if (event.key === "Enter" && el && el.hasAttribute("data-lines-target")) {
      event.preventDefault();
      addLine(el);
    }
  });

  // A form checked as one types (data-live-check, the live_check macro): its checks are not the
  // person's use of the session (as the pages' polls), and after each answer every field whose
  // problem slot (id "<field>-problem") says something is marked invalid and described by it.
  document.addEventListener("htmx:configRequest", function (event) {
    var elt = event.detail && event.detail.elt;
    if (elt instanceof Element && elt.hasAttribute("data-live-check")) {
      event.detail.headers["X-Crmflow-Poll"] = "1";
    }
  });

  function markFields(form) {
    form.querySelectorAll(".ff-problem, .ff-problem-slot").forEach(function (slot) {
      var field = document.getElementById(slot.id.replace(/-problem$/, ""));
      if (!field || field === slot) {
        return;
      }
      var wrong = slot.classList.contains("ff-problem") && slot.textContent.trim() !== "";
      var ids = (field.getAttribute("aria-describedby") || "").split(/\s+/).filter(function (id) {
        return id && id !== slot.id;
      });
      if (wrong) {
        ids.push(slot.id);
        field.setAttribute("aria-invalid", "true");
      } else {
        field.removeAttribute("aria-invalid");
      }
      if (ids.length) {
        field.setAttribute("aria-describedby", ids.join(" "));
      } else {
        field.removeAttribute("aria-describedby");
      }
    });
  }

  document.addEventListener("htmx:afterSettle", function (event) {
    var elt = event.detail && event.detail.elt;
    if (elt instanceof Element && elt.hasAttribute("data-live-check")) {
      markFields(elt);
    }
  });

  // A form sent while the builder's CEL is on its way would save the CEL before the change:
  // wait for htmx to settle, then send it.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.querySelector(".cb .htmx-request, .cb.htmx-request")) {
      return;
    }
    event.preventDefault();
    var submitter = event.submitter || null;
    document.body.addEventListener("htmx:afterSettle", function () {
      form.requestSubmit(submitter);
    }, { once: true });
  }, true);
})();
