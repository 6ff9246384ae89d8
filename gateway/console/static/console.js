// The overview's live refresh: polls the console's JSON feed and redraws the backend rows
// and the uPlot charts. A static file (the console's CSP allows no inline script).
(function () {
  "use strict";
  var body = document.body;
  if (body.getAttribute("data-page") !== "overview") { return; }
  var root = body.getAttribute("data-root");
  var period = Math.max(1, parseFloat(body.getAttribute("data-refresh-s") || "5")) * 1000;
  var charts = {};

  function ms(s) { return s === null || s === undefined ? "–" : (s * 1000).toFixed(1) + " ms"; }
  function pct(r) { return r === null || r === undefined ? "–" : (r * 100).toFixed(1) + " %"; }
  function rate(r) { return r.toFixed(2) + "/s"; }

  function setCell(row, field, text, cls) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    if (!cell) { return; }
    cell.textContent = text;
    if (cls !== undefined) { cell.className = cls; }
  }

  function updateRow(b) {
    var row = document.querySelector('#backends tr[data-backend="' + b.name + '"]');
    if (!row) { return; }
    setCell(row, "reachable", b.reachable ? "yes" : "no: " + (b.problem || "not probed"), b.reachable ? "ok" : "bad");
    var breaker = b.breaker + (b.half_open_in_s !== null ? " (half-opens in " + b.half_open_in_s + " s)" : "");
    setCell(row, "breaker", breaker, "breaker " + b.breaker);
    setCell(row, "pacing", b.pacing ? Math.round(b.pacing.use * 100) + " % of " + b.pacing.per_second + "/s" : "not paced");
    setCell(row, "bulkhead", b.bulkhead.held + " / " + b.bulkhead.limit);
    var nums = row.querySelectorAll("td.num");
    var values = [b.w5, b.w60].reduce(function (acc, w) {
      return acc.concat([rate(w.rate), pct(w.error_ratio), ms(w.p50), ms(w.p99)]);
    }, []);
    for (var i = 0; i < nums.length && i < values.length; i++) { nums[i].textContent = values[i]; }
  }

  function chartData(s) {
    return [s.t, s.p50, s.p99, s.err];
  }

  function drawChart(el, series) {
    var key = el.getAttribute("data-backend") + ":" + el.getAttribute("data-window");
    var data = chartData(series);
    if (charts[key]) { charts[key].setData(data); return; }
    if (typeof uPlot === "undefined") { return; }
    var opts = {
      width: Math.max(280, el.clientWidth || 320),
      height: 160,
      legend: { show: true, live: false },
      scales: { x: { time: true }, ms: { auto: true }, pct: { range: [0, 100] } },
      axes: [{}, { scale: "ms", label: "ms", size: 50 }, { scale: "pct", side: 1, label: "%", grid: { show: false } }],
      series: [
        {},
        { label: "p50", scale: "ms", stroke: "#3c78b5", width: 1.5, spanGaps: true },
        { label: "p99", scale: "ms", stroke: "#a15c00", width: 1.5, spanGaps: true },
        { label: "errors", scale: "pct", stroke: "#b3261e", width: 1, spanGaps: true }
      ]
    };
    charts[key] = new uPlot(opts, data, el);
  }

  function refresh() {
    fetch(root + "/api/overview", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.redirected) { window.location.assign(root + "/login"); throw new Error("signed out"); }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (data) {
        data.backends.forEach(function (b) {
          updateRow(b);
          document.querySelectorAll('.chart[data-backend="' + b.name + '"]').forEach(function (el) {
            var s = b.series && b.series[el.getAttribute("data-window")];
            if (s) { drawChart(el, s); }
          });
        });
        var live = document.getElementById("live");
        if (live) { live.textContent = "updated " + new Date(data.at * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC"; }
        var inflight = document.getElementById("in-flight");
        if (inflight) { inflight.textContent = String(data.in_flight); }
        body.setAttribute("data-refreshed", String(data.at));
      })
      .catch(function () { /* next poll tries again */ })
      .finally(function () { window.setTimeout(refresh, period); });
  }

  refresh();
})();
