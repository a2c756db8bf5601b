// The console's frame: pages by the URL's #fragment, the API key field, and the role of
// the key in use (from GET /v1/key).
import { api, apiKey, explain, setApiKey } from "./api.js";
import * as images from "./images.js";
import * as transactions from "./transactions.js";
import * as alerts from "./alerts.js";
import * as models from "./models.js";
import * as live from "./live.js";

const PAGES = { images, transactions, alerts, models, live };
const session = { role: null, keysRequired: false };
let current = null;

async function checkKey() {
  const form = document.getElementById("key-form");
  const role = document.getElementById("key-role");
  try {
    const who = await api("/v1/key");
    session.role = who.role;
    session.keysRequired = who.keys_required;
    form.hidden = !who.keys_required;
    role.textContent = who.keys_required ? `role: ${who.role} (${who.name})` : "";
  } catch (error) {
    session.role = null;
    session.keysRequired = error.status === 401 || error.status === 403;
    form.hidden = false;
    role.textContent = apiKey() ? explain(error) : "enter a key";
  }
}

function show() {
  const name = location.hash.slice(1) in PAGES ? location.hash.slice(1) : "images";
  if (current && current !== name) PAGES[current].leave?.();
  for (const page of Object.keys(PAGES)) {
    document.getElementById(`page-${page}`).hidden = page !== name;
  }
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  current = name;
  PAGES[name].enter(session);
}

document.getElementById("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  setApiKey(document.getElementById("api-key").value.trim());
  await checkKey();
  show();
});

for (const page of Object.values(PAGES)) page.setUp?.();
window.addEventListener("hashchange", show);
await checkKey();
show();
