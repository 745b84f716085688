// Human units for the dashboard: sizes in KiB/MiB, rates, "3 min ago", countdowns.
const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function bytes(n) {
  if (typeof n !== "number" || !isFinite(n)) return "";
  let v = Math.abs(n), i = 0;
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i++; }
  const sign = n < 0 ? "-" : "";
  return i === 0 ? sign + Math.round(v) + " B" : sign + v.toFixed(v < 10 ? 1 : 0) + " " + UNITS[i];
}

export function byteRate(n) {
  return n === null || n === undefined ? "–" : bytes(n) + "/s";
}

export function perSecond(n) {
  if (n === null || n === undefined) return "–";
  return (n >= 100 ? Math.round(n) : Math.round(n * 10) / 10).toLocaleString() + "/s";
}

export function count(n) {
  return n === null || n === undefined ? "–" : Math.round(n).toLocaleString();
}

export function ago(epoch, now) {
  if (typeof epoch !== "number") return "";
  const d = Math.max(0, now - epoch);
  if (d < 60) return Math.floor(d) + " s ago";
  if (d < 3600) return Math.floor(d / 60) + " min ago";
  if (d < 86400) return Math.floor(d / 3600) + " h ago";
  return Math.floor(d / 86400) + " d ago";
}

export function countdown(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  if (s < 60) return s + " s";
  const m = Math.floor(s / 60), r = s % 60;
  return m + " min " + String(r).padStart(2, "0") + " s";
}

export function fullTime(epoch) {
  return typeof epoch === "number" ? new Date(epoch * 1000).toLocaleString() : "";
}

export function clock(epoch) {
  return typeof epoch === "number" ? new Date(epoch * 1000).toLocaleTimeString() : "";
}
