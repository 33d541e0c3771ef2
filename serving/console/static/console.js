/* Keyboard shortcuts of the review pages (the pages work without them).
 *
 * Queue: j / k select the next / previous case, o or Enter opens it.
 * Case: j / k open the next / previous case of the queue, t takes the case,
 * a / r / p / c / h choose approve / reject / partial / clawback / hold (p then focuses
 * the amount; Enter records the decision), n focuses the note. ? opens the list of shortcuts.
 */
(function () {
  "use strict";

  function typing(target) {
    return target.closest("input, textarea, select, [contenteditable]") !== null;
  }

  function rows() {
    return Array.from(document.querySelectorAll("tr[data-case-url]"));
  }

  function select(step) {
    const all = rows();
    if (all.length === 0) return false;
    const current = all.findIndex((row) => row.classList.contains("selected"));
    const next = Math.min(Math.max(current + step, 0), all.length - 1);
    all.forEach((row) => row.classList.remove("selected"));
    all[next].classList.add("selected");
    const link = all[next].querySelector("a");
    if (link) link.focus();
    return true;
  }

  function openSelected() {
    const row = document.querySelector("tr[data-case-url].selected");
    if (row === null) return false;
    window.location.assign(row.dataset.caseUrl);
    return true;
  }

  function follow(direction) {
    const link = document.querySelector('a[data-nav="' + direction + '"]');
    if (link === null) return false;
    window.location.assign(link.href);
    return true;
  }

  function focusKey(key) {
    const target = document.querySelector('[data-key="' + key + '"]');
    if (target === null || target.disabled) return false;
    if (target.type === "radio") target.checked = true;
    const then = target.dataset.then ? document.getElementById(target.dataset.then) : null;
    (then || target).focus();
    return true;
  }

  function toggleHelp() {
    const help = document.getElementById("shortcuts");
    if (help === null) return false;
    help.open = !help.open;
    if (help.open) help.querySelector("summary").focus();
    return true;
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    let done = false;
    switch (event.key) {
      case "j": done = rows().length ? select(1) : follow("next"); break;
      case "k": done = rows().length ? select(-1) : follow("prev"); break;
      case "o": done = openSelected(); break;
      case "Enter": done = event.target === document.body && openSelected(); break;
      case "?": done = toggleHelp(); break;
      case "a": case "r": case "p": case "c": case "h": case "t": case "n":
        done = focusKey(event.key); break;
      default: break;
    }
    if (done) event.preventDefault();
  });
})();
