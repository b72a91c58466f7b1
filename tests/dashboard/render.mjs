// Loads the router's /dashboard in headless Chromium, enters the token like a user, waits for
// the page to render /stats (and, with --polls N, for N polls so rates appear), then prints
// what the page shows as JSON on stdout. tests/e2e/test_observability.py compares it with /stats.
//
//   node tests/dashboard/render.mjs --url http://127.0.0.1:8787 --token T [--polls 2]
//        [--screenshot docs/dashboard.png] [--chromium /usr/bin/chromium] [--wait-file PATH]
//        [--admin-disable KEY_ID --reason TEXT]
//
// With --admin-disable (an admin token), it clicks the key's "disable" button with the reason,
// waits for the row to show "disabled" and the audit table to list the change, then clicks
// "enable" and waits for the row to come back; it reports what it saw under `admin`.
//
// With --wait-file, after the polls it waits until PATH exists (the test's traffic is over) and
// then for one more poll, so what it reads back is the figures after the last request.
//
// Uses playwright-core (no bundled browser) with Debian's chromium: nothing is downloaded.
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";

function arg(name, dflt) {
  const i = process.argv.indexOf("--" + name);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const url = arg("url");
const token = arg("token");
const polls = Number(arg("polls", "1"));
const shot = arg("screenshot");
const waitFile = arg("wait-file");
const adminKey = arg("admin-disable");
const adminReason = arg("reason", "from the dashboard test");
const exe = arg("chromium", process.env.CHROMIUM_PATH || "/usr/bin/chromium");
if (!url || !token) {
  console.error("usage: render.mjs --url URL --token TOKEN [--polls N] [--screenshot PATH]");
  process.exit(2);
}

const errorsSeen = [];
const browser = await chromium.launch({ executablePath: exe, args: ["--no-sandbox", "--disable-gpu"] });
try {
  const page = await browser.newPage({ viewport: { width: 1900, height: 1000 } });
  const errors = errorsSeen;
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url + "/dashboard");
  // First visit: the page asks for the token.
  await page.waitForSelector("#token", { state: "visible" });
  await page.fill("#token", token);
  await page.click("#connect");
  await page.waitForFunction(() => document.body.dataset.generatedAt, null, { timeout: 15000 });
  const stored = await page.evaluate(() => localStorage.getItem("llmr.dashboard.token"));
  // Keeps the token: a reload connects without asking again.
  await page.reload();
  await page.waitForFunction(() => document.body.dataset.generatedAt, null, { timeout: 15000 });
  const askedAgain = await page.isVisible("#token");
  // Fast polling so rates (deltas between polls) appear.
  await page.selectOption("#interval", "2000");
  let seen = new Set();
  const deadline = Date.now() + 20000 + polls * 3000;
  while (seen.size < polls && Date.now() < deadline) {
    seen.add(await page.evaluate(() => document.body.dataset.generatedAt));
    await page.waitForTimeout(200);
  }
  if (waitFile) {
    const until = Date.now() + 60000;
    while (!existsSync(waitFile) && Date.now() < until) await page.waitForTimeout(100);
    const before = await page.evaluate(() => document.body.dataset.generatedAt);
    await page.waitForFunction((b) => document.body.dataset.generatedAt !== b, before, { timeout: 15000 });
    seen.add(await page.evaluate(() => document.body.dataset.generatedAt));
  }
  const shown = await page.evaluate(() => {
    const num = (el) => (el ? Number(el.textContent.trim()) : null);
    const bars = (row) =>
      Object.fromEntries(
        [...row.querySelectorAll(".bar")].map((b) => [b.dataset.field, { used: Number(b.dataset.used), limit: Number(b.dataset.limit), text: b.textContent.trim() }]),
      );
    const toks = (row) => row.querySelector('[data-field="tokens"]').textContent.split("/").map((s) => Number(s.trim()));
    const keys = [...document.querySelectorAll("#keys tbody tr")].map((r) => ({
      key_id: r.dataset.keyId,
      status: r.querySelector('[data-field="status"]').textContent.trim(),
      bars: bars(r),
      cooldown_until: r.querySelector('[data-field="cooldown_until"]').dataset.ms || null,
      cooldown_text: r.querySelector('[data-field="cooldown_until"]').textContent.trim(),
      disabled: r.querySelector('[data-field="disabled"]').textContent.trim(),
      requests: num(r.querySelector('[data-field="requests"]')),
      successes: num(r.querySelector('[data-field="successes"]')),
      upstream_429s: num(r.querySelector('[data-field="upstream_429s"]')),
      failures_total: num(r.querySelector('[data-field="failures_total"]')),
      tokens: toks(r),
    }));
    const models = [...document.querySelectorAll("#models tbody tr")].map((r) => ({
      model: r.dataset.model, keys: r.querySelector('[data-field="keys"]').textContent.trim(), bars: bars(r),
      requests: num(r.querySelector('[data-field="requests"]')), tokens: toks(r),
    }));
    const clients = [...document.querySelectorAll("#clients tbody tr")].map((r) => ({
      client_id: r.dataset.clientId, requests: num(r.querySelector('[data-field="requests"]')), tokens: toks(r),
    }));
    const global = Object.fromEntries([...document.querySelectorAll("#global [data-field]")].map((e) => [e.dataset.field, e.textContent.trim()]));
    const rate = document.querySelector('[data-field="rate_rpm"]');
    const peak = document.querySelector('[data-field="rate_peak_rpm"]');
    const peakT = document.querySelector('[data-field="rate_peak_tpm"]');
    return {
      generated_at: Number(document.body.dataset.generatedAt),
      schema_version: Number(document.body.dataset.schemaVersion),
      keys, models, clients, global,
      rate_rpm: rate ? Number(rate.textContent) : null,
      rate_peak_rpm: peak ? Number(peak.textContent) : null,
      rate_peak_tpm: peakT ? Number(peakT.textContent) : null,
      chart_lines: document.querySelectorAll("#chart path").length,
      chart_bars: document.querySelectorAll("#chart rect").length,
      status: document.getElementById("status").textContent,
    };
  });
  let admin = null;
  if (adminKey) {
    const row = `#keys tbody tr[data-key-id="${adminKey}"]`;
    const status = () => page.$eval(`${row} [data-field="status"]`, (e) => e.textContent.trim());
    await page.waitForSelector(`${row} button[data-action="disable"]`, { state: "visible", timeout: 15000 });
    await page.fill("#admin-reason", adminReason);
    await page.click(`${row} button[data-action="disable"]`);
    await page.waitForFunction((r) => document.querySelector(`${r} [data-field="status"]`)?.textContent.trim() === "disabled", row, { timeout: 15000 });
    const afterDisable = await status();
    const disabledText = await page.$eval(`${row} [data-field="disabled"]`, (e) => e.textContent.trim());
    await page.waitForSelector(`#audit tbody tr[data-audit-action="disable"][data-target="${adminKey}"]`, { timeout: 15000 });
    const audit = await page.$$eval("#audit tbody tr", (rows) => rows.map((r) => [...r.children].map((c) => c.textContent.trim())));
    await page.click(`${row} button[data-action="enable"]`);
    await page.waitForFunction((r) => document.querySelector(`${r} [data-field="status"]`)?.textContent.trim() === "available", row, { timeout: 15000 });
    admin = { after_disable: afterDisable, disabled_text: disabledText, audit, after_enable: await status(),
      result: await page.$eval("#admin-result", (e) => e.textContent.trim()) };
  }
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ ...shown, admin, token_stored: stored === token, asked_again: askedAgain, polls_seen: seen.size, errors }));
} catch (e) {
  console.error(String(e));
  console.error("page errors:", JSON.stringify(errorsSeen));
  process.exitCode = 1;
} finally {
  await browser.close();
}
