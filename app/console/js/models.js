// Models: each model's versions with their state (and why a load failed), labels or
// features, metrics and provenance; load and unload for admin keys.
import { api, el, explain, showStatus, when } from "./api.js";

let session = null;

export async function enter(current) {
  session = current;
  await refresh();
}

async function refresh(said = null) {
  const status = document.getElementById("models-status");
  let listed;
  try {
    listed = await api("/v1/models");
  } catch (error) {
    showStatus(status, explain(error), true);
    return;
  }
  showStatus(status, said || `${listed.models.length} model(s)`);
  document.getElementById("models-list").replaceChildren(...listed.models.map(model));
}

function model(m) {
  const admin = session && session.role === "admin";
  const actions = admin
    ? el("button", { type: "button", class: "secondary", onclick: () => act(`/v1/models/${encodeURIComponent(m.name)}/load`, `${m.name}: loading the versions on disk`) }, `Load ${m.name}`)
    : null;
  return el(
    "article",
    { class: "model", "aria-labelledby": `model-${m.name}` },
    el(
      "h3",
      { id: `model-${m.name}` },
      `${m.name} `,
      el("span", { class: "tag" }, `serving version ${m.served_version ?? "none"}`),
      // Where routes that take the client's own inputs serve an older version (fraud).
      m.served_version_for_sent_inputs
        ? el("span", { class: "tag" }, `version ${m.served_version_for_sent_inputs} where clients send the features`)
        : null,
    ),
    actions,
    m.versions.map((v) => version(m, v, admin)),
  );
}

function version(m, v, admin) {
  const facts = [
    ["state", el("span", { class: `state-${v.state}` }, v.state)],
    v.reason ? ["why", v.reason] : null,
    ["kind", v.kind],
    ["description", v.description],
    v.labels ? ["labels", v.labels.join(", ")] : null,
    v.feature_set ? ["feature set", v.feature_set] : null,
    v.features ? ["features", v.features.join(", ")] : null,
    v.thresholds ? ["thresholds", `review ${v.thresholds.review.toFixed(3)}, decline ${v.thresholds.decline.toFixed(3)}`] : null,
    ...Object.entries(v.metrics || {}).map(([name, value]) => [name, typeof value === "number" ? formatNumber(value) : JSON.stringify(value)]),
    v.provenance ? ["command", v.provenance.command] : null,
    v.provenance ? ["created", when(v.provenance.created_at)] : null,
    v.provenance && v.provenance.git_commit ? ["commit", v.provenance.git_commit.slice(0, 10)] : null,
    v.batching ? ["batching", `up to ${v.batching.max_batch_size} rows, ${v.batching.max_queue_delay_ms} ms`] : null,
    v.providers ? ["providers", v.providers.join(", ")] : null,
    v.precision ? ["precision", v.precision] : null,
  ].filter(Boolean);
  const unload = admin
    ? el("button", { type: "button", class: "secondary", onclick: () => act(`/v1/models/${encodeURIComponent(m.name)}/unload?version=${v.version}`, `${m.name} version ${v.version} unloaded`) }, `Unload version ${v.version}`)
    : null;
  return el(
    "section",
    { class: "version" },
    el("h4", {}, `version ${v.version}`),
    el("dl", { class: "facts" }, facts.map(([name, value]) => [el("dt", {}, name), el("dd", {}, value)])),
    unload,
  );
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : value.toPrecision(4);
}

async function act(path, done) {
  const status = document.getElementById("models-status");
  try {
    await api(path, { method: "POST" });
  } catch (error) {
    showStatus(status, explain(error), true);
    return;
  }
  await refresh(done);
}
