// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";
  // Stop double submits: mark the pressed button busy once its form is sent.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.sent === "1") { event.preventDefault(); return; }
    form.dataset.sent = "1";
    var button = event.submitter || form.querySelector("button[type=submit]");
    if (button && form.method.toLowerCase() === "post") {
      button.setAttribute("aria-busy", "true");
    }
  });
  // A form came back with errors: move focus to the summary so screen readers announce it.
  var summary = document.querySelector("[data-autofocus]");
  if (summary) { summary.focus(); }
  // Pages restored from the back/forward cache may hold a sent form: allow sending again.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-sent]").forEach(function (form) {
      delete form.dataset.sent;
      form.querySelectorAll("[aria-busy]").forEach(function (b) { b.removeAttribute("aria-busy"); });
    });
  });
})();
