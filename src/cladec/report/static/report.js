/* cladec report: gallery filters, sorting and the α slider. Plain JS, no dependencies, works from file://. */
(function () {
  "use strict";
  var dataEl = document.getElementById("report-data");
  if (!dataEl) return;
  var data = JSON.parse(dataEl.textContent);
  var g = data.gallery;
  if (!g) return;

  var grid = document.getElementById("gallery-grid");
  var cards = Array.prototype.slice.call(grid.querySelectorAll(".card"));
  var current = g.layers.map(function (L) { return L.default; });
  var $ = function (id) { return document.getElementById(id); };

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]; });
  }
  function variant(li) { return g.layers[li].variants[current[li]]; }
  function fmt(v, d) { return v === null || v === undefined ? "–" : Number(v).toFixed(d); }
  function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%"; }

  function setPred(el, p, label) {
    if (!el) return;
    if (p === null || p === undefined) { el.textContent = ""; el.className = el.className.replace(/\b(ok|bad)\b/g, ""); return; }
    el.textContent = g.pred_classes[p];
    el.classList.toggle("ok", p === label);
    el.classList.toggle("bad", p !== label);
  }

  function setSlot(block, slot, src) {
    var fig = block.querySelector('[data-slot="' + slot + '"]');
    if (!fig) return;
    fig.hidden = !src;
    var img = fig.querySelector("img");
    if (src && img.getAttribute("src") !== src) img.setAttribute("src", src);
  }

  function statsText(li) {
    var v = variant(li), s = v.summary || {}, L = g.layers[li];
    var parts = [];
    var shared = v.refae_shared ? " (shared)" : "";
    if (L.series === "α") parts.push("<b>" + esc(L.name) + "</b>, α = <b>" + esc(v.alpha_text) + "</b>:");
    else parts.push("<b>" + esc(L.name) + "</b>, run <b>" + esc(v.run) + "</b> (α = " + esc(v.alpha_text) + "):");
    if (s.accuracy_original !== undefined) parts.push("classifier accuracy on originals " + pct(s.accuracy_original));
    if (s.accuracy_refae !== undefined) parts.push("on RefAE" + shared + " " + pct(s.accuracy_refae));
    if (s.accuracy_cladec !== undefined) parts.push("on ClaDec " + pct(s.accuracy_cladec));
    if (s.mse_refae !== undefined) parts.push("MSE RefAE" + shared + " " + fmt(s.mse_refae, 4));
    if (s.mse_cladec !== undefined) parts.push("MSE ClaDec " + fmt(s.mse_cladec, 4));
    return parts[0] + " " + parts.slice(1).join(" · ") + " <span>(these " + g.images.length + " images)</span>";
  }

  function updateLayer(li) {
    var v = variant(li);
    cards.forEach(function (card) {
      var j = +card.dataset.j, label = +card.dataset.label, it = v.items[j];
      var block = card.querySelector('.layer-block[data-li="' + li + '"]');
      if (!block) return;
      setSlot(block, "refae", it.refae);
      setSlot(block, "cladec", it.cladec);
      setSlot(block, "drefae", it.drefae);
      setSlot(block, "dcladec", it.dcladec);
      setPred(block.querySelector(".pred-r"), it.pred_r, label);
      setPred(block.querySelector(".pred-e"), it.pred_e, label);
      var mr = block.querySelector(".mse-r"), me = block.querySelector(".mse-e");
      if (mr) mr.textContent = it.mse_r === null ? "" : "MSE " + fmt(it.mse_r, 4);
      if (me) me.textContent = "MSE " + fmt(it.mse_e, 4);
      var an = block.querySelector(".alpha-now");
      if (an) an.textContent = v.label;
      if (li === 0) setPred(card.querySelector(".pred-x"), it.pred_x, label);
    });
    var out = document.querySelector('.alpha-value[data-li="' + li + '"]');
    if (out) out.textContent = v.label;
    var sl = document.querySelector('.alpha-slider[data-li="' + li + '"]');
    if (sl) sl.setAttribute("aria-valuetext", v.label);
    var st = document.querySelector('.variant-stats[data-li="' + li + '"]');
    if (st) st.innerHTML = statsText(li);
  }

  function matches(card) {
    var j = +card.dataset.j, label = +card.dataset.label;
    var c = $("filter-class").value;
    if (c !== "all" && +c !== label) return false;
    var f = $("filter-correct").value;
    if (f === "all") return true;
    var parts = f.split(":"), kind = parts[0], li = parts.length > 1 ? +parts[1] : 0;
    var it = variant(li).items[j];
    switch (kind) {
      case "x-ok": return it.pred_x === label;
      case "x-bad": return it.pred_x !== label;
      case "e-ok": return it.pred_e === label;
      case "e-bad": return it.pred_e !== label;
      case "e-changed": return it.pred_e !== it.pred_x;
    }
    return true;
  }

  function sortKey(card, how) {
    var j = +card.dataset.j;
    if (how === "index") return +card.dataset.index;
    var parts = how.split(":"), what = parts[0], li = +parts[1], dir = parts[2] === "asc" ? 1 : -1;
    var it = variant(li).items[j], v;
    if (what === "e") v = it.mse_e;
    else if (what === "r") v = it.mse_r === null ? -Infinity : it.mse_r;
    else v = it.mse_r === null ? 0 : it.mse_e - it.mse_r;
    return dir * v;
  }

  function apply() {
    var how = $("sort-by").value;
    var sorted = cards.slice().sort(function (a, b) {
      var d = sortKey(a, how) - sortKey(b, how);
      return d !== 0 ? d : (+a.dataset.j) - (+b.dataset.j);
    });
    var shown = 0;
    sorted.forEach(function (card) {
      var ok = matches(card);
      card.hidden = !ok;
      if (ok) shown++;
      grid.appendChild(card);
    });
    $("gallery-count").textContent = shown + " of " + cards.length + " images";
    $("gallery-empty").hidden = shown > 0;
  }

  ["filter-class", "filter-correct", "sort-by"].forEach(function (id) { $(id).addEventListener("change", apply); });
  Array.prototype.forEach.call(document.querySelectorAll(".alpha-slider"), function (sl) {
    sl.addEventListener("input", function () {
      var li = +sl.dataset.li;
      current[li] = +sl.value;
      updateLayer(li);
      apply();
    });
  });
  $("show-diff").addEventListener("change", function () { grid.classList.toggle("nodiff", !this.checked); });
  $("zoom").addEventListener("input", function () { grid.style.setProperty("--zoom", this.value); });

  g.layers.forEach(function (L, li) { updateLayer(li); });
  apply();
  document.documentElement.dataset.reportReady = "1";
})();
