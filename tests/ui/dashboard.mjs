// Drives Ferry's dashboard in Debian's Chromium: a wrong token is refused; the right one
// logs in; a session's page, opened while its tasks are held, listens on the WebSocket
// (the token as its subprotocol), and once the tasks are let go ($RELEASE written) its
// progress reaches 100 % from the socket's progress messages; its failed task shows its
// traceback and timeline; the endpoint shows online. Screenshots go to $SHOTS. Run by
// tests/e2e/test_dashboard.py, which starts the stack and the session:
//   FERRY_URL=... FERRY_TOKEN=... SESSION_ID=... FAILED_TASK_ID=... ENDPOINT_ID=... SHOTS=dir RELEASE=file node dashboard.mjs
import { mkdirSync, writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const { FERRY_URL, FERRY_TOKEN, SESSION_ID, FAILED_TASK_ID, ENDPOINT_ID, SHOTS, RELEASE } = process.env;
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const failures = [];
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.on("pageerror", (e) => failures.push(`the page threw: ${e.message}`));
const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
const check = (ok, what) => { if (!ok) failures.push(what); };
// What the page's WebSockets received, by message type.
const received = {};
page.on("websocket", (ws) => {
  ws.on("framereceived", ({ payload }) => {
    const type = JSON.parse(payload).type;
    received[type] = (received[type] || 0) + 1;
  });
});

try {
  await page.goto(`${FERRY_URL}/ui`);
  await page.fill("#token", "fy_not-a-token");
  await page.click("#login-form button");
  await page.waitForSelector("#login-error:not(:empty)");
  check((await page.textContent("#login-error")).includes("refused"), "a wrong token is refused");
  await shot("login");

  await page.fill("#token", FERRY_TOKEN);
  await page.click("#login-form button");
  await page.waitForSelector(`a[href="#/session/${SESSION_ID}"]`, { timeout: 30_000 });
  await shot("sessions");

  await page.click(`a[href="#/session/${SESSION_ID}"]`);
  await page.waitForSelector("#session-done", { timeout: 30_000 });
  await page.waitForFunction(() => document.body.dataset.live === "socket", null, { timeout: 30_000 });
  check(!(await page.textContent("#session-done")).startsWith("100%"), "the session is still running when its page opens");
  writeFileSync(RELEASE, "go");
  await page.waitForFunction(
    () => (document.querySelector("#session-done")?.textContent ?? "").startsWith("100%"),
    null,
    { timeout: 120_000 },
  );
  check((await page.textContent("#session-status")) === "completed", "the session shows completed");
  const filled = await page.$$eval(".bar span", (spans) => spans.map((e) => e.getBoundingClientRect().width));
  const bar = await page.$eval(".bar", (e) => e.getBoundingClientRect().width);
  check(Math.abs(filled.reduce((a, b) => a + b, 0) - bar) < 2, `the progress bar is full at 100 %: ${filled} of ${bar}`);
  check(received.subscribed >= 1 && received.progress >= 1, `the page heard the session move on its socket: ${JSON.stringify(received)}`);
  check(await page.evaluate(() => document.body.dataset.live === ""), "the socket closes once the session is done");
  await shot("session");

  await page.fill("#search-id", FAILED_TASK_ID);
  await page.click("#search button");
  await page.waitForSelector("#traceback", { timeout: 30_000 });
  check((await page.textContent("#task-status")) === "failed", "the failed task shows failed");
  check((await page.textContent("#traceback")).includes("ValueError: unlucky"), "its traceback is shown");
  const steps = await page.$$eval("#timeline .step", (s) => s.map((e) => e.className));
  check(steps.length >= 4 && steps[steps.length - 1].includes("failed"), `its timeline ends failed: ${steps}`);
  const lengths = await page.$$eval("#timeline .len", (bars) => bars.map((e) => Math.round(e.getBoundingClientRect().width)));
  check(new Set(lengths).size > 1, `the timeline draws each step to scale: ${lengths}`);
  await shot("task");

  await page.click('a[href="#/endpoints"]');
  await page.waitForSelector("td.status", { timeout: 30_000 });
  const endpoint = await page.textContent("main");
  check(endpoint.includes(ENDPOINT_ID) && endpoint.includes("online"), "the endpoint shows online");
  await shot("endpoints");

  await page.click(`a[href="#/endpoint/${ENDPOINT_ID}"]`);
  await page.waitForSelector("#managers td", { timeout: 30_000 });
  check((await page.textContent("#endpoint-status")) === "online", "the endpoint's page shows it online");
  const managers = await page.$$eval("#managers tr", (rows) => rows.slice(1).map((r) => r.textContent));
  check(managers.length === 1 && /cores/.test(managers[0]), `its page lists its manager: ${managers}`);
  const blocks = await page.textContent("main");
  check(blocks.includes("local-1") && blocks.includes("running"), "its page lists its running block");
  await shot("endpoint");
} catch (e) {
  failures.push(`${e.message}`);
  await shot("error").catch(() => {});
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`dashboard ok; screenshots in ${SHOTS}`);
