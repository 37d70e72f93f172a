// Drives the demo page: checks for WebGPU, loads the wasm package, runs the
// training loop and draws its progress. Every failure ends up as a message
// on the page (and in `window.gradclipDemo.errors`), never as an uncaught
// exception.

import { LineChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

// What the end-to-end test (and a curious person in the console) can read.
const state = {
  phase: "starting",
  adapter: "",
  step: 0,
  losses: [],
  errors: [],
};
window.gradclipDemo = state;

const GROUP_COLORS = ["#2a6fdb", "#d9822b", "#1b9e77", "#c0398f", "#7a5cc7", "#8c6d31"];
const SAMPLE_EVERY = 10;
const HISTORY = 5000;

function setPhase(phase) {
  state.phase = phase;
  document.body.dataset.phase = phase;
}

function showProblem(title, text, tips) {
  setPhase("unavailable");
  $("adapter").textContent = "No WebGPU adapter.";
  $("problem-title").textContent = title;
  $("problem-text").textContent = text;
  const list = $("problem-tips");
  list.replaceChildren(...tips.map((t) => Object.assign(document.createElement("li"), { textContent: t })));
  $("problem").hidden = false;
  $("demo").hidden = true;
}

function reportError(where, err) {
  const message = `${where}: ${err && err.message ? err.message : String(err)}`;
  state.errors.push(message);
  setPhase("error");
  $("run").textContent = "Start";
  $("run").disabled = true;
  $("status").textContent = message;
  $("status").classList.add("error");
  if ($("demo").hidden) {
    $("problem-title").textContent = where;
    $("problem-text").textContent = message;
    $("problem-tips").replaceChildren();
    $("problem").hidden = false;
  }
  console.error(message);
}

const NO_WEBGPU_TIPS = [
  "Use a current Chrome or Edge (version 113 or later) on Windows, macOS or ChromeOS; " +
    "Safari 26 or later; or Firefox 141 or later on Windows.",
  "On Linux, Chrome needs WebGPU switched on: open chrome://flags, enable " +
    "\"Unsafe WebGPU Support\" and \"Vulkan\", then restart the browser.",
  "Open the page from http://localhost or http://127.0.0.1 (or https): browsers hide WebGPU " +
    "on other plain-http addresses.",
];

const NO_ADAPTER_TIPS = [
  "Turn on hardware acceleration in the browser's settings (Chrome: Settings, System, " +
    "\"Use graphics acceleration when available\"), then restart it.",
  "Open chrome://gpu (or about:support in Firefox) and look at the WebGPU line: your GPU or " +
    "driver may be on the browser's block list. Updating the graphics driver often helps.",
  "In Chrome you can try chrome://flags, \"Unsafe WebGPU Support\", which also allows a " +
    "software adapter when there is no usable GPU.",
  "Close other tabs that use the GPU heavily; a lost device can leave no adapter for a while.",
];

/** Finds an adapter from JavaScript first, so that a missing one gets a plain message. */
async function probeWebGpu() {
  if (!("gpu" in navigator) || !navigator.gpu) {
    showProblem(
      "This browser does not offer WebGPU",
      "The demo trains a neural network on your graphics processor through WebGPU, and " +
        "this browser does not provide it (there is no navigator.gpu). Things to try:",
      NO_WEBGPU_TIPS,
    );
    return null;
  }
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (err) {
    state.errors.push(`requestAdapter threw: ${err}`);
  }
  if (!adapter) {
    showProblem(
      "WebGPU is switched on, but no graphics adapter is available",
      "The browser supports WebGPU but returned no adapter, so there is nothing to train on. " +
        "Things to try:",
      NO_ADAPTER_TIPS,
    );
    return null;
  }
  const info = adapter.info ?? {};
  const parts = [info.vendor, info.architecture, info.description].filter((s) => s);
  const name = parts.length ? parts.join(" · ") : "unnamed adapter";
  const fallback = Boolean(adapter.isFallbackAdapter || info.isFallbackAdapter);
  return { name: fallback ? `${name} (software fallback)` : name, fallback };
}

async function loadWasm() {
  try {
    const wasm = await import("./pkg/wgpu_gradclip_web.js");
    await wasm.default();
    return wasm;
  } catch (err) {
    reportError("Could not load the WebAssembly package; build it with " +
      "`wasm-pack build web --target web`", err);
    return null;
  }
}

function drawSamples(samples) {
  const cells = samples.map((s) => {
    const cell = document.createElement("div");
    cell.className = "sample";
    const canvas = document.createElement("canvas");
    canvas.width = s.width;
    canvas.height = s.height;
    canvas.getContext("2d").putImageData(
      new ImageData(new Uint8ClampedArray(s.rgba), s.width, s.height), 0, 0);
    const said = document.createElement("div");
    said.className = `said ${s.caption === s.truth ? "right" : "wrong"}`;
    said.textContent = s.caption || "(empty caption)";
    const truth = document.createElement("div");
    truth.className = "truth";
    truth.textContent = `true: ${s.truth}`;
    cell.append(canvas, said, truth);
    return cell;
  });
  $("samples").replaceChildren(...cells);
}

async function main() {
  const adapter = await probeWebGpu();
  if (!adapter) return;
  state.adapter = adapter.name;
  $("adapter").textContent = `WebGPU adapter: ${adapter.name}`;
  // A software adapter needs minutes to set up the full model and runs it
  // at well under one step per second, so it gets the reduced one.
  let config = params.get("config");
  if (!config) {
    config = adapter.fallback ? "tiny" : "demo";
    if (adapter.fallback) {
      $("adapter").textContent += " — a CPU stand-in for a GPU, so this page trains the reduced " +
        "model (add ?config=demo to the address for the full one)";
    }
  }

  const wasm = await loadWasm();
  if (!wasm) return;
  $("demo").hidden = false;

  if (typeof wasm.Demo !== "function") {
    reportError("This build cannot train", new Error(
      "the WebAssembly package was built without the toy model (the `toy` feature of web/Cargo.toml)"));
    return;
  }
  let demo;
  try {
    $("status").textContent = "Building the model and compiling shaders…";
    demo = await wasm.Demo.create(config);
  } catch (err) {
    reportError("Could not start training", err);
    return;
  }
  const lossChart = new LineChart($("loss-chart"), { logY: true, floor: 1e-4 });
  const normChart = new LineChart($("norm-chart"), { logY: true, floor: 1e-5 });
  const textLoss = [];
  const flamingoLoss = [];
  const maxNormPoints = [];
  let groups = [];
  let normPoints = [];
  let clippedSteps = 0;
  let flamingoSteps = 0;

  // The clip groups are known once the Flamingo stage reports them.
  const setGroups = (names) => {
    groups = names;
    normPoints = names.map(() => []);
    const legend = names.map((g, i) => {
      const span = document.createElement("span");
      span.style.setProperty("--swatch", GROUP_COLORS[i % GROUP_COLORS.length]);
      span.textContent = g;
      return span;
    });
    const line = Object.assign(document.createElement("span"), { className: "dashed", textContent: "max_norm" });
    line.style.setProperty("--swatch", "#b3261e");
    $("norm-legend").replaceChildren(...legend, line);
  };

  const mode = $("mode");
  const maxNorm = $("max-norm");
  const applySettings = () => {
    try {
      demo.setClipMode(mode.value);
      demo.setMaxNorm(Number(maxNorm.value));
      maxNorm.setCustomValidity("");
    } catch (err) {
      maxNorm.setCustomValidity(String(err.message ?? err));
      maxNorm.reportValidity();
    }
    maxNorm.disabled = mode.value === "off";
  };
  maxNorm.value = String(Number(demo.maxNorm().toPrecision(6)));
  mode.addEventListener("change", applySettings);
  maxNorm.addEventListener("change", applySettings);
  applySettings();

  const showLastStep = (s) => {
    const rows = groups.map((g, i) => {
      const tr = document.createElement("tr");
      const c = s.coefficients[i];
      const cells = [g, s.groupNorms[i].toPrecision(3), mode.value === "off" ? "not clipped" : c.toPrecision(3)];
      tr.replaceChildren(...cells.map((text, k) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (k === 2 && c < 1) td.className = "clipped";
        return td;
      }));
      return tr;
    });
    $("last-step").tBodies[0].replaceChildren(...rows);
    $("last-step").hidden = false;
  };

  let drawQueued = false;
  const redraw = () => {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      state.lossPointsDrawn = lossChart.draw([
        { color: "#9aa0a6", points: textLoss },
        { color: "#1d1f21", points: flamingoLoss },
      ]);
      state.normPointsDrawn = normChart.draw([
        ...normPoints.map((points, i) => ({ color: GROUP_COLORS[i % GROUP_COLORS.length], points })),
        { color: "#b3261e", points: maxNormPoints, dashed: true },
      ]);
    });
  };
  redraw();

  let running = false;
  let rateStart = performance.now();
  let rateSteps = 0;
  const run = $("run");

  const refreshSamples = async () => drawSamples(await demo.samples(6));

  // One loop at most: pausing only asks it to stop after the step (or the
  // sample refresh) it is awaiting, and starting again while it still runs
  // lets it carry on instead of racing a second loop against it.
  let looping = false;
  const loop = async () => {
    looping = true;
    try {
      await trainWhileRunning();
    } finally {
      looping = false;
    }
  };

  const trainWhileRunning = async () => {
    while (running) {
      const s = await demo.step();
      state.step = s.step;
      state.stage = s.stage;
      state.losses.push(s.loss);
      if (s.stage === "text") {
        textLoss.push([s.step, s.loss]);
      } else {
        if (groups.length === 0 && s.groupNames.length > 0) setGroups(s.groupNames);
        if (flamingoLoss.length === 0 && textLoss.length > 0) flamingoLoss.push(textLoss.at(-1));
        flamingoLoss.push([s.step, s.loss]);
        s.groupNorms.forEach((n, i) => normPoints[i]?.push([s.step, n]));
        showLastStep(s);
        maxNormPoints.push([s.step, mode.value === "off" ? NaN : Number(maxNorm.value)]);
        flamingoSteps++;
        if (s.clipped) clippedSteps++;
      }
      for (const series of [textLoss, flamingoLoss, maxNormPoints, ...normPoints, state.losses]) {
        if (series.length > HISTORY) series.splice(0, series.length - HISTORY);
      }
      rateSteps++;
      const now = performance.now();
      const rate = (rateSteps * 1000) / Math.max(1, now - rateStart);
      if (now - rateStart > 3000) { rateStart = now; rateSteps = 0; }
      const what = s.stage === "text"
        ? `pretraining the language model on caption text (${s.step} of ${demo.pretrainSteps()})`
        : `Flamingo stage step ${flamingoSteps}, clipped on ${clippedSteps}`;
      $("status").textContent =
        `step ${s.step} · loss ${s.loss.toFixed(4)} · ${rate.toFixed(1)} steps/s · ${what}`;
      redraw();
      if (s.step % SAMPLE_EVERY === 0) await refreshSamples();
    }
  };

  const start = () => {
    running = true;
    setPhase("training");
    run.textContent = "Pause";
    rateStart = performance.now();
    rateSteps = 0;
    if (!looping) loop().catch((err) => { running = false; reportError("Training stopped", err); });
  };
  const pause = () => {
    running = false;
    setPhase("paused");
    run.textContent = "Resume";
    $("status").textContent = `paused at step ${state.step}`;
  };
  run.addEventListener("click", () => (running ? pause() : start()));
  run.disabled = false;

  await refreshSamples();
  if (params.get("autostart") !== "0") start();
  else pause();
}

main().catch((err) => reportError("Unexpected failure", err));
