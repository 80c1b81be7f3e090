/* Optional behaviour only: the page is complete without it. Filter by outcome, expand/collapse,
   open the sections a link points into, and expand everything for printing. */
(function () {
  "use strict";
  var root = document.documentElement;
  var all = function (selector) { return Array.prototype.slice.call(document.querySelectorAll(selector)); };

  function reveal(el) {
    for (; el; el = el.parentElement) {
      if (el.tagName === "DETAILS") { el.open = true; }
    }
  }

  function revealHash() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id && document.getElementById(id);
    if (!target) { return; }
    if (target.classList.contains("alias") && target.nextElementSibling) { target = target.nextElementSibling; }
    reveal(target);
    target.scrollIntoView();
  }

  var boxes = all("input[data-filter]");
  // A filtered view can be shared as a link: report.html?only=failed,warning
  var only = new URLSearchParams(location.search).get("only");
  if (only) {
    var wanted = only.split(",");
    boxes.forEach(function (box) { box.checked = wanted.indexOf(box.value) >= 0; });
  }
  function applyFilter() {
    var shown = {};
    boxes.forEach(function (box) { shown[box.value] = box.checked; });
    all(".filterable[data-outcome]").forEach(function (el) {
      el.hidden = shown[el.getAttribute("data-outcome")] === false;
    });
  }
  boxes.forEach(function (box) { box.addEventListener("change", applyFilter); });

  all("button[data-expand]").forEach(function (button) {
    button.addEventListener("click", function () {
      var open = button.getAttribute("data-expand") === "open";
      all("main details").forEach(function (d) { d.open = open; });
    });
  });

  var closedForPrint = [];
  window.addEventListener("beforeprint", function () {
    closedForPrint = all("details:not([open])");
    closedForPrint.forEach(function (d) { d.open = true; });
  });
  window.addEventListener("afterprint", function () {
    closedForPrint.forEach(function (d) { d.open = false; });
    closedForPrint = [];
  });

  window.addEventListener("hashchange", revealHash);
  applyFilter();
  revealHash();
  root.setAttribute("data-js", "on");
})();
