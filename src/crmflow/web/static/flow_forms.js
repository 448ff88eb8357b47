// The form editor's step list (/flows/{key}/form): drag and drop, Alt+Up / Alt+Down on a
// focused step, focus kept on the step moved and each change said to screen readers. The moves
// themselves are the list's forms (POSTs that htmx sends and answers with the list again).
"use strict";

(function () {
  var last = null; // {key, control} of the step acted on, to focus again after the swap
  var dragged = null;
  var busy = false; // a change of the list is on its way: keys wait for its answer

  function editor() {
    return document.getElementById("ff-editor");
  }

  function stepOf(element) {
    return element && element.closest ? element.closest("li.ff-step") : null;
  }

  function submit(form) {
    if (typeof form.requestSubmit === "function") {
      form.requestSubmit();
    } else {
      form.dispatchEvent(new Event("submit", { cancelable: true, bubbles: true }));
    }
  }

  function press(step, control) {
    if (busy) {
      return;
    }
    var button = step.querySelector('button[data-control="' + control + '"]');
    if (button && !button.disabled) {
      last = { key: step.getAttribute("data-key"), control: "step" };
      submit(button.form);
      return;
    }
    var status = document.getElementById("ff-status");
    if (status && button) {
      var name = step.getAttribute("data-name") || step.getAttribute("data-key");
      status.textContent = "Step " + name + " is already " + (control === "up" ? "first." : "last.");
    }
  }

  function moveTo(key, position) {
    var form = document.getElementById("ff-drop-form");
    if (!form || busy) {
      return;
    }
    form.querySelector('input[name="step"]').value = key;
    form.querySelector('input[name="to"]').value = String(position + 1);
    last = { key: key, control: "step" };
    submit(form);
  }

  function afterSwap() {
    var box = editor();
    if (!box || box.getAttribute("data-seen") === "yes") {
      return;
    }
    box.setAttribute("data-seen", "yes");
    var status = document.getElementById("ff-status");
    var said = box.getAttribute("data-announce");
    if (status && said) {
      status.textContent = said;
    }
    if (!last) {
      return;
    }
    var key = box.getAttribute("data-focus") || last.key;
    var step = null;
    box.querySelectorAll("li.ff-step").forEach(function (li) {
      if (li.getAttribute("data-key") === key) {
        step = li;
      }
    });
    if (step) {
      var target = step;
      if (last.control !== "step") {
        var button = step.querySelector('button[data-control="' + last.control + '"]');
        if (button && !button.disabled) {
          target = button;
        }
      }
      target.focus();
    }
    last = null;
  }

  document.addEventListener("keydown", function (event) {
    if (!event.altKey || (event.key !== "ArrowUp" && event.key !== "ArrowDown")) {
      return;
    }
    var step = stepOf(document.activeElement);
    if (!step || !editor() || !editor().contains(step)) {
      return;
    }
    event.preventDefault();
    press(step, event.key === "ArrowUp" ? "up" : "down");
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("#ff-editor button[data-control]") : null;
    var step = stepOf(button);
    if (step) {
      last = { key: step.getAttribute("data-key"), control: button.getAttribute("data-control") };
    }
  });

  document.addEventListener("dragstart", function (event) {
    var step = stepOf(event.target);
    if (!step || step.getAttribute("draggable") !== "true") {
      return;
    }
    dragged = step;
    step.classList.add("ff-dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", step.getAttribute("data-key"));
  });

  document.addEventListener("dragover", function (event) {
    var step = stepOf(event.target);
    if (dragged && step && step !== dragged) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "move";
      document.querySelectorAll("li.ff-drop-target").forEach(function (li) {
        li.classList.remove("ff-drop-target");
      });
      step.classList.add("ff-drop-target");
    }
  });

  document.addEventListener("drop", function (event) {
    var step = stepOf(event.target);
    if (!dragged || !step || step === dragged) {
      return;
    }
    event.preventDefault();
    moveTo(dragged.getAttribute("data-key"), Number(step.getAttribute("data-position")));
  });

  document.addEventListener("dragend", function () {
    document.querySelectorAll("li.ff-drop-target, li.ff-dragging").forEach(function (li) {
      li.classList.remove("ff-drop-target", "ff-dragging");
    });
    dragged = null;
  });

  document.addEventListener("DOMContentLoaded", function () {
    // A refused operation answers 409 or 422 with the list and its problems: show it.
    document.body.addEventListener("htmx:beforeSwap", function (event) {
      var status = event.detail.xhr.status;
      var target = event.detail.target;
      if ((status === 409 || status === 422) && target && target.id && target.id.indexOf("ff-") === 0) {
        event.detail.shouldSwap = true;
        event.detail.isError = false;
      }
    });
    var box = editor();
    if (box) {
      box.setAttribute("data-seen", "yes"); // the page's own list: its flash says it
    }
    document.body.addEventListener("htmx:beforeRequest", function (event) {
      if (editor() && editor().contains(event.detail.elt)) {
        busy = true;
      }
    });
    document.body.addEventListener("htmx:afterRequest", function (event) {
      if (!event.detail.successful) {
        busy = false; // nothing swapped in: keys work again
      }
    });
    document.body.addEventListener("htmx:afterSettle", function () {
      busy = false;
      afterSwap(); // the new list's forms work from here
    });
  });
})();
