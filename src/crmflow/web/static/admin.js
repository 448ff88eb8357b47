// The admin pages: copy a token shown once to the clipboard.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.querySelector(button.getAttribute("data-copy"));
      var said = document.getElementById("copy-said");
      if (!field) {
        return;
      }
      field.select();
      var done = function () { if (said) { said.textContent = "Copied to the clipboard."; } };
      var failed = function () {
        if (said) { said.textContent = "Could not copy: select the token and copy it by hand."; }
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, failed);
      } else {
        try {
          document.execCommand("copy") ? done() : failed();
        } catch (error) {
          failed();
        }
      }
    });
  });
});
