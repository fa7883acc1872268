// Drives hookrelay's status page in Debian's headless Chromium.
//
//   node status.test.mjs <admin-url> <admin-token> <screenshot-dir>
//
// Expects a relay whose sink "out" has one dead delivery and now answers
// 200 (tests/browser.rs sets that up). Logs in, sees the dead delivery,
// opens its message, checks that a cross-site form cannot act, presses
// "Replay", and waits until the page shows it delivered. Screenshots go to
// <screenshot-dir>/status-page.png (with the dead letter),
// status-page-delivered.png and message-page.png. Exit 0 when every step
// passed, 1 otherwise.

import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [admin, token, shots] = process.argv.slice(2);
if (!admin || !token || !shots) {
  console.error("usage: node status.test.mjs <admin-url> <admin-token> <screenshot-dir>");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const STEP_TIMEOUT = 15_000;
let passed = 0;

function ok(what) {
  passed += 1;
  console.log(`ok ${passed} - ${what}`);
}

function check(cond, what) {
  if (!cond) {
    throw new Error(`check failed: ${what}`);
  }
  ok(what);
}

const profile = mkdtempSync(join(tmpdir(), "hookrelay-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
  viewport: { width: 1280, height: 800 },
  timeout: 60_000,
});
context.setDefaultTimeout(STEP_TIMEOUT);

let failed = false;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  // Nothing may come from anywhere but the relay: the page must work offline.
  const foreign = [];
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith(admin) && !u.startsWith("data:") && !u.startsWith("about:")) {
      foreign.push(u);
    }
  });
  const consoleErrors = [];
  page.on("console", (m) => {
    // The refused login answers 401 on purpose; Chromium logs that too.
    if (m.type() === "error" && !/Failed to load resource: .* status of 401/.test(m.text())) {
      consoleErrors.push(m.text());
    }
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  // 1. Not logged in: the login form.
  await page.goto(`${admin}/`);
  check(new URL(page.url()).pathname === "/login", "an anonymous visit lands on the login form");
  await page.fill("#token", "not-the-token");
  await page.click("form.login button[type=submit]");
  check((await page.textContent("body")).includes("That token is not right."), "a wrong token is refused");

  // 2. Log in once.
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(`${admin}/`), page.click("form.login button[type=submit]")]);
  await page.waitForSelector("table#sinks");
  check(true, "logged in: the status page shows the sinks table");
  const cookies = await context.cookies(admin);
  const session = cookies.find((c) => c.name === "hookrelay_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");
  check(!session.value.includes(token), "the cookie is not the token");
  check(!(await page.evaluate(() => document.cookie)).includes("hookrelay_session"), "scripts cannot read the session");

  // 3. The dead delivery is there, with its error.
  const sinkRow = page.locator('table#sinks tr[data-sink="out"]');
  check((await sinkRow.locator("td.state").innerText()).trim() === "active", "sink out is active");
  check((await sinkRow.locator("td.dead").innerText()).trim() === "1", "sink out has one dead delivery");
  const deadRow = page.locator("table#dead tr[data-delivery]");
  check((await deadRow.count()) === 1, "one dead delivery is listed");
  check((await deadRow.first().innerText()).includes("HTTP 410"), "with its error");
  await page.screenshot({ path: join(shots, "status-page.png"), fullPage: true });
  ok("screenshot status-page.png");

  // 4. Its message page shows the events and every attempt.
  await Promise.all([page.waitForURL(/\/messages\//), deadRow.first().locator("a", { hasText: "message" }).click()]);
  await page.waitForSelector("table.attempts");
  const attempts = await page.locator('section.delivery[data-sink="out"] table.attempts tbody tr').count();
  check(attempts === 1, "the message page lists the one attempt to out");
  check((await page.locator("section.delivery").count()) === 3, "and all three deliveries of the message");
  check((await page.locator("table.events").innerText()).includes("/items/"), "and the event's trigger");
  await page.screenshot({ path: join(shots, "message-page.png"), fullPage: true });
  ok("screenshot message-page.png");

  // 5. A form on another site cannot act on the relay: the browser sends
  // no session cookie (SameSite=Strict) and says cross-site; the relay refuses.
  const other = await context.newPage();
  await other.setContent(
    `<form id="f" method="post" action="${admin}/ui/sinks/out/pause"><input name="csrf" value="x"></form>`,
  );
  await Promise.all([other.waitForNavigation(), other.evaluate(() => document.getElementById("f").submit())]);
  const otherPath = new URL(other.url()).pathname;
  await other.close();
  await page.goto(`${admin}/`);
  check(
    (await page.locator('table#sinks tr[data-sink="out"] td.state').innerText()).trim() === "active",
    `a cross-site form changed nothing (it ended on ${otherPath})`,
  );

  // 6. Pause and resume from the page.
  await Promise.all([page.waitForURL(/notice=paused/), page.click('tr[data-sink="out"] button:has-text("Pause")')]);
  check((await page.locator('tr[data-sink="out"] td.state').innerText()).trim() === "paused", "pause works");
  await Promise.all([page.waitForURL(/notice=resumed/), page.click('tr[data-sink="out"] button:has-text("Resume")')]);
  check((await page.locator('tr[data-sink="out"] td.state').innerText()).trim() === "active", "resume works");

  // 7. Replay the sink's dead letters (the page asks first).
  page.once("dialog", (d) => d.accept());
  await Promise.all([page.waitForURL(/notice=replayed/), page.click('tr[data-sink="out"] button.replay')]);
  check((await page.locator(".notice").innerText()).includes("Requeued 1 dead delivery of out"), "replay requeued 1");

  // 8. Wait until the page shows it delivered.
  const deadline = Date.now() + 20_000;
  let delivered = false;
  while (Date.now() < deadline) {
    await page.goto(`${admin}/`);
    const lastHour = (await page.locator('tr[data-sink="out"] td.last-hour').innerText()).trim();
    const dead = (await page.locator('tr[data-sink="out"] td.dead').innerText()).trim();
    if (lastHour === "1" && dead === "0") {
      delivered = true;
      break;
    }
    await page.waitForTimeout(250);
  }
  check(delivered, "the page shows the delivery delivered and no dead letters");
  check((await page.locator("table#dead").count()) === 0, "the dead list is empty");
  await page.screenshot({ path: join(shots, "status-page-delivered.png"), fullPage: true });
  ok("screenshot status-page-delivered.png");

  check(foreign.length === 0, `no request left the relay (${foreign.join(", ") || "none"})`);
  check(consoleErrors.length === 0, `no script errors (${consoleErrors.join("; ") || "none"})`);
} catch (e) {
  failed = true;
  console.error(`not ok - ${e.message}`);
  try {
    const p = context.pages()[0];
    if (p) {
      await p.screenshot({ path: join(shots, "status-page-failure.png"), fullPage: true });
      console.error(`page at failure: ${p.url()} (screenshot status-page-failure.png)`);
    }
  } catch {
    // The screenshot is a courtesy; the failure above is what counts.
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(failed ? `browser: ${passed} passed, 1 failed` : `browser: ${passed} passed, 0 failed`);
process.exit(failed ? 1 : 0);
