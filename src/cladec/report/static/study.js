/* cladec user study: consent, items, answers kept in localStorage, CSV/JSON download. No dependencies. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("study-data").textContent);
  var items = data.items, N = items.length, COLS = data.columns;
  var ORDER_MODE = data.order || "fixed";  /* pages built before per-participant orders had one order */
  var KEY = "cladec-study:" + data.study_id;
  var $ = function (id) { return document.getElementById(id); };
  var form = $("item-form");
  var byId = {};
  items.forEach(function (it) { byId[it.item_id] = it; });
  var fixedOrder = items.map(function (it) { return it.item_id; });

  /* Each participant's item order (cladec.report.participant_order does the same in Python): a Fisher–Yates
     shuffle driven by mulberry32, seeded with the 32-bit FNV-1a hash of the UTF-8 text "<study_id>:<participant_id>". */
  function fnv1a(str) {
    var bytes = new TextEncoder().encode(str), h = 0x811c9dc5;
    for (var i = 0; i < bytes.length; i++) { h ^= bytes[i]; h = Math.imul(h, 0x01000193); }
    return h >>> 0;
  }
  function mulberry32(a) {
    return function () {
      a |= 0; a = a + 0x6D2B79F5 | 0;
      var t = Math.imul(a ^ a >>> 15, 1 | a);
      t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t;
      return ((t ^ t >>> 14) >>> 0) / 4294967296;
    };
  }
  function orderFor(participantId) {
    var out = fixedOrder.slice();
    if (ORDER_MODE !== "per-participant") return out;
    var rnd = mulberry32(fnv1a(data.study_id + ":" + participantId.trim()));
    for (var i = out.length - 1; i > 0; i--) {
      var j = Math.floor(rnd() * (i + 1)), t = out[i];
      out[i] = out[j]; out[j] = t;
    }
    return out;
  }
  function isPermutation(o) {
    return Array.isArray(o) && o.length === N && o.slice().sort().join("\n") === fixedOrder.slice().sort().join("\n");
  }

  function nowIso() { return new Date().toISOString(); }
  function randomId() {
    var a = new Uint8Array(4);
    (window.crypto || {}).getRandomValues ? window.crypto.getRandomValues(a) : a.forEach(function (_, i) { a[i] = Math.random() * 256; });
    return "P-" + Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("").toUpperCase();
  }

  function load() {
    try {
      var s = JSON.parse(localStorage.getItem(KEY) || "null");
      if (s && typeof s === "object" && s.answers) return s;
    } catch (e) { /* a broken entry starts afresh */ }
    return { participant_id: randomId(), consented_at: null, screen: "welcome", current: 0, order: null, answers: {} };
  }
  var state = load();
  /* the order is fixed when the participant starts and kept in the saved state; a state saved by a page
     without orders (same study id, rebuilt) was shown the fixed order */
  if (!isPermutation(state.order)) state.order = state.consented_at ? fixedOrder.slice() : null;
  var enteredAt = null;

  function save() {
    try {
      localStorage.setItem(KEY, JSON.stringify(state));
      $("saved-note").textContent = "saved";
    } catch (e) {
      $("saved-note").textContent = "could not save in this browser — download your answers before closing";
    }
  }

  /* the item shown at (0-based) position i */
  function itemAt(i) { return byId[state.order[i]]; }

  function answer(i) {
    var id = itemAt(i).item_id;
    if (!state.answers[id]) state.answers[id] = { uses: [], ignores: [], free_text: "", confidence: null, seconds: 0, started_at: null, answered_at: null };
    return state.answers[id];
  }

  /* time spent on the current item: counted while it is shown, flushed into the saved state */
  function flushTime() {
    if (state.screen !== "item" || enteredAt === null) return;
    var t = performance.now();
    answer(state.current).seconds += (t - enteredAt) / 1000;
    enteredAt = t;
  }

  function show(screen) {
    ["welcome", "item", "done"].forEach(function (s) { $("screen-" + s).hidden = s !== screen; });
    $("progress").hidden = screen === "welcome";
    state.screen = screen;
    enteredAt = screen === "item" ? performance.now() : null;
    updateProgress();
    window.scrollTo(0, 0);
  }

  function answeredCount() {
    return items.filter(function (it) { var a = state.answers[it.item_id]; return a && a.answered_at; }).length;
  }

  function updateProgress() {
    var done = answeredCount();
    $("progress-text").textContent = state.screen === "done" ? "All " + N + " items answered"
      : "Item " + (state.current + 1) + " of " + N;
    $("progress-fill").style.width = (100 * done / N) + "%";
    $("progress-bar").setAttribute("aria-valuenow", String(done));
  }

  function fillItem(i) {
    var it = itemAt(i), a = answer(i);
    if (!a.started_at) a.started_at = nowIso();
    $("img-original").src = it.original;
    if ($("img-refae")) $("img-refae").src = it.refae || "";
    $("img-cladec").src = it.cladec;
    $("item-true").textContent = it.true_label;
    $("item-pred").textContent = it.predicted;
    Array.prototype.forEach.call(form.querySelectorAll('input[name="uses"]'), function (c) { c.checked = a.uses.indexOf(c.value) >= 0; });
    Array.prototype.forEach.call(form.querySelectorAll('input[name="ignores"]'), function (c) { c.checked = a.ignores.indexOf(c.value) >= 0; });
    Array.prototype.forEach.call(form.querySelectorAll('input[name="confidence"]'), function (r) { r.checked = +r.value === a.confidence; });
    $("free-text").value = a.free_text || "";
    $("item-error").textContent = "";
    $("back").disabled = i === 0;
    $("next").textContent = i === N - 1 ? "Finish" : "Next";
  }

  function readForm() {
    var a = answer(state.current);
    a.uses = Array.prototype.filter.call(form.querySelectorAll('input[name="uses"]'), function (c) { return c.checked; }).map(function (c) { return c.value; });
    a.ignores = Array.prototype.filter.call(form.querySelectorAll('input[name="ignores"]'), function (c) { return c.checked; }).map(function (c) { return c.value; });
    var r = form.querySelector('input[name="confidence"]:checked');
    a.confidence = r ? +r.value : null;
    a.free_text = $("free-text").value;
    return a;
  }

  function goItem(i) {
    state.current = Math.max(0, Math.min(N - 1, i));
    show("item");
    fillItem(state.current);
    save();
  }

  function finish() {
    show("done");
    $("done-text").textContent = "You answered " + answeredCount() + " of " + N + " items (participant " + state.participant_id + ").";
    save();
  }

  /* a concept is either used or ignored, not both */
  form.addEventListener("change", function (ev) {
    var t = ev.target;
    if (t.type === "checkbox" && t.checked) {
      var other = t.name === "uses" ? "ignores" : "uses";
      var o = form.querySelector('input[name="' + other + '"][value="' + t.value + '"]');
      if (o) o.checked = false;
    }
    flushTime(); readForm(); save();
  });
  $("free-text").addEventListener("input", function () { flushTime(); readForm(); save(); });

  $("next").addEventListener("click", function () {
    flushTime();
    var a = readForm();
    if (!a.confidence) {
      $("item-error").textContent = "Please say how confident you are (1–5) before going on.";
      save();
      return;
    }
    a.answered_at = nowIso();
    if (state.current < N - 1) goItem(state.current + 1); else finish();
  });
  $("back").addEventListener("click", function () { flushTime(); readForm(); goItem(state.current - 1); });

  var pid = $("participant-id"), consent = $("consent"), start = $("start");
  pid.value = state.participant_id;
  function canStart() { start.disabled = !(consent.checked && pid.value.trim()); }
  consent.addEventListener("change", canStart);
  pid.addEventListener("input", canStart);
  start.addEventListener("click", function () {
    state.participant_id = pid.value.trim();
    state.consented_at = nowIso();
    state.order = orderFor(state.participant_id);
    goItem(state.current || 0);
  });

  /* export */
  /* answered items in the order shown; position: 1-based place in this participant's sequence */
  function rows() {
    var order = state.order || [];
    return order.map(function (id, i) { return { it: byId[id], a: state.answers[id], position: i + 1 }; })
      .filter(function (x) { return x.a && x.a.answered_at; }).map(function (x) {
        var it = x.it, a = x.a;
        return {
          study_id: data.study_id, participant_id: state.participant_id, item_id: it.item_id, image_id: it.image_id,
          true_label: it.true_label,
          uses: a.uses.join(";"), ignores: a.ignores.join(";"), free_text: a.free_text || "", confidence: a.confidence,
          seconds_on_item: Math.round(a.seconds * 100) / 100, started_at: a.started_at || "", answered_at: a.answered_at || "",
          position: x.position
        };
      });
  }
  function csvCell(v) {
    var s = v === null || v === undefined ? "" : String(v);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function toCsv() {
    var out = [COLS.join(",")];
    rows().forEach(function (r) { out.push(COLS.map(function (c) { return csvCell(r[c]); }).join(",")); });
    return out.join("\r\n") + "\r\n";
  }
  function download(text, type, ext) {
    var blob = new Blob([text], { type: type });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "cladec-study-" + data.study_id + "-" + state.participant_id.replace(/[^A-Za-z0-9_-]+/g, "_") + "." + ext;
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }
  $("download-csv").addEventListener("click", function () { download(toCsv(), "text/csv;charset=utf-8", "csv"); });
  $("download-json").addEventListener("click", function () {
    var obj = { format: "cladec-study-answers", study_id: data.study_id, participant_id: state.participant_id,
      consented_at: state.consented_at, exported_at: nowIso(), items_total: N, order: ORDER_MODE,
      item_order: state.order, answers: rows() };
    download(JSON.stringify(obj, null, 2), "application/json", "json");
  });
  $("review").addEventListener("click", function () { goItem(0); });
  var armed = false;
  $("reset").addEventListener("click", function () {
    if (!armed) { armed = true; this.textContent = "Click again: this clears all answers here"; return; }
    localStorage.removeItem(KEY);
    state = load(); armed = false;
    this.textContent = "Start a new participant";
    pid.value = state.participant_id; consent.checked = false; canStart();
    show("welcome");
  });

  window.addEventListener("pagehide", function () { flushTime(); save(); });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { flushTime(); save(); } else if (state.screen === "item") { enteredAt = performance.now(); }
  });
  window.cladecStudy = { toCsv: toCsv, rows: rows, key: KEY, orderFor: orderFor,
    order: function () { return state.order ? state.order.slice() : null; } };

  if (state.consented_at && state.screen === "done") finish();
  else if (state.consented_at) goItem(state.current);
  else { show("welcome"); canStart(); }
  document.documentElement.dataset.studyReady = "1";
})();
