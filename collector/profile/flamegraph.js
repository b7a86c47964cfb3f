// periscope flame graph: zoom, search, details. Frame names are read with textContent
// and written back with textContent only (never parsed as markup).
"use strict";
var svg, frames = [], details, matchedText, resetBtn, searchBtn, width, pad = 10;
var charW = 12 * 0.59, searching = "", zoomed = null;

function init(evt) {
  svg = document.documentElement;
  width = parseFloat(svg.getAttribute("width"));
  details = document.getElementById("details");
  matchedText = document.getElementById("matched");
  resetBtn = document.getElementById("reset");
  searchBtn = document.getElementById("search");
  var gs = document.querySelectorAll("g.frame");
  for (var i = 0; i < gs.length; i++) {
    var g = gs[i], rect = g.querySelector("rect"), text = g.querySelector("text");
    var title = g.querySelector("title").textContent;
    var f = {
      g: g, rect: rect, text: text, title: title,
      name: title.substring(0, title.lastIndexOf(" (")),
      x: parseFloat(rect.getAttribute("x")), w: parseFloat(rect.getAttribute("width")),
      y: parseFloat(rect.getAttribute("y")), fill: rect.getAttribute("fill")
    };
    frames.push(f);
    g.addEventListener("click", (function (f) { return function () { zoom(f); }; })(f));
    g.addEventListener("mouseover", (function (f) {
      return function () { details.textContent = f.title; }; })(f));
    g.addEventListener("mouseout", function () { details.textContent = " "; });
  }
  resetBtn.addEventListener("click", unzoom);
  searchBtn.addEventListener("click", searchPrompt);
  window.addEventListener("keydown", function (e) {
    if ((e.ctrlKey && e.key === "f") || e.key === "F3") { e.preventDefault(); searchPrompt(); }
    else if (e.key === "Escape") { search(""); }
  });
  var params = new URLSearchParams(document.location.search);
  if (params.get("zoom")) {
    var best = null;
    frames.forEach(function (f) { if (f.name === params.get("zoom") && (!best || f.w > best.w)) best = f; });
    if (best) zoom(best);
  }
  if (params.get("s")) search(params.get("s"));
}

function fit(f, w) {
  var chars = Math.floor((w - 6) / charW);
  if (chars < 3) return "";
  return f.name.length <= chars ? f.name : f.name.substring(0, chars - 2) + "..";
}

function place(f, x, w, show, faded) {
  f.g.classList.toggle("hide", !show);
  if (!show) return;
  f.rect.setAttribute("x", x.toFixed(2));
  f.rect.setAttribute("width", w.toFixed(2));
  f.text.setAttribute("x", (x + 3).toFixed(2));
  f.text.textContent = fit(f, w);
  f.g.style.opacity = faded ? "0.5" : "";
}

function zoom(target) {
  var eps = 0.0001, full = width - 2 * pad, ratio = full / target.w;
  zoomed = target;
  resetBtn.classList.remove("hide");
  frames.forEach(function (f) {
    if (f.y > target.y) {          // below: an ancestor if it spans the target
      var anc = f.x <= target.x + eps && f.x + f.w >= target.x + target.w - eps;
      place(f, pad, full, anc, true);
    } else {                      // the target, or above it: inside its span or hidden
      var inside = f.x >= target.x - eps && f.x + f.w <= target.x + target.w + eps;
      place(f, pad + (f.x - target.x) * ratio, f.w * ratio, inside, false);
    }
  });
  if (searching) search(searching);
}

function unzoom() {
  zoomed = null;
  resetBtn.classList.add("hide");
  frames.forEach(function (f) { place(f, f.x, f.w, true, false); });
  if (searching) search(searching);
}

function searchPrompt() {
  if (searching) { search(""); return; }
  var term = window.prompt("Search for (substring of a frame name):", searching);
  if (term !== null) search(term);
}

function search(term) {
  searching = term;
  var hits = [];
  frames.forEach(function (f) {
    var hit = term !== "" && f.name.indexOf(term) >= 0;
    f.rect.setAttribute("fill", hit ? "rgb(230,0,230)" : f.fill);
    if (hit) hits.push(f);
  });
  if (!term) {
    matchedText.textContent = " ";
    searchBtn.textContent = "Search";
    return;
  }
  // The matched share counts each sample once: a match nested in another adds nothing.
  hits.sort(function (a, b) { return a.x - b.x || b.w - a.w; });
  var total = 0, end = -1;
  hits.forEach(function (f) {
    if (f.x >= end - 0.0001) { total += f.w; end = f.x + f.w; }
  });
  var pct = 100 * total / (width - 2 * pad);
  matchedText.textContent = "Matched: " + pct.toFixed(1) + "%";
  searchBtn.textContent = "Reset Search";
  svg.setAttribute("data-matched", pct.toFixed(1));
}
