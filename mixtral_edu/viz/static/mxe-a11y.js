/* Accessible names that match what a reader sees (WCAG 2.5.3, axe: label-content-name-mismatch,
 * aria-input-field-name), for markup this site does not write itself:
 *  - ipywidgets sliders: the handle (role="slider") is named by the widget's visible label;
 *  - the theme's search button and myst-nb's "show code" toggles carry an aria-label that differs
 *    from their visible text: the visible text becomes the name.
 * Widgets are drawn after the page loads, so a MutationObserver names them as they appear. */
(function () {
  var counter = 0;
  function nameWidgets(root) {
    root.querySelectorAll(".widget-inline-hbox").forEach(function (box) {
      var label = box.querySelector(":scope > .widget-label");
      if (!label || !label.textContent.trim()) { return; }
      if (!label.id) { label.id = "mxe-widget-label-" + (++counter); }
      box.querySelectorAll("[role=slider], input, select, textarea, .widget-readout").forEach(function (control) {
        if (!control.hasAttribute("aria-labelledby") && !control.hasAttribute("aria-label")) {
          control.setAttribute("aria-labelledby", label.id);
        }
      });
    });
  }
  function visibleNames(root) {
    root.querySelectorAll(".search-button-field[aria-label], summary[aria-label]").forEach(function (el) {
      var text = el.textContent.replace(/\s+/g, " ").trim();
      if (text && el.getAttribute("aria-label").indexOf(text) === -1) { el.removeAttribute("aria-label"); }
    });
  }
  function run() {
    nameWidgets(document);
    visibleNames(document);
    new MutationObserver(function (records) {
      records.forEach(function (r) {
        r.addedNodes.forEach(function (n) { if (n.nodeType === 1) { nameWidgets(n.parentNode || n); } });
      });
    }).observe(document.body, {childList: true, subtree: true});
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", run); } else { run(); }
  window.mxeNameWidgets = nameWidgets;
})();
