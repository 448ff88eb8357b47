// The flow page: draw its mermaid diagram, again each time htmx brings fresh counts.
"use strict";

(function () {
  function draw() {
    if (typeof window.mermaid === "undefined") {
      return;
    }
    var nodes = document.querySelectorAll("pre.mermaid:not([data-processed])");
    if (nodes.length) {
      window.mermaid.run({ nodes: nodes });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (typeof window.mermaid !== "undefined") {
      var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
      window.mermaid.initialize({
        startOnLoad: false,
        securityLevel: "strict",
        theme: dark ? "dark" : "default",
      });
    }
    draw();
    document.body.addEventListener("htmx:afterSwap", draw);
  });
})();
