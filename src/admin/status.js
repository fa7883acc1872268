// hookrelay status page: optional niceties only. Every action is a plain
// form that works without this script.
(function () {
  "use strict";

  // Ask before actions that touch many deliveries.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        ev.preventDefault();
      }
    });
  });

  // Show times in the reader's local time zone; the UTC text stays as title.
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d.getTime())) {
      t.title = t.textContent;
      t.textContent = d.toLocaleString();
    }
  });

  // Auto-refresh every 15 s while the tab is visible, when switched on.
  var box = document.getElementById("autorefresh");
  if (!box) {
    return;
  }
  var key = "hookrelay.autorefresh";
  try {
    box.checked = window.localStorage.getItem(key) === "on";
  } catch (e) {
    box.checked = false;
  }
  box.addEventListener("change", function () {
    try {
      window.localStorage.setItem(key, box.checked ? "on" : "off");
    } catch (e) {
      // Storage may be disabled; the switch still works for this page.
    }
  });
  window.setInterval(function () {
    if (box.checked && document.visibilityState === "visible") {
      // Drop the notice of the last action so it is not shown forever.
      window.location.replace(window.location.pathname);
    }
  }, 15000);
})();
