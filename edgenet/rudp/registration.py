"""A device's registration with the server's rendezvous, as a sans-I/O state machine.

After login the server gives the device a token over the TCP session; the device sends
REGISTER (the token) from its UVF socket to the server's UDP port, so the server learns the
address and port the device's NAT shows for that socket (its server-reflexive address) and
keeps a mapping open through the NAT for the relay. The server answers REGISTERED with that
address and the keepalive interval.

Until the first answer REGISTER is repeated with a backoff (0.25 s, doubling, at most
``retry_max``); once registered it is refreshed every keepalive, which also keeps the NAT's
mapping to the server alive (Linux keeps an unanswered UDP mapping 30 s, an answered one
120 s). An answer counts only from the server's address and with the nonce of the current
registration. No sockets, no clock: ``now`` in, datagrams and deadlines out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from . import natpacket as npk
from .records import PeerKey, SockAddr


@dataclass(frozen=True)
class RegistrationConfig:
    first_retry: float = 0.25
    retry_max: float = 8.0
    #: Refresh interval until the server names its own.
    keepalive: float = 20.0


class Registration:
    def __init__(self, server: SockAddr, server_key: PeerKey, token: bytes, now: float,
                 config: RegistrationConfig = RegistrationConfig()) -> None:
        if len(token) != npk.TOKEN_BYTES:
            raise ValueError("bad registration token")
        self.server = server
        self.server_key = server_key
        self._token = token
        self._config = config
        self._nonce = secrets.randbits(64)
        self._retry = config.first_retry
        self._next: float = now
        self.keepalive = config.keepalive
        #: The address the server sees (None until it answered).
        self.reflexive: tuple[str, int] | None = None
        self.registered_at: float | None = None
        self.sent = 0

    def get_timer(self) -> float:
        return self._next

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """A REGISTER when one is due (and the next deadline set)."""
        if now < self._next:
            return []
        self.sent += 1
        if self.registered_at is not None and now - self.registered_at < self.keepalive * 2:
            self._next = now + self.keepalive  # a refresh; its answer keeps the state
        else:
            self._next = now + self._retry
            self._retry = min(self._retry * 2, self._config.retry_max)
        return [npk.encode_register(npk.Register(self._nonce, self._token))]

    def receive(self, answer: npk.Registered, key: PeerKey, now: float) -> bool:
        """An answer; True when the reflexive address is new (first, or changed)."""
        if key != self.server_key or answer.nonce != self._nonce:
            return False
        first = self.registered_at is None
        self.registered_at = now
        self._retry = self._config.first_retry
        if answer.keepalive > 0:
            self.keepalive = float(answer.keepalive)
        if first:
            self._next = now + self.keepalive
        seen = (answer.host, answer.port)
        changed = seen != self.reflexive
        self.reflexive = seen
        return changed
