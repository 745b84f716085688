"""The device's protocol core and the server's, joined in memory (h11's style).

Every command goes from ``ClientProtocol``'s bytes into the server's sans-I/O session
core and its command handlers working on real server state (an ``EdgeServer`` on a
temporary data dir, opened but never started: no socket anywhere), and the reply's bytes go
back into the client core. Each request must come out of the server core as it went
into the client core, and each reply out of the client core as the server built it.
The same paths over real sockets are in test_server.py and test_client_process.py.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgenet.client import protocol as cp
from edgenet.config import ServerConfig
from edgenet.server import commands, peering
from edgenet.server.app import EdgeServer
from edgenet.server.auth import Credentials
from edgenet.server.interfaces import PendingUpload
from edgenet.server.login import judge_login
from edgenet.server.session import (
    BadRequest,
    DeviceSession,
    Fatal,
    HelloReceived,
    PeerClosed,
    PingDue,
    RequestReceived,
    UploadData,
    UploadDone,
)
from edgenet.wire import messages as m
from edgenet.wire.frames import NEED_DATA
from tests.conftest import CREDENTIALS

AGENT = "edgenet-client/memory"


class ServerEnd:
    """The server's end of one in-memory connection: its session core, and for each
    request the server's own handlers on its state (what the asyncio adapter,
    server/connection.py, does around them, minus the socket)."""

    def __init__(self, server: EdgeServer, ip: str = "192.0.2.10") -> None:
        self.state = server.state
        cfg = server.config
        self.core = DeviceSession(cfg.max_upload, cfg.heartbeat, 0.0, cfg.login_timeout)
        self.ip = ip
        self.peer = f"{ip}:40000"
        self.commands = self.bytes_uploaded = 0
        self.name: str | None = None
        self.upload: tuple[m.Upload, PendingUpload] | None = None
        self.received: list[m.Request] = []
        self.session_id: str | None = None
        #: The monotonic ``now`` the rendezvous handlers get.
        self.now = 0.0
        self._out = bytearray()

    def disconnect(self, kind: str, message: str) -> None:
        """Called by the server's state on a takeover, as on a real session."""
        self._send(m.Notice(kind, message))

    @property
    def version(self) -> int:
        return self.core.version

    def tell(self, notice: m.PeerNotice) -> None:
        """An unprompted frame (a UVF is coming), as on a real session."""
        self._send(notice)

    async def receive(self, data: bytes, now: float = 0.0) -> bytes:
        """Feed the device's bytes; returns the server's bytes for the device."""
        self.core.receive_data(data, now)
        while True:
            ev = self.core.next_event()
            if ev is NEED_DATA or isinstance(ev, PeerClosed):
                break
            if isinstance(ev, (BadRequest, Fatal)):
                self._out += ev.reply
                if isinstance(ev, Fatal):
                    break
            elif isinstance(ev, HelloReceived):
                self._send(m.HelloReply(self.core.version, self.state.agent,
                                        self.state.config.heartbeat))
            elif isinstance(ev, UploadData):
                assert self.upload is not None
                self.upload[1].write(ev.data)
            elif isinstance(ev, UploadDone):
                await self._finish_upload()
            elif isinstance(ev, RequestReceived):
                self.received.append(ev.request)
                await self._serve(ev.request)
        return self.take_output()

    def take_output(self) -> bytes:
        """What the server has written for the device since last asked."""
        out, self._out = bytes(self._out), bytearray()
        return out

    async def _serve(self, req: m.Request) -> None:
        state = self.state
        if isinstance(req, m.Login):
            refused = await judge_login(state, req, self.ip)
            if refused is not None:
                self._send(refused)
                return
            self.name = req.name
            # A takeover tells the older session through the state (Presence.on_evict).
            dev = (await state.presence.join(req.name, self.ip, req.udp_port,
                                             state.clock())).device
            self.session_id = dev.session_id
            state.sessions.add(dev.session_id, self)
            self._send(m.LoginOk(req.id, dev.session_id, req.name))
        elif isinstance(req, (m.Ping, m.Logout)):
            self._send(m.Ack(req.id))
        elif isinstance(req, m.Upload):
            assert self.name is not None
            self.upload = (req, await state.files.begin_upload(self.name, req.file_id))
            if req.size == 0:
                await self._finish_upload()
        elif isinstance(req, m.Compute):
            assert self.name is not None
            self._send(await commands.compute(state, self.name, req))
        elif isinstance(req, m.Delete):
            assert self.name is not None
            self._send(await commands.delete(state, self.name, req))
        elif isinstance(req, m.ListDevices):
            assert self.name is not None
            listed = await state.listing.reply(req.id, self.name)
            if isinstance(listed, m.ErrorReply):
                self._send(listed)
            else:
                self._out += b"".join(self.core.send_encoded(listed))
        elif isinstance(req, m.Lookup):
            assert self.name is not None
            self._send(await commands.lookup(state, self.name, req))
        elif isinstance(req, m.Connect):
            assert self.name is not None
            self._send(await peering.connect(state, self.name, req, self.now))
        elif isinstance(req, m.UdpRegister):
            assert self.name is not None and self.session_id is not None
            self._send(peering.udp_register(state, self.name, self.session_id, self.ip, req,
                                            self.now))

    async def _finish_upload(self) -> None:
        assert self.upload is not None and self.name is not None
        req, up = self.upload
        self.upload = None
        self._send(await commands.finish_upload(self.state, self.name, up, req))

    def _send(self, reply: m.Reply) -> None:
        self._out += self.core.send(reply)


class Device:
    """The device's end: the client core, joined to a ``ServerEnd`` by plain bytes."""

    def __init__(self, server: EdgeServer, trickle: bool = False) -> None:
        self.core = cp.ClientProtocol()
        self.end = ServerEnd(server)
        self.trickle = trickle  # hand the bytes over one at a time, both ways
        self.sent: list[m.Request] = []

    async def deliver(self, data: bytes) -> list[cp.ClientEvent]:
        """Bytes to the server; its answer back; the client's pongs to the server again."""
        events: list[cp.ClientEvent] = []
        while data:
            pieces = [data[i:i + 1] for i in range(len(data))] if self.trickle else [data]
            back = b"".join([await self.end.receive(piece) for piece in pieces])
            for i in range(len(back)) if self.trickle else [0]:
                self.core.receive_data(back[i:i + 1] if self.trickle else back)
                while (ev := self.core.next_event()) is not NEED_DATA:
                    events.append(ev)
                    if self.core.phase is cp.Phase.CLOSED:
                        return events
            data = self.core.data_to_send()
        return events

    async def call(self, request: m.Request, body: bytes = b"", served: bool = True) -> m.Reply:
        """One request and its one reply, through both cores (``served``: the server core
        hands the request on, rather than refusing it itself)."""
        data = self.core.send(request)
        if body:
            data += self.core.send_body(body[: len(body) // 2])
            data += self.core.send_body(body[len(body) // 2:])
        self.sent.append(request)
        events = await self.deliver(data)
        assert len(events) == 1 and isinstance(events[0], cp.ReplyReceived), events
        assert events[0].request == request
        if served and not isinstance(request, m.Hello):
            assert self.end.received[-1] == request  # out of the server core as it went in
        return events[0].reply

    async def login(self, name: str, password: str, udp_port: int = 6001) -> m.Reply:
        assert isinstance(await self.call(m.Hello(1, AGENT)), m.HelloReply)
        return await self.call(m.Login(self.core.next_id(), name, password, udp_port))


@pytest.fixture
async def edge_server(tmp_path: Path) -> AsyncIterator[EdgeServer]:
    config = ServerConfig(port=0, max_attempts=3, host="127.0.0.1", data_dir=tmp_path / "server",
                          block_seconds=2.0)
    server = EdgeServer(config, Credentials.parse(CREDENTIALS), clock=lambda: 1_764_095_312.0)
    await server.open()
    yield server


def samples_file(values: list[int]) -> bytes:
    return "".join(f"{v}\n" for v in values).encode()


@pytest.mark.parametrize("trickle", [False, True], ids=["whole", "byte-at-a-time"])
async def test_every_command_through_both_cores(edge_server: EdgeServer, trickle: bool) -> None:
    alpha = Device(edge_server, trickle)
    hello = await alpha.call(m.Hello(1, AGENT))
    assert hello == m.HelloReply(1, edge_server.state.agent, edge_server.config.heartbeat)
    refused = await alpha.call(m.Login(alpha.core.next_id(), "alpha", "wrong", 6001))
    assert refused == m.ErrorReply(1, "auth_failed", "Invalid password. Please try again",
                                   attempts_left=2)
    logged_in = await alpha.call(m.Login(alpha.core.next_id(), "alpha", "alphapass", 6001))
    assert isinstance(logged_in, m.LoginOk) and logged_in.name == "alpha"

    rng = random.Random(10)
    values = [rng.randrange(0, 10_000) for _ in range(500)]
    body = samples_file(values)
    uploaded = await alpha.call(m.Upload(alpha.core.next_id(), 7, len(body)), body)
    assert uploaded == m.UploadOk(3, 7, 500, len(body))
    stored = edge_server.config.data_dir / "alpha-7.txt"
    assert stored.read_bytes() == body
    expected = {"SUM": str(sum(values)), "MAX": str(max(values)), "MIN": str(min(values))}
    for op, result in expected.items():
        compute = m.Compute(alpha.core.next_id(), 7, op)
        assert await alpha.call(compute) == m.ComputeOk(compute.id, 7, op, result)
    body = samples_file([1, 2, 3, 4])
    assert isinstance(await alpha.call(m.Upload(alpha.core.next_id(), 8, len(body)), body),
                      m.UploadOk)
    average = await alpha.call(m.Compute(alpha.core.next_id(), 8, "AVERAGE"))
    assert isinstance(average, m.ComputeOk) and average.result == "2.5"

    beta = Device(edge_server, trickle)
    assert isinstance(await beta.login("beta", "betapass", 6002), m.LoginOk)
    listed = await alpha.call(m.ListDevices(alpha.core.next_id()))
    assert isinstance(listed, m.ListDevicesOk)
    assert [(d.name, d.ip, d.udp_port) for d in listed.devices] == [("beta", "192.0.2.10", 6002)]
    assert listed.devices[0].since == 1_764_095_312.0
    located = await alpha.call(m.Lookup(alpha.core.next_id(), "beta"))
    assert isinstance(located, m.LookupOk) and (located.ip, located.udp_port) == ("192.0.2.10",
                                                                                6002)
    for name, code in (("alpha", "self_target"), ("gamma", "not_active")):
        refusal = await alpha.call(m.Lookup(alpha.core.next_id(), name))
        assert isinstance(refusal, m.ErrorReply) and refusal.code == code

    deleted = await alpha.call(m.Delete(alpha.core.next_id(), 7))
    assert isinstance(deleted, m.DeleteOk) and deleted.samples == 500
    assert not stored.exists()
    gone = await alpha.call(m.Compute(alpha.core.next_id(), 7, "SUM"))
    assert isinstance(gone, m.ErrorReply) and gone.code == "not_found"
    ping = m.Ping(alpha.core.next_id())
    assert await alpha.call(ping) == m.Ack(ping.id)
    logout = m.Logout(alpha.core.next_id())
    assert await alpha.call(logout) == m.Ack(logout.id)
    assert alpha.core.waiting == ()
    # Every request the client core sent came out of the server core unchanged.
    assert alpha.end.received == [r for r in alpha.sent if not isinstance(r, m.Hello)]


async def test_server_ping_is_answered_by_the_client_core(edge_server: EdgeServer) -> None:
    device = Device(edge_server)
    assert isinstance(await device.login("alpha", "alphapass"), m.LoginOk)
    heartbeat = edge_server.config.heartbeat
    action = device.end.core.heartbeat_action(now=heartbeat)
    assert isinstance(action, PingDue)
    device.core.receive_data(action.frame)
    assert device.core.next_event() == cp.PingReceived(1)
    assert await device.end.receive(device.core.data_to_send(), now=heartbeat) == b""
    assert device.end.received[-1] == m.Pong(1)
    assert device.end.core.heartbeat_action(now=heartbeat * 1.5) is None  # heard from


async def test_takeover_reaches_the_old_client_core_as_a_notice(edge_server: EdgeServer) -> None:
    old, new = Device(edge_server), Device(edge_server)
    assert isinstance(await old.login("alpha", "alphapass"), m.LoginOk)
    assert isinstance(await new.login("alpha", "alphapass"), m.LoginOk)
    assert old.core.phase.value == "open"  # the notice is still on its way
    old.core.receive_data(old.end.take_output())
    ev = old.core.next_event()
    assert isinstance(ev, cp.NoticeReceived) and ev.notice.kind == "replaced"
    assert old.core.phase is cp.Phase.CLOSED


async def test_refusals_keep_the_connection_usable(edge_server: EdgeServer) -> None:
    device = Device(edge_server)
    assert isinstance(await device.call(m.Hello(1, AGENT)), m.HelloReply)
    body = samples_file([1, 2])
    early = await device.call(m.Upload(device.core.next_id(), 1, len(body)), body, served=False)
    assert isinstance(early, m.ErrorReply) and early.code == "not_logged_in"
    assert isinstance(await device.call(m.Login(device.core.next_id(), "alpha", "alphapass",
                                                6001)), m.LoginOk)
    bad = b"1\nnot a number\n"
    refused = await device.call(m.Upload(device.core.next_id(), 2, len(bad)), bad)
    assert isinstance(refused, m.ErrorReply) and refused.code == "bad_data"
    assert not (edge_server.config.data_dir / "alpha-2.txt").exists()
    empty = await device.call(m.Upload(device.core.next_id(), 3, 0))
    assert isinstance(empty, m.UploadOk) and empty.samples == 0
    nothing = await device.call(m.Compute(device.core.next_id(), 3, "SUM"))
    assert isinstance(nothing, m.ErrorReply) and nothing.code == "empty_file"


async def test_lockout_reaches_the_client_core_typed(edge_server: EdgeServer) -> None:
    device = Device(edge_server)
    assert isinstance(await device.call(m.Hello(1, AGENT)), m.HelloReply)
    replies = [await device.call(m.Login(device.core.next_id(), "gamma", "nope", 6001))
               for _ in range(3)]
    assert [r.code for r in replies if isinstance(r, m.ErrorReply)] == [
        "auth_failed", "auth_failed", "blocked"]
    blocked = replies[-1]
    assert isinstance(blocked, m.ErrorReply) and blocked.seconds_left == 2
    assert blocked.attempts_left is None


async def test_a_version_the_server_does_not_speak(edge_server: EdgeServer) -> None:
    device = Device(edge_server)
    events = await device.deliver(device.core.send(m.Hello(4, AGENT, (4, 5))))
    assert len(events) == 1 and isinstance(events[0], cp.ReplyReceived)
    refusal = events[0].reply
    assert isinstance(refusal, m.ErrorReply) and refusal.code == "unsupported_version"
    assert device.core.phase is cp.Phase.CLOSED
