// Holdfast dashboard, the Keys page: rotate (with re-encryption progress) and destroy data
// keys. Uses the helpers in app.js, loaded first.
"use strict";

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
