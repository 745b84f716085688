"""Fleet and proxy options on the command line, in the environment and in TOML, and
what the plain zipapp says when it is asked for fleet mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CREDENTIALS, PYZ, ROOT, ServerProcess
from tests.engines import RedisEngine
from tests.test_deploy import find_python

FLEET_PYZ = ROOT / "build" / "edgenet-fleet.pyz"


def run(pyz: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    # -S: without site-packages, as on a box that has only python3 (the test venv holds
    # the fleet's libraries, which a plain zipapp would otherwise find and use).
    return subprocess.run([sys.executable, "-S", str(pyz), "server", "0", "3", *args],
                          check=False, capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


def test_the_plain_build_says_how_to_get_fleet_mode() -> None:
    for args, env in ((["--redis", "redis://127.0.0.1:1"], None),
                      ([], {"EDGENET_REDIS": "redis://127.0.0.1:1"})):
        p = run(PYZ, *args, env=env)
        assert p.returncode == 2, p.stderr
        assert p.stderr.strip().splitlines() == [
            ("edgenet: fleet mode needs the fleet build: run build/edgenet-fleet.pyz (made by "
             "'make pyz-fleet') or install the package with its extra: "
             "pip install 'edgenet[fleet]'")]


@pytest.mark.parametrize("args, message", [
    (["--files", "s3://bucket/p"], "--files needs fleet mode: give --redis URL too"),
    (["--node-id", "n1"], "--node-id needs fleet mode"),
    (["--redis", "http://127.0.0.1:1"], "Invalid --redis: http://127.0.0.1:1"),
    (["--redis", "redis://127.0.0.1:1", "--lease", "16"], "Invalid --lease: 16"),
    (["--redis", "redis://127.0.0.1:1", "--lease", "x"], "Invalid --lease: x"),
    (["--redis", "redis://127.0.0.1:1", "--files", "s3://B_A_D/x"], "Invalid --files"),
    (["--redis", "redis://127.0.0.1:1", "--s3-endpoint", "ftp://x"], "Invalid --s3-endpoint"),
    (["--redis", "redis://127.0.0.1:1", "--node-id", "a b"], "Invalid --node-id"),
    (["--redis", "redis://127.0.0.1:1", "--redis-max-connections", "0"],
     "Invalid --redis-max-connections: 0"),
    (["--redis", "redis://127.0.0.1:1", "--redis-pool-timeout", "0"],
     "Invalid --redis-pool-timeout: 0"),
    (["--proxy-protocol", "--trusted-proxies", "1.2.3"], "Invalid --trusted-proxies: 1.2.3"),
])
def test_bad_fleet_options_are_one_line(args: list[str], message: str) -> None:
    p = run(FLEET_PYZ, *args)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert message in p.stderr


def test_fleet_options_from_every_source(tmp_path: Path) -> None:
    toml = tmp_path / "edgenet.toml"
    toml.write_text('[server]\nfiles = "s3://edgenet-files/site-a"\nlease = 5\n'
                    'proxy_protocol = true\ntrusted_proxies = "198.51.100.0/24"\n')
    p = run(FLEET_PYZ, "--config", str(toml), "--print-config", "--node-id", "n1",
            env={"EDGENET_REDIS": "redis://127.0.0.1:6379/0",
                 "AWS_SECRET_ACCESS_KEY": "never-shown"})
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert 'redis = "redis://127.0.0.1:6379/0"  # $EDGENET_REDIS' in out
    assert 'files = "s3://edgenet-files/site-a"  # ' + str(toml) in out
    assert 'lease = "5"' in out and 'node_id = "n1"  # command line' in out
    assert "proxy_protocol = true" in out and 'trusted_proxies = "198.51.100.0/24"' in out
    assert "never-shown" not in out
    assert "redis_max_connections = " in out and "redis_pool_timeout = " in out
    # A password in the Redis URL is masked too.
    p = run(FLEET_PYZ, "--print-config", env={"EDGENET_REDIS": "redis://u:hunter2@db:6379/0"})
    assert p.returncode == 0 and "hunter2" not in p.stdout, p.stdout
    assert 'redis = "redis://u:********@db:6379/0"' in p.stdout


def test_an_unreachable_redis_is_one_line_without_its_password(tmp_path: Path) -> None:
    p = run(FLEET_PYZ, "--redis", "redis://:hunter2@127.0.0.1:1/0", "--no-admin",
            "--data-dir", str(tmp_path), "--credentials", str(ROOT / "credentials.txt"),
            "--log-format", "json")
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines()[-1] == (
        "edgenet: cannot reach Redis at redis://***@127.0.0.1:1/0")
    assert "hunter2" not in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("version", ("3.10", "3.11", "3.12", "3.13"))
def test_the_fleet_pyz_runs_under_each_cpython(version: str, tmp_path: Path,
                                               redis_engine: RedisEngine) -> None:
    """build/edgenet-fleet.pyz, pure Python, on every CPython it promises: a node on
    Redis (its files in the data dir) and a scripted device, both on that interpreter."""
    python = find_python(version)
    if python is None:
        pytest.skip(f"no CPython {version} on this machine")
    creds = tmp_path / "credentials.txt"
    creds.write_text(CREDENTIALS)
    data = tmp_path / "node"
    data.mkdir()
    node = ServerProcess([python, "-S", str(FLEET_PYZ), "server", "0", "3", "--host",
                          "127.0.0.1", "--credentials", str(creds), "--data-dir", str(data),
                          "--log-format", "json", "--no-admin", "--redis", redis_engine.url,
                          "--redis-prefix", f"py{version}-{tmp_path.name}"[-60:],
                          "--node-id", f"py{version}"], data)
    try:
        joined = [e for e in node.read_events() if e.get("event") == "fleet_joined"]
        assert joined and joined[0]["node"] == f"py{version}"
        dev = tmp_path / "dev"
        dev.mkdir()
        p = subprocess.run([python, "-S", str(FLEET_PYZ), "client", "127.0.0.1",
                            str(node.port), "0", "--data-dir", str(dev)],
                           input="alpha\nalphapass\nEDG 1 20\nUED 1\nSCS 1 SUM\nAED\nOUT\n",
                           capture_output=True, text=True, timeout=60, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        values = [int(x) for x in (dev / "alpha-1.txt").read_text().split()]
        assert f"the SUM of file 1 is {sum(values)}" in p.stdout
    finally:
        node.stop()
