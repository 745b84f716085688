"""Where options come from: command line > EDGENET_* environment > TOML file > defaults,
and --print-config with secrets masked. In process, no sockets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgenet.__main__ import build_parser
from edgenet.settings import resolve_args
from tests.conftest import ROOT


def resolve(argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return resolve_args(build_parser(), argv, env or {})


def test_precedence_command_line_env_file_default(tmp_path: Path) -> None:
    conf = tmp_path / "edgenet.toml"
    conf.write_text('data-dir = "/from/file"\nblock_seconds = 7\nheartbeat = 2.5\n'
                    'host = "192.0.2.1"\nno_admin = true\n'
                    '[server]\nmax_attempts = 4\nserver_port = 5000\n'
                    '[client]\nudp_port = 9\n')
    env = {"EDGENET_BLOCK_SECONDS": "9", "EDGENET_HOST": "127.0.0.2", "EDGENET_CONFIG": str(conf)}
    args = resolve(["server", "--host", "::1"], env)
    assert args.host == "::1"                          # command line over env
    assert args.block_seconds == "9"                   # env over file
    assert args.data_dir == "/from/file"               # file (dashes or underscores)
    assert args.heartbeat == "2.5" and args.no_admin is True
    assert (args.server_port, args.max_attempts) == ("5000", "4")  # positionals from [server]
    assert args.credentials == "credentials.txt"       # default
    assert args.settings_sources["host"] == "command line"
    assert args.settings_sources["block_seconds"] == "$EDGENET_BLOCK_SECONDS"
    assert args.settings_sources["data_dir"] == str(conf)
    assert args.settings_sources["credentials"] == "default"
    # --config on the command line wins over EDGENET_CONFIG; flags from the environment.
    other = tmp_path / "other.toml"
    other.write_text('[server]\nserver_port = "1"\nmax_attempts = "2"\n')
    args = resolve(["server", "--config", str(other)], {**env, "EDGENET_NO_ADMIN": "no"})
    assert (args.server_port, args.max_attempts, args.no_admin) == ("1", "2", False)
    # A top-level key only the client knows is fine for the server, and the reverse.
    args = resolve(["client", "h", "1"], {"EDGENET_CONFIG": str(conf)})
    assert (args.udp_port, args.data_dir) == ("9", "/from/file")


@pytest.mark.parametrize("env,toml,words", [
    ({"EDGENET_LOG_FORMAT": "fancy"}, "", "invalid choice 'fancy'"),
    ({"EDGENET_NO_ADMIN": "perhaps"}, "", "not a yes/no value"),
    ({}, "data_dri = 1\n", "unknown option 'data_dri'"),
    ({}, "[server]\nadvertise_udp_port = 1\n", "unknown option 'advertise_udp_port'"),
    ({}, "[admin]\nx = 1\n", "unknown table [admin]"),
    ({}, "no_admin = 'yes'\n", "must be true or false"),
    ({}, "host = [1, 2]\n", "must be a string or a number"),
    ({}, "host = \n", "invalid TOML"),
])
def test_bad_values_are_one_line_and_status_2(env: dict[str, str], toml: str, words: str,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["server", "0", "3"]
    if toml:
        conf = tmp_path / "c.toml"
        conf.write_text(toml)
        argv += ["--config", str(conf)]
    with pytest.raises(SystemExit) as exc:
        resolve(argv, env)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_missing_positional_still_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        resolve(["server", "0"])
    assert exc.value.code == 2
    assert "required: MAX_ATTEMPTS" in capsys.readouterr().err
    args = resolve(["server", "0"], {"EDGENET_MAX_ATTEMPTS": "2"})
    assert args.max_attempts == "2"


def test_without_tomllib_config_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    conf = tmp_path / "c.toml"
    conf.write_text("host = 'x'\n")
    with pytest.raises(SystemExit) as exc:
        resolve(["server", "0", "3", "--config", str(conf)])
    assert exc.value.code == 2
    assert "--config needs Python 3.11 or newer" in capsys.readouterr().err
    assert resolve(["server", "0", "3"]).host == "0.0.0.0"  # no file: no TOML needed


def test_print_config_masks_secrets(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[server]\nadmin_token = "file-secret"\n')
    env = {"PATH": "/usr/bin:/bin", "EDGENET_ADMIN_TOKEN": "env-secret",
           "EDGENET_DATA_DIR": "/srv/edge"}
    p = subprocess.run([sys.executable, "-m", "edgenet", "server", "0", "3", "--config",
                        str(conf), "--print-config"], check=False, capture_output=True,
                       text=True, timeout=30, env={**env, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert "env-secret" not in p.stdout and "file-secret" not in p.stdout
    assert 'admin_token = "********"  # $EDGENET_ADMIN_TOKEN' in p.stdout
    assert 'data_dir = "/srv/edge"  # $EDGENET_DATA_DIR' in p.stdout
    assert 'server_port = "0"  # command line' in p.stdout
    env = {"PATH": "/usr/bin:/bin", "EDGENET_PASSWORD": "hunter2", "EDGENET_NAME": "cam1"}
    p = subprocess.run([sys.executable, "-m", "edgenet", "client", "--print-config"],
                       check=False, capture_output=True, text=True, timeout=30,
                       env={**env, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert "hunter2" not in p.stdout and "EDGENET_PASSWORD is set" in p.stdout
    assert 'name = "cam1"  # $EDGENET_NAME' in p.stdout
    assert "server_ip is not set (required" in p.stdout
