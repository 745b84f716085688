"""The Mosquitto side of the connection benchmark (its own process): N MQTT clients
(paho-mqtt, driven from one selector loop through its external-loop calls) connect
BATCH at a time, each waiting for its CONNACK, exactly as the load generator's
devices send hello + login and wait for the ``ok``. Then they stay connected until
a line arrives on stdin.

    python bench/mqtt_probe.py PORT CLIENTS [--first N] [--batch 250] [--sources K]

Prints ``READY {json}`` (login timings in Unix time, its CPU), then ``{json}`` after
the line on stdin. Raises its own open-file limit to the hard limit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import struct
import sys
import time

import paho.mqtt.client as mqtt


def connect_batch(clients: list[mqtt.Client], port: int, sources: list[str],
                  timeout: float = 30.0) -> int:
    """Connect every client and wait for each CONNACK; returns how many failed."""
    sel = selectors.DefaultSelector()
    pending: dict[int, mqtt.Client] = {}
    failed = 0
    acked: set[int] = set()
    for c, source in zip(clients, sources):
        c.on_connect = lambda cl, ud, flags, rc, props=None: acked.add(id(cl))
        try:
            # TCP connect and CONNECT written
            c.connect("127.0.0.1", port, keepalive=600, bind_address=source)
        except OSError:
            failed += 1
            continue
        sock = c.socket()
        pending[id(c)] = c
        sel.register(sock, selectors.EVENT_READ, c)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            c.loop_read()
            if id(c) in acked:
                sel.unregister(key.fileobj)
                pending.pop(id(c), None)
    failed += len(pending)
    sel.close()
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("port", type=int)
    ap.add_argument("clients", type=int)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--sources", type=int, default=0,
                    help="loopback source addresses, from 127.0.0.2 on (0: 127.0.0.1)")
    a = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    clients = [mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev{a.first + i}",
                           protocol=mqtt.MQTTv311) for i in range(a.clients)]
    cpu0 = time.process_time()
    t0 = time.time()
    failed = 0
    # The same source address for the same index as the load generator's devices.
    sources = [f"127.0.0.{2 + (a.first + i) % a.sources}" if a.sources > 0 else ""
               for i in range(a.clients)]
    for i in range(0, len(clients), a.batch):
        failed += connect_batch(clients[i:i + a.batch], a.port, sources[i:i + a.batch])
    t1 = time.time()
    ready = {"login_start": t0, "login_end": t1, "login_failed": failed,
             "login_cpu_s": time.process_time() - cpu0, "pid": os.getpid()}
    print("READY " + json.dumps(ready), flush=True)
    sys.stdin.readline()
    for c in clients:
        sock = c.socket()
        if sock is not None:  # a reset: no TIME_WAIT left on the ephemeral ports
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    print(json.dumps({**ready, "commands": 0}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
