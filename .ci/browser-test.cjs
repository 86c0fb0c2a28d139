// End-to-end test of the admin console in headless Chromium (Debian's package) through
// playwright-core. Started by .ci/browser-test.sh, which installs what this needs and builds
// the binary. It:
//   1. starts a webhook receiver and `wxpay serve` (sandbox mode: no merchant configured) on a
//      temporary SQLite database, with the admin key in WXPAY_AUTH__ADMIN_KEY;
//   2. makes a paid order through the app API and the sandbox's POST /sandbox/api/pay (the
//      sandbox URL is read from the server's stderr), plus an unpaid order and a forged
//      notification;
//   3. logs in to the console, finds the paid order, opens its timeline, presses "Redeliver"
//      on its webhook delivery (when the console offers webhooks), checks the anomalies queue,
//      and takes screenshots (target/console.png: the timeline; target/console-overview.png).
// Any failure exits non-zero.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const http = require("node:http");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");

const ROOT = path.resolve(__dirname, "..");
const PW = process.env.PLAYWRIGHT_CORE_DIR;
const BIN = process.env.WXPAY_BIN || path.join(ROOT, "target", "debug", "wxpay");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ADMIN_KEY = "adm_browser_" + Math.random().toString(36).slice(2, 10);
const API_KEY = "sk_test_change_me";
const SHOT = path.join(ROOT, "target", "console.png");
const SHOT_OVERVIEW = path.join(ROOT, "target", "console-overview.png");
const EVIL_SUBJECT = 'Oolong tea <script>alert("xss")</script>';

function step(msg) {
  console.log(`--- ${msg}`);
}

function fail(msg) {
  throw new Error(msg);
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function until(what, fn, timeoutMs = 30000, everyMs = 200) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) fail(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function api(base, method, p, body, key = API_KEY) {
  const res = await fetch(base + p, {
    method,
    headers: {
      "content-type": "application/json",
      ...(key ? { authorization: `Bearer ${key}` } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch (_) {
    json = text;
  }
  return { status: res.status, json };
}

function startReceiver() {
  const received = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push({ url: req.url, headers: req.headers, body });
      res.writeHead(204);
      res.end();
    });
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, received, port: server.address().port })),
  );
}

function startServer(dir, port, hookPort) {
  const config = path.join(dir, "wxpay.toml");
  fs.writeFileSync(
    config,
    [
      `listen = "127.0.0.1:${port}"`,
      `database_url = "sqlite://${path.join(dir, "wxpay.db")}"`,
      "webhook_retry_secs = [1, 1, 2]",
      "",
      "[[webhooks]]",
      `url = "http://127.0.0.1:${hookPort}/hooks/wxpay"`,
      'secret = "whsec_browser_test"',
      "",
    ].join("\n"),
  );
  const child = spawn(BIN, ["serve", "--config", config], {
    cwd: dir,
    env: { ...process.env, WXPAY_AUTH__ADMIN_KEY: ADMIN_KEY, RUST_LOG: process.env.RUST_LOG || "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const log = fs.createWriteStream(path.join(dir, "server.log"));
  let stderr = "";
  child.stdout.pipe(log);
  child.stderr.on("data", (c) => {
    stderr += c.toString();
    log.write(c);
  });
  const exited = new Promise((resolve) => child.on("exit", (code, sig) => resolve({ code, sig })));
  return { child, exited, stderr: () => stderr, logPath: path.join(dir, "server.log") };
}

async function main() {
  if (!PW) fail("PLAYWRIGHT_CORE_DIR is not set (run .ci/browser-test.sh)");
  const { chromium } = require(PW);
  if (!fs.existsSync(BIN)) fail(`no binary at ${BIN}`);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "wxpay-browser-"));
  const receiver = await startReceiver();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  step(`starting wxpay serve on ${base} (database in ${dir}), webhooks to port ${receiver.port}`);
  const srv = startServer(dir, port, receiver.port);
  let browser = null;
  try {
    const sandbox = await until(
      "the sandbox URL on stderr",
      async () => {
        const exited = await Promise.race([srv.exited, sleep(0).then(() => null)]);
        if (exited) fail(`wxpay serve exited early (${JSON.stringify(exited)}):\n${srv.stderr()}`);
        const m = srv.stderr().match(/built-in WeChat Pay sandbox at (http:\/\/\S+)/);
        return m && m[1];
      },
      120000,
    );
    step(`sandbox at ${sandbox}`);
    await until("/healthz", async () => {
      try {
        return (await fetch(base + "/healthz")).ok;
      } catch (_) {
        return false;
      }
    });

    // A paid order, through the app API and the sandbox's control API.
    let r = await api(base, "POST", "/v1/orders", { user_id: "browser-user", subject: EVIL_SUBJECT, amount_fen: 1288 });
    if (r.status !== 201) fail(`create order: ${r.status} ${JSON.stringify(r.json)}`);
    const orderNo = r.json.order_no;
    r = await api(base, "POST", `/v1/orders/${orderNo}/pay`, { merchant: "legacy-demo", client_ip: "127.0.0.1" });
    if (r.status !== 200) fail(`pay: ${r.status} ${JSON.stringify(r.json)}`);
    const outTradeNo = r.json.out_trade_no;
    const prepayId = r.json.app_params.prepayid;
    r = await api(sandbox, "POST", "/sandbox/api/pay", { prepay_id: prepayId }, null);
    if (r.status !== 200) fail(`sandbox pay: ${r.status} ${JSON.stringify(r.json)}`);
    await until(`order ${orderNo} PAID`, async () => {
      const o = await api(base, "GET", `/v1/orders/${orderNo}`);
      return o.status === 200 && o.json.state === "PAID";
    });
    step(`order ${orderNo} is PAID (attempt ${outTradeNo}, prepay ${prepayId})`);
    // An unpaid order and a forged notification, so the lists and the queue have something else.
    r = await api(base, "POST", "/v1/orders", { user_id: "someone-else", subject: "green tea", amount_fen: 500 });
    if (r.status !== 201) fail(`second order: ${r.status}`);
    const forged = await fetch(`${base}/notify/legacy-demo?out_trade_no=${outTradeNo}&total_fee=1&sign=FORGED`, {
      method: "POST",
      body: "<xml><forged>1</forged></xml>",
    });
    if ((await forged.text()) !== "fail") fail("the forged notification was not refused");

    step("launching Chromium");
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    });
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await context.newPage();
    const pageErrors = [];
    const alerts = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    // (The wrong-key login answers 401 on purpose; Chromium logs that as a console error.)
    page.on("console", (m) => {
      if (m.type() === "error" && !/status of 401/.test(m.text())) pageErrors.push(m.text());
    });
    page.on("response", (res) => {
      if (res.status() >= 500 || res.status() === 404) pageErrors.push(`${res.status()} ${res.url()}`);
    });
    page.on("dialog", async (d) => {
      if (d.type() === "confirm") {
        await d.accept();
      } else {
        alerts.push(d.message());
        await d.dismiss();
      }
    });
    // Nothing may leave the machine: every request goes to our server.
    const foreign = [];
    page.on("request", (req) => {
      const u = new URL(req.url());
      if (u.origin !== base && u.protocol !== "data:") foreign.push(req.url());
    });

    step("a console page without a session leads to the login page");
    await page.goto(`${base}/admin/orders`);
    if (!page.url().startsWith(`${base}/admin/login?next=`)) fail(`not redirected to login: ${page.url()}`);
    await page.fill('input[name="key"]', "wrong-key");
    await page.click('button[type="submit"]');
    await page.waitForLoadState();
    if (!(await page.content()).includes("Wrong admin key")) fail("a wrong key was not refused");

    step("logging in");
    await page.fill('input[name="key"]', ADMIN_KEY);
    await Promise.all([page.waitForURL(`${base}/admin/orders`), page.click('button[type="submit"]')]);
    const cookies = await context.cookies(`${base}/admin/orders`);
    const session = cookies.find((c) => c.name === "wxpay_console");
    if (!session || !session.httpOnly || session.sameSite !== "Strict" || session.path !== "/admin") {
      fail(`session cookie attributes: ${JSON.stringify(session)}`);
    }
    if (session.value.includes(ADMIN_KEY)) fail("the admin key is in the cookie");

    step("finding the paid order");
    await page.selectOption('select[name="state"]', "PAID"); // applies at once (console.js)
    await page.waitForURL(/state=PAID/);
    await page.fill('input[name="q"]', outTradeNo);
    await Promise.all([page.waitForURL(/q=/), page.click('form.filters button[type="submit"]')]);
    const link = page.locator(`a[href="/admin/orders/${orderNo}"]`);
    if ((await link.count()) !== 1) fail(`the paid order is not listed once: ${await page.content()}`);
    const listText = await page.locator("table.orders").innerText();
    if (!listText.includes('<script>alert("xss")</script>')) fail("the subject is not shown literally");
    if (!listText.includes("¥12.88")) fail("the amount is not shown in yuan");

    step("opening its timeline");
    await Promise.all([page.waitForURL(`${base}/admin/orders/${orderNo}`), link.click()]);
    const timeline = await page.locator("ol.timeline").innerText();
    for (const needle of ["Order created", outTradeNo, prepayId, "Notification #", "verified", "order.paid"]) {
      if (!timeline.includes(needle)) fail(`timeline lacks ${needle}:\n${timeline}`);
    }
    if (timeline.indexOf("Order created") > timeline.indexOf("order.paid")) fail("timeline out of order");

    const webhooksPage = await fetch(`${base}/admin/webhooks`, {
      headers: { cookie: `wxpay_console=${session.value}` },
      redirect: "manual",
    }).then((x) => x.text());
    const hasWebhooks = webhooksPage.includes("Webhook deliveries") && webhooksPage.includes("Endpoints:");
    if (hasWebhooks) {
      step("waiting for the order.paid webhook, then pressing Redeliver");
      await until(
        "the webhook delivery on the timeline",
        async () => {
          await page.reload();
          return (await page.locator("ol.timeline li.k-webhook").count()) > 0 &&
            (await page.locator("ol.timeline li.k-webhook").first().innerText()).includes("DELIVERED");
        },
        60000,
        500,
      );
      const before = receiver.received.length;
      if (before < 1) fail("the receiver got no webhook");
      await Promise.all([
        page.waitForURL(/msg=redelivered/),
        page.locator("ol.timeline li.k-webhook button.redeliver").first().click(),
      ]);
      const flash = await page.locator("p.flash").innerText();
      if (!flash.includes("queued for delivery again")) fail(`no confirmation after redeliver: ${flash}`);
      await until("the redelivered webhook at the receiver", async () => receiver.received.length > before, 30000);
      const last = receiver.received[receiver.received.length - 1];
      if (!last.body.includes(orderNo)) fail("the redelivered webhook is not about the order");
      await until(
        "the redelivery shown as DELIVERED",
        async () => {
          await page.goto(`${base}/admin/orders/${orderNo}`);
          return (await page.locator("ol.timeline li.k-webhook").first().innerText()).includes("DELIVERED");
        },
        30000,
        500,
      );
      console.log(`    receiver got ${receiver.received.length} deliveries (${before} before the redeliver)`);
    } else {
      console.log("NOTE: this build of the console offers no webhook deliveries; the redeliver step is skipped");
    }

    step(`screenshot of the timeline: ${SHOT}`);
    await page.screenshot({ path: SHOT, fullPage: true });

    step("the anomalies queue lists the forged notification");
    await page.click('header nav a[href="/admin/anomalies"]');
    await page.waitForURL(`${base}/admin/anomalies`);
    const queue = await page.locator("table.queue").innerText();
    if (!queue.includes("REJECTED_NOTIFICATION")) fail(`forged notification not in the queue:\n${queue}`);
    await page.fill("tr.receipt input[name=resolution]", "forged by the browser test");
    await Promise.all([page.waitForURL(/msg=resolved/), page.click("tr.receipt button[type=submit]")]);
    if (!(await page.content()).includes("Nothing to review.")) fail("the queue is not empty after resolving");

    step("overview chart");
    await page.goto(`${base}/admin?hours=1`);
    const bars = await page.locator("svg.chart rect.bar").count();
    if (bars < 1) fail("no bar in the payments chart");
    await page.screenshot({ path: SHOT_OVERVIEW, fullPage: true });

    step("reconciliation page");
    await page.click('header nav a[href="/admin/reconciliation"]');
    await page.waitForURL(`${base}/admin/reconciliation`);
    const rec = await page.locator("main").innerText();
    if (!rec.includes("No reconciliation reports yet") && !rec.includes("Bill date")) fail(`reconciliation page: ${rec}`);

    step("logging out");
    await Promise.all([page.waitForURL(/\/admin\/login/), page.click("form.logout button")]);
    await page.goto(`${base}/admin`);
    if (!page.url().startsWith(`${base}/admin/login`)) fail("still logged in after logout");

    if (alerts.length) fail(`a script ran on a page: alert(${alerts.join(", ")})`);
    if (pageErrors.length) fail(`errors in the page: ${pageErrors.join("; ")}`);
    if (foreign.length) fail(`requests left the server: ${foreign.join(", ")}`);
    const html = fs.existsSync(SHOT) ? fs.statSync(SHOT).size : 0;
    if (html < 10000) fail(`the screenshot is suspiciously small (${html} bytes)`);
    console.log(`browser test: passed (screenshots ${SHOT}, ${SHOT_OVERVIEW})`);
  } catch (e) {
    console.error(`browser test: FAILED: ${e && e.stack ? e.stack : e}`);
    console.error(`server log (${srv.logPath}):\n${srv.stderr().slice(-4000)}`);
    process.exitCode = 1;
  } finally {
    if (browser) await browser.close().catch(() => {});
    srv.child.kill("SIGTERM");
    const done = await Promise.race([srv.exited, sleep(10000).then(() => null)]);
    if (!done) srv.child.kill("SIGKILL");
    receiver.server.close();
    if (!process.exitCode) fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`browser test: FAILED: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
