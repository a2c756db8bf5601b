// Images: drop or pick images, choose the model and version, see each image's top five
// labels as bars, and the request's latency.
import { api, el, explain, showStatus } from "./api.js";

let models = [];

export function setUp() {
  const drop = document.getElementById("drop");
  const input = document.getElementById("image-files");
  input.addEventListener("change", () => classify([...input.files]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    classify([...event.dataTransfer.files]);
  });
  document.getElementById("image-model").addEventListener("change", fillVersions);
}

export async function enter() {
  const status = document.getElementById("images-status");
  try {
    const listed = await api("/v1/models");
    models = listed.models.filter((m) => m.versions.some((v) => v.kind === "image_classifier"));
  } catch (error) {
    showStatus(status, explain(error), true);
    return;
  }
  const select = document.getElementById("image-model");
  const chosen = select.value;
  select.replaceChildren(...models.map((m) => el("option", { value: m.name }, m.name)));
  if (models.some((m) => m.name === chosen)) select.value = chosen;
  fillVersions();
}

function fillVersions() {
  const model = models.find((m) => m.name === document.getElementById("image-model").value);
  const select = document.getElementById("image-version");
  const versions = model ? model.versions.filter((v) => v.state === "ready") : [];
  select.replaceChildren(
    el("option", { value: "" }, model ? `served (${model.served_version})` : "none"),
    ...versions.map((v) => el("option", { value: v.version }, String(v.version))),
  );
}

async function classify(files) {
  const status = document.getElementById("images-status");
  const results = document.getElementById("images-results");
  const model = document.getElementById("image-model").value;
  const version = document.getElementById("image-version").value;
  if (!files.length) return;
  if (!model) {
    showStatus(status, "No image model is loaded.", true);
    return;
  }
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  const chosen = models.find((m) => m.name === model);
  const labels = Math.min(...chosen.versions.map((v) => (v.labels || []).length || 5));
  const query = new URLSearchParams({ top_k: String(Math.min(5, labels)) });
  if (version) query.set("version", version);
  showStatus(status, `Classifying ${files.length} image(s)...`);
  const started = performance.now();
  let answer;
  try {
    answer = await api(`/v1/models/${encodeURIComponent(model)}/classify?${query}`, {
      method: "POST",
      body: form,
    });
  } catch (error) {
    showStatus(status, `Not classified: ${explain(error)}`, true);
    return;
  }
  const latency = performance.now() - started;
  showStatus(
    status,
    `${answer.model} version ${answer.version}: ${files.length} image(s) in ${latency.toFixed(0)} ms`,
  );
  results.replaceChildren(...answer.results.map((result, i) => card(files[i], result)));
}

function card(file, result) {
  const image = el("img", { alt: file.name, src: URL.createObjectURL(file) });
  image.addEventListener("load", () => URL.revokeObjectURL(image.src));
  const list = el(
    "ol",
    { "aria-label": `labels for ${file.name}` },
    result.predictions.map((p) => {
      const fill = el("span");
      fill.style.width = `${(p.score * 100).toFixed(1)}%`;
      return el(
        "li",
        { class: "prediction" },
        el("span", { class: "label" }, p.label),
        ` ${(p.score * 100).toFixed(1)}%`,
        el("div", { class: "bar", role: "presentation" }, fill),
      );
    }),
  );
  return el("figure", { class: "result" }, image, list);
}
