"""UVF end to end: real client processes logged in to a real server process, files sent
between them over loopback UDP (OS-chosen ports, registered through login)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgenet.rudp import packet as pk
from tests.clientproc import LiveClient, run_script, wait_until
from tests.conftest import ServerProcess
from tests.filedata import bench_uvf, make_file, sha

pytestmark = pytest.mark.timeout(60)
MB = 10**6


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def saw(client: LiveClient, text: str, timeout: float = 10) -> str:
    """A line with ``text``, already read or still to come (order does not matter)."""
    for line in client.seen:
        if text in line:
            return line
    return client.expect(text, timeout)


def udp_port_of(client: LiveClient, name: str) -> int:
    """The UDP port ``name`` registered, as ``client``'s AED shows it."""
    client.send("AED")
    return int(client.expect(f"{name}; 127.0.0.1; ").split("; ")[2])


def test_50mb_arrives_while_devices_keep_working(server_process: ServerProcess,
                                                 tmp_path: Path) -> None:
    video = make_file(tmp_path / "alpha" / "video.mp4", 50 * MB)
    back = make_file(tmp_path / "beta" / "back.bin", 5 * MB, seed=2)
    note = make_file(tmp_path / "gamma" / "note.txt", 100_000, seed=3)
    clients = [LiveClient(server_process.port, tmp_path / n) for n in ("alpha", "beta", "gamma")]
    alpha, beta, gamma = clients
    try:
        for client, name in zip(clients, ("alpha", "beta", "gamma")):
            client.login(name, f"{name}pass")
        # Three transfers at once, both directions, while the shells keep taking commands.
        alpha.send("UVF beta video.mp4")
        alpha.send("SCS 7 SUM")
        alpha.send("AED")
        beta.send("UVF alpha back.bin")
        gamma.send("UVF beta note.txt")
        beta.send("AED")
        alpha.expect("sending video.mp4 to beta ...", 10)
        # The server's replies come while the file is still on its way (expect() reads in
        # order: an "uploaded" line before them would make the last expect fail).
        alpha.expect("the file does not exist at the server side", 10)
        alpha.expect("beta; 127.0.0.1; ", 10)
        alpha.expect("video.mp4 has been uploaded to beta (50000000 bytes, direct)", 30)
        saw(alpha, "received beta_back.bin from beta (5000000 bytes)")
        beta.expect("sending back.bin to alpha ...", 10)
        beta.expect("alpha; 127.0.0.1; ", 10)
        saw(beta, "back.bin has been uploaded to alpha (5000000 bytes, direct)", 30)
        saw(beta, "received alpha_video.mp4 from alpha (50000000 bytes)")
        saw(beta, "received gamma_note.txt from gamma (100000 bytes)")
        saw(gamma, "note.txt has been uploaded to beta")
        assert sha(tmp_path / "beta" / "alpha_video.mp4") == sha(video)
        assert sha(tmp_path / "beta" / "gamma_note.txt") == sha(note)
        assert sha(tmp_path / "alpha" / "beta_back.bin") == sha(back)
        assert files_in(tmp_path / "beta") == ["alpha_video.mp4", "back.bin", "gamma_note.txt"]
        for client in clients:
            client.send("OUT")
            client.expect("Bye", 10)
            assert client.proc.wait(10) == 0
    finally:
        for client in clients:
            client.close()


def test_50mb_through_5_percent_loss_and_scripted_clients_wait_at_eof(
        server_process: ServerProcess, tmp_path: Path) -> None:
    bench = bench_uvf()
    big = make_file(tmp_path / "alpha" / "big.bin", 50 * MB, seed=4)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    beta_port = probe.getsockname()[1]
    probe.close()
    relay, relay_port = bench.start_relay(beta_port, 0.05, seed=5)
    # beta listens on beta_port but tells the server it is reached on the relay's port,
    # as a device behind a port forward would.
    beta = LiveClient(server_process.port, tmp_path / "beta", udp_port=beta_port,
                      extra=["--advertise-udp-port", str(relay_port)])
    try:
        beta.login("beta", "betapass")
        # Both scripts end while the file is on its way: each client finishes the transfer
        # (sending or receiving), then logs out.
        results: list[subprocess.CompletedProcess[str]] = []
        sender = threading.Thread(target=lambda: results.append(run_script(
            server_process.port, tmp_path / "alpha", ["alpha", "alphapass", "UVF beta big.bin"],
            timeout=45)))
        sender.start()
        beta.expect("receiving big.bin from alpha (50000000 bytes) ...", 20)
        assert beta.proc.stdin is not None
        beta.proc.stdin.close()
        beta.expect("waiting for 1 file transfer to finish", 10)
        beta.expect("received alpha_big.bin from alpha (50000000 bytes)", 30)
        beta.expect("Bye, beta!", 10)
        assert beta.proc.wait(10) == 0
        sender.join(45)
        alpha = results[0]
        assert alpha.returncode == 0, alpha.stdout + alpha.stderr
        out = alpha.stdout
        assert "waiting for 1 file transfer to finish" in out
        assert "big.bin has been uploaded to beta (50000000 bytes, direct)" in out
        assert out.index("has been uploaded") < out.index("Bye, alpha!")
        assert sha(tmp_path / "beta" / "alpha_big.bin") == sha(big)
    finally:
        beta.close()
        bench.stop_process(relay)
    relayed = relay.stdout.read()
    assert "DROPPED" in relayed and int(relayed.split()[-1]) > 1000  # loss really happened


def test_receiver_killed_mid_transfer(server_process: ServerProcess, tmp_path: Path) -> None:
    make_file(tmp_path / "alpha" / "big.bin", 50 * MB, seed=6)
    beta_dir = tmp_path / "beta"
    alpha = LiveClient(server_process.port, tmp_path / "alpha")
    beta = LiveClient(server_process.port, beta_dir)
    try:
        alpha.login("alpha", "alphapass")
        beta.login("beta", "betapass")
        alpha.send("UVF beta big.bin")

        def part_growing() -> bool:
            parts = [p for p in beta_dir.iterdir() if p.name.endswith(".part")]
            return bool(parts) and parts[0].stat().st_size >= 2 * MB

        assert wait_until(part_growing, timeout=10, step=0.002)
        beta.proc.kill()
        killed = time.monotonic()
        line = alpha.expect("sending big.bin to beta failed: ", 20)
        assert time.monotonic() - killed < 15
        assert "silent" in line  # the engine's idle timeout
        assert not (beta_dir / "alpha_big.bin").exists()
        # The sender is still a working device.
        alpha.send("AED")
        alpha.expect("no other active edge devices", 30)
    finally:
        alpha.close()
        beta.close()
    # A later start of the receiver removes the dead transfer's temp file once it is stale.
    parts = [p for p in beta_dir.iterdir() if p.name.endswith(".part")]
    assert parts
    for part in parts:
        os.utime(part, (time.time() - 3600, time.time() - 3600))
    again = LiveClient(server_process.port, beta_dir)
    try:
        again.login("beta", "betapass")
        assert wait_until(lambda: files_in(beta_dir) == [], timeout=5)
    finally:
        again.close()


def test_refusals_and_injected_datagrams(server_process: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "alpha" / "f.bin", 20 * MB, seed=7)
    make_file(tmp_path / "alpha" / "clips" / "c.txt", 1000, seed=8)
    (tmp_path / "outside.txt").write_text("secret\n")
    alpha = LiveClient(server_process.port, tmp_path / "alpha")
    beta = LiveClient(server_process.port, tmp_path / "beta")
    try:
        alpha.login("alpha", "alphapass")
        beta.login("beta", "betapass")
        refusals = [
            ("UVF delta f.bin", "device delta is not active"),
            ("UVF alpha f.bin", "you cannot send a file to yourself"),
            ("UVF beta nothere.bin", "the file nothere.bin does not exist"),
            ("UVF beta clips", "clips is not a regular file"),
            ("UVF beta ../outside.txt", "../outside.txt is outside the data dir"),
            (f"UVF beta {tmp_path / 'outside.txt'}", "is outside the data dir"),
            ("UVF beta ../etc/passwd", "is outside the data dir"),
        ]
        for line, reply in refusals:
            alpha.send(line)
            alpha.expect(reply, 10)
        # A file in a sub-folder of the data dir goes under its own name only.
        alpha.send("UVF beta clips/c.txt")
        alpha.expect("clips/c.txt has been uploaded to beta (1000 bytes, direct)", 10)
        saw(beta, "received alpha_c.txt from alpha (1000 bytes)")
        assert files_in(tmp_path / "beta") == ["alpha_c.txt"]

        # A third party sprays beta's port during a transfer: junk, and well-formed headers
        # with made-up transfer ids of every type.
        port = udp_port_of(alpha, "beta")
        stop = threading.Event()
        sent = [0]

        def spray() -> None:
            rng = random.Random(9)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                while not stop.is_set():
                    for ptype in range(10):
                        header = pk.HEADER.pack(pk.MAGIC, pk.VERSION, ptype, rng.getrandbits(64))
                        for data in (header + rng.randbytes(rng.randrange(0, 64)),
                                     rng.randbytes(rng.randrange(1, 1500))):
                            s.sendto(data, ("127.0.0.1", port))
                            sent[0] += 1
                    time.sleep(0.001)

        sprayer = threading.Thread(target=spray, daemon=True)
        sprayer.start()
        try:
            alpha.send("UVF beta f.bin")
            alpha.expect("f.bin has been uploaded to beta (20000000 bytes, direct)", 30)
        finally:
            stop.set()
            sprayer.join(5)
        assert sent[0] > 100
        saw(beta, "received alpha_f.bin from alpha (20000000 bytes)")
        assert sha(tmp_path / "beta" / "alpha_f.bin") == sha(src)
        # The same name again: the receiver never overwrites.
        alpha.send("UVF beta clips/c.txt")
        beta.expect("received alpha_c (1).txt from alpha", 10)
    finally:
        alpha.close()
        beta.close()
