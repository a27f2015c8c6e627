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
  // Times: the server writes UTC into <time datetime> (the fallback text); show them in the reader's time zone.
  document.querySelectorAll("time[datetime][data-local]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (isNaN(when.getTime())) { return; }
    var options = { year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit",
                    timeZoneName: "short" };
    try {
      var text = new Intl.DateTimeFormat(undefined, options).format(when);
      el.title = el.textContent.trim();
      el.textContent = text;
      el.dataset.localized = "1";
    } catch (e) { /* keep the UTC text */ }
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
