// The JSON API as the pages use it: reads, writes with the API key when one is needed, and the
// dashboard's configuration (GET /ui/config.json).

export const root = document.documentElement.dataset.root || "";
const KEY_STORAGE = "dotrec.apiKey";

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

async function problem(response) {
  try {
    const body = await response.json();
    return body.detail ?? response.statusText;
  } catch {
    return response.statusText;
  }
}

export async function getJSON(path, params) {
  const query = params ? `?${new URLSearchParams(params)}` : "";
  const response = await fetch(`${root}${path}${query}`, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new ApiError(response.status, await problem(response));
  return response.json();
}

let configPromise = null;

/** {auth: "on"|"off", rating_scale, allowed_ratings, genres, model_version}, read once a page. */
export function config() {
  configPromise ??= getJSON("/ui/config.json");
  return configPromise;
}

// Header values are bytes: the key goes as its UTF-8 bytes, each as one character (what the
// server compares with API_KEY's UTF-8 bytes), so a key with accents works too.
function headerValue(text) {
  return String.fromCharCode(...new TextEncoder().encode(text));
}

/** Ask for the key in the page's <dialog>; resolves to it, or null when cancelled. */
function askKey(reason) {
  const dialog = document.getElementById("api-key-dialog");
  const input = document.getElementById("api-key-input");
  const why = document.getElementById("api-key-why");
  if (reason) why.textContent = reason;
  input.value = "";
  dialog.returnValue = "";
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "ok" && input.value ? input.value : null),
      { once: true },
    );
  });
}

async function apiKey(reason) {
  const kept = sessionStorage.getItem(KEY_STORAGE);
  if (kept && !reason) return kept;
  const key = await askKey(reason);
  if (key === null) throw new ApiError(401, "no API key given: nothing was stored");
  sessionStorage.setItem(KEY_STORAGE, key);
  return key;
}

/** POST a JSON body (an object, or JSON text); with auth on, sends X-API-Key (asked for once, asked again if refused). */
export async function postJSON(path, body) {
  const { auth } = await config();
  let reason = null;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    if (auth === "on") headers["X-API-Key"] = headerValue(await apiKey(reason));
    const response = await fetch(`${root}${path}`, { method: "POST", headers, body: typeof body === "string" ? body : JSON.stringify(body) });
    if (response.ok) return response.json();
    const detail = await problem(response);
    if (auth !== "on" || (response.status !== 401 && response.status !== 403)) {
      throw new ApiError(response.status, detail);
    }
    sessionStorage.removeItem(KEY_STORAGE);
    reason = `The key was refused (${detail}). Try again:`;
  }
  throw new ApiError(403, "the API key was refused three times");
}
