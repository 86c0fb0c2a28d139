// wxpay admin console: a little progressive enhancement, nothing the pages need to work.
(function () {
  "use strict";
  // Ask before state-changing forms that say so (redeliver).
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      ev.preventDefault();
      return;
    }
    // One click, one request.
    var buttons = form.querySelectorAll("button[type=submit]");
    for (var i = 0; i < buttons.length; i++) {
      (function (b) { setTimeout(function () { b.disabled = true; }, 0); })(buttons[i]);
    }
  });
  // Filter selects apply at once.
  var selects = document.querySelectorAll("form.filters select");
  for (var i = 0; i < selects.length; i++) {
    selects[i].addEventListener("change", function (ev) { ev.target.form.submit(); });
  }
})();
