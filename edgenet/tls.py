"""TLS for the device protocol: the server's and the client's ``ssl.SSLContext``.

Errors are values for the command line: ``TlsSetupError`` carries one line.
The protocol inside TLS is unchanged (docs/PROTOCOL.md).
"""

from __future__ import annotations

import ssl
from pathlib import Path

#: Seconds a TLS handshake may take before the connection is dropped.
HANDSHAKE_TIMEOUT = 10.0


class TlsSetupError(Exception):
    """A certificate, key or CA file cannot be used; ``message`` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return (exc.reason or str(exc)).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 or later) with ``cert`` (PEM chain) and ``key``."""
    for what, path in (("certificate", cert), ("private key", key)):
        if not path.is_file():
            raise TlsSetupError(f"TLS {what} file not found: {path}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(f"cannot use TLS certificate {cert} with key {key}: "
                            f"{_reason(exc)}") from None
    return ctx


def client_context(ca: Path | None, insecure: bool = False) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca`` (and its host name),
    or, with ``insecure``, verifies nothing (encryption without authentication)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca is None:
        raise TlsSetupError("TLS needs --tls-ca FILE (or --tls-insecure for a test set-up)")
    if not ca.is_file():
        raise TlsSetupError(f"TLS CA file not found: {ca}")
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsSetupError(f"cannot use TLS CA file {ca}: {_reason(exc)}") from None
    return ctx


def describe_handshake_error(exc: BaseException) -> str:
    """One line about a failed client handshake, with the likeliest cause."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the server's TLS certificate was refused: "
                f"{(exc.verify_message or _reason(exc))}")
    text = _reason(exc)
    if "wrong version number" in text or "record layer failure" in text \
            or "packet length too long" in text or "unexpected eof" in text:
        return (f"TLS handshake failed ({text}); is the server running without TLS? "
                "Drop --tls-ca/--tls-insecure, or start the server with --tls-cert/--tls-key")
    return f"TLS handshake failed: {text}"
