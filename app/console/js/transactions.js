// Transactions: record a payment and score it from the card's history (or, "what if",
// score it without recording), with its decision, its reasons in words and the features
// the history computed; the card's recent payments below.
import { api, el, explain, showStatus, when } from "./api.js";

export function setUp() {
  document.getElementById("payment-form").addEventListener("submit", (event) => {
    event.preventDefault();
    score();
  });
}

export function enter() {
  const time = document.getElementById("payment-time");
  if (!time.value) time.value = localNow();
}

function localNow() {
  const now = new Date();
  now.setMinutes(now.getMinutes() - now.getTimezoneOffset());
  return now.toISOString().slice(0, 19);
}

// Digits name an integer id, as in the API; anything else is a string id.
function identifier(text) {
  const trimmed = text.trim();
  return /^-?\d{1,15}$/.test(trimmed) ? Number(trimmed) : trimmed;
}

async function score() {
  const status = document.getElementById("payment-status");
  const whatIf = document.getElementById("payment-what-if").checked;
  const time = document.getElementById("payment-time").value;
  const payment = {
    transaction_id: `console-${Date.now()}-${Math.floor(Math.random() * 1e6)}`,
    customer_id: identifier(document.getElementById("payment-card").value),
    terminal_id: identifier(document.getElementById("payment-terminal").value),
    amount: Number(document.getElementById("payment-amount").value),
    timestamp: time.length === 16 ? `${time}:00` : time,
  };
  const query = new URLSearchParams({ include: "features", reasons: "always" });
  if (whatIf) query.set("record", "false");
  showStatus(status, whatIf ? "Scoring (not recorded)..." : "Recording and scoring...");
  let answer;
  try {
    answer = await api(`/v1/fraud/transactions?${query}`, { method: "POST", json: payment });
  } catch (error) {
    showStatus(status, `Not scored: ${explain(error)}`, true);
    return;
  }
  const result = answer.results[0];
  showStatus(
    status,
    `${answer.model} version ${answer.version}; ${whatIf ? "not recorded" : `recorded as ${payment.transaction_id}`}`,
  );
  document.getElementById("payment-result").replaceChildren(...render(result));
  history(payment.customer_id);
}

function render(result) {
  const reasons = result.reasons || [];
  return [
    el(
      "p",
      {},
      el("span", { class: `decision ${result.decision}`, id: "payment-decision" }, result.decision),
      ` fraud probability ${(result.fraud_probability * 100).toFixed(2)}%`,
    ),
    el("h3", {}, "Reasons"),
    reasons.length
      ? el(
          "ol",
          { class: "reasons", id: "payment-reasons" },
          reasons.map((r) => el("li", {}, r.text, " ", el("code", {}, r.code))),
        )
      : el("p", { class: "note" }, "Nothing pushed this score up."),
    el("h3", {}, "Features"),
    el(
      "div",
      { class: "scroll" },
      el(
        "table",
        { id: "payment-features" },
        el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "feature"), el("th", { scope: "col", class: "num" }, "value"))),
        el(
          "tbody",
          {},
          Object.entries(result.features || {}).map(([name, value]) =>
            el("tr", {}, el("td", {}, name), el("td", { class: "num" }, Number(value).toFixed(4).replace(/\.?0+$/, ""))),
          ),
        ),
      ),
    ),
  ];
}

async function history(card) {
  const box = document.getElementById("payment-history");
  let view;
  try {
    view = await api(`/v1/fraud/customers/${encodeURIComponent(card)}?limit=10`);
  } catch (error) {
    box.replaceChildren(el("p", { class: "status error" }, explain(error)));
    return;
  }
  const frozen = view.frozen ? el("p", { class: "tag fraud" }, `card frozen ${when(view.frozen.frozen_at)}`) : null;
  box.replaceChildren(
    ...[frozen].filter(Boolean),
    el(
      "div",
      { class: "scroll" },
      el(
        "table",
        {},
        el(
          "thead",
          {},
          el("tr", {}, ["transaction", "terminal", "amount", "time", "label"].map((h) => el("th", { scope: "col" }, h))),
        ),
        el(
          "tbody",
          {},
          view.transactions.map((t) =>
            el(
              "tr",
              {},
              el("td", {}, String(t.transaction_id)),
              el("td", {}, String(t.terminal_id)),
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
