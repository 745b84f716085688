"""RTT estimation (RFC 6298) and loss detection for the UVF sender.

``RttEstimator`` is RFC 6298 to the letter (alpha 1/8, beta 1/4, K 4, clock granularity G),
except the bounds, which are parameters: the RFC's 1 s minimum (and Linux's 200 ms) is far above
a LAN round trip and stalls a fast transfer at every lost tail, so the default is 20 ms (the
sender's first expiry is a cheap two-chunk probe, so an early one costs little); the maximum is
4 s so that a retry always happens within the 10 s idle timeout.

``SentChunks`` tracks chunks in flight in send order. Every transmission gets a sender-local
packet number; a chunk is declared lost when a chunk sent at least ``PACKET_THRESHOLD``
transmissions later has been acknowledged, or when it has been outstanding for
``TIME_THRESHOLD`` round trips while something sent after it was acknowledged (RFC 9002's
rules, applied to chunks). A retransmission gets a new packet number, so a spurious retransmit
cannot confuse the ordering. When a chunk declared lost turns out to have arrived (reordering,
not loss), both thresholds grow, as RACK's reordering window does, up to fixed bounds.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

PACKET_THRESHOLD = 3
MAX_PACKET_THRESHOLD = 64
TIME_THRESHOLD = 9 / 8
MAX_TIME_THRESHOLD = 2.0
#: Clock granularity G of RFC 6298 and the smallest reordering window.
GRANULARITY = 0.001


@dataclass(frozen=True)
class RtoConfig:
    initial_rto: float = 1.0
    min_rto: float = 0.02
    max_rto: float = 4.0


class RttEstimator:
    """SRTT / RTTVAR / RTO of RFC 6298, with exponential backoff."""

    def __init__(self, config: RtoConfig = RtoConfig()) -> None:
        self._config = config
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.latest_rtt = 0.0
        self.min_rtt: float | None = None
        self._backoff = 1

    def on_sample(self, rtt: float) -> None:
        """Take one RTT measurement (RFC 6298 sections 2.2 and 2.3). Timestamps make every
        sample unambiguous (Karn's problem does not arise), so a sample also ends any backoff."""
        rtt = max(rtt, 0.0)
        self._backoff = 1
        self.latest_rtt = rtt
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if self.srtt is None:
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    @property
    def base_rto(self) -> float:
        """RTO before backoff, clamped to [min_rto, max_rto]."""
        if self.srtt is None:
            rto = self._config.initial_rto
        else:
            rto = self.srtt + max(GRANULARITY, 4 * self.rttvar)
        return min(max(rto, self._config.min_rto), self._config.max_rto)

    @property
    def rto(self) -> float:
        """Current RTO including exponential backoff (RFC 6298 5.5), at most max_rto."""
        return min(self.base_rto * self._backoff, self._config.max_rto)

    @property
    def backoff(self) -> int:
        return self._backoff

    def on_timeout(self) -> None:
        """The retransmission timer expired: double the RTO (5.5); the cap keeps it bounded."""
        if self.base_rto * self._backoff < self._config.max_rto:
            self._backoff *= 2

    def on_progress(self) -> None:
        """New data was acknowledged: drop the backoff (the next sample recomputes the RTO)."""
        self._backoff = 1

    def smoothed(self, default: float) -> float:
        return self.srtt if self.srtt is not None else default


class SentChunks:
    """Chunks sent and not yet acknowledged or declared lost, oldest transmission first.

    Bounded by the sender's window (at most ``max_window`` entries)."""

    def __init__(self) -> None:
        # chunk index -> (packet number, send time); OrderedDict keeps O(1) pops at the front.
        self._chunks: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self.largest_acked_pn = -1
        self.largest_acked_sent_time = 0.0
        self.packet_threshold = PACKET_THRESHOLD
        self.time_threshold = TIME_THRESHOLD
        self.spurious = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def __contains__(self, index: int) -> bool:
        return index in self._chunks

    def on_sent(self, index: int, pn: int, now: float) -> None:
        self._chunks.pop(index, None)
        self._chunks[index] = (pn, now)

    def on_acked(self, index: int) -> tuple[int, float] | None:
        """Forget an acknowledged chunk; returns its (pn, send time) if it was in flight."""
        info = self._chunks.pop(index, None)
        if info is not None and info[0] > self.largest_acked_pn:
            self.largest_acked_pn = info[0]
            self.largest_acked_sent_time = info[1]
        return info

    def oldest(self) -> tuple[int, int, float] | None:
        for index, (pn, sent) in self._chunks.items():
            return index, pn, sent
        return None

    def on_spurious_loss(self) -> None:
        """A chunk declared lost was acknowledged after all: tolerate more reordering."""
        self.spurious += 1
        self.packet_threshold = min(self.packet_threshold * 2, MAX_PACKET_THRESHOLD)
        self.time_threshold = min(self.time_threshold + 0.25, MAX_TIME_THRESHOLD)

    def loss_delay(self, rtt: RttEstimator) -> float:
        base = max(rtt.smoothed(rtt.latest_rtt), rtt.latest_rtt)
        return max(self.time_threshold * base, GRANULARITY)

    def detect_lost(self, now: float, rtt: RttEstimator) -> tuple[list[int], float | None]:
        """Pop the chunks now deemed lost; also return when the next one may be (or None)."""
        lost: list[int] = []
        delay = self.loss_delay(rtt)
        largest = self.largest_acked_pn
        threshold = self.packet_threshold
        chunks = self._chunks
        while chunks:
            index, (pn, sent) = next(iter(chunks.items()))
            if pn >= largest:
                return lost, None
            if pn <= largest - threshold or sent + delay <= now:
                chunks.popitem(last=False)
                lost.append(index)
                continue
            return lost, sent + delay
        return lost, None

    def pop_oldest(self, count: int) -> list[int]:
        """Forget the ``count`` oldest transmissions (a probe resends them)."""
        out: list[int] = []
        while self._chunks and len(out) < count:
            index, _ = self._chunks.popitem(last=False)
            out.append(index)
        return out

    def pop_all(self) -> list[int]:
        """Forget every chunk in flight (oldest first): a retransmission timeout."""
        indexes = list(self._chunks)
        self._chunks.clear()
        return indexes
