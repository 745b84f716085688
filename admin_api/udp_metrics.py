"""Prometheus metrics of the server's UDP rendezvous and relay, read from its counters when
scraped (the relay counts in plain integers on its hot path; nothing is pushed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edgenet.server.rendezvous import DROP_REASONS, Rendezvous

if TYPE_CHECKING:
    from edgenet.server.app import EdgeServer


class RendezvousCollector:
    """``edgenet_udp_dropped_total{reason}``, ``edgenet_udp_registrations_total``,
    ``edgenet_relay_datagrams_total``, ``edgenet_relay_bytes_total``,
    ``edgenet_relay_allocations_total{outcome}`` and the gauge ``edgenet_relay_allocations``
    (all 0 while the rendezvous is off)."""

    def __init__(self, server: EdgeServer) -> None:
        self.server = server

    def describe(self) -> Iterator[Metric]:
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        return self._families(self.server.rendezvous)

    @staticmethod
    def _families(rv: Rendezvous | None) -> Iterator[Metric]:
        counters = rv.counters if rv is not None else None
        dropped = CounterMetricFamily("edgenet_udp_dropped", "UDP datagrams the rendezvous "
                                      "and relay dropped, by reason", labels=["reason"])
        for reason in DROP_REASONS:
            dropped.add_metric([reason], counters.dropped[reason] if counters else 0)
        yield dropped
        yield CounterMetricFamily("edgenet_udp_registrations", "Valid UDP registrations "
                                  "answered", value=counters.registrations if counters else 0)
        yield CounterMetricFamily("edgenet_relay_datagrams", "Datagrams forwarded by the "
                                  "relay", value=counters.relayed_datagrams if counters else 0)
        yield CounterMetricFamily("edgenet_relay_bytes", "Bytes forwarded by the relay",
                                  value=counters.relayed_bytes if counters else 0)
        made = CounterMetricFamily("edgenet_relay_allocations", "Relay allocations (one per "
                                   "UVF rendezvous), made or refused by a cap",
                                   labels=["outcome"])
        made.add_metric(["made"], counters.allocations if counters else 0)
        made.add_metric(["refused"], counters.allocations_refused if counters else 0)
        yield made
        yield GaugeMetricFamily("edgenet_relay_allocations_open", "Relay allocations open now",
                                value=rv.allocation_count() if rv is not None else 0)
