// Holdfast dashboard, the Now page: breakers, request rates by cache result, the outage
// share, upstream latency. Uses the helpers and state in app.js, loaded first.
"use strict";

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
