"""The admin API's endpoints through aiohttp's test client, with auth on and off,
and every kind of bad input answered as a 4xx JSON error."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from admin_api import EventBuffer, admin_config_error, create_app, is_loopback
from admin_api.app import MAX_BODY
from edgenet.config import ServerConfig
from edgenet.server.app import EdgeServer
from edgenet.server.auth import Credentials
from edgenet.server.logs import DEVICE_LOG, FileRecord, format_timestamp
from edgenet.server.state import ServerState
from tests.test_admin_support import CREDENTIALS, PASSWORDS, TOKEN

NOW = 1_700_000_000.0
AUTH = {"Authorization": f"Bearer {TOKEN}"}

GET_ROUTES = ["/metrics", "/api/v1/openapi.json", "/api/v1/devices", "/api/v1/devices/alpha",
              "/api/v1/lockouts", "/api/v1/logs/uploads", "/api/v1/logs/deletions",
              "/api/v1/logs/devices", "/api/v1/events", "/api/v1/files"]
LIST_ROUTES = ["/api/v1/devices", "/api/v1/lockouts", "/api/v1/logs/uploads",
               "/api/v1/logs/deletions", "/api/v1/logs/devices", "/api/v1/events",
               "/api/v1/files"]
MUTATIONS = ["/api/v1/devices/alpha", "/api/v1/lockouts/beta"]


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class FakeSession:
    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []
        self.peer = "192.0.2.1:40000"
        self.commands = 0
        self.bytes_uploaded = 0

    def disconnect(self, kind: str, message: str) -> None:
        self.told.append((kind, message))


async def blocked_for(state: ServerState, name: str, now: float) -> float:
    """Seconds ``name`` stays blocked, read through the lockouts' interface."""
    for entry in await state.lockouts.entries(now):
        if entry.name == name and entry.blocked_until is not None:
            return entry.blocked_until - now
    return 0.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server(tmp_path: Path, clock: FakeClock, events: EventBuffer) -> EdgeServer:
    """A server object (opened, not listening) whose state holds two devices, a blocked
    name, a name with one failure, three stored files and their logs."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "alpha-1.txt").write_text("1\n2\n3\n")
    (data / "alpha-2.txt").write_text("5\n")
    (data / "beta-7.txt").write_text("10\n20\n")
    (data / "upload-log.txt").write_text("".join(
        FileRecord(dev, NOW - 300 + i * 60, fid, n).line()
        for i, (dev, fid, n) in enumerate([("alpha", 1, 3), ("beta", 7, 2), ("alpha", 2, 1),
                                           ("alpha", 3, 4)])))
    (data / "deletion-log.txt").write_text(FileRecord("alpha", NOW - 10, 3, 4).line())
    cfg = ServerConfig(port=0, max_attempts=3, host="127.0.0.1", data_dir=data,
                       block_seconds=30)
    srv = EdgeServer(cfg, Credentials.parse(CREDENTIALS), clock=clock, events=events)
    state = await srv.open()
    for name, ip, port, since in [("alpha", "192.0.2.1", 5001, NOW - 100),
                                  ("gamma", "192.0.2.3", 5003, NOW - 50)]:
        dev = (await state.presence.join(name, ip, port, since)).device
        state.sessions.add(dev.session_id, FakeSession())
    for _ in range(3):
        await state.lockouts.attempt("beta", NOW - 5)  # three failures: blocked
    await state.lockouts.attempt("mallory", NOW - 1)
    return srv


@pytest.fixture
def events() -> EventBuffer:
    buf = EventBuffer(clock=lambda: NOW)
    for name, device in [("login", "alpha"), ("login", "gamma"), ("login_failed", "beta"),
                         ("device_blocked", "beta")]:
        buf(None, "info", {"event": name, "device": device, "level": "info"})
    buf(None, "info", {"event": "command", "device": "alpha", "command": "UED", "outcome": "ok",
                       "duration_ms": 12.5, "level": "info"})
    buf(None, "info", {"event": "upload", "device": "alpha", "bytes": 6, "samples": 3,
                       "level": "info"})
    buf(None, "info", {"event": "weird", "password": "alphapass", "token": TOKEN,
                       "obj": object(), "level": "info"})
    return buf


@pytest.fixture
async def open_client(aiohttp_client: Any, server: EdgeServer) -> Any:
    return await aiohttp_client(create_app(server))


@pytest.fixture
async def token_client(aiohttp_client: Any, server: EdgeServer) -> Any:
    return await aiohttp_client(create_app(server, token=TOKEN))


async def get_json(client: Any, path: str, status: int = 200, **kw: Any) -> Any:
    resp = await client.get(path, **kw)
    assert resp.status == status, (path, resp.status, await resp.text())
    assert resp.content_type == "application/json"
    return await resp.json()


def assert_error(body: Any, code: str) -> None:
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


# -- auth ------------------------------------------------------------------------


async def test_healthz_and_page_need_no_token(token_client: Any) -> None:
    assert await get_json(token_client, "/healthz") == {"status": "ok"}
    resp = await token_client.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"


@pytest.mark.parametrize("path", GET_ROUTES)
async def test_reads_need_the_token_when_the_server_has_one(token_client: Any, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": "Bearer"}, {"Authorization": f"Bearer {TOKEN}x"}):
        resp = await token_client.get(path, headers=headers)
        assert resp.status == 401, (path, headers)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(await resp.json(), "unauthorized")
    resp = await token_client.get(path, headers={"Authorization": f"bearer {TOKEN}"})
    assert resp.status == 200, (path, await resp.text())


@pytest.mark.parametrize("path", GET_ROUTES)
async def test_reads_are_open_without_a_token(open_client: Any, path: str) -> None:
    resp = await open_client.get(path)
    assert resp.status == 200, (path, await resp.text())


@pytest.mark.parametrize("path", MUTATIONS)
async def test_mutations_are_refused_without_a_server_token(open_client: Any, server: EdgeServer,
                                                           path: str) -> None:
    for headers in ({}, AUTH):
        resp = await open_client.delete(path, headers=headers)
        assert resp.status == 403
        assert_error(await resp.json(), "read_only")
    assert await server.state.presence.get("alpha") is not None
    assert await blocked_for(server.state, "beta", NOW) > 0


@pytest.mark.parametrize("path", MUTATIONS)
async def test_mutations_need_the_token(token_client: Any, path: str) -> None:
    resp = await token_client.delete(path, headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    resp = await token_client.delete(path, headers=AUTH)
    assert resp.status == 200


async def test_without_a_token_only_loopback_host_names_are_answered(open_client: Any,
                                                                    token_client: Any) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the API.
    resp = await open_client.get("/api/v1/devices", headers={"Host": "evil.example:8080"})
    assert resp.status == 403
    assert_error(await resp.json(), "forbidden_host")
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080"):
        resp = await open_client.get("/api/v1/devices", headers={"Host": host})
        assert resp.status == 200, host
    resp = await token_client.get("/api/v1/devices", headers={**AUTH, "Host": "admin.example"})
    assert resp.status == 200


def test_admin_config_rules() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host) and admin_config_error(host, None) is None, host
    for host in ("0.0.0.0", "::", "", "198.51.100.10", "example.com"):
        assert not is_loopback(host)
        problem = admin_config_error(host, None)
        assert problem is not None and "token" in problem and "\n" not in problem
        assert admin_config_error(host, TOKEN) is None
    assert admin_config_error("127.0.0.1", "  ") is not None


# -- devices ---------------------------------------------------------------------


async def test_devices_newest_first_with_all_fields(open_client: Any) -> None:
    body = await get_json(open_client, "/api/v1/devices")
    assert [d["name"] for d in body["data"]] == ["gamma", "alpha"]
    alpha = body["data"][1]
    assert alpha["ip"] == "192.0.2.1" and alpha["udp_port"] == 5001
    assert alpha["since_text"] == format_timestamp(NOW - 100)
    assert alpha["since_epoch"] == NOW - 100
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", alpha["since"])
    assert re.fullmatch(r"[0-9a-f]{16}", alpha["session_id"])
    assert alpha["commands"] == 0 and alpha["bytes_uploaded"] == 0
    assert body["meta"] == {"limit": 100, "count": 2, "has_next": False, "next_cursor": None}
    one = await get_json(open_client, "/api/v1/devices/alpha")
    assert one["data"] == alpha


async def test_unknown_or_bad_device_names(open_client: Any, token_client: Any) -> None:
    assert_error(await get_json(open_client, "/api/v1/devices/nobody", 404), "device_not_found")
    assert_error(await get_json(open_client, "/api/v1/devices/" + "x" * 65, 400), "bad_device")
    resp = await token_client.delete("/api/v1/devices/nobody", headers=AUTH)
    assert resp.status == 404
    assert_error(await resp.json(), "device_not_found")


async def test_disconnect_tells_the_device_and_updates_the_log(token_client: Any,
                                                              server: EdgeServer) -> None:
    alpha = await server.state.presence.get("alpha")
    assert alpha is not None
    session = server.state.sessions.get(alpha.session_id)
    assert isinstance(session, FakeSession)
    resp = await token_client.delete("/api/v1/devices/alpha", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["data"]["name"] == "alpha" and body["data"]["disconnected"] is True
    assert session.told and session.told[0][0] == "disconnected"
    assert await server.state.presence.get("alpha") is None
    log_text = (server.config.data_dir / DEVICE_LOG).read_text()
    assert "alpha" not in log_text and "; gamma; 192.0.2.3; 5003" in log_text
    listed = await get_json(token_client, "/api/v1/devices", headers=AUTH)
    assert [d["name"] for d in listed["data"]] == ["gamma"]
    resp = await token_client.delete("/api/v1/devices/alpha", headers=AUTH)
    assert resp.status == 404


# -- lockouts --------------------------------------------------------------------


async def test_lockouts_list_and_lift(token_client: Any, server: EdgeServer,
                                      clock: FakeClock) -> None:
    body = await get_json(token_client, "/api/v1/lockouts", headers=AUTH)
    by_name = {e["name"]: e for e in body["data"]}
    assert [e["name"] for e in body["data"]] == ["mallory", "beta"]  # latest failure first
    beta = by_name["beta"]
    assert beta["failures"] == 3 and beta["blocked"] is True and beta["attempts_left"] == 0
    assert beta["seconds_left"] == 25.0 and beta["blocked_until_epoch"] == NOW + 25
    assert beta["blocked_until_text"] == format_timestamp(NOW + 25)
    mallory = by_name["mallory"]
    assert mallory["blocked"] is False and mallory["blocked_until"] is None
    assert mallory["failures"] == 1 and mallory["attempts_left"] == 2
    only = await get_json(token_client, "/api/v1/lockouts?device=beta", headers=AUTH)
    assert [e["name"] for e in only["data"]] == ["beta"]

    resp = await token_client.delete("/api/v1/lockouts/beta", headers=AUTH)
    assert resp.status == 200
    lifted = (await resp.json())["data"]
    assert lifted["lifted"] is True and lifted["blocked"] is True and lifted["failures"] == 3
    assert await blocked_for(server.state, "beta", NOW) == 0.0
    resp = await token_client.delete("/api/v1/lockouts/beta", headers=AUTH)
    assert resp.status == 404
    assert_error(await resp.json(), "lockout_not_found")

    clock.now = NOW + 3600  # blocks run out on their own too
    for _ in range(3):
        await server.state.lockouts.attempt("beta", NOW)
    body = await get_json(token_client, "/api/v1/lockouts", headers=AUTH)
    assert "beta" not in [e["name"] for e in body["data"]]


# -- logs and files --------------------------------------------------------------


async def test_upload_and_deletion_logs(open_client: Any) -> None:
    body = await get_json(open_client, "/api/v1/logs/uploads")
    assert [(r["device"], r["file_id"]) for r in body["data"]] == [
        ("alpha", 3), ("alpha", 2), ("beta", 7), ("alpha", 1)]
    first = body["data"][-1]
    assert first["samples"] == 3 and first["time_text"] == format_timestamp(NOW - 300)
    assert first["time_epoch"] == NOW - 300
    body = await get_json(open_client, "/api/v1/logs/uploads?device=alpha&limit=2")
    assert [r["file_id"] for r in body["data"]] == [3, 2] and body["meta"]["has_next"]
    nxt = await get_json(open_client, "/api/v1/logs/uploads?device=alpha&limit=2&cursor="
                         + body["meta"]["next_cursor"])
    assert [r["file_id"] for r in nxt["data"]] == [1] and not nxt["meta"]["has_next"]
    deletions = await get_json(open_client, "/api/v1/logs/deletions")
    assert [(r["device"], r["file_id"], r["samples"]) for r in deletions["data"]] == [
        ("alpha", 3, 4)]


@pytest.mark.parametrize("since", [str(int(NOW - 200)), "2023-11-14T22:10:20Z",
                                   "2023-11-14T22:10:20+00:00", "2023-11-14T22:10:20",
                                   format_timestamp(NOW - 200)])
async def test_since_accepts_epoch_iso_and_the_log_format(open_client: Any, since: str) -> None:
    # NOW - 200 is 2023-11-14T22:10:20Z: the records at NOW-180, NOW-120 and NOW-300+180.
    body = await get_json(open_client, "/api/v1/logs/uploads", params={"since": since})
    assert [r["file_id"] for r in body["data"]] == [3, 2], since


async def test_device_log_mirrors_the_file(open_client: Any, server: EdgeServer) -> None:
    body = await get_json(open_client, "/api/v1/logs/devices")
    assert [(r["seq"], r["name"], r["udp_port"]) for r in body["data"]] == [
        (1, "alpha", 5001), (2, "gamma", 5003)]
    await server.state.device_log.write_now()
    lines = (server.config.data_dir / DEVICE_LOG).read_text().splitlines()
    assert lines == [f"{r['seq']}; {r['since_text']}; {r['name']}; {r['ip']}; {r['udp_port']}"
                     for r in body["data"]]
    only = await get_json(open_client, "/api/v1/logs/devices?device=gamma")
    assert [(r["seq"], r["name"]) for r in only["data"]] == [(2, "gamma")]


async def test_files(open_client: Any, server: EdgeServer) -> None:
    body = await get_json(open_client, "/api/v1/files")
    rows = {(f["device"], f["file_id"]): f for f in body["data"]}
    assert set(rows) == {("alpha", 1), ("alpha", 2), ("beta", 7)}
    assert rows[("alpha", 1)]["size"] == 6 and rows[("alpha", 1)]["samples"] == 3
    assert rows[("beta", 7)]["uploaded_at_epoch"] == NOW - 240
    assert [f["file_id"] for f in body["data"]] == [2, 7, 1]  # newest upload first
    only = await get_json(open_client, "/api/v1/files?device=beta")
    assert [f["file_id"] for f in only["data"]] == [7]


# -- events ----------------------------------------------------------------------


async def test_events_newest_first_filtered_and_without_secrets(open_client: Any) -> None:
    body = await get_json(open_client, "/api/v1/events")
    names = [e["event"] for e in body["data"]]
    assert names == ["weird", "upload", "command", "device_blocked", "login_failed", "login",
                     "login"]
    weird = body["data"][0]
    assert "password" not in weird and "token" not in weird and isinstance(weird["obj"], str)
    beta = await get_json(open_client, "/api/v1/events?device=beta")
    assert [e["event"] for e in beta["data"]] == ["device_blocked", "login_failed"]
    logins = await get_json(open_client, "/api/v1/events?event=login,command")
    assert [e["event"] for e in logins["data"]] == ["command", "login", "login"]
    page = await get_json(open_client, "/api/v1/events?limit=3")
    seen = [e["seq"] for e in page["data"]]
    for _ in range(10):
        if not page["meta"]["has_next"]:
            break
        page = await get_json(open_client, "/api/v1/events?limit=3&cursor="
                              + page["meta"]["next_cursor"])
        seen += [e["seq"] for e in page["data"]]
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 7


async def test_event_stream_replays_then_follows(open_client: Any, events: EventBuffer) -> None:
    resp = await open_client.get("/api/v1/events/stream?device=alpha",
                                 headers={"Last-Event-ID": "1"})
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    got: list[dict[str, Any]] = []

    async def read_until(n: int) -> None:
        for _ in range(100):
            line = (await resp.content.readline()).decode()
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if len(got) >= n:
                    return
        raise AssertionError(f"stream gave {got}")

    await asyncio.wait_for(read_until(2), 5)  # the replay after seq 1: alpha's command, upload
    events(None, "info", {"event": "logout", "device": "alpha", "level": "info"})
    events(None, "info", {"event": "logout", "device": "gamma", "level": "info"})
    await asyncio.wait_for(read_until(3), 5)  # then live, filtered
    assert [e["event"] for e in got] == ["command", "upload", "logout"]
    resp.close()


async def test_event_streams_are_bounded(aiohttp_client: Any, server: EdgeServer) -> None:
    bounded = EdgeServer(server.config, Credentials.parse(CREDENTIALS),
                         events=EventBuffer(max_subscribers=1))
    await bounded.open()
    client = await aiohttp_client(create_app(bounded))
    first = await client.get("/api/v1/events/stream")
    assert first.status == 200
    second = await client.get("/api/v1/events/stream")
    assert second.status == 503
    assert_error(await second.json(), "too_many_streams")
    first.close()


# -- metrics ---------------------------------------------------------------------


async def test_metrics_from_events_and_state(open_client: Any, aiohttp_client: Any,
                                             server: EdgeServer, events: EventBuffer) -> None:
    resp = await open_client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    # The fixture's events were logged before the app existed; count new ones.
    for name in ("login", "login_failed", "device_blocked", "login_refused_blocked"):
        events(None, "info", {"event": name, "device": "beta"})
    events(None, "info", {"event": "command", "command": "UVF", "outcome": "ok",
                          "duration_ms": 0.4})
    events(None, "info", {"event": "command", "command": "SCS", "outcome": "not_found",
                          "duration_ms": 3})
    events(None, "info", {"event": "upload", "bytes": 1000, "samples": 10})
    events(None, "info", {"event": "disconnect", "reason": "admin"})
    text = await (await open_client.get("/metrics")).text()
    expect = {
        "edgenet_devices_connected": 2.0,
        "edgenet_device_names_blocked": 1.0,
        'edgenet_logins_total{outcome="ok"}': 1.0,
        'edgenet_logins_total{outcome="failed"}': 2.0,
        'edgenet_logins_total{outcome="refused_blocked"}': 1.0,
        "edgenet_blocks_total": 1.0,
        'edgenet_commands_total{command="UVF",outcome="ok"}': 1.0,
        'edgenet_commands_total{command="SCS",outcome="not_found"}': 1.0,
        'edgenet_command_duration_seconds_count{command="SCS"}': 1.0,
        'edgenet_command_duration_seconds_bucket{command="SCS",le="0.005"}': 1.0,
        'edgenet_command_duration_seconds_bucket{command="SCS",le="0.0025"}': 0.0,
        "edgenet_uploaded_bytes_total": 1000.0,
        'edgenet_udp_transfers_total{outcome="ok"}': 1.0,
        'edgenet_sessions_ended_total{reason="admin"}': 1.0,
    }
    values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                  if line and not line.startswith("#"))
    for key, value in expect.items():
        assert float(values[key]) == value, (key, values.get(key))
    # The collector's runs, by generation (the process's own counts: 2 is a full one).
    import gc
    assert float(values['python_gc_collections_total{generation="2"}']) == \
        gc.get_stats()[2]["collections"]
    # A second app of another server has its own registry: no clash, no shared counts.
    other = await aiohttp_client(create_app(server))
    other_text = await (await other.get("/metrics")).text()
    assert "edgenet_blocks_total 0.0" in other_text


# -- bad input -------------------------------------------------------------------


@pytest.mark.parametrize("path", LIST_ROUTES)
@pytest.mark.parametrize("query,code", [
    ("limit=0", "bad_limit"), ("limit=1001", "bad_limit"), ("limit=-1", "bad_limit"),
    ("limit=abc", "bad_limit"), ("limit=", "bad_limit"), ("cursor=%%%", "bad_cursor"),
    ("cursor=bm90OmN1cnNvcg", "bad_cursor"), ("cursor=" + "A" * 100, "bad_cursor"),
])
async def test_bad_list_parameters(open_client: Any, path: str, query: str, code: str) -> None:
    assert_error(await get_json(open_client, f"{path}?{query}", 400), code)


async def test_a_cursor_of_one_list_is_refused_by_another(open_client: Any) -> None:
    page = await get_json(open_client, "/api/v1/logs/uploads?limit=1")
    cursor = page["meta"]["next_cursor"]
    assert_error(await get_json(open_client, f"/api/v1/events?cursor={cursor}", 400),
                 "bad_cursor")


@pytest.mark.parametrize("path,code", [
    ("/api/v1/logs/uploads?since=yesterday", "bad_since"),
    ("/api/v1/logs/uploads?since=nan", "bad_since"),
    ("/api/v1/files?since=-5", "bad_since"),
    ("/api/v1/files?device=" + "x" * 65, "bad_device"),
    ("/api/v1/events?event=", "bad_event"),
    ("/api/v1/events?event=" + ",".join(f"e{i}" for i in range(30)), "bad_event"),
    ("/api/v1/events/stream?after=x", "bad_after"),
])
async def test_bad_filters(open_client: Any, path: str, code: str) -> None:
    assert_error(await get_json(open_client, path, 400), code)


async def test_unknown_paths_wrong_methods_and_huge_bodies(open_client: Any,
                                                          token_client: Any) -> None:
    for client, headers in ((open_client, {}), (token_client, AUTH)):
        assert_error(await get_json(client, "/api/v1/nothing", 404, headers=headers),
                     "not_found")
        resp = await client.post("/api/v1/devices", headers=headers)
        assert resp.status == 405 and "GET" in resp.headers["Allow"]
        assert_error(await resp.json(), "method_not_allowed")
        resp = await client.put("/api/v1/lockouts/beta", headers=headers)
        assert resp.status == 405
        resp = await client.delete("/api/v1/devices/alpha", data=b"x" * (MAX_BODY + 1),
                                   headers=headers)
        assert resp.status == 413
        assert_error(await resp.json(), "payload_too_large")


async def test_our_bugs_are_500_json_without_details(aiohttp_client: Any,
                                                     server: EdgeServer) -> None:
    app = create_app(server)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app.router.add_get("/boom", boom)
    client = await aiohttp_client(app)
    body = await get_json(client, "/boom", 500)
    assert_error(body, "internal")
    assert "secret" not in json.dumps(body)


async def test_no_password_anywhere(token_client: Any, server: EdgeServer) -> None:
    paths = GET_ROUTES + ["/", "/healthz", "/api/v1/events?limit=1000"]
    for path in paths:
        text = await (await token_client.get(path, headers=AUTH)).text()
        for secret in PASSWORDS + (TOKEN, str(server.config.credentials)):
            assert secret not in text, (path, secret)


# -- the OpenAPI document and the page ---------------------------------------------


async def test_openapi_documents_exactly_the_routes(open_client: Any, server: EdgeServer) -> None:
    doc = await get_json(open_client, "/api/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, item in doc["paths"].items()
                  for method in item if method != "parameters"}
    app = create_app(server)
    served = {(route.resource.canonical, route.method)  # type: ignore[union-attr]
              for route in app.router.routes() if route.method != "HEAD"}
    assert served - documented == set(), "routes missing from openapi.json"
    assert documented - served == set(), "openapi.json documents routes that do not exist"
    for (path, method) in documented:
        op = doc["paths"][path][method.lower()]
        assert op["responses"] and op["summary"] and op["operationId"]


async def test_page_is_self_contained(token_client: Any) -> None:
    resp = await token_client.get("/")
    html = await resp.text()
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp and "unsafe" not in csp
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "external resource"
    scripts = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {"/static/main.js", "/static/uPlot.iife.min.js", "/static/dashboard.css"} <= set(scripts)
    own = ""
    for name in ("main.js", "api.js", "table.js", "panels.js", "charts.js", "format.js",
                 "dashboard.css", "uPlot.iife.min.js", "uPlot.min.css"):
        asset = await token_client.get("/static/" + name)  # public: no token
        assert asset.status == 200, name
        assert asset.content_type == ("text/css" if name.endswith(".css") else "text/javascript")
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
        if not name.startswith("uPlot"):
            own += await asset.text()
    assert "innerHTML" not in own and "eval(" not in own  # names are text, never HTML
    assert not re.search(r"https?://", own), "the page's own code names no other host"
    for needle in ("Disconnect", "Lift block", "/events/stream", "/history?window="):
        assert needle in own
    assert 'id="token"' in html and 'id="token-state"' in html
    for bad in ("/static/nope.js", "/static/index.html", "/static/README.md",
                "/static/uPlot.LICENSE", "/static/..%2Fapp.py"):
        missing = await token_client.get(bad)
        assert missing.status == 404, bad
        assert_error(await missing.json(), "not_found")


def test_vendored_chart_library_matches_its_pinned_hashes() -> None:
    import hashlib

    vendor = Path(__file__).resolve().parent.parent / "admin_api" / "static" / "vendor"
    readme = (vendor / "README.md").read_text()
    assert "uplot@1.6.32" in readme and "(v1.6.32)" in (vendor / "uPlot.iife.min.js").read_text()
    for name in ("uPlot.iife.min.js", "uPlot.min.css"):
        digest = hashlib.sha256((vendor / name).read_bytes()).hexdigest()
        assert f"`{name}` | `dist/{name}` | `{digest}`" in readme, name
    assert "MIT License" in (vendor / "uPlot.LICENSE").read_text()
