"""The edge device: the shell (``run_client``), its commands, the TCP connection
to the server and the UDP side for peer-to-peer transfers (UVF)."""

from edgenet.client.shell import run_client

__all__ = ["run_client"]
