"""What ``edgenet admin`` prints: aligned tables in human units for a person, JSON for
a program. Pure functions of the API's records and ``now``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

Column = tuple[str, Callable[[dict[str, Any]], str]]

#: Keys of an event shown in their own columns (the rest go to DETAILS).
_EVENT_KEYS = frozenset({"seq", "ts", "timestamp", "level", "event", "device", "logger", "node"})


def human_bytes(n: Any) -> str:
    """1536 -> '1.5 KiB' (binary units, as the dashboard shows them)."""
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns


def ago(epoch: Any, now: float) -> str:
    """How long ago, roughly: '12 s ago', '3 min ago', '2 h ago', '4 d ago'."""
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return ""
    delta = now - float(epoch)
    if delta < 0:
        return "just now" if delta > -5 else "in the future"
    for size, unit in ((86_400, "d"), (3_600, "h"), (60, "min")):
        if delta >= size:
            return f"{int(delta // size)} {unit} ago"
    return f"{int(delta)} s ago"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], width: int = 0) -> str:
    """Left-aligned columns under upper-case headers; the last column is cut to
    ``width`` characters in all (0: never cut)."""
    cells = [[get(r) for _, get in columns] for r in rows]
    heads = [name for name, _ in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    lines = []
    for line in [heads] + cells:
        text = "  ".join(v.ljust(widths[i]) for i, v in enumerate(line)).rstrip()
        if width and len(text) > width:
            text = text[:max(width - 1, 0)] + "…"
        lines.append(text)
    return "\n".join(lines)


def _s(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: "" if r.get(key) is None else str(r.get(key))


def _with_node(rows: Sequence[dict[str, Any]], columns: list[Column], at: int) -> list[Column]:
    """Fleet mode: a NODE column when any record names its node."""
    if any(r.get("node") for r in rows):
        columns.insert(at, ("NODE", _s("node")))
    return columns


def device_columns(rows: Sequence[dict[str, Any]], now: float) -> list[Column]:
    return _with_node(rows, [
        ("NAME", _s("name")), ("IP", _s("ip")), ("UDP", _s("udp_port")),
        ("SINCE", lambda r: ago(r.get("since_epoch"), now)), ("CMDS", _s("commands")),
        ("UPLOADED", lambda r: human_bytes(r.get("bytes_uploaded")))], 1)


def lockout_columns(rows: Sequence[dict[str, Any]], now: float) -> list[Column]:
    return _with_node(rows, [
        ("NAME", _s("name")), ("FAILURES", _s("failures")),
        ("STATE", lambda r: "blocked" if r.get("blocked") else "counting"),
        ("LEFT", lambda r: f"{r.get('seconds_left', 0):.0f} s" if r.get("blocked") else ""),
        ("ATTEMPTS LEFT", _s("attempts_left"))], 1)


def _stat(op: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: str((r.get("stats") or {}).get(op, ""))


def file_columns(rows: Sequence[dict[str, Any]], now: float) -> list[Column]:
    columns: list[Column] = [
        ("DEVICE", _s("device")), ("FILE", _s("file_id")),
        ("SIZE", lambda r: human_bytes(r.get("size"))), ("SAMPLES", _s("samples")),
        ("UPLOADED", lambda r: ago(r.get("uploaded_at_epoch"), now))]
    if any(r.get("stats") for r in rows):
        columns += [("SUM", _stat("sum")), ("AVERAGE", _stat("average")),
                    ("MAX", _stat("max")), ("MIN", _stat("min"))]
    return _with_node(rows, columns, 1)


def file_log_columns(rows: Sequence[dict[str, Any]], now: float) -> list[Column]:
    return [("TIME", _s("time_text")), ("DEVICE", _s("device")), ("FILE", _s("file_id")),
            ("SAMPLES", _s("samples"))]


def device_log_columns(rows: Sequence[dict[str, Any]], now: float) -> list[Column]:
    return _with_node(rows, [("SEQ", _s("seq")), ("SINCE", _s("since_text")),
                             ("NAME", _s("name")), ("IP", _s("ip")),
                             ("UDP", _s("udp_port"))], 3)


def event_time(entry: dict[str, Any]) -> str:
    ts = entry.get("ts")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return time.strftime("%d %b %H:%M:%S", time.localtime(ts))
    return str(entry.get("timestamp", ""))


def event_details(entry: dict[str, Any]) -> str:
    return " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in entry.items()
                    if k not in _EVENT_KEYS)


def event_columns(rows: Sequence[dict[str, Any]], now: float) -> list[Column]:
    return _with_node(rows, [("TIME", event_time), ("EVENT", _s("event")),
                             ("DEVICE", _s("device")), ("DETAILS", event_details)], 2)


def event_line(entry: dict[str, Any]) -> str:
    """One followed event as a line for a person."""
    node = f" [{entry['node']}]" if entry.get("node") else ""
    device = f" {entry['device']}" if entry.get("device") else ""
    details = event_details(entry)
    return f"{event_time(entry)}{node} {entry.get('event', '')}{device}" + (
        f"  {details}" if details else "")


def record(data: dict[str, Any], now: float) -> str:
    """One record as ``key: value`` lines (``edgenet admin device NAME``)."""
    shown = dict(data)
    if "since_epoch" in shown:
        shown["since"] = f"{shown.get('since_text', '')} ({ago(shown['since_epoch'], now)})"
        shown.pop("since_text", None)
        shown.pop("since_epoch", None)
    if "bytes_uploaded" in shown:
        shown["bytes_uploaded"] = (f"{human_bytes(shown['bytes_uploaded'])} "
                                   f"({shown['bytes_uploaded']} bytes)")
    width = max((len(k) for k in shown), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in shown.items())


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def dumps_line(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
