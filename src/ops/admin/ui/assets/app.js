// Holdfast dashboard: a small vanilla app over /ui/api. Stored prompts and answers are
// untrusted text: everything is put on the page with textContent, never as HTML.
"use strict";

const RESULTS = ["hit", "stale", "coalesced", "miss", "bypass", "error"];
const POLL_MS = 2000;
const session = { csrf: null, actor: null, live: false };
let pollTimer = null;
let chartMinutes = 60; // the rate chart's range: 60 or 10 minutes

// ---------- small helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fmtTime(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

function fmtRate(n) {
  if (n >= 100) return n.toFixed(0);
  if (n >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

function fmtSecs(x) {
  if (x < 1) return `${Math.round(x * 1000)} ms`;
  if (x < 60) return `${x.toFixed(x < 10 ? 1 : 0)} s`;
  return `${Math.round(x / 60)} min`;
}

function shortAddr(a) { return a ? `${a.slice(0, 12)}…` : ""; }

function toast(message, bad) {
  const box = document.getElementById("toast");
  const item = h("div", { class: bad ? "bad" : "" }, message);
  box.append(item);
  setTimeout(() => item.remove(), bad ? 7000 : 3500);
}

class Refused extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const init = { method: options.method || "GET", credentials: "same-origin", headers: {} };
  if (init.method !== "GET") {
    init.headers["content-type"] = "application/json";
    if (session.csrf) init.headers["x-csrf-token"] = session.csrf;
    init.body = JSON.stringify(options.body || {});
  }
  const response = await fetch(`/ui/api/${path}`, init);
  if (options.raw) return response;
  let payload = null;
  try { payload = await response.json(); } catch (_) { payload = null; }
  if (!response.ok) {
    if (response.status === 401 && path !== "login") showLogin("Your session ended; log in again.");
    throw new Refused(response.status, (payload && payload.error) || `HTTP ${response.status}`);
  }
  return payload;
}

// ---------- login ----------

function showLogin(message) {
  stopPolling();
  session.csrf = null;
  document.getElementById("app").hidden = true;
  document.getElementById("login").hidden = false;
  const err = document.getElementById("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  document.getElementById("token").focus();
}

function showApp() {
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  document.getElementById("actor").textContent = session.actor || "";
  document.getElementById("actor").title = session.actor || "";
  route();
}

async function login(event) {
  event.preventDefault();
  const input = document.getElementById("token");
  try {
    const answer = await api("login", { method: "POST", body: { token: input.value } });
    input.value = "";
    Object.assign(session, answer);
    if (!location.hash) location.hash = "#now";
    showApp();
  } catch (e) {
    showLogin(e.message === "wrong admin token" ? "Wrong admin token." : e.message);
  }
}

async function logout() {
  try { await api("logout", { method: "POST" }); } catch (_) { /* the session is gone either way */ }
  showLogin("Logged out.");
}

// ---------- routing ----------

function route() {
  stopPolling();
  const hash = location.hash.replace(/^#/, "").split("?")[0] || "now";
  const [page, ...rest] = hash.split("/");
  const arg = decodeURIComponent(rest.join("/"));
  for (const a of document.querySelectorAll(".tabs a")) {
    const current = a.dataset.page === page || (page === "entry" && a.dataset.page === "audit");
    a.classList.toggle("active", current);
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const view = document.getElementById("view");
  view.replaceChildren();
  view.dataset.page = page;
  const pages = { now: nowPage, audit: auditPage, entry: entryPage, trail: trailPage, keys: keysPage };
  (pages[page] || nowPage)(view, arg);
}

function stopPolling() {
  if (pollTimer) clearTimeout(pollTimer);
  pollTimer = null;
}

function failed(view, e) {
  if (e.status === 401) return;
  view.append(h("div", { class: "banner bad" }, e.message));
}

// ---------- Now ----------

function nowPage(view) {
  const head = h("div", { class: "page-head" },
    h("div", {}, h("h1", {}, "Now"), h("div", { class: "muted small" }, "Live: refreshed every 2 seconds")),
    h("span", { class: "muted small", id: "updated" }, ""));
  const body = h("div", { id: "now-body" }, h("div", { class: "empty" }, "Loading…"));
  view.append(head, body);
  const tick = async () => {
    if (view.dataset.page !== "now" || document.getElementById("app").hidden) return;
    try {
      const now = await api("now");
      renderNow(body, now);
      document.getElementById("updated").textContent = `Updated ${fmtTime(Date.now()).slice(11)}`;
    } catch (e) {
      if (e.status === 401) return;
      body.replaceChildren(h("div", { class: "banner bad" }, e.message));
    }
    pollTimer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function sumBins(bins) {
  const total = new Array(RESULTS.length).fill(0);
  for (const b of bins) b.forEach((n, i) => { total[i] += n; });
  return total;
}

function quantile(hist, q) {
  if (!hist || !hist.count) return null;
  const target = hist.count * q;
  let seen = 0;
  for (let i = 0; i < hist.counts.length; i++) {
    seen += hist.counts[i];
    if (seen >= target) return i < hist.bounds.length ? hist.bounds[i] : Infinity;
  }
  return Infinity;
}

function renderNow(body, now) {
  const store = now.store || {};
  const cards = h("div", { class: "grid cards" });
  if (!now.live) {
    body.replaceChildren(
      h("div", { class: "banner info" }, "This admin listener is not attached to a running proxy: live figures are unavailable."),
      cards);
    cards.append(card("Store entries", store.entries, `${fmtBytes(store.bytes)} sealed · ${fmtBytes(store.disk_bytes)} on disk`));
    return;
  }
  const minute = sumBins(now.minute.bins);
  const perSec = minute.reduce((a, b) => a + b, 0) / 60;
  const fromStore = (minute[0] + minute[1]) / 60;
  const open = now.breakers.filter((b) => b.state !== "closed");
  cards.append(
    card("Requests / s", fmtRate(perSec), `last minute · ${fmtRate(fromStore)}/s from the store`),
    outageCard(now.outage, open),
    card("Store", `${store.entries}`, `entries · ${fmtBytes(store.bytes)} sealed · ${fmtBytes(store.disk_bytes)} on disk`),
    latencyCard(now.latency));
  const breakers = h("section", { class: "panel" }, h("h2", {}, "Providers and breakers"), breakerTable(now));
  const shown = now.hour.bins.slice(-Math.round((chartMinutes * 60) / now.hour.step_secs));
  const range = (minutes, label) => h("button", {
    type: "button", class: chartMinutes === minutes ? "chip on" : "chip", "aria-pressed": String(chartMinutes === minutes),
    onclick: () => { chartMinutes = minutes; renderNow(body, now); },
  }, label);
  const chart = h("section", { class: "panel" },
    h("div", { class: "panel-head" }, h("h2", {}, "Requests per second by cache result"),
      h("div", { class: "chips" }, range(60, "1 hour"), range(10, "10 min"))),
    rateChart({ bins: shown, step_secs: now.hour.step_secs }, chartMinutes),
    legend(sumBins(shown)));
  const latency = h("section", { class: "panel" }, h("h2", {}, "Upstream latency"), latencyChart(now.latency));
  body.replaceChildren(cards, h("div", { class: "grid two" }, h("div", { class: "stack" }, breakers, chart), h("div", { class: "stack" }, latency)));
}

function card(label, value, sub, bad) {
  return h("div", { class: `panel card${bad ? " bad" : ""}` },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value ?? "–"), h("div", { class: "sub" }, sub || ""));
}

function outageCard(outage, open) {
  if (!outage) return card("Outage", "None", "every breaker is closed");
  const share = outage.share === null ? "–" : `${Math.round(outage.share * 100)}%`;
  return card("From the store in this outage", share,
    `${outage.from_store} of ${outage.requests} requests since ${fmtTime(outage.since_ms).slice(11)} · ${open.length} breaker${open.length === 1 ? "" : "s"} not closed`,
    true);
}

function latencyCard(latency) {
  const all = mergeHistograms(latency);
  const p50 = quantile(all, 0.5);
  const p95 = quantile(all, 0.95);
  const show = (x) => (x === null ? "–" : x === Infinity ? "> 120 s" : `≤ ${fmtSecs(x)}`);
  return card("Upstream p50", show(p50), `p95 ${show(p95)} · ${all ? all.count : 0} answers`);
}

function mergeHistograms(latency) {
  const hists = Object.values(latency || {});
  if (!hists.length) return null;
  const merged = { bounds: hists[0].bounds, counts: hists[0].counts.map(() => 0), count: 0, sum_secs: 0 };
  for (const hist of hists) {
    hist.counts.forEach((n, i) => { merged.counts[i] = (merged.counts[i] || 0) + n; });
    merged.count += hist.count;
    merged.sum_secs += hist.sum_secs;
  }
  return merged;
}

function breakerTable(now) {
  const rows = [];
  const failuresOf = (name) => {
    const f = now.failures[name] || {};
    const parts = Object.entries(f).map(([k, v]) => `${k} ${v}`);
    return parts.length ? parts.join(" · ") : "none";
  };
  const byKey = Object.fromEntries(now.breakers.map((b) => [b.key, b]));
  const seen = new Set();
  const row = (label, b, provider, isModel) => {
    seen.add(label);
    const state = b ? b.state : "closed";
    rows.push(h("tr", { "data-breaker": label, "data-state": state },
      h("td", {}, isModel ? h("span", { class: "muted" }, "↳ ") : null, h("strong", {}, label),
        provider && !isModel ? h("div", { class: "muted small" }, `${provider.api} · ${provider.base_url}`) : null),
      h("td", {}, h("span", { class: `pill ${state}` }, state)),
      h("td", { class: "num" }, b ? `${b.recent_failures} / ${b.recent_requests}` : "0 / 0"),
      h("td", { class: "num" }, b ? String(b.consecutive_failures) : "0"),
      h("td", {}, b && b.retry_in_secs !== null && b.retry_in_secs !== undefined ? `probe in ${fmtSecs(b.retry_in_secs)}` : ""),
      h("td", { class: "small" }, isModel ? "" : failuresOf(label))));
  };
  for (const p of now.providers) {
    row(p.name, byKey[p.name], p, false);
    for (const b of now.breakers) if (b.key.startsWith(`${p.name}/`)) row(b.key, b, p, true);
  }
  for (const b of now.breakers) if (!seen.has(b.key)) row(b.key, b, null, b.key.includes("/"));
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Breaker"), h("th", {}, "State"), h("th", { class: "num" }, "Failed / recent"),
      h("th", { class: "num" }, "In a row"), h("th", {}, "Next probe"), h("th", {}, "Failures since start"))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No providers configured")))));
}

function rateChart(hour, minutes) {
  const W = 720, H = 220, L = 44, R = 8, T = 10, B = 24;
  const bins = hour.bins;
  const n = bins.length;
  const step = hour.step_secs;
  const totals = bins.map((b) => b.reduce((a, x) => a + x, 0) / step);
  const max = Math.max(1, ...totals);
  const niceMax = niceCeil(max);
  const x = (i) => L + ((W - L - R) * (i + 0.5)) / Math.max(1, n);
  const y = (v) => T + (H - T - B) * (1 - v / niceMax);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Requests per second by cache result over the last hour" });
  for (let k = 0; k <= 4; k++) {
    const v = (niceMax * k) / 4;
    svg.append(s("line", { class: "grid-line", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmtRate(v)));
  }
  const marks = minutes === 60 ? [60, 45, 30, 15, 0] : [10, 8, 6, 4, 2, 0];
  for (const m of marks) {
    const i = Math.max(0, n - 1 - (m * 60) / step);
    svg.append(s("text", { x: x(i), y: H - 6, "text-anchor": m === 0 ? "end" : m === minutes ? "start" : "middle" }, m === 0 ? "now" : `−${m} min`));
  }
  // Stacked bars, one per bin: sparse traffic stays visible, and each bar is what happened then.
  const slot = (W - L - R) / Math.max(1, n);
  const bar = Math.max(1, slot * 0.8);
  bins.forEach((b, i) => {
    let below = 0;
    RESULTS.forEach((name, r) => {
      const v = b[r] / step;
      if (!v) return;
      const y0 = y(below), y1 = y(below + v);
      svg.append(s("rect", { class: `c-${name}`, x: L + i * slot + (slot - bar) / 2, y: y1, width: bar, height: Math.max(1, y0 - y1) },
        s("title", {}, `${name}: ${fmtRate(v)}/s`)));
      below += v;
    });
  });
  return svg;
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function legend(totals) {
  return h("div", { class: "legend" }, RESULTS.map((name, i) =>
    h("span", {}, h("i", { class: `c-${name}` }), `${name} `, h("span", { class: "muted" }, String(totals[i])))));
}

function latencyChart(latency) {
  const providers = Object.keys(latency || {});
  if (!providers.length) return h("div", { class: "empty" }, "No upstream answers yet.");
  const wrap = h("div", {});
  const select = h("select", { "aria-label": "Provider" },
    h("option", { value: "" }, "All providers"), providers.map((p) => h("option", { value: p }, p)));
  const chartBox = h("div", {});
  const draw = () => {
    const hist = select.value ? latency[select.value] : mergeHistograms(latency);
    chartBox.replaceChildren(histogramSvg(hist),
      h("div", { class: "muted small" }, `${hist.count} answers · mean ${hist.count ? fmtSecs(hist.sum_secs / hist.count) : "–"}`));
  };
  select.addEventListener("change", draw);
  wrap.append(select, chartBox);
  draw();
  return wrap;
}

function histogramSvg(hist) {
  const W = 420, H = 220, L = 36, R = 6, T = 10, B = 40;
  const labels = hist.bounds.map((b) => `≤${fmtSecs(b)}`).concat(["more"]);
  const max = Math.max(1, ...hist.counts);
  const slot = (W - L - R) / hist.counts.length;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Upstream latency histogram" });
  for (let k = 0; k <= 2; k++) {
    const v = Math.round((max * k) / 2);
    const yy = T + (H - T - B) * (1 - v / max);
    svg.append(s("line", { class: "grid-line", x1: L, x2: W - R, y1: yy, y2: yy }));
    svg.append(s("text", { x: L - 5, y: yy + 4, "text-anchor": "end" }, String(v)));
  }
  hist.counts.forEach((c, i) => {
    const bh = ((H - T - B) * c) / max;
    const bx = L + i * slot + 2;
    svg.append(s("rect", { class: "bar", x: bx, y: H - B - bh, width: Math.max(1, slot - 4), height: bh, rx: 2 },
      s("title", {}, `${labels[i]}: ${c}`)));
    if (i % 2 === 0 || hist.counts.length < 9) {
      svg.append(s("text", { x: bx + slot / 2 - 2, y: H - B + 14, "text-anchor": "middle" }, labels[i].replace("≤", "")));
    }
  });
  svg.append(s("text", { x: L, y: H - 6 }, "seconds to a complete answer (bucket upper bound)"));
  return svg;
}

// ---------- Audit ----------

function auditParams() {
  const q = location.hash.split("?")[1] || "";
  return new URLSearchParams(q);
}

function toMs(local) { return local ? String(new Date(local).getTime()) : ""; }

function auditPage(view) {
  const params = auditParams();
  const field = (name, label, attrs = {}) => h("div", { class: attrs.wide ? "wide" : "" },
    h("label", { for: `f-${name}` }, label),
    h("input", Object.assign({ id: `f-${name}`, name, value: params.get(name) || "", spellcheck: "false" }, attrs.input || {})));
  const form = h("form", { class: "panel filters", id: "audit-filters" },
    field("q", "Search prompts and answers", { wide: true, input: { type: "search", placeholder: "words in a prompt or an answer" } }),
    field("model", "Model", { input: { placeholder: "gpt-* " } }),
    field("provider", "Provider"),
    field("tenant", "Tenant", { input: { placeholder: "shared or hash prefix" } }),
    field("since", "From", { input: { type: "datetime-local" } }),
    field("until", "To", { input: { type: "datetime-local" } }),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Search"),
      h("button", { type: "button", class: "ghost", onclick: () => { location.hash = "#audit"; } }, "Clear")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const el of form.querySelectorAll("input")) if (el.value.trim()) next.set(el.name, el.value.trim());
    const target = `#audit?${next}`;
    if (location.hash === target) route(); else location.hash = target;
  });
  const results = h("section", { class: "panel", id: "audit-results" }, h("div", { class: "empty" }, "Loading…"));
  view.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Audit"), h("div", { class: "muted small" }, "Every listing, search and view is written to the access trail."))),
    form, h("div", { class: "spacer" }), results, purgePanel());
  const query = new URLSearchParams();
  for (const name of ["q", "model", "provider", "tenant"]) if (params.get(name)) query.set(name, params.get(name));
  if (params.get("since")) query.set("since", toMs(params.get("since")));
  if (params.get("until")) query.set("until", toMs(params.get("until")));
  api(`audit?${query}`).then((answer) => renderRows(results, answer)).catch((e) => { results.replaceChildren(); failed(results, e); });
}

function renderRows(box, answer) {
  const rows = answer.entries.map((r) => h("tr", {
    class: "link", tabindex: "0", "data-address": r.address,
    onclick: () => { location.hash = `#entry/${r.address}`; },
    onkeydown: (e) => { if (e.key === "Enter") location.hash = `#entry/${r.address}`; },
  },
  h("td", { class: "small nowrap" }, fmtTime(r.created_ms)),
  h("td", {}, r.provider), h("td", {}, r.model), h("td", { class: "mono small" }, r.tenant),
  h("td", { class: "num" }, String(r.times_served)),
  h("td", { class: "preview", title: r.preview }, r.preview)));
  const more = answer.count > answer.entries.length ? ` (showing ${answer.entries.length})` : "";
  box.replaceChildren(
    h("div", { class: "muted small mb" },
      `${answer.count} ${answer.searched ? "matching " : ""}entr${answer.count === 1 ? "y" : "ies"}${more}`),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Stored"), h("th", {}, "Provider"), h("th", {}, "Model"), h("th", {}, "Tenant"),
        h("th", { class: "num" }, "Served"), h("th", {}, "Prompt"))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "empty" }, "Nothing matches."))))));
}

function confirmDialog(title, text, word) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-label").textContent = `Type ${word} to confirm`;
  const input = document.getElementById("confirm-word");
  const ok = document.getElementById("confirm-ok");
  input.value = "";
  ok.disabled = true;
  input.oninput = () => { ok.disabled = input.value.trim() !== word; };
  return new Promise((resolve) => {
    document.getElementById("confirm-cancel").onclick = () => dialog.close("cancel");
    dialog.onclose = () => resolve(dialog.returnValue === "ok" && input.value.trim() === word);
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
}

function purgePanel() {
  const params = auditParams();
  const days = h("input", { id: "purge-days", type: "number", min: "0", step: "1", value: "30" });
  const model = h("input", { id: "purge-model", value: params.get("model") || "", placeholder: "any model", spellcheck: "false" });
  const go = h("button", { type: "button", class: "danger", id: "purge-bulk" }, "Purge…");
  go.addEventListener("click", () => bulkPurge(Number(days.value), model.value.trim()));
  return h("details", { class: "panel mt", id: "purge-panel" }, h("summary", {}, "Purge stored answers"),
    h("p", { class: "muted small" }, "Deletes entries from the store: they cannot be served in the next outage. Written to the trail."),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "purge-days" }, "Older than (days, 0: any age)"), days),
      h("div", {}, h("label", { for: "purge-model" }, "Model pattern"), model),
      h("div", { class: "align-end" }, go)));
}

async function bulkPurge(days, model) {
  if (!Number.isFinite(days) || days < 0) return toast("Give a number of days (0 for any age).", true);
  const secs = Math.round(days * 86400);
  const what = `${model ? `entries of models matching ${model}` : "entries of every model"}${secs ? ` older than ${days} days` : " of any age"}`;
  if (!(await confirmDialog("Purge stored answers", `This deletes ${what} from the store.`, "purge"))) return;
  const body = { confirm: "purge" };
  if (model) body.model = model;
  if (secs) body.older_than_secs = secs;
  if (!model && !secs) body.all = true;
  try {
    const answer = await api("purge", { method: "POST", body });
    toast(`Purged ${answer.purged} entries.`);
    route();
  } catch (e) { toast(e.message, true); }
}

// ---------- Entry ----------

function answerText(response) {
  if (!response || typeof response !== "object") return typeof response === "string" ? response : null;
  if (Array.isArray(response.choices) && response.choices.length) {
    const c = response.choices[0];
    if (c.message && typeof c.message.content === "string") return c.message.content;
    if (typeof c.text === "string") return c.text;
  }
  if (Array.isArray(response.content)) {
    const text = response.content.filter((p) => p && typeof p.text === "string").map((p) => p.text).join("");
    if (text) return text;
  }
  return null;
}

function promptText(request) {
  if (!request || typeof request !== "object") return null;
  const messages = Array.isArray(request.messages) ? request.messages : Array.isArray(request.input) ? request.input : null;
  if (messages) {
    const last = [...messages].reverse().find((m) => m && m.role === "user");
    if (last) return typeof last.content === "string" ? last.content
      : Array.isArray(last.content) ? last.content.map((p) => p.text || "").join(" ") : null;
  }
  return typeof request.prompt === "string" ? request.prompt : typeof request.input === "string" ? request.input : null;
}

function entryPage(view, address) {
  const box = h("div", {}, h("div", { class: "empty" }, "Opening…"));
  view.append(h("div", { class: "page-head" },
    h("div", {}, h("a", { href: "#audit", onclick: (e) => { if (history.length > 1) { e.preventDefault(); history.back(); } } }, "← Back to the list"),
      h("h1", {}, "Stored entry"), h("div", { class: "mono small muted" }, address)),
    h("button", { type: "button", class: "danger", id: "purge-entry", onclick: () => purgeEntry(address) }, "Purge this entry")), box);
  api(`entry/${encodeURIComponent(address)}`).then((e) => {
    const usage = e.usage ? `${e.usage.input_tokens ?? "?"} in · ${e.usage.output_tokens ?? "?"} out` : "–";
    const meta = [
      ["Provider", e.provider], ["Model", e.model], ["Endpoint", e.endpoint], ["Tenant", e.tenant],
      ["Stored", fmtTime(e.created_ms)], ["Last served", fmtTime(e.last_served_ms)], ["Times served", e.times_served],
      ["Key", `#${e.key_id}`], ["Streamed", e.streamed ? "yes" : "no"],
      ["Upstream latency", e.upstream_latency_ms !== null && e.upstream_latency_ms !== undefined ? `${e.upstream_latency_ms} ms` : "–"],
      ["Tokens", usage],
    ];
    const prompt = promptText(e.request);
    const answer = answerText(e.response);
    const parts = [
      h("div", { class: "banner info small" }, "This view was written to the access trail."),
      h("section", { class: "panel" }, h("h2", {}, "Metadata"),
        h("dl", { class: "meta" }, meta.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, String(v)))))),
      h("div", { class: "grid two mt" },
        h("section", { class: "panel" }, h("h2", {}, "Request"),
          prompt ? h("div", { class: "answer-text", id: "prompt-text" }, prompt) : null,
          h("details", { open: !prompt }, h("summary", {}, "Request JSON"), h("pre", {}, JSON.stringify(e.request, null, 2)))),
        h("section", { class: "panel" }, h("h2", {}, "Answer"),
          answer ? h("div", { class: "answer-text", id: "answer-text" }, answer) : null,
          h("details", { open: !answer }, h("summary", {}, "Answer JSON"), h("pre", {}, JSON.stringify(e.response, null, 2))))),
    ];
    if (e.streamed) {
      const events = e.events || [];
      parts.push(h("section", { class: "panel mt" },
        h("h2", {}, `Stream events (${events.length})`),
        h("details", { id: "stream-events", "data-count": String(events.length) },
          h("summary", {}, "Show the events as the provider sent them"), h("pre", {}, events.join("")))));
    }
    box.replaceChildren(...parts);
  }).catch((err) => { box.replaceChildren(); failed(box, err); });
}

async function purgeEntry(address) {
  if (!(await confirmDialog("Purge this entry", "The stored answer is deleted and cannot be served in the next outage.", "purge"))) return;
  try {
    const answer = await api("purge", { method: "POST", body: { address, confirm: "purge" } });
    toast(answer.purged ? "Entry purged." : "The entry was already gone.");
    location.hash = "#audit";
  } catch (e) { toast(e.message, true); }
}

// ---------- Trail ----------

function trailPage(view) {
  const box = h("div", {}, h("div", { class: "empty" }, "Verifying…"));
  view.append(h("div", { class: "page-head" },
    h("div", {}, h("h1", {}, "Access trail"), h("div", { class: "muted small" }, "Who looked at or changed stored data. Tamper-evident: each line is chained to the one before.")),
    h("button", { type: "button", onclick: () => route() }, "Verify again")), box);
  api("trail").then((t) => {
    const banner = t.first_broken
      ? h("div", { class: "banner bad", id: "trail-status" }, `Verification FAILED at line ${t.first_broken.line}: ${t.first_broken.reason}`)
      : h("div", { class: "banner ok", id: "trail-status" }, `Verified: ${t.total} entr${t.total === 1 ? "y" : "ies"}, the chain is intact.`);
    const rows = t.entries.map((e) => h("tr", { "data-command": e.command },
      h("td", { class: "num" }, String(e.seq)), h("td", { class: "small nowrap" }, fmtTime(e.at_ms)),
      h("td", { class: "small actor" }, e.actor), h("td", { class: "command" }, e.command), h("td", { class: "num" }, String(e.count)),
      h("td", { class: "mono small" }, e.addresses.length ? e.addresses.slice(0, 3).map(shortAddr).join(" ") + (e.addresses.length > 3 ? ` +${e.addresses.length - 3}` : "") : "–"),
      h("td", {}, h("span", { class: `pill ${e.outcome === "ok" ? "ok" : e.outcome === "started" ? "warn" : "bad"}` }, e.outcome))));
    box.replaceChildren(banner, t.unreadable ? h("div", { class: "banner bad" }, t.unreadable) : "",
      h("section", { class: "panel" }, h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", { class: "num" }, "#"), h("th", {}, "When"), h("th", {}, "Who"), h("th", {}, "Command"),
          h("th", { class: "num" }, "Entries"), h("th", {}, "Addresses"), h("th", {}, "Outcome"))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "empty" }, "The trail is empty.")))))));
  }).catch((e) => { box.replaceChildren(); failed(box, e); });
}

// ---------- Keys ----------

function keysPage(view) {
  const box = h("div", {}, h("div", { class: "empty" }, "Loading…"));
  const reencrypt = h("input", { type: "checkbox", id: "reencrypt", checked: true });
  const bar = h("div", {});
  const progress = h("div", { class: "progress", id: "rotate-progress", hidden: true }, bar);
  const status = h("span", { class: "muted small", id: "rotate-status" }, "");
  const rotateButton = h("button", { type: "button", class: "primary", id: "rotate" }, "Rotate key");
  rotateButton.addEventListener("click", () => rotate(rotateButton, reencrypt.checked, progress, bar, status, box));
  view.append(h("div", { class: "page-head" },
    h("div", {}, h("h1", {}, "Keys"), h("div", { class: "muted small" }, "Data keys that seal stored answers. New answers are sealed under the active key."))),
  h("section", { class: "panel" }, h("h2", {}, "Rotate"),
    h("p", { class: "muted small" }, "Makes a new active key. Re-encrypting re-seals every stored answer under it, so older keys open nothing any more and can then be destroyed."),
    h("div", { class: "row" }, rotateButton, h("label", { class: "check", for: "reencrypt" }, reencrypt, "Re-encrypt existing entries"), status),
    h("div", { class: "mt-small" }, progress)),
  h("div", { class: "spacer" }), box);
  loadKeys(box);
}

function loadKeys(box) {
  api("keys").then((k) => {
    const rows = k.keys.map((key) => h("tr", { "data-key": key.id },
      h("td", {}, h("strong", {}, `#${key.id}`)), h("td", { class: "small nowrap" }, fmtTime(key.created_ms)),
      h("td", {}, h("span", { class: `pill ${key.status}` }, keyStatus(key))), h("td", { class: "num" }, String(key.records)),
      h("td", {}, key.status === "active" ? h("span", { class: "muted small" }, "in use") :
        h("button", { type: "button", class: "ghost", disabled: key.records > 0, title: key.records > 0 ? "Re-encrypt first: entries are still sealed under this key" : "",
          onclick: () => destroyKey(key.id, box) }, "Destroy…"))));
    box.replaceChildren(h("section", { class: "panel" }, h("h2", {}, "Keyring"), h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Key"), h("th", {}, "Created"), h("th", {}, "Status"), h("th", { class: "num" }, "Entries sealed"), h("th", {}, ""))),
      h("tbody", {}, rows)))));
  }).catch((e) => { box.replaceChildren(); failed(box, e); });
}

async function rotate(button, reencrypt, progress, bar, status, box) {
  button.disabled = true;
  progress.hidden = !reencrypt;
  bar.style.width = "0%";
  status.textContent = "Rotating…";
  try {
    const response = await api("keys/rotate", { method: "POST", body: { reencrypt }, raw: true });
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try { message = (await response.json()).error || message; } catch (_) { /* keep the status */ }
      throw new Refused(response.status, message);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    let outcome = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = JSON.parse(buffered.slice(0, nl));
        buffered = buffered.slice(nl + 1);
        if (line.progress) {
          const [doneN, total] = line.progress;
          bar.style.width = `${total ? Math.round((100 * doneN) / total) : 100}%`;
          status.textContent = `Re-encrypting ${doneN} of ${total}…`;
        } else outcome = line;
      }
    }
    if (!outcome || outcome.error) throw new Error(outcome ? outcome.error : "the rotation ended without a result");
    bar.style.width = "100%";
    const r = outcome.result;
    status.textContent = `Key #${r.active} is active${reencrypt ? `; ${r.resealed} entries re-encrypted` : ""}.`;
    toast(`Rotated: key #${r.active} is active.`);
  } catch (e) {
    status.textContent = "";
    toast(e.message, true);
  } finally {
    button.disabled = false;
    loadKeys(box);
  }
}

// `keys list` says "retired" for every key but the active one: it seals nothing new, but still
// opens the entries sealed under it. The page says that, and keeps "destroy" for what the
// button does (`keys retire` removes the key from the keyring).
function keyStatus(key) {
  if (key.status === "active") return "active";
  return key.records > 0 ? `inactive (still opens ${key.records} ${key.records === 1 ? "entry" : "entries"})` : "inactive (opens nothing)";
}

async function destroyKey(id, box) {
  if (!(await confirmDialog(`Destroy key #${id}`, "The key is removed from the keyring file for good. Backups made before still hold it.", "destroy"))) return;
  try {
    await api("keys/retire", { method: "POST", body: { id } });
    toast(`Key #${id} destroyed.`);
  } catch (e) { toast(e.message, true); }
  loadKeys(box);
}

// ---------- start ----------

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("login-form").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", () => { if (!document.getElementById("app").hidden) route(); });
  try {
    Object.assign(session, await api("session"));
    showApp();
  } catch (_) {
    showLogin("");
  }
});
