// Reviewer keyboard shortcuts (queue: j/k/x/Enter; application: a/r/i/n) and the note form's reset.
(function () {
  const reviewPage = document.currentScript.dataset.reviewPage;
  const typing = (event) => event.target.matches("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey;

  let current = -1;
  const rows = () => Array.from(document.querySelectorAll(".queue-row"));
  function focusRow(index) {
    const all = rows(); if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((row, i) => row.classList.toggle("is-current", i === current));
    all[current].focus();
  }
  function queueKeys(event) {
    const all = rows();
    if (event.key === "j") { focusRow(current + 1); event.preventDefault(); }
    else if (event.key === "k") { focusRow(current - 1); event.preventDefault(); }
    else if (event.key === "x" && all[current]) { const box = all[current].querySelector("input[type=checkbox]"); box.checked = !box.checked; }
    else if (event.key === "Enter" && all[current] && document.activeElement === all[current]) { window.location = all[current].dataset.url; }
  }

  function detailKeys(event) {
    const choose = (action) => { const radio = document.getElementById("action-" + action); if (radio) { radio.checked = true; radio.dispatchEvent(new Event("change", { bubbles: true })); document.getElementById("reason").focus(); event.preventDefault(); } };
    if (event.key === "a") choose("approve");
    else if (event.key === "r") choose("reject");
    else if (event.key === "i") choose("request_info");
    else if (event.key === "n") { const note = document.getElementById("note-text"); if (note) { note.focus(); event.preventDefault(); } }
  }

  document.addEventListener("keydown", function (event) {
    if (typing(event)) return;
    const page = reviewPage;
    if (page === "queue") queueKeys(event);
    else if (page === "detail") detailKeys(event);
  });

  // A note added through htmx empties its form.
  document.addEventListener("htmx:afterRequest", function (event) {
    const form = event.target.closest && event.target.closest("form[data-reset-after-request]");
    if (form && event.detail.successful) form.reset();
  });
})();
