// The usage page: signs in with an API key, then reads the caller's own quota, usage and
// recent requests from admit every few seconds. Plain DOM, no framework; uPlot draws the chart.
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const KEY_STORE = "quotaflow.apiKey";
  const RANGES = {  // by = the usage API's bucket, step in seconds, span in buckets
    hour: { by: "minute", step: 60, buckets: 60 },
    day: { by: "hour", step: 3600, buckets: 24 },
    month: { by: "day", step: 86400, buckets: 30 },
  };
  const COLORS = ["#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed", "#0891b2"];
  const $ = (id) => document.getElementById(id);
  const fmt = new Intl.NumberFormat();
  let timer = null;
  let plot = null;
  let plotModels = "";
  let step = 60;  // seconds per bucket of the range shown

  class ApiError extends Error {
    constructor(what, status, detail) {
      super(`${what}: ${detail} (HTTP ${status})`);
      this.status = status;
    }
  }

  const apiKey = () => sessionStorage.getItem(KEY_STORE);

  async function api(what, path) {
    let resp;
    try {
      resp = await fetch(path, {
        headers: { Authorization: `Bearer ${apiKey()}`, Accept: "application/json" },
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(what, 0, "the server could not be reached");
    }
    const text = await resp.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (err) { body = null; }
    if (!resp.ok) {
      const detail = (body && (body.detail || body.title)) || resp.statusText || "failed";
      throw new ApiError(what, resp.status, detail);
    }
    return body;
  }

  function showError(messages) {
    const box = $("error");
    box.replaceChildren(...messages.map((m) => el("p", {}, m)));
    box.hidden = messages.length === 0;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    node.append(...children.map((c) => (c instanceof Node ? c : String(c))));
    return node;
  }

  const num = (v) => (v === null || v === undefined ? "–" : fmt.format(v));

  function renderQuota(q) {
    $("tenant").textContent = q.tenant;
    $("period").textContent = q.period;
    for (const f of ["granted", "spent", "reserved", "remaining"]) {
      $(f).textContent = fmt.format(q[f]);
      $(f).dataset.value = q[f];
    }
    const granted = Math.max(q.granted, 1);
    const spentPct = Math.min(100, (100 * q.spent) / granted);
    const heldPct = Math.min(100, (100 * (q.spent + q.reserved)) / granted);
    const leftPct = Math.max(0, (100 * q.remaining) / granted);
    $("gauge-spent").setAttribute("stroke-dasharray", `${spentPct} 100`);
    $("gauge-reserved").setAttribute("stroke-dasharray", `${heldPct} 100`);
    $("gauge-pct").textContent = `${leftPct.toFixed(leftPct < 10 ? 1 : 0)}%`;
    $("gauge").classList.toggle("low", leftPct < 10);
    $("gauge-text").textContent = `${fmt.format(q.remaining)} of ${fmt.format(q.granted)} ` +
      `tokens remaining in period ${q.period}: ${fmt.format(q.spent)} spent, ` +
      `${fmt.format(q.reserved)} reserved`;
    renderLevels(q.levels);
  }

  // One row per level and unit (key, team, tenant; tokens, then dollars as the API's decimal
  // strings); a limit of null is none at that level.
  function renderLevels(levels) {
    const shown = (unit, v) => (v === null || v === undefined ? "no limit"
      : unit === "usd" ? `$${v}` : fmt.format(v));
    const rows = (levels || []).flatMap((lv) => ["tokens", "usd"].map((unit) => {
      const u = lv[unit] || {};
      return el("tr", { "data-scope": lv.scope, "data-id": lv.id, "data-unit": unit },
        el("td", {}, `${lv.scope} `, el("code", {}, lv.id)), el("td", {}, unit),
        ...["spent", "reserved", "limit", "remaining"].map((f) => el("td",
          { class: "num", [`data-${f}`]: u[f] ?? "" }, shown(unit, u[f]))));
    }));
    $("levels").tBodies[0].replaceChildren(...rows);
  }

  // Today's times alone, older ones with their date.
  function shortTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    const time = { hour: "2-digit", minute: "2-digit", second: "2-digit" };
    return d.toDateString() === new Date().toDateString()
      ? d.toLocaleTimeString([], time)
      : d.toLocaleString([], { month: "short", day: "numeric", ...time });
  }

  function renderRequests(list) {
    const rows = list.map((r) => {
      const u = r.usage || {};
      const id = el("code", { title: r.request_id }, r.request_id);
      const status = el("td", { "data-status": r.status },
        el("span", { class: `status ${r.status}` }, r.status));
      if (r.reason) status.append(" ", el("span", { class: "reason" }, r.reason.replaceAll("_", " ")));
      return el("tr", { "data-request-id": r.request_id }, el("td", {}, id), status,
        el("td", {}, r.model && r.model.name ? r.model.name : "–"),
        el("td", { class: "num" }, num(u.prompt_tokens)),
        el("td", { class: "num" }, num(u.completion_tokens)),
        el("td", { class: "num", "data-charged": u.charged_tokens ?? "" }, num(u.charged_tokens)),
        el("td", {}, el("time", { datetime: r.created_at, title: r.created_at },
          shortTime(r.created_at))));
    });
    $("requests").tBodies[0].replaceChildren(...rows);
    $("requests-empty").hidden = rows.length > 0;
  }

  const toSeconds = (start) => (typeof start === "number"
    ? (start > 1e12 ? start / 1000 : start) : Date.parse(start) / 1000);
  const seriesName = (row) => row.model ?? row.key ?? row.key_id ?? row.group ?? "all";

  // Usage rows -> uPlot columns: one x per bucket over the whole range (gaps are 0), and per
  // model the tokens stacked up to it, so each model's bar sits on the ones before it.
  function columns(rows, range, now) {
    const first = Math.floor(now / range.step) * range.step - (range.buckets - 1) * range.step;
    const xs = Array.from({ length: range.buckets }, (_, i) => first + i * range.step);
    const models = [...new Set(rows.map(seriesName))].sort();
    const own = models.map(() => xs.map(() => 0));
    for (const row of rows) {
      const i = Math.round((toSeconds(row.start) - first) / range.step);
      if (i >= 0 && i < xs.length) own[models.indexOf(seriesName(row))][i] += row.charged_tokens;
    }
    const stacked = own.map((_, m) => xs.map((__, i) => own.slice(0, m + 1)
      .reduce((s, col) => s + col[i], 0)));
    return { models, data: [xs, ...stacked] };
  }

  function renderUsage(rows, range, now) {
    const used = rows.filter((r) => r.requests || r.charged_tokens);  // not grant-only rows
    const { models, data } = columns(used, range, now);
    const total = used.reduce((s, r) => s + (r.charged_tokens || 0), 0);
    const chart = $("chart");
    chart.dataset.total = total;
    chart.dataset.rows = used.length;
    const requests = used.reduce((s, r) => s + (r.requests || 0), 0);
    $("chart-note").textContent = used.length
      ? `${fmt.format(total)} tokens charged for ${fmt.format(requests)} requests in this range.`
      : "No usage in this range yet.";
    const body = used.map((r) => el("tr", {}, el("td", {}, String(r.start)),
      el("td", {}, seriesName(r)), el("td", {}, num(r.requests)), el("td", {}, num(r.charged_tokens))));
    $("usage-table").tBodies[0].replaceChildren(...body);
    step = range.step;
    drawChart(models, data);
  }

  function drawChart(models, data) {
    const chart = $("chart");
    const width = Math.max(240, chart.clientWidth);
    // The tallest stack first: later series are drawn over earlier ones.
    const order = models.map((m, i) => i).reverse();
    // An empty bucket draws nothing rather than a flat bar.
    const drawn = [data[0], ...order.map((i) => data[i + 1].map((v) => v || null))];
    if (plot && plotModels === models.join("\n")) {
      plot.setData(drawn);
      return;
    }
    if (plot) plot.destroy();
    plotModels = models.join("\n");
    const css = getComputedStyle(document.body);
    const ink = css.getPropertyValue("--muted").trim() || "#666";
    const grid = css.getPropertyValue("--grid").trim() || "#eee";
    const axis = { stroke: ink, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
    const bars = uPlot.paths.bars({ size: [0.8, 28], align: 1 });
    plot = new uPlot({
      width, height: 240,
      legend: { show: models.length > 0, live: false },
      cursor: { show: false },
      scales: {
        x: { time: true, range: (u, min, max) => [min, max + step] },
        y: { range: (u, min, max) => [0, Math.max(10, max * 1.15)] },
      },
      axes: [axis, { ...axis, size: 56, values: (u, vals) => vals.map((v) => fmt.format(v)) }],
      series: [{}, ...order.map((i) => ({
        label: models[i], stroke: COLORS[i % COLORS.length], width: 1,
        fill: COLORS[i % COLORS.length], paths: bars, points: { show: false },
      }))],
    }, drawn, chart);
  }

  async function refresh() {
    const range = RANGES[$("range").value] || RANGES.hour;
    const now = Date.now() / 1000;
    const from = new Date((Math.floor(now / range.step) - range.buckets + 1) * range.step * 1000);
    const usagePath = `/v1/usage?by=${range.by}&group=model&from=${encodeURIComponent(from.toISOString())}`;
    const results = await Promise.allSettled([
      api("Quota", "/v1/quota").then(renderQuota),
      api("Usage", usagePath).then((b) => renderUsage(Array.isArray(b) ? b : b.rows || [], range, now)),
      api("Recent requests", "/v1/requests?limit=20").then((b) => renderRequests(b.requests)),
    ]);
    const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
    if (failed.some((e) => e.status === 401)) {
      signOut(`Signed out: ${failed.find((e) => e.status === 401).message}`);
      return;
    }
    showError(failed.map((e) => (e instanceof ApiError ? e.message : `Page error: ${e}`)));
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ` +
      `${REFRESH_MS / 1000} s`;
    $("dashboard").dataset.loaded = "true";
  }

  function loop() {
    clearTimeout(timer);
    if (!apiKey()) return;
    const next = () => { timer = setTimeout(loop, REFRESH_MS); };
    if (document.hidden) { next(); return; }
    refresh().finally(next);
  }

  function show(signedIn) {
    $("sign-in").hidden = signedIn;
    $("dashboard").hidden = !signedIn;
    $("who").hidden = !signedIn;
  }

  function signOut(message) {
    clearTimeout(timer);
    sessionStorage.removeItem(KEY_STORE);
    if (plot) { plot.destroy(); plot = null; plotModels = ""; }
    delete $("dashboard").dataset.loaded;
    show(false);
    showError(message ? [message] : []);
    $("api-key").focus();
  }

  $("sign-in-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORE, key);
    $("api-key").value = "";
    showError([]);
    show(true);
    loop();
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("range").addEventListener("change", loop);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) loop(); });
  new ResizeObserver(() => {
    if (plot) plot.setSize({ width: Math.max(240, $("chart").clientWidth), height: 240 });
  }).observe($("chart"));

  show(Boolean(apiKey()));
  loop();
})();
