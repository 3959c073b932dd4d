// Enhancements only: the page works without this script.
(function () {
  "use strict";
  // Resend countdown from the server's resend_after.
  document.querySelectorAll("[data-resend-in]").forEach(function (b) {
    var left = parseInt(b.getAttribute("data-resend-in"), 10) || 0;
    var label = b.textContent, suffix = b.getAttribute("data-suffix") || "";
    function tick() {
      if (left <= 0) { b.disabled = false; b.textContent = label; return; }
      b.disabled = true; b.textContent = left + suffix; left--; setTimeout(tick, 1000);
    }
    tick();
  });
  // A form submits once: its button is disabled on submit (the server
  // refuses a repeat anyway), and enabled again when the page is shown
  // from the back-forward cache.
  document.querySelectorAll("form").forEach(function (f) {
    f.addEventListener("submit", function () {
      f.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
    });
  });
  window.addEventListener("pageshow", function (e) {
    if (!e.persisted) { return; }
    document.querySelectorAll("form:not(.resend) button[type=submit]").forEach(function (b) { b.disabled = false; });
  });
  // Card-type hint: the BIN router answers (same origin, POST body).
  var form = document.getElementById("card-form");
  if (!form) { return; }
  var pan = document.getElementById("card_number"), hint = document.getElementById("card-hint");
  var credit = document.getElementById("credit"), csrf = form.querySelector("input[name=csrf]").value;
  credit.classList.add("hidden");
  var last = "";
  function show(isCredit) {
    credit.classList.toggle("hidden", !isCredit);
    document.getElementById("expiry").required = isCredit;
    document.getElementById("cvv2").required = isCredit;
  }
  pan.addEventListener("input", function () {
    var digits = pan.value.replace(/\D/g, "");
    if (digits.length < 13) { hint.textContent = ""; show(false); last = ""; return; }
    if (digits === last) { return; }
    last = digits;
    var body = new URLSearchParams({ csrf: csrf, card_number: digits });
    fetch(form.getAttribute("data-hint"), { method: "POST", body: body, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : { known: false }; })
      .then(function (a) {
        if (digits !== last) { return; }
        hint.textContent = a.known ? a.label : "";
        show(a.known && a.card_type === "credit");
      })
      .catch(function () { show(false); });
  });
})();
