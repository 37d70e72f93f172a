// End-to-end test of the demo page in headless Chromium.
//
// Serves web/ on 127.0.0.1, opens the page, waits for training steps, and
// checks what a person would see: the adapter's name, charts with data, a
// falling loss, captions, and a console without errors. It also opens the
// page in a browser without WebGPU and checks the plain-words message.
// Screenshots go to web/e2e/out/ (git-ignored).
//
// Environment:
//   CHROMIUM      browser binary (default /usr/bin/chromium)
//   E2E_STEPS     training steps to wait for (default 40)
//   E2E_TIMEOUT_S seconds to wait for them (default 300)
//   E2E_CONFIG    the page's model configuration, `tiny` or `demo`
//                 (default: none, so the page picks as it does for a person;
//                 it picks `tiny` on a software adapter such as SwiftShader)

import { createServer } from "node:http";
import { readFile, mkdir } from "node:fs/promises";
import { extname, join, normalize, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const webRoot = resolve(here, "..");
const outDir = join(here, "out");
const steps = Number(process.env.E2E_STEPS ?? 40);
const timeoutMs = Number(process.env.E2E_TIMEOUT_S ?? 300) * 1000;
const query = process.env.E2E_CONFIG ? `?config=${process.env.E2E_CONFIG}` : "";

// The flags that give headless Chromium a WebGPU adapter without a GPU
// (SwiftShader, Chromium's CPU Vulkan driver).
const WEBGPU_FLAGS = [
  "--no-sandbox",
  "--enable-unsafe-webgpu",
  "--enable-features=Vulkan",
  "--use-vulkan=native",
  "--disable-gpu-sandbox",
  "--ignore-gpu-blocklist",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
];

const MIME = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".png": "image/png",
};

/** A static file server for web/, on loopback (a secure context for WebGPU). */
function serve() {
  const server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname));
    const file = join(webRoot, path.endsWith("/") ? `${path}index.html` : path);
    if (!file.startsWith(webRoot)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": MIME[extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end("not found");
    }
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

const failures = [];
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
}

/** Opens the page and records console errors and uncaught exceptions. */
async function open(browser, url, init) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  const problems = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console.error: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`uncaught: ${err.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  if (init) await page.addInitScript(init);
  await page.goto(url);
  return { page, problems };
}

async function trainingPage(browser, base) {
  const t0 = Date.now();
  const { page, problems } = await open(browser, `${base}/index.html${query}`);
  try {
    await page.waitForFunction(
      (n) => window.gradclipDemo?.step >= n || ["error", "unavailable"].includes(window.gradclipDemo?.phase),
      steps,
      { timeout: timeoutMs, polling: 500 },
    );
  } catch (err) {
    check(false, `reached ${steps} steps within ${timeoutMs / 1000} s (${err.message.split("\n")[0]})`);
  }
  // Let the last redraw and sample refresh land before looking.
  await page.waitForTimeout(500);
  const state = await page.evaluate(() => ({
    ...window.gradclipDemo,
    adapterText: document.getElementById("adapter").textContent,
    status: document.getElementById("status").textContent,
    captions: [...document.querySelectorAll(".sample .said")].map((e) => e.textContent),
  }));
  const seconds = (Date.now() - t0) / 1000;
  console.log(`page: phase ${state.phase}, step ${state.step} after ${seconds.toFixed(1)} s`);
  console.log(`page: ${state.adapterText}`);
  console.log(`page: ${state.status}`);

  // How many pixels of each chart differ from the blank background.
  const inked = await page.evaluate(() =>
    ["loss-chart", "norm-chart"].map((id) => {
      const c = document.getElementById(id);
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n;
    }),
  );

  check(state.phase === "training", `page is training (phase ${state.phase})`);
  check(state.errors.length === 0, `no errors reported by the page ${JSON.stringify(state.errors)}`);
  check(/WebGPU adapter: \S/.test(state.adapterText), "adapter name shown");
  check(state.step >= steps, `at least ${steps} steps (got ${state.step})`);
  check(state.lossPointsDrawn > 0 && state.normPointsDrawn > 0,
    `charts have data (loss ${state.lossPointsDrawn} points, norms ${state.normPointsDrawn})`);
  check(inked[0] > 2000 && inked[1] > 2000, `charts are drawn (${inked.join(", ")} inked pixels)`);
  const losses = state.losses;
  const k = Math.max(1, Math.floor(losses.length / 5));
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const first = mean(losses.slice(0, k));
  const last = mean(losses.slice(-k));
  check(last < 0.9 * first, `loss fell: mean of first ${k} ${first.toFixed(4)}, last ${k} ${last.toFixed(4)}`);
  check(state.captions.length > 0, `sample captions shown (${state.captions.length})`);
  check(problems.length === 0, `console has no errors ${JSON.stringify(problems)}`);

  // Pause, and check that training stops.
  if (state.phase !== "training") {
    await page.screenshot({ path: join(outDir, "training.png"), fullPage: true });
    await page.close();
    return;
  }
  await page.click("#run");
  await page.waitForTimeout(1000);
  const paused = await page.evaluate(() => window.gradclipDemo.step);
  await page.waitForTimeout(1500);
  const later = await page.evaluate(() => window.gradclipDemo.step);
  check(later === paused, `pause stops training (step ${paused} then ${later})`);

  // The controls reach the trainer: global mode gives every group the same
  // coefficient; "off" clips nothing.
  const stepsAfter = async (n) => {
    const from = await page.evaluate(() => window.gradclipDemo.step);
    await page.click("#run");
    await page.waitForFunction((k) => window.gradclipDemo.step >= k, from + n, { timeout: 120000 });
    await page.click("#run");
    await page.waitForFunction(() => window.gradclipDemo.phase === "paused");
    return page.$$eval("#last-step tbody tr", (rows) => rows.map((r) => r.cells[2].textContent));
  };
  await page.selectOption("#mode", "global");
  await page.fill("#max-norm", "0.001");
  await page.dispatchEvent("#max-norm", "change");
  const global = await stepsAfter(2);
  check(global.length > 1 && global.every((c) => c === global[0] && Number(c) < 1),
    `global mode: one coefficient below 1 for every group (${global.join(", ")})`);
  await page.selectOption("#mode", "off");
  const off = await stepsAfter(2);
  check(off.length > 1 && off.every((c) => c === "not clipped"), `clip mode off (${off.join(", ")})`);

  await page.screenshot({ path: join(outDir, "training.png"), fullPage: true });
  await page.close();
}

async function noWebGpuPages(base) {
  // Without --enable-unsafe-webgpu, Chromium on Linux has navigator.gpu but
  // returns no adapter.
  const plain = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
  try {
    const cases = [
      ["no-adapter", null, "no graphics adapter"],
      ["no-navigator-gpu", () => { delete Navigator.prototype.gpu; }, "does not offer WebGPU"],
    ];
    for (const [name, init, words] of cases) {
      const { page, problems } = await open(plain, `${base}/index.html`, init);
      await page.waitForFunction(() => ["unavailable", "error", "training"].includes(document.body.dataset.phase),
        null, { timeout: 30000 }).catch(() => {});
      const seen = await page.evaluate(() => ({
        phase: document.body.dataset.phase,
        title: document.getElementById("problem-title").textContent,
        visible: !document.getElementById("problem").hidden,
        tips: document.querySelectorAll("#problem-tips li").length,
      }));
      check(seen.phase === "unavailable" && seen.visible && seen.title.includes(words) && seen.tips > 0,
        `${name}: plain-words message ("${seen.title}", ${seen.tips} tips)`);
      check(problems.length === 0, `${name}: no console errors or uncaught exceptions ${JSON.stringify(problems)}`);
      await page.screenshot({ path: join(outDir, `${name}.png`), fullPage: true });
      await page.close();
    }
  } finally {
    await plain.close();
  }
}

const server = await serve();
const base = `http://127.0.0.1:${server.address().port}`;
await mkdir(outDir, { recursive: true });
console.log(`serving ${webRoot} at ${base}`);
let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: WEBGPU_FLAGS,
  });
  await trainingPage(browser, base);
  await noWebGpuPages(base);
} catch (err) {
  check(false, `test ran to the end (${err.stack ?? err})`);
} finally {
  await browser?.close();
  server.close();
}
console.log(`screenshots in ${outDir}`);
if (failures.length) {
  console.log(`${failures.length} check(s) failed`);
  process.exit(1);
}
console.log("all page checks passed");
