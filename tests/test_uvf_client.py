"""The client side of UVF without processes: terminal redraws, progress line, file rules,
options."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgenet.client import console as con
from edgenet.client.peer import local_file
from edgenet.client.uvf_options import add_uvf_options, uvf_config
from edgenet.config import ClientConfig
from edgenet.rudp import TransferOptions


def make_console(typed: str = "") -> tuple[con.PromptConsole, io.StringIO]:
    out = io.StringIO()
    console = con.PromptConsole(out, redraw=True)
    console._readline = SimpleNamespace(get_line_buffer=lambda: typed)  # type: ignore[assignment]
    return console, out


def test_a_line_at_the_prompt_keeps_what_the_user_typed() -> None:
    console, out = make_console("SCS 1 SU")
    console.notify("received alpha_v.mp4 from alpha (5 bytes)", True, "> ")
    assert out.getvalue() == "\r\x1b[Kreceived alpha_v.mp4 from alpha (5 bytes)\n> SCS 1 SU"


def test_status_line_sits_above_the_prompt_and_is_replaced() -> None:
    console, out = make_console("AE")
    console.set_status("v.mp4 [##..] 50%", True, "> ")
    assert out.getvalue() == "\r\x1b[Kv.mp4 [##..] 50%\n> AE"
    out.truncate(0), out.seek(0)
    console.notify("v.mp4 has been uploaded to beta (9 bytes)", True, "> ")
    console.set_status("", True, "> ")
    # up one line to the old status, the message, the status again, then nothing above.
    assert out.getvalue() == ("\r\x1b[K\x1b[A\r\x1b[Kv.mp4 has been uploaded to beta (9 bytes)\n"
                              "v.mp4 [##..] 50%\n> AE" "\r\x1b[K\x1b[A\r\x1b[K> AE")


def test_after_enter_the_old_status_line_is_left_alone() -> None:
    console, out = make_console()
    console.set_status("x [#] 10%", True, "> ")
    console.input_done()
    out.truncate(0), out.seek(0)
    console.notify("done", False, "> ")  # a command is running: a plain line
    assert out.getvalue() == "done\n"
    out.truncate(0), out.seek(0)
    console.set_status("x [##] 20%", True, "> ")
    assert out.getvalue() == "\r\x1b[Kx [##] 20%\n> "


def test_without_input_a_message_goes_on_a_fresh_line_and_the_prompt_comes_back() -> None:
    out = io.StringIO()
    console = con.PromptConsole(out, redraw=False)
    console.notify("received a_b from a (1 bytes)", True, "> ")
    assert out.getvalue() == "\nreceived a_b from a (1 bytes)\n> "
    console.set_status("bar", True, "> ")  # no bars without a redrawable prompt
    assert out.getvalue() == "\nreceived a_b from a (1 bytes)\n> "


def test_status_text_shows_transfers_older_than_a_second() -> None:
    young = con.TransferMeter("young.bin", 100, start=10.0)
    old = con.TransferMeter("video.mp4 to beta", 1000, start=8.0)
    old.update(0, 8.5)
    old.update(500, 9.5)
    assert con.status_text([young], 10.5, 80) == ""
    text = con.status_text([young, old], 10.5, 200)
    assert text.startswith("video.mp4 to beta [") and " 50%" in text and "500 B/s" in text
    many = [con.TransferMeter(f"f{i}", 10, 0.0) for i in range(4)]
    assert con.status_text(many, 5.0, 200).endswith("(+2 more)")
    assert len(con.status_text(many, 5.0, 30)) == 29


def test_local_file_stays_inside_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.mp4").write_bytes(b"x")
    (tmp_path / "v.mp4").write_bytes(b"x")
    assert local_file(tmp_path, "v.mp4") == (tmp_path / "v.mp4", "", "")
    assert local_file(tmp_path, "clips/../v.mp4")[0] == tmp_path / "v.mp4"
    assert local_file(tmp_path, "clips/a.mp4")[0] == tmp_path / "clips" / "a.mp4"
    for bad in ("../v.mp4", "/etc/passwd", str(tmp_path / "v.mp4"), "clips/../../x", ".."):
        assert local_file(tmp_path, bad)[1] == "outside_data_dir", bad
    assert local_file(tmp_path, "nope") == (None, "no_local_file", "the file nope does not exist")
    assert local_file(tmp_path, "clips")[2] == "clips is not a regular file"


def test_local_file_holds_after_symbolic_links(tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "clips").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"secret")
    (data / "clips" / "a.mp4").write_bytes(b"x")
    (data / "link").symlink_to(outside)  # a folder out of the data dir
    (data / "leak.txt").symlink_to(outside / "secret.txt")  # a file out of it
    (data / "clips" / "up").symlink_to("../..")  # out, relative
    (data / "alias.mp4").symlink_to("clips/a.mp4")  # inside: fine
    (data / "gone").symlink_to(outside / "nothing")  # out, to nothing: still "outside"
    for bad in ("link/secret.txt", "leak.txt", "clips/up/outside/secret.txt", "link", "gone"):
        path, code, message = local_file(data, bad)
        assert (path, code) == (None, "outside_data_dir"), bad
        assert message.startswith(f"{bad} is outside the data dir"), bad
    assert local_file(data, "alias.mp4") == (data / "clips" / "a.mp4", "", "")
    # A data dir reached through a symbolic link is still the data dir.
    (tmp_path / "via").symlink_to(data)
    assert local_file(tmp_path / "via", "clips/a.mp4") == (data / "clips" / "a.mp4", "", "")


def test_uvf_options_defaults_match_the_engine_and_are_checked() -> None:
    parser = argparse.ArgumentParser()
    add_uvf_options(parser)
    values = uvf_config(parser.parse_args([]))
    engine = TransferOptions()
    assert values == {"max_receive_size": engine.max_file_size,
                      "max_incoming": engine.max_incoming, "chunk_size": engine.chunk_size,
                      "advertise_udp_port": None,
                      "uvf_resume_hours": engine.resume_seconds / 3600,
                      "uvf_resume_budget": engine.resume_budget}
    cfg = ClientConfig("h", 1, 0)
    assert (cfg.max_receive_size, cfg.max_incoming, cfg.chunk_size, cfg.uvf_resume_hours * 3600,
            cfg.uvf_resume_budget) == (engine.max_file_size, engine.max_incoming,
                                       engine.chunk_size, engine.resume_seconds,
                                       engine.resume_budget)
    args = parser.parse_args(["--chunk-size", "9000", "--max-incoming", "2",
                              "--max-receive-size", "1000", "--advertise-udp-port", "4000",
                              "--uvf-resume-hours", "0.5", "--uvf-resume-budget", "512MiB"])
    assert uvf_config(args) == {"max_receive_size": 1000, "max_incoming": 2,
                                "chunk_size": 9000, "advertise_udp_port": 4000,
                                "uvf_resume_hours": 0.5, "uvf_resume_budget": 512 * 2**20}
    for argv in (["--chunk-size", "63"], ["--chunk-size", "65488"], ["--max-incoming", "-1"],
                 ["--max-receive-size", "1e9"], ["--advertise-udp-port", "0"],
                 ["--uvf-resume-hours", "-1"], ["--uvf-resume-hours", "nan"],
                 ["--uvf-resume-budget", "lots"]):
        with pytest.raises(ValueError, match="Invalid --"):
            uvf_config(parser.parse_args(argv))
