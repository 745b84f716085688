"""The edge device: the shell (``run_client``) and the headless runner, their
commands, the link to the server (the sans-I/O ``protocol`` core under the asyncio
``connection``, reached through ``dial``) and the UDP side for peer-to-peer
transfers (UVF, ``peer``).

``run_client`` is imported on first use, so that the command line can read the
client's option definitions without loading the whole client (``--version``
and ``--help`` stay fast)."""

from __future__ import annotations

from typing import Any

__all__ = ["run_client"]


def __getattr__(name: str) -> Any:
    if name == "run_client":
        from edgenet.client.shell import run_client

        return run_client
    raise AttributeError(f"module 'edgenet.client' has no attribute {name!r}")
