// The statistics page: draw each <canvas data-chart="ID"> with Chart.js from the JSON block
// #ID ({type, labels, datasets, horizontal}); the table under each chart has the same figures.
"use strict";

(function () {
  var COLOURS = ["#1d5f8a", "#2e7d32", "#b3261e", "#8a6d1d", "#6a3d9a"];

  function draw(canvas) {
    var block = document.getElementById(canvas.getAttribute("data-chart"));
    if (!block || typeof window.Chart === "undefined") {
      return;
    }
    var spec = JSON.parse(block.textContent);
    var datasets = spec.datasets.map(function (set, i) {
      var colour = set.colour || COLOURS[i % COLOURS.length];
      return {
        label: set.label,
        data: set.data,
        backgroundColor: colour,
        borderColor: colour,
        tension: 0.2,
      };
    });
    new window.Chart(canvas, {
      type: spec.type,
      data: { labels: spec.labels, datasets: datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        indexAxis: spec.horizontal ? "y" : "x",
        scales: { x: { beginAtZero: true, ticks: { precision: 0 } }, y: { beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
    canvas.setAttribute("data-drawn", "true");
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("canvas[data-chart]").forEach(draw);
  });
})();
