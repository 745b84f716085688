"""Reaching the server: name resolution, TLS, dialling each address, and the hello.

``connect`` is what the shell and the headless device call: a ``ServerLink`` with
hellos exchanged, or ``ConnectFailed`` with one line that says what went wrong
(``cannot reach the server at host:port: connection refused``). Everything here is
bounded by ``CONNECT_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import TYPE_CHECKING, Any

from edgenet.client.connection import CONNECT_TIMEOUT, ServerLink
from edgenet.client.errors import ConnectFailed, describe_os_error, host_port

if TYPE_CHECKING:
    from edgenet.config import ClientConfig


def client_tls(config: ClientConfig) -> ssl.SSLContext | None:
    """The TLS context ``config`` asks for (None: plain TCP); raises ConnectFailed."""
    if config.tls_ca is None and not config.tls_insecure:
        return None
    from edgenet.tls import TlsSetupError, client_context

    try:
        return client_context(config.tls_ca, config.tls_insecure)
    except TlsSetupError as exc:
        raise ConnectFailed(exc.message) from None


async def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    """The server's addresses (getaddrinfo rows); raises ConnectFailed."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), CONNECT_TIMEOUT)
    except (OSError, asyncio.TimeoutError) as exc:
        raise ConnectFailed(
            f"cannot reach the server at {host_port(host, port)}: {describe_os_error(exc)}"
        ) from None
    if not infos:
        raise ConnectFailed(f"cannot reach the server at {host_port(host, port)}: no address")
    return infos


async def open_link(host: str, port: int, infos: list[tuple[Any, ...]] | None = None,
                    ssl_context: ssl.SSLContext | None = None) -> ServerLink:
    """Connect (within CONNECT_TIMEOUT in all) to the first address that answers; over
    TLS with ``ssl_context`` (the certificate must name ``host``). No hello yet."""
    where = host_port(host, port)
    if infos is None:
        infos = await resolve(host, port)
    first_error: BaseException | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECT_TIMEOUT
    for *_, addr in infos:
        left = deadline - loop.time()
        if left <= 0:
            first_error = first_error or TimeoutError()
            break
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    addr[0], addr[1], ssl=ssl_context,
                    server_hostname=host if ssl_context is not None else None), left)
        except ssl.SSLError as exc:
            from edgenet.tls import describe_handshake_error

            raise ConnectFailed(f"cannot talk to the server at {where}: "
                                f"{describe_handshake_error(exc)}") from None
        except (OSError, asyncio.TimeoutError) as exc:
            first_error = first_error or exc
            continue
        return ServerLink(reader, writer, tls=ssl_context is not None)
    assert first_error is not None
    reason = describe_os_error(first_error)
    if isinstance(first_error, (TimeoutError, asyncio.TimeoutError)):
        reason = f"no answer within {CONNECT_TIMEOUT:g} seconds"
    raise ConnectFailed(f"cannot reach the server at {where}: {reason}")


async def connect(config: ClientConfig, infos: list[tuple[Any, ...]] | None = None,
                  login: tuple[str, str, int] | None = None) -> ServerLink:
    """A link to the configured server, hellos exchanged. Raises ConnectFailed.
    ``login`` (name, password, UDP port) is sent with the hello (``ServerLink.hello``)."""
    link = await open_link(config.server_host, config.server_port, infos,
                           ssl_context=client_tls(config))
    try:
        await link.hello(login)
    except BaseException:
        await link.close()
        raise
    return link
