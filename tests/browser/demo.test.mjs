// The demo page in a real browser (headless Chromium through playwright-core), loaded from
// an origin other than the API's, calling the API with an API key: the student picker, the
// answer and its source, a CORS preflight that really happened, a wrong key, and an origin
// the API does not allow, which the browser must block.
//
//   cd tests/browser && npm ci && npm test
//
// Environment: RANKING_API_BIN (default $CARGO_TARGET_DIR/debug/ranking-api, built by
// `cargo build -p ranking-api`), CHROMIUM (default /usr/bin/chromium), SCREENSHOT_DIR
// (default target/browser at the repository root).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR) : path.join(root, "target");
const apiBin = process.env.RANKING_API_BIN ?? path.join(targetDir, "debug", "ranking-api");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const shots = process.env.SCREENSHOT_DIR ?? path.join(root, "target", "browser");
const KEY = `demo-key-${process.pid}-${Date.now()}`;

let api; // { process, url, log }
let proxy; // recorder in front of the API: { url, seen: [...] }
let allowedPage; // origin in CORS_ORIGINS serving the demo page
let blockedPage; // another origin, not in CORS_ORIGINS
let browser;
let dataDir;

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function listen(server, port = 0) {
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(`http://127.0.0.1:${server.address().port}`)));
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, deadlineMs, probe) {
  const end = Date.now() + deadlineMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await probe();
      if (last.ok) return last.value;
    } catch (e) {
      last = { detail: e.message };
    }
    if (api.process.exitCode !== null) break;
    await sleep(200);
  }
  throw new Error(`${what} (last: ${JSON.stringify(last?.detail ?? last)})\n--- ranking-api log ---\n${api.log.join("")}`);
}

/** A static server that serves the page bytes the API serves at `/`, from its own origin. */
async function pageServer(html, port = 0) {
  const server = http.createServer((req, res) => {
    if (req.url === "/" || req.url.startsWith("/?")) {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      res.end(html);
    } else {
      res.writeHead(404).end();
    }
  });
  return { server, url: await listen(server, port) };
}

/**
 * Forwards every request to the API and records what the browser sent and got back:
 * the only way to see a CORS preflight, which the page's own code never sees.
 */
async function recorder(target) {
  const seen = [];
  const server = http.createServer((req, res) => {
    const upstream = http.request(
      `${target}${req.url}`,
      { method: req.method, headers: req.headers },
      (answer) => {
        seen.push({
          method: req.method,
          path: req.url,
          origin: req.headers.origin ?? null,
          requestHeaders: req.headers["access-control-request-headers"] ?? null,
          apiKey: req.headers["x-api-key"] ?? null,
          status: answer.statusCode,
          allowOrigin: answer.headers["access-control-allow-origin"] ?? null,
          allowHeaders: answer.headers["access-control-allow-headers"] ?? null,
        });
        res.writeHead(answer.statusCode, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", (e) => {
      res.writeHead(502).end(e.message);
    });
    req.pipe(upstream);
  });
  return { server, seen, url: await listen(server) };
}

before(async () => {
  assert.ok(fs.existsSync(apiBin), `no ranking-api binary at ${apiBin}: run \`cargo build -p ranking-api\` (or set RANKING_API_BIN)`);
  assert.ok(fs.existsSync(chromiumPath), `no Chromium at ${chromiumPath}: apt-get install chromium (or set CHROMIUM)`);

  // Origin B serves the page and is the one origin the API allows.
  const pagePort = await freePort();
  const pageOrigin = `http://127.0.0.1:${pagePort}`;
  const apiPort = await freePort();
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "browser-demo-"));
  const log = [];
  const child = spawn(apiBin, ["--addr", `127.0.0.1:${apiPort}`], {
    env: { ...process.env, DATA_DIR: dataDir, API_KEY: KEY, CORS_ORIGINS: pageOrigin, RUST_LOG: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.on("data", (d) => log.push(d.toString()));
  child.stderr.on("data", (d) => log.push(d.toString()));
  api = { process: child, url: `http://127.0.0.1:${apiPort}`, log };

  await waitFor("the API did not come up", 30_000, async () => ({ ok: (await fetch(`${api.url}/health`)).ok }));
  // A fresh data directory: the demo dataset is seeded and a first model trained in the background.
  await waitFor("the API never answered from its embedded model", 180_000, async () => {
    const body = await (await fetch(`${api.url}/ranking/s-0001?numResults=1`, { headers: { "x-api-key": KEY } })).json();
    return { ok: body.source === "embedded", detail: body };
  });

  const html = await (await fetch(`${api.url}/`)).text();
  assert.match(html, /\/students\?limit=/, "the API serves the demo page with the student picker");
  proxy = await recorder(api.url);
  allowedPage = await pageServer(html, pagePort);
  assert.equal(allowedPage.url, pageOrigin);
  blockedPage = await pageServer(html);

  try {
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] });
  } catch (e) {
    throw new Error(`Chromium (${chromiumPath}) did not start: ${e.message}`);
  }
});

after(async () => {
  await browser?.close();
  for (const s of [proxy, allowedPage, blockedPage]) s?.server.close();
  api?.process.kill();
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

async function openDemo(origin, key) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  const query = new URLSearchParams({ api: proxy.url, key });
  await page.goto(`${origin}/?${query}`);
  await page.waitForSelector("body[data-students]");
  return { page, context, consoleErrors };
}

async function submitted(page) {
  await page.waitForSelector("body[data-loaded]", { timeout: 15_000 });
  return page.evaluate(() => document.body.dataset.loaded);
}

test("a student picked from the API's own list gets recommendations with their source, after a CORS preflight", async () => {
  const { page, context } = await openDemo(allowedPage.url, KEY);
  try {
    assert.equal(await page.evaluate(() => document.body.dataset.students), "200");
    assert.match(await page.textContent("#roster"), /^600 students in the API's data, the first 200 listed\./);
    const options = await page.$$eval("#student option", (os) => os.map((o) => [o.value, o.textContent]));
    assert.deepEqual(options[1], ["s-0001", options[1][1]]);
    assert.match(options[1][1], /^s-0001 \(\d+ classes\)$/);
    assert.equal(options.at(-1)[0], "newcomer");

    const before = proxy.seen.length;
    await page.selectOption("#student", "s-0007");
    assert.equal(await submitted(page), "embedded");
    assert.equal(await page.textContent("#status .badge"), "embedded");
    assert.equal(await page.getAttribute("#results", "class"), "src-embedded");
    const rows = await page.$$eval("#results tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
    assert.equal(rows.length, 10, "numResults=10 from the form");
    for (const [rank, item, score] of rows) {
      assert.match(item, /^[a-z]+-\d{3}$/, `row ${rank}: a class id`);
      assert.match(score, /^\d+\.\d{4}$/, `row ${rank}: a score`);
    }
    assert.equal(await page.textContent("#why"), "", "no fallback reason for an embedded answer");
    fs.mkdirSync(shots, { recursive: true });
    await page.screenshot({ path: path.join(shots, "demo.png"), fullPage: true });

    // What went over the wire: a preflight for the x-api-key header, allowed, then the GET.
    const exchange = proxy.seen.slice(before).filter((r) => r.path.startsWith("/ranking/s-0007?"));
    assert.deepEqual(exchange.map((r) => r.method), ["OPTIONS", "GET"], JSON.stringify(exchange));
    const [preflight, get] = exchange;
    assert.equal(preflight.origin, allowedPage.url);
    assert.match(preflight.requestHeaders, /x-api-key/);
    assert.ok(preflight.status >= 200 && preflight.status < 300, `preflight answered ${preflight.status}`);
    assert.equal(preflight.allowOrigin, allowedPage.url);
    assert.match(preflight.allowHeaders, /x-api-key/);
    assert.equal(get.origin, allowedPage.url);
    assert.equal(get.apiKey, KEY);
    assert.equal(get.status, 200);
    assert.equal(get.allowOrigin, allowedPage.url);

    // A student with no history: popular items, flagged, with the reason.
    await page.selectOption("#student", "newcomer");
    assert.equal(await submitted(page), "fallback");
    assert.equal(await page.textContent("#status .badge"), "fallback");
    assert.equal(await page.getAttribute("#results", "class"), "src-fallback");
    assert.match(await page.textContent("#why"), /^Fallback because unknown_user: /);
    assert.equal(await page.$$eval("#results tbody tr", (trs) => trs.length), 10);
    await page.screenshot({ path: path.join(shots, "demo-fallback.png"), fullPage: true });
  } finally {
    await context.close();
  }
});

test("a wrong API key shows the API's 401 (readable because the 401 carries CORS headers)", async () => {
  const { page, context } = await openDemo(allowedPage.url, "not-the-key");
  try {
    assert.equal(await page.evaluate(() => document.body.dataset.students), "error");
    assert.match(await page.textContent("#roster"), /^Could not list students \(401 /);
    const before = proxy.seen.length;
    await page.fill("#user", "s-0001");
    await page.click("#go");
    assert.equal(await submitted(page), "error");
    assert.equal(await page.textContent("#status .badge"), "401 unauthorized");
    assert.match(await page.textContent("#status"), /a valid x-api-key header is required/);
    assert.ok(await page.isHidden("#results"));
    const get = proxy.seen.slice(before).find((r) => r.method === "GET" && r.path.startsWith("/ranking/s-0001?"));
    assert.ok(get, "the GET reached the API");
    assert.equal(get.status, 401);
    assert.equal(get.apiKey, "not-the-key");
    await page.screenshot({ path: path.join(shots, "demo-wrong-key.png"), fullPage: true });
  } finally {
    await context.close();
  }
});

test("an origin not in CORS_ORIGINS is blocked by the browser, though the API itself answers", async () => {
  const { page, context, consoleErrors } = await openDemo(blockedPage.url, KEY);
  try {
    assert.equal(await page.evaluate(() => document.body.dataset.students), "error");
    await page.fill("#user", "s-0001");
    await page.click("#go");
    assert.equal(await submitted(page), "error");
    assert.equal(await page.textContent("#status .badge"), "network error");
    assert.ok(await page.isHidden("#results"));
    assert.ok(
      consoleErrors.some((m) => m.includes("CORS policy")),
      `Chromium reports the CORS block: ${JSON.stringify(consoleErrors)}`,
    );
    // The browser asked, was not allowed, and never sent the GET.
    const fromBlocked = proxy.seen.filter((r) => r.origin === blockedPage.url && r.path.startsWith("/ranking/s-0001?"));
    assert.deepEqual(fromBlocked.map((r) => r.method), ["OPTIONS"], JSON.stringify(fromBlocked));
    assert.equal(fromBlocked[0].allowOrigin, null, "no Access-Control-Allow-Origin for a foreign origin");
    // Outside a browser the same request succeeds: it is CORS that blocked it, not the API.
    const direct = await fetch(`${proxy.url}/ranking/s-0001?numResults=10`, { headers: { "x-api-key": KEY } });
    assert.equal(direct.status, 200);
  } finally {
    await context.close();
  }
});
