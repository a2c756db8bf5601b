// One way to call the service: the browser session's API key on every request, and every
// error turned into words (the API's own message, or what went wrong on the way).

const KEY = "deepserve-api-key";

export function apiKey() {
  return sessionStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// `options`: fetch's, with `json` for a JSON body. Resolves to the parsed JSON (or text for
// non-JSON answers such as /metrics); rejects with an ApiError that says why.
export async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let body = options.body;
  if (options.json !== undefined) {
    headers.set("Content-Type", "application/json");
    body = JSON.stringify(options.json);
  }
  let response;
  try {
    response = await fetch(path, { ...options, headers, body });
  } catch (error) {
    throw new ApiError(0, "network", `the service did not answer (${error.message})`);
  }
  const type = response.headers.get("content-type") || "";
  const payload = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const error = payload && payload.error ? payload.error : {};
    const message = error.message || `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, error.code || "http_error", message);
  }
  return payload;
}

// What a person should read for an error: its message, with what to do for the usual ones.
export function explain(error) {
  if (error.status === 401) return `${error.message}. Enter an API key above.`;
  if (error.status === 403) return `${error.message}. This page needs a key with more rights.`;
  return error.message;
}

export function showStatus(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

// A small element builder: el("td", {class: "num"}, "3.2"). Text is always text, never HTML.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function when(iso) {
  return new Date(iso).toLocaleString();
}
