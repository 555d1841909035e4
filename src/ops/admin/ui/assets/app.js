// Holdfast dashboard: a small vanilla app over /ui/api. Stored prompts and answers are
// untrusted text: everything is put on the page with textContent, never as HTML.
// This file holds what every page uses (helpers, the API call, login, routing, the
// confirmation dialog) and starts the app; the pages are now.js, audit.js and keys.js.
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

// ---------- confirmation ----------

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
