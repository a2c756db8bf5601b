// Alerts: the analyst's queue, highest score first, refreshed every few seconds; an
// alert's payments, reasons, card history and trail; resolve it as fraud or genuine with a
// note; the frozen cards, each with its unfreeze.
import { api, el, explain, showStatus, when } from "./api.js";

const REFRESH_MS = 4000;
let timer = null;
let chosen = null; // the alert shown in detail

export function enter() {
  refresh();
  timer = setInterval(refresh, REFRESH_MS);
}

export function leave() {
  clearInterval(timer);
  timer = null;
}

async function refresh() {
  const status = document.getElementById("alerts-status");
  try {
    const [queue, frozen] = await Promise.all([
      api("/v1/fraud/alerts?limit=100"),
      api("/v1/fraud/frozen?limit=100"),
    ]);
    showStatus(status, `${queue.alerts.length}${queue.next_cursor ? "+" : ""} open alert(s); ${frozen.frozen.length} frozen card(s)`);
    fillQueue(queue.alerts);
    fillFrozen(frozen.frozen);
  } catch (error) {
    showStatus(status, explain(error), true);
  }
}

function fillQueue(alerts) {
  const body = document.querySelector("#alerts-table tbody");
  body.replaceChildren(
    ...alerts.map((a) => {
      const open = () => show(a.id);
      const row = el(
        "tr",
        { class: `pick${a.id === chosen ? " selected" : ""}`, tabindex: "0", "data-alert": a.id, onclick: open },
        el("td", {}, `#${a.id}`),
        el("td", {}, String(a.customer_id)),
        el("td", { class: "num" }, a.score.toFixed(3)),
        el("td", { class: "num" }, String(a.payments)),
        el("td", {}, when(a.opened_at)),
      );
      row.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          open();
        }
      });
      return row;
    }),
  );
}

function fillFrozen(freezes) {
  const body = document.querySelector("#frozen-table tbody");
  body.replaceChildren(
    ...freezes.map((f) =>
      el(
        "tr",
        { "data-card": f.customer_id },
        el("td", {}, String(f.customer_id)),
        el("td", {}, when(f.frozen_at)),
        el("td", {}, f.by || ""),
        el("td", {}, f.alert_id ? `#${f.alert_id}` : "by hand"),
        el(
          "td",
          {},
          el("button", { type: "button", class: "secondary", onclick: () => unfreeze(f.customer_id) }, `Unfreeze ${f.customer_id}`),
        ),
      ),
    ),
  );
}

async function unfreeze(card) {
  const status = document.getElementById("alerts-status");
  try {
    await api(`/v1/fraud/customers/${encodeURIComponent(card)}/unfreeze`, { method: "POST" });
    showStatus(status, `Card ${card} unfrozen.`);
  } catch (error) {
    showStatus(status, `Not unfrozen: ${explain(error)}`, true);
  }
  refresh();
}

async function show(id) {
  chosen = id;
  const box = document.getElementById("alert-detail");
  let alert;
  try {
    alert = await api(`/v1/fraud/alerts/${id}`);
  } catch (error) {
    box.replaceChildren(el("p", { class: "status error" }, explain(error)));
    return;
  }
  for (const row of document.querySelectorAll("#alerts-table tbody tr")) {
    row.classList.toggle("selected", row.dataset.alert === String(id));
  }
  box.replaceChildren(...detail(alert));
}

function detail(alert) {
  const parts = [
    el("h3", {}, `Alert #${alert.id}: card ${alert.customer_id}`),
    el(
      "p",
      {},
      `score ${alert.score.toFixed(3)}, ${alert.payments} flagged payment(s), ${alert.status}`,
      alert.frozen ? el("span", { class: "tag fraud", id: "alert-frozen" }, " card frozen") : null,
    ),
    el(
      "ol",
      { class: "reasons" },
      alert.transactions.map((t) =>
        el(
          "li",
          {},
          `${t.transaction_id}: ${t.amount.toFixed(2)} at terminal ${t.terminal_id}, ${when(t.timestamp)}; `,
          el("strong", {}, `${t.decision} ${(t.fraud_probability * 100).toFixed(1)}%`),
          el("ul", {}, (t.reasons || []).map((r) => el("li", {}, r.text))),
        ),
      ),
    ),
  ];
  if (alert.status === "open") parts.push(resolveForm(alert));
  else {
    const r = alert.resolution;
    parts.push(el("p", { id: "alert-resolution" }, `Resolved ${r.outcome} by ${r.by || "(no key)"}, ${when(r.at)}${r.note ? `: ${r.note}` : ""}`));
  }
  if (alert.history) {
    parts.push(
      el("h3", {}, "The card's recent payments"),
      el(
        "div",
        { class: "scroll" },
        el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ["transaction", "amount", "time", "label"].map((h) => el("th", { scope: "col" }, h)))),
          el(
            "tbody",
            {},
            alert.history.transactions.map((t) =>
              el(
                "tr",
                {},
                el("td", {}, String(t.transaction_id)),
                el("td", { class: "num" }, t.amount.toFixed(2)),
                el("td", {}, when(t.timestamp)),
                el("td", {}, t.fraud === null ? "" : t.fraud ? "fraud" : "genuine"),
              ),
            ),
          ),
        ),
      ),
    );
  }
  parts.push(
    el("h3", {}, "Trail"),
    el("ol", { class: "reasons" }, alert.trail.map((e) => el("li", {}, `${when(e.at)}: ${e.event}${e.by ? ` by ${e.by}` : ""}${e.transaction_id !== undefined ? ` (${e.transaction_id})` : ""}`))),
  );
  return parts;
}

function resolveForm(alert) {
  const note = el("textarea", { id: "resolve-note", rows: "2", maxlength: "2000" });
  const status = el("p", { class: "status", role: "status" });
  const resolve = async (outcome) => {
    try {
      await api(`/v1/fraud/alerts/${alert.id}/resolve`, { method: "POST", json: { outcome, note: note.value } });
    } catch (error) {
      showStatus(status, `Not resolved: ${explain(error)}`, true);
      return;
    }
    await show(alert.id);
    refresh();
  };
  return el(
    "div",
    {},
    el(
      "form",
      { class: "resolve", onsubmit: (event) => event.preventDefault() },
      el("label", { for: "resolve-note" }, "Note", note),
      el("button", { type: "button", class: "fraud", onclick: () => resolve("fraud") }, "Fraud: freeze the card"),
      el("button", { type: "button", class: "good", onclick: () => resolve("genuine") }, "Genuine"),
    ),
    status,
  );
}
