// A small line chart on a 2D canvas: several series over training steps,
// optional log scale, dashed series for thresholds. A WebGPU canvas is not
// used on purpose: it can screenshot blank in headless browsers, and a
// chart must not compete with training for the GPU.

const PAD = { left: 58, right: 12, top: 10, bottom: 28 };

function niceLinearTicks(lo, hi, count) {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
  return ticks;
}

// Ticks of a log axis spanning decades lo..hi (log10 values): every decade,
// plus 2x and 5x when there are too few decades to read values from.
function logTicks(lo, hi) {
  const ticks = [];
  for (let d = lo; d <= hi; d++) {
    ticks.push(d);
    if (hi - lo <= 2 && d < hi) ticks.push(d + Math.log10(2), d + Math.log10(5));
  }
  return ticks;
}

function formatTick(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0);
  return String(Number(v.toPrecision(3)));
}

export class LineChart {
  /**
   * @param {HTMLCanvasElement} canvas
   * @param {{ logY?: boolean, floor?: number }} options  floor: smallest
   *   value shown on a log scale (zeros and smaller values are drawn there).
   */
  constructor(canvas, options = {}) {
    this.canvas = canvas;
    this.logY = options.logY ?? false;
    this.floor = options.floor ?? 1e-6;
  }

  /**
   * @param {{ color: string, points: [number, number][], dashed?: boolean }[]} series
   *   points are [step, value]; NaN values leave a gap.
   */
  draw(series) {
    const canvas = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || canvas.width;
    const cssH = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(cssW * dpr) || canvas.height !== Math.round(cssH * dpr)) {
      canvas.width = Math.round(cssW * dpr);
      canvas.height = Math.round(cssH * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssW, cssH);
    ctx.font = "11px system-ui, sans-serif";

    const plotW = cssW - PAD.left - PAD.right;
    const plotH = cssH - PAD.top - PAD.bottom;
    const toY = (v) => (this.logY ? Math.log10(Math.max(v, this.floor)) : v);

    let xMin = Infinity, xMax = -Infinity, yMin = Infinity, yMax = -Infinity;
    for (const s of series) {
      for (const [x, y] of s.points) {
        if (!Number.isFinite(y)) continue;
        xMin = Math.min(xMin, x); xMax = Math.max(xMax, x);
        const ty = toY(y);
        yMin = Math.min(yMin, ty); yMax = Math.max(yMax, ty);
      }
    }

    ctx.strokeStyle = "#c8c8c2";
    ctx.lineWidth = 1;
    ctx.strokeRect(PAD.left + 0.5, PAD.top + 0.5, plotW, plotH);
    if (!Number.isFinite(xMin)) {
      ctx.fillStyle = "#80868b";
      ctx.fillText("waiting for the first step", PAD.left + 10, PAD.top + 20);
      return 0;
    }
    if (xMax === xMin) xMax = xMin + 1;
    if (this.logY) {
      yMin = Math.floor(yMin); yMax = Math.ceil(yMax);
      if (yMax === yMin) yMax = yMin + 1;
    } else {
      const margin = (yMax - yMin) * 0.05 || Math.abs(yMax) * 0.05 || 1;
      yMin -= margin; yMax += margin;
    }
    const px = (x) => PAD.left + ((x - xMin) / (xMax - xMin)) * plotW;
    const py = (ty) => PAD.top + (1 - (ty - yMin) / (yMax - yMin)) * plotH;

    // Grid and labels.
    ctx.fillStyle = "#5f6368";
    ctx.strokeStyle = "#ecece7";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const yTicks = this.logY ? logTicks(yMin, yMax) : niceLinearTicks(yMin, yMax, 5);
    for (const t of yTicks) {
      const y = py(t);
      ctx.beginPath(); ctx.moveTo(PAD.left, y); ctx.lineTo(PAD.left + plotW, y); ctx.stroke();
      // Values at or below the floor (zeros, for example) are drawn on it.
      const atFloor = this.logY && t <= Math.log10(this.floor) + 1e-9;
      const label = this.logY ? formatTick(10 ** t) : formatTick(t);
      ctx.fillText(atFloor ? `≤${label}` : label, PAD.left - 6, y);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of niceLinearTicks(xMin, xMax, 6)) {
      if (t < xMin || t > xMax) continue;
      ctx.fillText(formatTick(t), px(t), PAD.top + plotH + 6);
    }
    ctx.textAlign = "right";
    ctx.fillText("step", PAD.left + plotW, PAD.top + plotH + 16);

    // Series. Long histories are thinned to about one point per pixel.
    let drawn = 0;
    ctx.save();
    ctx.beginPath();
    ctx.rect(PAD.left, PAD.top, plotW, plotH);
    ctx.clip();
    for (const s of series) {
      const stride = Math.max(1, Math.floor(s.points.length / plotW));
      ctx.strokeStyle = s.color;
      ctx.lineWidth = s.dashed ? 1.5 : 1.8;
      ctx.setLineDash(s.dashed ? [6, 4] : []);
      ctx.beginPath();
      let pen = false;
      for (let i = 0; i < s.points.length; i += stride) {
        const [x, y] = s.points[i];
        if (!Number.isFinite(y)) { pen = false; continue; }
        const X = px(x), Y = py(toY(y));
        if (pen) ctx.lineTo(X, Y); else ctx.moveTo(X, Y);
        pen = true;
        drawn++;
      }
      ctx.stroke();
    }
    ctx.restore();
    return drawn;
  }
}
