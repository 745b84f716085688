// The admin API from the page: one fetch wrapper, the token, and whether the
// server wants one. Everything stays on this server (the CSP allows nothing else).
export const API = "/api/v1";
const KEY = "edgenet-admin-token";

export const auth = {
  token: sessionStorage.getItem(KEY) || "",
  mode: null,        // "token": the server has a token; "none": read-only without one
  refused: false,    // the last request with our token got a 401
};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function headers() {
  return auth.token ? { "Authorization": "Bearer " + auth.token } : {};
}

export function setToken(token) {
  auth.token = token;
  auth.refused = false;
  if (token) sessionStorage.setItem(KEY, token);
  else sessionStorage.removeItem(KEY);
}

// The parsed body, and how long the page spent parsing it (script time).
export async function apiTimed(path, options) {
  let resp;
  try {
    resp = await fetch(API + path, Object.assign({ headers: headers(), cache: "no-store" }, options || {}));
  } catch (e) {
    throw new ApiError(0, "unreachable", "cannot reach the server");
  }
  const text = await resp.text();
  const t0 = performance.now();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  const parseMs = performance.now() - t0;
  if (!resp.ok) {
    if (resp.status === 401) auth.refused = !!auth.token;
    const err = (body && body.error) || { code: "http_" + resp.status, message: resp.statusText };
    throw new ApiError(resp.status, err.code, err.message);
  }
  if (auth.token) auth.refused = false;
  return { body, parseMs };
}

export async function api(path, options) {
  return (await apiTimed(path, options)).body;
}

// Every record of a list, following next_cursor (at most maxPages pages of 1,000).
export async function allPages(path, maxPages) {
  const rows = [];
  let cursor = null, parseMs = 0;
  for (let i = 0; i < (maxPages || 50); i++) {
    const sep = path.includes("?") ? "&" : "?";
    const { body, parseMs: ms } = await apiTimed(path + sep + "limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    parseMs += ms;
    for (const row of body.data) rows.push(row);
    if (!body.meta || !body.meta.has_next) break;
    cursor = body.meta.next_cursor;
  }
  return { rows, parseMs };
}

// Whether the server has a token: a request with a token that cannot be right is
// refused (401) by a server with one and answered by a read-only server.
export async function probeMode() {
  try {
    const resp = await fetch(API + "/lockouts?limit=1", {
      headers: { "Authorization": "Bearer not-a-token" }, cache: "no-store" });
    auth.mode = resp.status === 401 ? "token" : resp.ok ? "none" : auth.mode;
  } catch (e) {
    return null;
  }
  return auth.mode;
}
