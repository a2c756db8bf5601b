// Live: requests per second, p50 and p99 latency, batch size and fill, queue depth and
// rejections per model, from the service's own /metrics, as small charts that move every
// two seconds.
import { api, el, explain, showStatus } from "./api.js";

const EVERY_MS = 2000;
const POINTS = 60;
const COLOURS = ["#1f5fbf", "#b3261e", "#1e7d38", "#9a6700", "#6f42c1", "#0b7285"];
const CHARTS = [
  ["rps", "requests/s", (v) => v.toFixed(1)],
  ["p50", "p50 latency, ms", (v) => v.toFixed(1)],
  ["p99", "p99 latency, ms", (v) => v.toFixed(1)],
  ["batch", "rows per batch", (v) => v.toFixed(1)],
  ["fill", "batch fill", (v) => `${(v * 100).toFixed(1)}%`],
  ["queue", "rows queued", (v) => v.toFixed(0)],
  ["rejected", "rejections/s", (v) => v.toFixed(1)],
];

let timer = null;
let previous = null; // the last scrape: {at, samples}
const series = {}; // chart -> model -> [values]

export function setUp() {
  document.getElementById("live-charts").replaceChildren(
    ...CHARTS.map(([id, title]) =>
      el(
        "figure",
        { class: "chart", "data-chart": id },
        el("h3", {}, title),
        el("canvas", { width: "320", height: "128", role: "img", "aria-label": title }),
        el("p", { class: "now" }),
      ),
    ),
  );
}

export function enter() {
  scrape();
  timer = setInterval(scrape, EVERY_MS);
}

export function leave() {
  clearInterval(timer);
  timer = null;
  previous = null;
}

async function scrape() {
  const status = document.getElementById("live-status");
  let text;
  try {
    text = await api("/metrics");
  } catch (error) {
    showStatus(status, explain(error), true);
    return;
  }
  const now = { at: performance.now(), samples: parse(text) };
  if (previous) {
    const values = measure(previous, now);
    for (const [chart, byModel] of Object.entries(values)) {
      series[chart] ||= {};
      for (const [model, value] of Object.entries(byModel)) {
        const points = (series[chart][model] ||= []);
        points.push(value);
        if (points.length > POINTS) points.shift();
      }
    }
    draw();
    showStatus(status, `updated ${new Date().toLocaleTimeString()}`);
  }
  previous = now;
}

// Prometheus text to [{name, labels, value}].
function parse(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

function sumBy(samples, name, key = (s) => s.labels.model) {
  const sums = {};
  for (const s of samples) {
    if (s.name !== name || !s.labels.model) continue;
    const k = key(s);
    sums[k] = (sums[k] || 0) + s.value;
  }
  return sums;
}

function measure(before, after) {
  const seconds = (after.at - before.at) / 1000;
  const delta = (name, key) => {
    const a = sumBy(after.samples, name, key);
    const b = sumBy(before.samples, name, key);
    return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, v - (b[k] || 0)]));
  };
  const out = { rps: {}, p50: {}, p99: {}, batch: {}, fill: {}, queue: {}, rejected: {} };
  for (const [model, count] of Object.entries(delta("deepserve_requests_total"))) out.rps[model] = count / seconds;
  const buckets = delta("deepserve_request_duration_seconds_bucket", (s) => `${s.labels.model}\t${s.labels.le}`);
  const byModel = {};
  for (const [key, count] of Object.entries(buckets)) {
    const [model, le] = key.split("\t");
    (byModel[model] ||= []).push([le === "+Inf" ? Infinity : Number(le), count]);
  }
  for (const [model, list] of Object.entries(byModel)) {
    list.sort((x, y) => x[0] - y[0]);
    out.p50[model] = quantile(list, 0.5) * 1000;
    out.p99[model] = quantile(list, 0.99) * 1000;
  }
  const ratio = (name, target) => {
    const sums = delta(`${name}_sum`);
    const counts = delta(`${name}_count`);
    for (const [model, count] of Object.entries(counts)) target[model] = count ? sums[model] / count : 0;
  };
  ratio("deepserve_batch_size", out.batch);
  ratio("deepserve_batch_fill_ratio", out.fill);
  out.queue = sumBy(after.samples, "deepserve_queue_rows");
  for (const [model, count] of Object.entries(delta("deepserve_rejected_requests_total"))) out.rejected[model] = count / seconds;
  return out;
}

// From cumulative bucket counts [[upper bound, count]], linear within the bucket.
function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return 0;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [upper, count] of buckets) {
    if (count >= rank) {
      if (upper === Infinity) return lower;
      return lower + ((upper - lower) * (rank - below)) / Math.max(count - below, 1e-9);
    }
    lower = upper;
    below = count;
  }
  return lower;
}

function models() {
  const names = new Set();
  for (const lines of Object.values(series)) for (const name of Object.keys(lines)) names.add(name);
  return [...names].sort();
}

function colour(model) {
  return COLOURS[Math.max(models().indexOf(model), 0) % COLOURS.length];
}

function draw() {
  const legend = models();
  document.getElementById("live-legend").replaceChildren(
    ...legend.map((model) => {
      const item = el("span", {}, model);
      item.style.setProperty("--swatch", colour(model));
      return item;
    }),
  );
  for (const [id, , format] of CHARTS) {
    const figure = document.querySelector(`[data-chart="${id}"]`);
    const canvas = figure.querySelector("canvas");
    const context = canvas.getContext("2d");
    const lines = series[id] || {};
    const top = Math.max(1e-9, ...Object.values(lines).flat());
    context.clearRect(0, 0, canvas.width, canvas.height);
    context.strokeStyle = "#d5dbe2";
    context.beginPath();
    context.moveTo(0, canvas.height - 0.5);
    context.lineTo(canvas.width, canvas.height - 0.5);
    context.stroke();
    for (const [model, points] of Object.entries(lines)) {
      context.strokeStyle = colour(model);
      context.lineWidth = 2;
      context.beginPath();
      points.forEach((value, i) => {
        const x = ((POINTS - points.length + i) / (POINTS - 1)) * canvas.width; // newest at the right
        const y = canvas.height - 4 - (value / top) * (canvas.height - 8);
        if (i === 0) context.moveTo(x, y);
        else context.lineTo(x, y);
      });
      context.stroke();
    }
    context.fillStyle = "#5b6775";
    context.font = "11px system-ui, sans-serif";
    context.textAlign = "left";
    context.fillText(`max ${format(top)}`, 4, 12);
    figure.querySelector(".now").textContent = Object.entries(lines)
      .map(([model, points]) => `${model}: ${format(points[points.length - 1])}`)
      .join(" · ");
  }
}
