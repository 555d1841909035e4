// Drives Holdfast's dashboard in the system's headless Chromium, as an operator would.
// Run by tests/integration/dashboard_browser.rs, which starts the fake provider and
// `holdfast serve`, and answers this script's `STEP` lines on stdin once it has acted.
//
// Environment: HOLDFAST_UI_URL (the admin listener), HOLDFAST_ADMIN_TOKEN, HOLDFAST_CANARY (a stored prompt),
// HOLDFAST_ARTIFACTS (screenshot folder), CHROMIUM (default /usr/bin/chromium).
// Prints `OK <check>` per check and `SCREENSHOT <file>` per picture; exits 1 on a failure.

import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { createServer } from "node:http";

const ui = process.env.HOLDFAST_UI_URL;
const token = process.env.HOLDFAST_ADMIN_TOKEN;
const canary = process.env.HOLDFAST_CANARY;
const artifacts = process.env.HOLDFAST_ARTIFACTS;
for (const [name, value] of Object.entries({ ui, token, canary, artifacts })) {
  if (!value) { console.log(`FAIL missing environment for ${name}`); process.exit(2); }
}
mkdirSync(artifacts, { recursive: true });

const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();
/** Asks the Rust side to do something and waits until it says GO. */
async function step(name) {
  console.log(`STEP ${name}`);
  const { value, done } = await lines.next();
  if (done || value.trim() !== "GO") throw new Error(`the test harness did not answer ${name} (got ${value})`);
}

function ok(what) { console.log(`OK ${what}`); }
function check(condition, what) {
  if (!condition) throw new Error(what);
  ok(what);
}

async function shoot(page, name) {
  const path = join(artifacts, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`SCREENSHOT ${path}`);
}

const profile = mkdtempSync(join(tmpdir(), "holdfast-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 860 },
  colorScheme: "light",
});
let exitCode = 0;
const page = context.pages()[0] || await context.newPage();
try {
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") pageErrors.push(m.text()); });
  page.setDefaultTimeout(15000);

  // Login: a wrong token first.
  await page.goto(`${ui}/ui`);
  await page.waitForSelector("#login-form");
  await page.fill("#token", "definitely-not-the-token");
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#login-error:not([hidden])");
  check((await page.textContent("#login-error")).includes("Wrong admin token"), "a wrong token is refused on the page");
  check(await page.isHidden("#app"), "a wrong token shows no dashboard");
  const leaked = await page.evaluate(async () => {
    const answers = [];
    for (const path of ["now", "audit", "trail", "keys"]) {
      const r = await fetch(`/ui/api/${path}`, { credentials: "same-origin" });
      answers.push([r.status, await r.text()]);
    }
    return answers;
  });
  check(leaked.every(([status, body]) => status === 401 && !body.includes("canary")), "without a session every endpoint is 401");
  await page.fill("#token", "");
  await shoot(page, "login");

  await page.fill("#token", token);
  await page.click("#login-form button[type=submit]");
  await page.waitForSelector("#app:not([hidden])");
  const cookies = await context.cookies(`${ui}/ui`);
  const session = cookies.find((c) => c.name === "holdfast_ui");
  if (!(session && session.httpOnly && session.sameSite === "Strict" && session.path === "/ui")) {
    throw new Error(`the session cookie is not HttpOnly, SameSite=Strict, Path=/ui: ${JSON.stringify(cookies)}`);
  }
  ok("the session cookie is HttpOnly, SameSite=Strict, Path=/ui");
  check(!(await page.evaluate(() => document.cookie)).includes("holdfast_ui"), "the page's script cannot read the session cookie");

  // Now: the breaker closed, then open once the provider is gone.
  await page.waitForSelector('tr[data-breaker="fake-openai"][data-state="closed"]');
  ok("the Now page shows fake-openai closed");
  await step("kill-provider");
  await page.waitForSelector('tr[data-breaker="fake-openai"][data-state="open"]', { timeout: 20000 });
  ok("the Now page shows fake-openai open after the provider was killed, without a reload");
  // Every request since the breaker opened was answered from the store. (How many fall inside
  // the outage depends on which second the first failure landed in: the ring is per second.)
  await page.waitForFunction(() => /100%[23] of [23] requests since/.test(document.body.textContent));
  ok("the Now page shows the share answered from the store in this outage: 100%");
  await page.click('.chips button:has-text("10 min")');
  await page.waitForSelector('.chips button.on:has-text("10 min")');
  ok("the rate chart switches to the last 10 minutes");
  await page.waitForTimeout(2500); // one more poll, so the chart has the last requests
  await shoot(page, "now");
  await page.emulateMedia({ colorScheme: "dark" });
  await page.waitForTimeout(300);
  await shoot(page, "now-dark");
  await page.emulateMedia({ colorScheme: "light" });

  // A cross-site POST, the classic way: a page of another origin on this host (the same site,
  // so even a SameSite=Lax cookie would go along) submits a form to the dashboard. Its
  // text/plain body is valid JSON; the answer shows in that tab.
  const forged = `<form id="f" method="POST" enctype="text/plain" action="${ui}/ui/api/purge">` +
    `<input type="hidden" name='{"all":true,"confirm":"purge","pad":"' value='"}'></form>` +
    `<script>document.getElementById("f").submit()</script>`;
  const attacker = createServer((_, res) => { res.writeHead(200, { "content-type": "text/html" }); res.end(forged); });
  await new Promise((resolve) => attacker.listen(0, "127.0.0.1", resolve));
  const other = await context.newPage();
  await other.goto(`http://127.0.0.1:${attacker.address().port}/`);
  await other.waitForURL(`${ui}/ui/api/purge`);
  const crossSite = (await other.textContent("body")).trim();
  await other.close();
  attacker.close();
  check(crossSite.includes("refused"), `the server refused the cross-site form POST: ${crossSite}`);
  const remaining = await page.evaluate(async () => (await (await fetch("/ui/api/audit", { credentials: "same-origin" })).json()).count);
  check(remaining > 0, `a cross-site POST purged nothing (${crossSite}; ${remaining} entries remain)`);

  // Audit: search the canary prompt and open it.
  await page.click('.tabs a[data-page="audit"]');
  await page.waitForSelector("#audit-results table");
  await page.fill("#f-q", canary.split(" ").slice(0, 3).join(" "));
  await page.click("#audit-filters button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#audit-results")?.textContent.includes("matching"));
  const rows = await page.$$("#audit-results tbody tr.link");
  check(rows.length === 1, "the search finds exactly the canary entry");
  await shoot(page, "audit");
  const address = await rows[0].getAttribute("data-address");
  await rows[0].click();
  await page.waitForSelector("#answer-text");
  check((await page.textContent("#answer-text")).includes(`echo: ${canary}`), "the entry shows the stored answer");
  check((await page.textContent("#prompt-text")).includes(canary), "the entry shows the prompt");
  await shoot(page, "entry");

  // Trail: the view is there, and the chain verifies.
  await page.click('.tabs a[data-page="trail"]');
  await page.waitForSelector("#trail-status");
  check((await page.textContent("#trail-status")).startsWith("Verified"), "the trail verifies");
  const viewed = await page.$(`tr[data-command="audit show ${address}"]`);
  check(viewed !== null, "the trail lists the dashboard's view of the canary entry");
  check((await viewed.textContent()).includes("via dashboard"), "the trail names the dashboard session as the actor");
  await shoot(page, "trail");

  // Keys: rotate with re-encryption and watch it finish.
  await page.click('.tabs a[data-page="keys"]');
  await page.waitForSelector('tr[data-key="1"]');
  await page.click("#rotate");
  await page.waitForFunction(() => /Key #2 is active; \d+ entries re-encrypted/.test(document.querySelector("#rotate-status")?.textContent || ""));
  ok("rotation with re-encryption finished: key #2 is active");
  check(await page.evaluate(() => document.querySelector("#rotate-progress > div").style.width) === "100%", "the progress bar reached 100%");
  await page.waitForSelector('tr[data-key="2"] .pill.active');
  ok("the keyring shows key #2 active");
  await page.waitForTimeout(400); // the progress bar's transition
  await shoot(page, "keys");

  // A streamed entry shows its events; purge it through the confirmation dialog.
  await page.click('.tabs a[data-page="audit"]');
  await page.waitForSelector("#audit-results table");
  await page.fill("#f-q", "streamed question");
  await page.click("#audit-filters button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#audit-results")?.textContent.includes("1 matching entry"));
  await page.click("#audit-results tbody tr.link");
  await page.waitForSelector("#stream-events");
  const events = Number(await page.getAttribute("#stream-events", "data-count"));
  await page.click("#stream-events summary");
  check(events > 2 && (await page.textContent("#stream-events pre")).includes("data: "), `the streamed entry shows its ${events} events as stored`);
  await shoot(page, "entry-stream");
  await page.click("#purge-entry");
  await page.waitForSelector("#confirm[open]");
  check(await page.isDisabled("#confirm-ok"), "the purge waits for the word purge to be typed");
  await page.fill("#confirm-word", "purge");
  await page.click("#confirm-ok");
  await page.waitForFunction(() => /^2 entries/.test(document.querySelector("#audit-results")?.textContent || ""));
  ok("after confirming, the purged entry is gone from the list");

  // Narrow screen.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.click('.tabs a[data-page="now"]');
  await page.waitForSelector('tr[data-breaker="fake-openai"]');
  await shoot(page, "now-mobile");
  await page.setViewportSize({ width: 1280, height: 860 });

  await page.click("#logout");
  await page.waitForSelector("#login-form");
  const after = await page.evaluate(async () => (await fetch("/ui/api/session", { credentials: "same-origin" })).status);
  check(after === 401, "after logout the session is gone");
  const scriptErrors = pageErrors.filter((e) => !e.includes("status of 401"));
  check(scriptErrors.length === 0, `no script errors on the page${scriptErrors.length ? `: ${scriptErrors.join(" | ")}` : ""}`);
  console.log("ALL CHECKS PASSED");
} catch (e) {
  console.log(`FAIL ${e.message}`);
  exitCode = 1;
  await page.screenshot({ path: join(artifacts, "failure.png"), fullPage: true }).catch(() => {});
  console.log(`SCREENSHOT ${join(artifacts, "failure.png")} (the page when it failed)`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
  stdin.close();
}
process.exit(exitCode);
