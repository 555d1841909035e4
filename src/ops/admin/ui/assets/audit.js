// Holdfast dashboard, the stored prompts: the Audit list and its purge, one entry, and the
// access trail. Uses the helpers in app.js, loaded first.
"use strict";

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
