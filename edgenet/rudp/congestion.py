"""Congestion window and pacing for the UVF sender.

The window is counted in chunks. It grows on progress (doubling per round trip in slow start,
then by 1/8 per round trip) and is halved on loss. Loss is judged once per round trip (a round
ends when a chunk sent after it began is acknowledged): the window is halved when more than
``loss_tolerance`` of the chunks resolved in that round were lost (rounds with fewer than
``min_sample`` resolved chunks are merged with the next, so one loss in a tiny window is not
read as 12 % loss). Random loss below the
tolerance (a lossy radio link, the 5 % of the benchmark) therefore does not collapse the window,
while an overflowing queue, which drops a burst, does. A retransmission timeout also halves it.

Pacing spreads the window over the smoothed round trip: a token bucket refilled at
``pacing_gain * cwnd / srtt`` chunks per second, holding at most ``max_burst`` tokens, so a
sender never dumps a whole window into the receiver's socket buffer at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CongestionConfig:
    initial_window: int = 32
    min_window: int = 8
    #: Upper bound on chunks in flight per transfer (16384 x 1400 B = 22 MiB).
    max_window: int = 16384
    loss_tolerance: float = 0.10
    #: A loss rate is judged over at least this many resolved chunks.
    min_sample: int = 32
    growth: float = 0.125
    pacing_gain: float = 1.25
    slow_start_pacing_gain: float = 2.0
    #: Token bucket depth: about 2 ms of sending (asyncio timers are 1 ms coarse), in these bounds.
    min_burst: int = 16
    max_burst: int = 512
    burst_time: float = 0.002


class CongestionController:
    def __init__(self, config: CongestionConfig = CongestionConfig()) -> None:
        self._config = config
        self.cwnd = float(config.initial_window)
        self.in_slow_start = True
        self.reductions = 0
        self._round_end_pn = 0
        self._round_acked = 0
        self._round_lost = 0
        self._round_limited = False
        self._tokens = float(config.min_burst)
        self._last_refill: float | None = None
        self._rate = 0.0

    @property
    def window(self) -> int:
        return int(self.cwnd)

    # -- hooks from the sender ---------------------------------------------------------------

    def on_window_limited(self) -> None:
        """The sender had more to send but the window was full: growth is warranted."""
        self._round_limited = True

    def on_acked(self, count: int, largest_acked_pn: int, next_pn: int) -> None:
        self._round_acked += count
        if largest_acked_pn >= self._round_end_pn:
            self._end_round(next_pn)

    def on_lost(self, count: int) -> None:
        self._round_lost += count

    def on_timeout(self) -> None:
        self._reduce()

    # -- internals ------------------------------------------------------------------------------

    def _reduce(self) -> None:
        self.cwnd = max(float(self._config.min_window), self.cwnd / 2)
        self.in_slow_start = False
        self.reductions += 1

    def _end_round(self, next_pn: int) -> None:
        resolved = self._round_acked + self._round_lost
        if resolved < self._config.min_sample:
            # Too few chunks to judge a loss rate (a small window): judge two rounds together.
            self._round_end_pn = next_pn
            return
        if resolved:
            if self._round_lost / resolved > self._config.loss_tolerance:
                self._reduce()
            elif self._round_limited:
                if self.in_slow_start:
                    self.cwnd += self._round_acked
                else:
                    self.cwnd += max(1.0, self._round_acked * self._config.growth)
                self.cwnd = min(self.cwnd, float(self._config.max_window))
        self._round_end_pn = next_pn
        self._round_acked = self._round_lost = 0
        self._round_limited = False

    # -- pacing ---------------------------------------------------------------------------------

    def pacing_rate(self, srtt: float) -> float:
        """Chunks per second."""
        gain = (
            self._config.slow_start_pacing_gain if self.in_slow_start else self._config.pacing_gain
        )
        return gain * self.cwnd / max(srtt, 1e-4)

    def _burst(self, rate: float) -> float:
        c = self._config
        return min(max(rate * c.burst_time, float(c.min_burst)), float(c.max_burst))

    def send_budget(self, now: float, srtt: float) -> int:
        """How many chunks pacing allows right now."""
        rate = self.pacing_rate(srtt)
        self._rate = rate
        if self._last_refill is not None:
            self._tokens = min(self._tokens + (now - self._last_refill) * rate, self._burst(rate))
        self._last_refill = now
        return int(self._tokens)

    def on_sent(self, count: int) -> None:
        self._tokens -= count

    def next_send_time(self, now: float) -> float:
        """When the bucket will hold one token again (call after send_budget)."""
        if self._tokens >= 1 or self._rate <= 0:
            return now
        return now + (1 - self._tokens) / self._rate
