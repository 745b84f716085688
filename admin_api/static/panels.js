// The dashboard's tables: devices, lockouts (with a live countdown), stored files,
// recent events. Each is a DataTable with its columns; actions are plain buttons.
import { DataTable } from "./table.js";
import { ago, bytes, clock, countdown, fullTime } from "./format.js";

const $ = (id) => document.getElementById(id);
const nowSec = () => Date.now() / 1000;
const hasNode = (rows) => rows.some((r) => r.node);

function button(td, label, cls, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "act " + cls;
  b.textContent = label;
  b.addEventListener("click", () => onClick(b));
  td.appendChild(b);
}

export function devicesTable(act) {
  const table = new DataTable({
    table: $("devices"), pager: $("devices-section").querySelector(".pager"),
    key: (d) => d.name, pageSize: 100, emptyText: "no device is active",
    sort: { id: "since", dir: -1 },
    columns: [
      { id: "name", label: "Name", text: (d) => d.name, value: (d) => d.name.toLowerCase(), width: "22%" },
      { id: "node", label: "Node", text: (d) => d.node || "", width: "12%", when: hasNode },
      { id: "ip", label: "IP", text: (d) => d.ip, width: "15%" },
      { id: "udp_port", label: "UDP", text: (d) => String(d.udp_port), value: (d) => d.udp_port, cls: "num", width: "8%" },
      { id: "since", label: "Since", text: (d) => ago(d.since_epoch, nowSec()), value: (d) => d.since_epoch,
        title: (d) => fullTime(d.since_epoch), width: "14%" },
      { id: "commands", label: "Cmds", text: (d) => d.commands.toLocaleString(), value: (d) => d.commands, cls: "num", width: "9%" },
      { id: "bytes_uploaded", label: "Uploaded", text: (d) => bytes(d.bytes_uploaded), value: (d) => d.bytes_uploaded,
        title: (d) => d.bytes_uploaded.toLocaleString() + " bytes", cls: "num", width: "12%" },
      { id: "action", label: "Action", sortable: false, cls: "act-cell", width: "130px",
        render: (td, d) => button(td, "Disconnect", "disconnect",
          (b) => act(b, "DELETE", "/devices/" + encodeURIComponent(d.name), "disconnected " + d.name)) },
    ],
  });
  const search = $("device-search"), sort = $("device-sort");
  for (const c of table.allColumns) {
    if (c.sortable === false) continue;
    for (const [dir, word] of [[1, "↑"], [-1, "↓"]]) {
      const o = document.createElement("option");
      o.value = c.id + ":" + dir;
      o.textContent = "sort: " + c.label.toLowerCase() + " " + word;
      sort.appendChild(o);
    }
  }
  const syncSort = () => { sort.value = table.sort.id + ":" + table.sort.dir; };
  syncSort();
  sort.addEventListener("change", () => {
    const [id, dir] = sort.value.split(":");
    table.sortBy(id, Number(dir));
  });
  table.table.tHead.addEventListener("click", () => setTimeout(syncSort));
  search.addEventListener("input", () => {
    const q = search.value.trim().toLowerCase();
    table.setFilter(q ? (d) => d.name.toLowerCase().includes(q) : null);
  });
  return table;
}

export function lockoutsTable(act) {
  return new DataTable({
    table: $("lockouts"), pager: $("lockouts-section").querySelector(".pager"),
    key: (l) => l.name, pageSize: 50, emptyText: "no failed logins",
    sort: { id: "left", dir: -1 },
    columns: [
      { id: "name", label: "Name", text: (l) => l.name, value: (l) => l.name.toLowerCase(), width: "28%" },
      { id: "node", label: "Node", text: (l) => l.node || "", when: hasNode },
      { id: "failures", label: "Failures", text: (l) => String(l.failures), value: (l) => l.failures, cls: "num", width: "16%" },
      { id: "state", label: "State", value: (l) => (l.blocked ? 1 : 0),
        render: (td, l) => { td.textContent = l.blocked ? "blocked" : "counting"; if (l.blocked) td.classList.add("blocked"); } },
      { id: "left", label: "Time left", value: (l) => l.seconds_left,
        render: (td, l) => { td.classList.add("countdown"); td.dataset.until = String(l.until || 0); td.textContent = l.blocked ? countdown(l.until - nowSec()) : ""; } },
      { id: "action", label: "Action", sortable: false, cls: "act-cell", width: "120px",
        render: (td, l) => button(td, "Lift block", "lift",
          (b) => act(b, "DELETE", "/lockouts/" + encodeURIComponent(l.name), "lifted " + l.name)) },
    ],
  });
}

// The countdowns tick every second between refreshes; true when one ran out.
export function tickCountdowns() {
  let expired = false;
  for (const td of document.querySelectorAll("#lockouts td.countdown")) {
    const until = Number(td.dataset.until);
    if (!until) continue;
    const left = until - nowSec();
    td.textContent = left > 0 ? countdown(left) : "ending";
    if (left <= 0) expired = true;
  }
  return expired;
}

const stat = (op) => (f) => (f.stats ? f.stats[op] : "");

export function filesTable() {
  const table = new DataTable({
    table: $("files"), pager: $("files-section").querySelector(".pager"),
    key: (f) => f.device, pageSize: 25, emptyText: "no stored file",
    sort: { id: "uploaded", dir: -1 },
    columns: [
      { id: "device", label: "Device", text: (f) => f.device, value: (f) => f.device.toLowerCase(), width: "18%" },
      { id: "node", label: "Node", text: (f) => f.node || "", when: hasNode },
      { id: "file_id", label: "File", text: (f) => String(f.file_id), value: (f) => f.file_id, cls: "num", width: "8%" },
      { id: "size", label: "Size", text: (f) => bytes(f.size), value: (f) => f.size, cls: "num",
        title: (f) => f.size.toLocaleString() + " bytes" },
      { id: "samples", label: "Samples", text: (f) => f.samples.toLocaleString(), value: (f) => f.samples, cls: "num" },
      { id: "sum", label: "SUM", text: stat("sum"), value: (f) => (f.stats ? Number(f.stats.sum) : -Infinity), cls: "num", title: stat("sum") },
      { id: "average", label: "AVERAGE", text: stat("average"), value: (f) => (f.stats ? Number(f.stats.average) : -Infinity), cls: "num", title: stat("average") },
      { id: "max", label: "MAX", text: stat("max"), value: (f) => (f.stats ? Number(f.stats.max) : -Infinity), cls: "num" },
      { id: "min", label: "MIN", text: stat("min"), value: (f) => (f.stats ? Number(f.stats.min) : -Infinity), cls: "num" },
      { id: "uploaded", label: "Uploaded", text: (f) => ago(f.uploaded_at_epoch, nowSec()),
        value: (f) => f.uploaded_at_epoch, title: (f) => f.uploaded_at_text },
    ],
  });
  const input = $("file-device");
  input.addEventListener("input", () => {
    const q = input.value.trim().toLowerCase();
    table.setFilter(q ? (f) => f.device.toLowerCase().includes(q) : null);
  });
  return table;
}

const SHOWN = new Set(["seq", "ts", "timestamp", "level", "event", "device", "logger", "node"]);

export function eventsTable() {
  return new DataTable({
    table: $("events"), pager: null, key: (e) => e.device || "", pageSize: 200,
    emptyText: "no event yet", sort: { id: "time", dir: -1 },
    columns: [
      { id: "time", label: "Time", text: (e) => clock(e.ts), value: (e) => e.seq, title: (e) => fullTime(e.ts), width: "14%" },
      { id: "node", label: "Node", text: (e) => e.node || "", when: hasNode, width: "10%" },
      { id: "event", label: "Event", text: (e) => e.event, cls: "ev", width: "22%" },
      { id: "device", label: "Device", text: (e) => e.device || "", width: "18%" },
      { id: "details", label: "Details", cls: "rest wrap", sortable: false,
        text: (e) => Object.keys(e).filter((k) => !SHOWN.has(k)).map((k) => k + "=" + JSON.stringify(e[k])).join(" ") },
    ],
  });
}
