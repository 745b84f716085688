"""The pure parts of ``edgenet admin``: the server-sent event parser fed in pieces,
human units, tables (with the fleet's node column), and ``--since`` shorthands."""

from __future__ import annotations

from edgenet.admin import render as r
from edgenet.admin.cli import since_param
from edgenet.admin.follow import MAX_LINE, SseEvent, SseParser

STREAM = (b"retry: 3000\n: connected\n\nid: 7\ndata: {\"seq\":7}\n\n"
          b"id: 8\r\ndata: line one\r\ndata: line two\r\n\r\n"
          b": keepalive\n\nevent: end\ndata: {\"reason\": \"shutdown\"}\n\n")


def test_sse_parser_gives_the_same_events_however_the_bytes_are_cut() -> None:
    want = [SseEvent("message", '{"seq":7}', "7"), SseEvent("message", "line one\nline two", "8"),
            SseEvent("end", '{"reason": "shutdown"}', "8")]
    assert SseParser().feed(STREAM) == want
    for size in (1, 2, 3, 7, 64):
        parser = SseParser()
        got = [ev for i in range(0, len(STREAM), size) for ev in parser.feed(STREAM[i:i + size])]
        assert got == want, size


def test_sse_parser_drops_a_line_that_never_ends() -> None:
    parser = SseParser()
    assert parser.feed(b"data: " + b"x" * (MAX_LINE + 10)) == []
    assert parser.feed(b"\n\ndata: ok\n\n") == [SseEvent("message", "ok", None)]


def test_human_units() -> None:
    assert [r.human_bytes(n) for n in (0, 1023, 1024, 1536, 5 * 2**20, 3 * 2**30)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB"]
    assert r.human_bytes(None) == "" and r.human_bytes(True) == ""
    now = 1_000_000.0
    assert [r.ago(now - d, now) for d in (0, 59, 60, 3599, 7200, 3 * 86400)] == [
        "0 s ago", "59 s ago", "1 min ago", "59 min ago", "2 h ago", "3 d ago"]
    assert r.ago(now + 2, now) == "just now" and r.ago("x", now) == ""


def test_tables_align_cut_and_show_the_node_when_there_is_one() -> None:
    rows = [{"name": "cam1", "ip": "192.0.2.1", "udp_port": 5000, "since_epoch": 100.0,
             "commands": 3, "bytes_uploaded": 2048}]
    text = r.table(rows, r.device_columns(rows, 160.0))
    assert text.splitlines() == ["NAME  IP         UDP   SINCE      CMDS  UPLOADED",
                                 "cam1  192.0.2.1  5000  1 min ago  3     2.0 KiB"]
    fleet = [dict(rows[0], node="node-b")]
    assert r.table(fleet, r.device_columns(fleet, 160.0)).split()[:3] == ["NAME", "NODE", "IP"]
    cut = r.table(rows, r.device_columns(rows, 160.0), width=20)
    assert all(len(line) <= 20 for line in cut.splitlines()) and cut.endswith("…")
    line = r.event_line({"event": "login", "device": "cam1", "ts": 0, "node": "b", "ip": "x"})
    assert " [b] login cam1  ip=\"x\"" in line


def test_since_shorthands() -> None:
    assert since_param("10m", 1000.0) == "400.000"
    assert since_param("2h", 100_000.0) == "92800.000"
    assert since_param("2024-05-01T00:00:00Z", 0) == "2024-05-01T00:00:00Z"
    assert since_param(None, 0) is None
