// Filters for the results page. The filter state lives in the URL's fragment (#q=red&min=0.5), so a filtered
// view can be bookmarked or shared along with the folder.
(function () {
  "use strict";
  var form = document.getElementById("filters");
  var shown = document.getElementById("shown");
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.prompt"));
  var fields = ["q", "reward", "min", "max", "pruned"];

  function field(name) { return form.elements.namedItem(name); }

  function number(name) {
    var el = field(name);
    if (!el || el.value.trim() === "") return null;
    var value = Number(el.value);
    return isFinite(value) ? value : null;
  }

  function scoreOf(el, reward) {
    var value = JSON.parse(el.getAttribute("data-scores") || "{}")[reward];
    return typeof value === "number" ? value : null;
  }

  function inRange(value, lo, hi) {
    return (lo === null || value >= lo) && (hi === null || value <= hi);
  }

  function matchesText(section, text) {
    if (!text) return true;
    if (text.charAt(0) === "#") return section.getAttribute("data-index") === text.slice(1);
    return section.getAttribute("data-text").indexOf(text) !== -1;
  }

  function apply() {
    var text = field("q").value.trim().toLowerCase();
    var reward = field("reward") ? field("reward").value : null;
    var lo = number("min"), hi = number("max");
    var showPruned = !field("pruned") || field("pruned").checked;
    var count = 0;
    sections.forEach(function (section) {
      var pick = reward ? scoreOf(section, reward) : null;
      var visible = matchesText(section, text) &&
        (reward === null || (lo === null && hi === null) || (pick !== null && inRange(pick, lo, hi)));
      section.hidden = !visible;
      if (visible) count += 1;
      Array.prototype.forEach.call(section.querySelectorAll("figure.cand"), function (card) {
        var score = reward ? scoreOf(card, reward) : null;
        card.hidden = !showPruned && card.classList.contains("pruned");
        card.classList.toggle("out", score !== null && !inRange(score, lo, hi));
      });
    });
    shown.textContent = count + " of " + sections.length + " prompts";
  }

  function readFragment() {
    var params = new URLSearchParams(location.hash.slice(1));
    fields.forEach(function (name) {
      var el = field(name);
      if (!el || !params.has(name)) return;
      if (el.type === "checkbox") el.checked = params.get(name) !== "0";
      else el.value = params.get(name);
    });
  }

  function writeFragment() {
    var params = new URLSearchParams();
    fields.forEach(function (name) {
      var el = field(name);
      if (!el) return;
      if (el.type === "checkbox") { if (!el.checked) params.set(name, "0"); }
      else if (el.value !== "" && !(name === "reward" && el.selectedIndex === 0)) params.set(name, el.value);
    });
    history.replaceState(null, "", "#" + params.toString());
  }

  // Marks a candidate whose image file is missing, so a moved or partial folder shows what is absent.
  document.addEventListener("error", function (event) {
    var target = event.target;
    if (target.tagName === "IMG" && target.closest("figure")) target.closest("figure").classList.add("broken");
  }, true);

  form.addEventListener("input", function () { apply(); writeFragment(); });
  form.addEventListener("submit", function (event) { event.preventDefault(); });
  window.addEventListener("hashchange", function () { readFragment(); apply(); });
  readFragment();
  apply();
  document.body.setAttribute("data-ready", "1");
})();
