// The dashboard: polls the admin API every few seconds, follows the event stream,
// draws the charts and the tables. Timings of its own work are kept in
// window.edgenetDashboard.perf (the browser test reads them).
import { API, ApiError, allPages, api, apiTimed, auth, headers, probeMode, setToken } from "./api.js";
import { Charts } from "./charts.js";
import { devicesTable, eventsTable, filesTable, lockoutsTable, tickCountdowns } from "./panels.js";

const $ = (id) => document.getElementById(id);
const MAX_EVENTS = 200;
const state = { window: "15m", events: [], lastSeq: 0, streamAbort: null, total: 0,
                lastRefresh: 0, timer: null };
const perf = { firstRender: null, firstChart: null, updates: [], devices: 0 };
window.edgenetDashboard = { perf, state };

function setText(id, text, cls) {
  const el = $(id);
  el.textContent = text;
  el.className = cls || "";
}

// What the token box says: plainly whether a token is needed, and whether ours was refused.
function showTokenState() {
  if (auth.mode === "none") {
    setText("token-state", "This server has no admin token: you can look, but nothing can be changed "
      + "(read-only, loopback only).", "info");
  } else if (auth.mode === "token" && !auth.token) {
    setText("token-state", "This server needs its admin token: enter it above to see and act.", "need");
  } else if (auth.mode === "token" && auth.refused) {
    setText("token-state", "The token was refused: check it and enter it again.", "bad");
  } else if (auth.mode === "token") {
    setText("token-state", "Token accepted: you can disconnect devices and lift blocks.", "good");
  }
}

async function act(button, method, path, done) {
  if (auth.mode === "none") {
    setText("message", "the server has no admin token: read-only", "bad");
    return;
  }
  button.disabled = true;
  try {
    await api(path, { method });
    setText("message", done, "good");
  } catch (e) {
    setText("message", e.code === "read_only" ? "the server has no admin token: read-only"
      : (e.code || "error") + ": " + e.message, "bad");
  } finally {
    button.disabled = false;
    refresh(true);
  }
}

const devices = devicesTable(act);
const lockouts = lockoutsTable(act);
const files = filesTable();
const events = eventsTable();
const charts = new Charts($("charts-section"));
window.edgenetDashboard.charts = charts;

// Bigger fleets are read less often (each read is every device).
function interval() {
  return state.total > 10000 ? 10000 : state.total > 2000 ? 5000 : 3000;
}

async function refreshHistory() {
  const { body, parseMs } = await apiTimed("/history?window=" + state.window);
  const t0 = performance.now();
  charts.update(body.data);
  if (perf.firstChart === null && charts.draws) perf.firstChart = performance.now();
  return parseMs + performance.now() - t0;
}

async function refreshDevices() {
  const { rows, parseMs } = await allPages("/devices", 100);
  const t0 = performance.now();
  state.total = rows.length;
  devices.setRows(rows);
  $("devices-count").textContent = rows.length.toLocaleString() + " active";
  const ms = parseMs + performance.now() - t0;
  if (perf.firstRender === null) { perf.firstRender = performance.now(); perf.devices = rows.length; }
  perf.updates.push({ devices: rows.length, ms, parseMs });
  if (perf.updates.length > 50) perf.updates.shift();
  return ms;
}

async function refreshLockouts() {
  const { rows } = await allPages("/lockouts", 5);
  const now = Date.now() / 1000;
  for (const l of rows) l.until = l.blocked ? now + l.seconds_left : 0;
  lockouts.setRows(rows);
  $("lockouts-count").textContent = rows.filter((l) => l.blocked).length + " blocked, "
    + rows.length + " counted";
}

async function refreshFiles() {
  const { rows } = await allPages("/files", 10);
  files.setRows(rows);
  $("files-count").textContent = rows.length.toLocaleString() + " files";
}

async function refreshEvents() {
  if (state.lastSeq) return;
  const body = await api("/events?limit=" + MAX_EVENTS);
  body.data.slice().reverse().forEach(addEvent);
  renderEvents();
}

let refreshing = false, again = false;
async function refresh(soon) {
  // One refresh at a time; one asked for meanwhile runs right after, so a change
  // the operator just made is never hidden by an answer read before it.
  if (refreshing) { again = true; return; }
  refreshing = true;
  clearTimeout(state.timer);
  try {
    await Promise.all([refreshDevices(), refreshLockouts(), refreshFiles(), refreshHistory(),
                       refreshEvents()]);
    setText("status", "updated " + new Date().toLocaleTimeString());
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      setText("status", auth.token ? "token refused" : "a token is needed", "bad");
    } else {
      setText("status", "cannot read the API: " + e.message, "bad");
    }
  } finally {
    showTokenState();
    refreshing = false;
    state.lastRefresh = performance.now();
    if (again) { again = false; setTimeout(() => refresh(true), soon ? 0 : 250); }
    else state.timer = setTimeout(refresh, interval());
  }
}

// An event asks for a refresh, no more often than once a second (or the poll
// interval, for big fleets).
function requestRefresh() {
  const gap = state.total > 2000 ? interval() : 1000;
  const wait = Math.max(0, state.lastRefresh + gap - performance.now());
  clearTimeout(state.timer);
  state.timer = setTimeout(refresh, wait);
}

function addEvent(e) {
  if (e.seq <= state.lastSeq) return;
  state.lastSeq = e.seq;
  state.events.unshift(e);
  if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
}

// Events can come by the hundred a second: the table is redrawn at most twice a second.
let eventsTimer = 0;
function renderEvents() {
  if (eventsTimer) return;
  eventsTimer = setTimeout(() => {
    eventsTimer = 0;
    events.setRows(state.events);
    $("events-count").textContent = state.events.length ? "last " + state.events.length : "";
  }, 500);
}

// Server-sent events read with fetch (EventSource cannot send the Authorization header).
async function stream() {
  for (let attempt = 0; ; attempt++) {
    const abort = new AbortController();
    state.streamAbort = abort;
    try {
      const path = API + "/events/stream" + (state.lastSeq ? "?after=" + state.lastSeq : "");
      const resp = await fetch(path, { headers: headers(), signal: abort.signal, cache: "no-store" });
      if (!resp.ok || !resp.body) throw new Error("stream: HTTP " + resp.status);
      setText("live", "live: streaming");
      attempt = 0;
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!data || /^event: end/m.test(block)) continue;
          try { addEvent(JSON.parse(data)); } catch (e) { continue; }
          renderEvents();
          requestRefresh();
        }
      }
    } catch (e) {
      if (abort.signal.aborted) { attempt = -1; continue; }
    }
    setText("live", "live: polling (stream reconnecting)");
    await new Promise((r) => setTimeout(r, Math.min(10000, 1000 * (attempt + 1))));
  }
}

function useToken(token) {
  setToken(token);
  $("token").value = token;
  state.lastSeq = 0;
  state.events = [];
  if (state.streamAbort) state.streamAbort.abort();
  refresh(true);
}

$("token").value = auth.token;
$("token-form").addEventListener("submit", (e) => { e.preventDefault(); useToken($("token").value.trim()); });
$("forget-token").addEventListener("click", () => useToken(""));
for (const b of document.querySelectorAll(".window-buttons button")) {
  b.addEventListener("click", () => {
    state.window = b.dataset.window;
    for (const o of document.querySelectorAll(".window-buttons button")) {
      o.setAttribute("aria-pressed", String(o === b));
    }
    $("charts-range").textContent = { "15m": "last 15 minutes", "1h": "last hour", "24h": "last 24 hours" }[state.window];
    refreshHistory().catch(() => {});
  });
}
setInterval(() => { if (tickCountdowns()) requestRefresh(); }, 1000);

probeMode().then(() => { showTokenState(); refresh(true); stream(); });
