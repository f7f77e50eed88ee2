// The HTTP API as the panel uses it: same-origin fetches with the session cookie, and the
// session's CSRF token on every state-changing request.

let csrf = null;
let token = null;

export const LOGIN = "/ui/login.html";

/** Remember the session's CSRF token (from GET /panel/session). */
export function setCsrf(value) { csrf = value; }

/** Authenticate every call with this API token instead of the session cookie (dashboards). */
export function setToken(value) { token = value; }

export class ApiError extends Error {
  constructor(status, name, message) {
    super(message);
    this.status = status;
    this.code = name;
  }
}

/** Go to the login page, coming back to this page afterwards. */
export function toLogin() {
  const back = location.pathname + location.hash;
  location.assign(`${LOGIN}?redirect=${encodeURIComponent(back)}`);
}

/**
 * Call the API; the parsed JSON body. A 401 (session ended) goes to the login page.
 * @throws {ApiError} any other error status, with pihub's error name and message.
 */
export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  if (token) init.headers.Authorization = `Bearer ${token}`;
  else if (method !== "GET" && csrf) init.headers["X-CSRF-Token"] = csrf;
  const resp = await fetch(path, init);
  let data = null;
  const text = await resp.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (resp.status === 401 && !token) {
    toLogin();
    throw new ApiError(401, "INVALID_SESSION", "the session ended: log in again");
  }
  if (!resp.ok) {
    const name = data && data.error ? data.error : `HTTP_${resp.status}`;
    const message = data && data.message ? data.message : resp.statusText;
    throw new ApiError(resp.status, name, message);
  }
  return data;
}

/** A file the API serves (GET, e.g. /resources/...) as a blob: URL an <img> can show. */
export async function blobUrl(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const resp = await fetch(path, { credentials: "same-origin", headers });
  if (!resp.ok) throw new ApiError(resp.status, `HTTP_${resp.status}`, `${path}: ${resp.statusText}`);
  return URL.createObjectURL(await resp.blob());
}

/** Run one action (POST /execute); ``{output, errors}`` of its response. */
export async function execute(action, args) {
  const reply = await api("/execute", { method: "POST", body: { type: "request", action, args: args ?? {} } });
  const r = (reply && reply.response) || {};
  return { output: r.output ?? null, errors: Array.isArray(r.errors) ? r.errors : [] };
}
